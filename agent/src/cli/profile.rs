//! `inferscope profile`: sample the stacks of GPU processes and servers for a
//! while, then write a flame graph, folded stacks or pprof; or continuously,
//! one pprof file per period.

use std::{
    cell::RefCell,
    fs::File,
    io::{BufWriter, Write as _},
    path::PathBuf,
    process::ExitCode,
    rc::Rc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};

use super::{parse_duration, run::WatchArgs};
use crate::profile::{Continuous, Profiler, Targets, pprof, write_flamegraph, write_folded};

#[derive(clap::Args)]
pub struct ProfileArgs {
    /// How long to sample (Ctrl-C ends it early and writes what was sampled).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Samples per second per CPU (a prime, so that sampling does not beat with periodic work).
    #[arg(long, default_value_t = 49, value_parser = clap::value_parser!(u64).range(1..))]
    frequency: u64,
    /// Where to write the profile; with --every, the folder for the periods' files.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "PATH",
        default_value = "inferscope-profile.svg"
    )]
    output: PathBuf,
    /// `svg`: a flame graph; `folded`: one `frame;frame count` line per stack;
    /// `pprof`: gzipped profile.proto [default: from the output's extension:
    /// `.svg`, `.pb.gz` or `.pprof`, else folded].
    #[arg(long, value_enum)]
    format: Option<ProfileFormat>,
    /// Profile continuously until stopped: a pprof file per period in the
    /// output folder (`inferscope-TIME.pb.gz`).
    #[arg(long, value_name = "PERIOD", value_parser = parse_duration, conflicts_with_all = ["duration", "format"])]
    every: Option<Duration>,
    /// With --every: how many of the newest files are kept.
    #[arg(long, default_value_t = 10, requires = "every")]
    keep: usize,
    #[command(flatten)]
    watch: WatchArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ProfileFormat {
    Svg,
    Folded,
    Pprof,
}

impl ProfileFormat {
    fn of(path: &std::path::Path) -> Self {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".svg") {
            Self::Svg
        } else if name.ends_with(".pb.gz") || name.ends_with(".pprof") {
            Self::Pprof
        } else {
            Self::Folded
        }
    }
}

pub fn profile(args: ProfileArgs) -> Result<ExitCode> {
    super::check::require_privileges()?;
    let profiler = Profiler::start(args.frequency, args.watch.pids()).context("starting CPU sampling")?;
    let profiler = Rc::new(RefCell::new(profiler));
    if let Some(every) = args.every {
        std::fs::create_dir_all(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?;
        eprintln!(
            "inferscope: sampling GPU processes and servers at {} Hz, a profile every {} into {} (Ctrl-C to stop)",
            args.frequency,
            humantime::format_duration(every),
            args.output.display()
        );
        let continuous = Continuous::new(profiler, args.output.clone(), every, args.keep, args.frequency);
        super::run::watch(&args.watch, None, None, |_| Ok(vec![Box::new(continuous)]))?;
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "inferscope: sampling GPU processes and servers at {} Hz for {} (Ctrl-C to stop early)",
        args.frequency,
        humantime::format_duration(args.duration)
    );
    let (start, started) = (SystemTime::now(), Instant::now());
    let targets = Targets(profiler.clone());
    super::run::watch(&args.watch, Some(args.duration), None, |_| {
        Ok(vec![Box::new(targets)])
    })?;
    let sampled_for = started.elapsed();
    let profiler = profiler.borrow();
    let stacks = profiler.stacks().context("reading the sampled stacks")?;
    let samples: u64 = stacks.iter().map(|s| s.count).sum();
    let mut out = BufWriter::new(
        File::create(&args.output).with_context(|| format!("creating {}", args.output.display()))?,
    );
    match args.format.unwrap_or_else(|| ProfileFormat::of(&args.output)) {
        ProfileFormat::Svg => {
            write_flamegraph(&mut out, &stacks, "inferscope profile: GPU processes and servers")?
        }
        ProfileFormat::Folded => write_folded(&mut out, &stacks)?,
        ProfileFormat::Pprof => pprof::write(
            &mut out,
            &pprof::profile(&stacks, args.frequency, start, sampled_for),
        )?,
    }
    out.flush()?;
    let lost: Vec<String> = profiler
        .losses()?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(why, n)| format!("{n} {why}"))
        .collect();
    eprintln!(
        "inferscope: wrote {} ({samples} samples over {:.1} s, {} stacks{})",
        args.output.display(),
        sampled_for.as_secs_f64(),
        stacks.len(),
        if lost.is_empty() {
            String::new()
        } else {
            format!("; without a stack: {}", lost.join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}
