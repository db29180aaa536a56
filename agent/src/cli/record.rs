//! `inferscope record`: a self-contained HTML report of a live watch or a saved stream.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};

use super::diagnose::RecordingArgs;
use crate::{diagnose, report};

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
}

pub fn record(args: RecordArgs) -> Result<ExitCode> {
    let recording = args.from.recording()?;
    let diagnosis = diagnose::diagnose(&recording);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let title = format!("inferscope report: {}", host.trim());
    std::fs::write(&args.output, report::render(&recording, &diagnosis, &title))
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "inferscope: wrote {} ({} intervals, {} findings)",
        args.output.display(),
        diagnosis.intervals,
        diagnosis.findings.len()
    );
    Ok(ExitCode::SUCCESS)
}
