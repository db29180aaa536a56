//! What `inferscope profile` costs the process it samples: a CPU-bound loop's
//! speed with no sampling and with sampling at 49 and 99 Hz, in interleaved
//! rounds; the sampling program's own run time per sample (BPF statistics);
//! and how fast sampled addresses are named, the first time (files parsed)
//! and again (cached).

use std::{
    collections::BTreeMap,
    hint::black_box,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use inferscope::{
    probes::{ProfileProbes, StackSample},
    profile::{Symbolizer, symbolize},
};

use crate::{median, newest_program};

const ROUNDS: usize = 7;
const ROUND: Duration = Duration::from_secs(2);

/// Units of a fixed CPU-bound computation done in one round.
#[inline(never)]
fn work(for_how_long: Duration) -> f64 {
    let start = Instant::now();
    let mut units = 0u64;
    let mut x = 1u64;
    while start.elapsed() < for_how_long {
        for i in 0..100_000u64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        units += 1;
    }
    black_box(x);
    units as f64 / start.elapsed().as_secs_f64()
}

fn sampled(hz: u64) -> Result<ProfileProbes> {
    let mut probes = ProfileProbes::start(hz)?;
    probes.sample(std::process::id())?;
    Ok(probes)
}

pub fn run() -> Result<()> {
    inferscope::probes::raise_memlock_limit();
    let mut rates: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for hz in [0, 49, 99] {
            let probes = if hz > 0 { Some(sampled(hz)?) } else { None };
            rates.entry(hz).or_default().push(work(ROUND));
            drop(probes);
        }
    }
    let rate = |hz| median(rates[&hz].clone());
    println!(
        "CPU profile's cost to a CPU-bound process (the loop's speed, {ROUNDS} interleaved rounds of {} s):",
        ROUND.as_secs()
    );
    for hz in [49, 99] {
        let target = if hz == 49 { " (target <= 1 %)" } else { "" };
        println!(
            "  {hz:>2} Hz: {:.2} % slower{target}",
            100.0 * (1.0 - rate(hz) / rate(0))
        );
    }

    // The program's own time per sample, and what naming the samples costs.
    let (ns_per_run, runs_per_s, probes) = {
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF statistics")?;
        let probes = sampled(99)?;
        let start = Instant::now();
        work(ROUND);
        let info = newest_program(inferscope::probes::compat::ON_CPU_SAMPLE.name)?;
        let runs = info.run_count() as f64;
        (
            info.run_time().as_nanos() as f64 / runs.max(1.0),
            runs / start.elapsed().as_secs_f64(),
            probes,
        )
    };
    println!(
        "  the sampling program: {ns_per_run:.0} ns per sample, {runs_per_s:.0} samples/s over all CPUs at 99 Hz = {:.4} % of one CPU",
        ns_per_run * runs_per_s / 1e7
    );
    drop(probes);
    // Naming: 10 000 addresses across this program's own code (symbols and DWARF).
    let samples = vec![StackSample {
        pid: std::process::id(),
        user: own_code_addresses(10_000)?,
        count: 1,
        ..StackSample::default()
    }];
    let addresses = samples[0].user.len();
    let comms = BTreeMap::new();
    let symbolizer = Symbolizer::new();
    let timed = |what: &str| {
        let start = Instant::now();
        let stacks = symbolize(&symbolizer, &samples, &comms, &Default::default());
        let secs = start.elapsed().as_secs_f64();
        let named = stacks
            .iter()
            .flat_map(|s| &s.frames)
            .filter(|f| *f != "[unknown]")
            .count();
        println!(
            "  naming {addresses} addresses ({what}): {:.1} ms, {:.0} addresses/s ({named} named)",
            secs * 1e3,
            addresses as f64 / secs
        );
    };
    timed("first time: files parsed");
    timed("again: cached");
    Ok(())
}

/// `n` addresses spread evenly over this executable's code mapping.
fn own_code_addresses(n: u64) -> Result<Vec<u64>> {
    let exe = std::env::current_exe()?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let (start, end) = maps
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|p| p.contains('x')))
        .filter(|l| l.ends_with(exe.to_str().unwrap_or_default()))
        .find_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
        })
        .context("this executable's code mapping")?;
    Ok((0..n).map(|i| start + i * ((end - start) / n)).collect())
}
