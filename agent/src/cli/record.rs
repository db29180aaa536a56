//! `inferscope record`: a self-contained HTML report of a live watch or a saved stream.

use std::{cell::RefCell, path::PathBuf, process::ExitCode, rc::Rc};

use anyhow::{Context as _, Result};

use super::diagnose::RecordingArgs;
use crate::{
    diagnose,
    profile::{ProfileKind, Profiler, Targets, write_flamegraph},
    report,
    sinks::Sink,
};

#[derive(clap::Args)]
pub struct RecordArgs {
    #[command(flatten)]
    from: RecordingArgs,
    /// The HTML file to write.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "PATH",
        default_value = "inferscope-report.html"
    )]
    output: PathBuf,
    /// CPU stack samples per second per CPU for the report's flame graph (live only; 0: none).
    #[arg(long, default_value_t = 49)]
    profile_frequency: u64,
}

pub fn record(args: RecordArgs) -> Result<ExitCode> {
    // Live, the processes watched are also profiled, for the flame graph.
    let profiler = if args.from.is_live() && args.profile_frequency > 0 {
        match Profiler::start(args.profile_frequency, args.from.pids()) {
            Ok(profiler) => Some(Rc::new(RefCell::new(profiler))),
            Err(e) => {
                log::warn!("no flame graph in the report: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let recording = args.from.recording_with(0, |_| {
        profiler
            .iter()
            .map(|p| Box::new(Targets(p.clone())) as Box<dyn Sink>)
            .collect()
    })?;
    let flamegraph = match &profiler {
        Some(p) => {
            let profiles = p.borrow().profiles().context("reading the sampled stacks")?;
            let mut svg = Vec::new();
            match profiles.iter().find(|p| p.kind == ProfileKind::Cpu) {
                Some(cpu) if !cpu.stacks.is_empty() => {
                    write_flamegraph(&mut svg, cpu)?;
                    Some(svg)
                }
                _ => None,
            }
        }
        None => None,
    };
    let diagnosis = diagnose::diagnose(&recording);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let title = format!("inferscope report: {}", host.trim());
    let page = report::render(&recording, &diagnosis, &title, flamegraph.as_deref());
    std::fs::write(&args.output, page).with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "inferscope: wrote {} ({} intervals, {} findings)",
        args.output.display(),
        diagnosis.intervals,
        diagnosis.findings.len()
    );
    Ok(ExitCode::SUCCESS)
}
