//! `inferscope record`: a self-contained HTML report of a live watch or a saved stream.

use std::{cell::RefCell, path::PathBuf, process::ExitCode, rc::Rc};

use anyhow::{Context as _, Result};

use super::diagnose::{RecordingArgs, StoreArgs};
use crate::{
    diagnose,
    pipeline::WatchOptions,
    profile::{DEFAULT_GPU_CALL_STACK_EVERY, Profiler, write_flamegraph},
    report::{self, FlameGraph},
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
    /// CPU stack samples per second per CPU for the report's flame graph (live only; 0: no profile).
    #[arg(long, default_value_t = 49)]
    profile_frequency: u64,
    /// 1 in how many GPU launches and synchronisations records where it was
    /// called from, for the report's flame graphs of them (live only; 0: none).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_GPU_CALL_STACK_EVERY)]
    gpu_call_stacks: u32,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn record(args: RecordArgs) -> Result<ExitCode> {
    if let Some((store, slice)) = args.store.slice()? {
        let fleet = store
            .diagnose(&slice)
            .with_context(|| format!("reading {}", store.url()))?;
        let nodes: Vec<(&str, &diagnose::Recording)> = fleet
            .nodes
            .iter()
            .map(|n| (n.node.as_str(), &n.recording))
            .collect();
        let title = format!("inferscope report: {} node(s) from {}", nodes.len(), store.url());
        return write_report(
            &args.output,
            &report::render(&nodes, &fleet.diagnosis, &title, &[]),
            &fleet.diagnosis,
        );
    }
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
    let recording = args.from.recording_with(WatchOptions {
        gpu_call_stack_every: if profiler.is_some() {
            args.gpu_call_stacks
        } else {
            0
        },
        profiler: profiler.clone(),
        ..WatchOptions::default()
    })?;
    let mut flamegraphs = Vec::new();
    if let Some(p) = &profiler {
        for profile in p.borrow().profiles().context("reading the sampled stacks")? {
            if profile.stacks.is_empty() {
                continue;
            }
            let mut svg = Vec::new();
            write_flamegraph(&mut svg, &profile)?;
            flamegraphs.push(FlameGraph {
                title: profile.kind.title().to_string(),
                caption: profile.kind.caption().to_string(),
                svg,
            });
        }
    }
    let diagnosis = diagnose::diagnose(&recording);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let title = format!("inferscope report: {}", host.trim());
    let page = report::render(&[("", &recording)], &diagnosis, &title, &flamegraphs);
    write_report(&args.output, &page, &diagnosis)
}

fn write_report(path: &std::path::Path, page: &str, diagnosis: &diagnose::Diagnosis) -> Result<ExitCode> {
    std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "inferscope: wrote {} ({} intervals, {} findings)",
        path.display(),
        diagnosis.intervals,
        diagnosis.findings.len()
    );
    Ok(ExitCode::SUCCESS)
}
