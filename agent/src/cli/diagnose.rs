//! `inferscope diagnose`: findings over a live watch or a saved JSON stream.

use std::{
    fs::File,
    io::{self, BufReader, Write as _},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result};

use super::{parse_duration, run::WatchArgs};
use crate::{
    diagnose::{self, Recorder, Recording},
    pipeline::{WatchOptions, watch},
    sinks::Sink,
};

/// Where a recording comes from: a saved stream, or a live watch.
#[derive(clap::Args)]
pub struct RecordingArgs {
    /// A saved `run --output json` stream (request lines from `--output requests`
    /// may be mixed in); `-` reads standard input. Without it, watch live.
    #[arg(long, value_name = "PATH")]
    input: Option<PathBuf>,
    /// How long to watch live (Ctrl-C ends it early and keeps what was seen).
    #[arg(long, default_value = "30s", value_parser = parse_duration, conflicts_with = "input")]
    duration: Duration,
    #[command(flatten)]
    watch: WatchArgs,
}

impl RecordingArgs {
    /// The processes named with `--pid`.
    pub fn pids(&self) -> &[u32] {
        self.watch.pids()
    }

    /// Whether the recording is made live (rather than read from a file).
    pub fn is_live(&self) -> bool {
        self.input.is_none()
    }

    pub fn recording(&self) -> Result<Recording> {
        self.recording_with(WatchOptions::default())
    }

    /// The recording; a live watch also runs as `options` say (with a
    /// profiler, say); a recording read from a file ignores them.
    pub fn recording_with(&self, options: WatchOptions) -> Result<Recording> {
        Ok(match &self.input {
            Some(path) if path.as_os_str() == "-" => Recording::read(io::stdin().lock())?,
            Some(path) => Recording::read(BufReader::new(
                File::open(path).with_context(|| format!("opening {}", path.display()))?,
            ))
            .with_context(|| format!("reading {}", path.display()))?,
            None => {
                eprintln!(
                    "inferscope: watching for {} (Ctrl-C to stop early)",
                    humantime::format_duration(self.duration)
                );
                let recorder = Recorder::default();
                let recording = recorder.recording();
                let options = WatchOptions {
                    duration: Some(self.duration),
                    ..options
                };
                watch(&self.watch.config(), options, |_| {
                    Ok(vec![Box::new(recorder) as Box<dyn Sink>])
                })?;
                std::mem::take(&mut *recording.lock().unwrap_or_else(|e| e.into_inner()))
            }
        })
    }
}

#[derive(clap::Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    from: RecordingArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: DiagnoseFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DiagnoseFormat {
    /// Findings for a person.
    Text,
    /// One JSON object: findings with their evidence (docs/diagnose.md).
    Json,
}

pub fn diagnose(args: DiagnoseArgs) -> Result<ExitCode> {
    let diagnosis = diagnose::diagnose(&args.from.recording()?);
    let mut out = io::stdout().lock();
    match args.output {
        DiagnoseFormat::Text => diagnose::write_text(&mut out, &diagnosis)?,
        DiagnoseFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &diagnosis)?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
