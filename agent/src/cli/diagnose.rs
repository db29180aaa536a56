//! `inferscope diagnose`: findings over a live watch or a saved JSON stream.

use std::{
    fs::File,
    io::{self, BufReader, Write as _},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};

use super::{parse_duration, run::WatchArgs};
use crate::{
    diagnose::{self, Recorder, Recording},
    pipeline::{WatchOptions, watch},
    sinks::Sink,
    store::{Slice, Store},
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

/// A metrics store the agents export to, read instead of watching.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Read the agents' exported series from this Prometheus-compatible store
    /// (Prometheus, VictoriaMetrics, Thanos, Mimir: the base URL its
    /// `/api/v1/query_range` hangs off) instead of watching this host.
    #[arg(long, value_name = "URL", conflicts_with_all = ["input", "duration"])]
    prometheus: Option<String>,
    /// Start of the range read from the store: a duration before --until
    /// (`6h`), or a time (`2026-12-07T21:00:00Z`).
    #[arg(long, default_value = "1h", value_parser = parse_instant, requires = "prometheus")]
    since: Instant,
    /// End of the range read from the store: `now`, a duration ago, or a time.
    #[arg(long, default_value = "now", value_parser = parse_instant, requires = "prometheus")]
    until: Instant,
    /// Label matchers narrowing the servers, requests and processes read
    /// (`k8s.namespace.name="chat"`, or `k8s_namespace_name="chat"` in a
    /// scraped store); the GPUs they use follow.
    #[arg(long = "match", value_name = "MATCHERS", requires = "prometheus")]
    matchers: Option<String>,
    /// The length of each interval the rules compare, at least 1 s [default: the range / 240].
    #[arg(long, value_parser = parse_duration, requires = "prometheus")]
    step: Option<Duration>,
    /// How long one query may take.
    #[arg(long, default_value = "60s", value_parser = parse_duration, requires = "prometheus")]
    query_timeout: Duration,
}

/// A point in time given on the command line: `now`, a duration before now or before --until, or RFC 3339.
#[derive(Clone, Copy, Debug)]
pub enum Instant {
    Now,
    Before(Duration),
    At(SystemTime),
}

impl Instant {
    /// The time it names: a duration counts back from `before`.
    fn resolve(self, now: SystemTime, before: SystemTime) -> SystemTime {
        match self {
            Self::Now => now,
            Self::Before(d) => before.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH),
            Self::At(t) => t,
        }
    }
}

fn parse_instant(s: &str) -> Result<Instant, String> {
    if s == "now" {
        return Ok(Instant::Now);
    }
    if let Ok(before) = parse_duration(s) {
        return Ok(Instant::Before(before));
    }
    humantime::parse_rfc3339_weak(s)
        .map(Instant::At)
        .map_err(|_| format!("{s:?} is neither `now`, a duration (`6h`) nor a time (`2026-12-07T21:00:00Z`)"))
}

impl StoreArgs {
    /// The store and the slice of it the flags name; `None` without --prometheus.
    pub fn slice(&self) -> Result<Option<(Store, Slice)>> {
        let Some(url) = &self.prometheus else {
            return Ok(None);
        };
        let now = SystemTime::now();
        let until = self.until.resolve(now, now);
        let since = self.since.resolve(now, until);
        let slice = Slice::new(since, until, self.step, self.matchers.clone())?;
        Ok(Some((Store::new(url, self.query_timeout), slice)))
    }
}

#[derive(clap::Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    from: RecordingArgs,
    #[command(flatten)]
    store: StoreArgs,
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
    let diagnosis = match args.store.slice()? {
        Some((store, slice)) => {
            store
                .diagnose(&slice)
                .with_context(|| format!("reading {}", store.url()))?
                .diagnosis
        }
        None => diagnose::diagnose(&args.from.recording()?),
    };
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
