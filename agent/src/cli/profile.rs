//! `inferscope profile`: sample the stacks of GPU processes and servers for a
//! while, then write a flame graph, folded stacks or pprof; or continuously,
//! one pprof file per period.

use std::{
    cell::RefCell,
    fs::File,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    rc::Rc,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};

use super::{parse_duration, run::WatchArgs};
use crate::{
    pipeline::{WatchOptions, watch},
    profile::{
        Continuous, DEFAULT_GPU_CALL_STACK_EVERY, Folder, ProfileKind, Profiler, StackProfile, pprof,
        write_flamegraph, write_folded,
    },
    sinks::Sink,
};

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
    /// With --every: how many of the newest periods' files are kept.
    #[arg(long, default_value_t = 10, requires = "every")]
    keep: usize,
    /// 1 in how many GPU kernel launches, graph launches and synchronisations
    /// (at random) records where it was called from: profiles of
    /// launches and of time waited, beside the CPU's (`NAME.gpu-launches.EXT`,
    /// `NAME.gpu-sync-wait.EXT`); 0: none.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_GPU_CALL_STACK_EVERY)]
    gpu_call_stacks: u32,
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
    fn of(path: &Path) -> Self {
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
    crate::probes::host::require_privileges()?;
    let profiler = Profiler::start(args.frequency, args.watch.pids()).context("starting CPU sampling")?;
    let profiler = Rc::new(RefCell::new(profiler));
    let gpu_calls = if args.gpu_call_stacks > 0 {
        format!(
            ", and 1 in {} GPU launches and synchronisations",
            args.gpu_call_stacks
        )
    } else {
        String::new()
    };
    // Continuously, a sink that writes each period; else the profile is written at the end.
    let (duration, sinks): (_, Vec<Box<dyn Sink>>) = match args.every {
        Some(every) => {
            std::fs::create_dir_all(&args.output)
                .with_context(|| format!("creating {}", args.output.display()))?;
            eprintln!(
                "inferscope: sampling GPU processes and servers at {} Hz{gpu_calls}, profiles every {} into {} (Ctrl-C to stop)",
                args.frequency,
                humantime::format_duration(every),
                args.output.display()
            );
            let folder = Folder::new(args.output.clone(), args.keep);
            let continuous = Continuous::new(profiler.clone(), every, vec![Box::new(folder)]);
            (None, vec![Box::new(continuous)])
        }
        None => {
            eprintln!(
                "inferscope: sampling GPU processes and servers at {} Hz{gpu_calls} for {} (Ctrl-C to stop early)",
                args.frequency,
                humantime::format_duration(args.duration)
            );
            (Some(args.duration), Vec::new())
        }
    };
    let options = WatchOptions {
        duration,
        profiler: Some(profiler.clone()),
        gpu_call_stack_every: args.gpu_call_stacks,
        ..WatchOptions::default()
    };
    watch(&args.watch.config(), options, |_| Ok(sinks))?;
    if args.every.is_some() {
        return Ok(ExitCode::SUCCESS);
    }
    let profiler = profiler.borrow();
    let (start, sampled_for) = profiler.sampled();
    let profiles = profiler.profiles().context("reading the sampled stacks")?;
    let format = args.format.unwrap_or_else(|| ProfileFormat::of(&args.output));
    for profile in &profiles {
        let path = beside(&args.output, profile.kind);
        if profile.kind != ProfileKind::Cpu && profile.stacks.is_empty() {
            eprintln!(
                "inferscope: no {} sampled; {} not written",
                profile.kind.sampled(),
                path.display()
            );
            continue;
        }
        write_profile(&path, format, profile, start, sampled_for)?;
        let total: u64 = profile.stacks.iter().map(|s| s.count).sum();
        eprintln!(
            "inferscope: wrote {} ({total} {} over {:.1} s, {} stacks)",
            path.display(),
            profile.kind.count_name(),
            sampled_for.as_secs_f64(),
            profile.stacks.len(),
        );
    }
    let lost: Vec<String> = profiler
        .losses()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(why, n)| format!("{n} {why}"))
        .collect();
    if !lost.is_empty() {
        eprintln!("inferscope: samples without a stack: {}", lost.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a profile of `kind` goes: `path` for the CPU's, else its suffix
/// before the extension (`profile.gpu-launches.svg`, `p.gpu-launches.pb.gz`).
fn beside(path: &Path, kind: ProfileKind) -> PathBuf {
    let suffix = kind.file_suffix();
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        // A name that is not UTF-8: the suffix goes at its end.
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        return path.with_file_name(name);
    };
    let extension = [".pb.gz", ".pprof", ".svg", ".folded"]
        .into_iter()
        .find(|e| name.len() > e.len() && name.ends_with(e))
        .unwrap_or("");
    let stem = &name[..name.len() - extension.len()];
    path.with_file_name(format!("{stem}{suffix}{extension}"))
}

fn write_profile(
    path: &Path,
    format: ProfileFormat,
    profile: &StackProfile,
    start: SystemTime,
    sampled_for: Duration,
) -> Result<()> {
    let mut out = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    match format {
        ProfileFormat::Svg => write_flamegraph(&mut out, profile)?,
        ProfileFormat::Folded => write_folded(&mut out, &profile.stacks)?,
        ProfileFormat::Pprof => pprof::write(&mut out, &pprof::profile(profile, start, sampled_for))?,
    }
    out.flush().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt as _;

    use super::*;

    #[test]
    fn gpu_call_profiles_are_written_beside_the_cpu_profile() {
        let at = |p: &str, kind| beside(Path::new(p), kind);
        assert_eq!(at("out/p.svg", ProfileKind::Cpu), Path::new("out/p.svg"));
        assert_eq!(
            at("out/p.svg", ProfileKind::GpuLaunches),
            Path::new("out/p.gpu-launches.svg")
        );
        assert_eq!(
            at("p.pb.gz", ProfileKind::GpuSyncWait),
            Path::new("p.gpu-sync-wait.pb.gz")
        );
        assert_eq!(
            at("profile", ProfileKind::GpuLaunches),
            Path::new("profile.gpu-launches")
        );
        let odd = std::ffi::OsStr::from_bytes(b"p\xff.svg");
        let mut want = odd.to_os_string();
        want.push(".gpu-launches");
        assert_eq!(beside(Path::new(odd), ProfileKind::GpuLaunches), Path::new(&want));
    }
}
