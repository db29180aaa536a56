//! `cargo xtask fuzz`: builds the cargo-fuzz targets under `fuzz/` with
//! coverage instrumentation (stable toolchain, no sanitizer: the decoders are
//! safe Rust, and a panic or overflow is what we look for) and runs each for a
//! number of inputs, one after another, printing a table of what ran.
//! Corpora persist under `.cache/fuzz/` so later runs start where earlier ones
//! stopped; a crashing input is left under `fuzz/artifacts/<target>/` to be
//! turned into a regression test.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::run;

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// libFuzzer's exit code when it found an input that crashes, hangs or leaks.
const FOUND: i32 = 77;

pub fn fuzz(root: &Path, runs: u64, only: &[String]) -> Result<()> {
    let cargo_fuzz = install_cargo_fuzz(root)?;
    let targets = targets(root, only)?;
    run(Command::new(&cargo_fuzz).current_dir(root).args([
        "fuzz",
        "build",
        "--sanitizer",
        "none",
        "--target-dir",
        "target/fuzz",
    ]))?;
    let bin = root.join("target/fuzz/x86_64-unknown-linux-gnu/release");
    let mut failed = Vec::new();
    let mut rows = Vec::new();
    for target in &targets {
        let corpus = root.join(".cache/fuzz/corpus").join(target);
        let artifacts = root.join("fuzz/artifacts").join(target);
        fs::create_dir_all(&corpus)?;
        fs::create_dir_all(&artifacts)?;
        seed(root, target, &corpus)?;
        let log = root.join(".cache/fuzz").join(format!("{target}.log"));
        let started = Instant::now();
        let status = Command::new(bin.join(target))
            .arg(&corpus)
            .arg(format!("-runs={runs}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .args([
                "-print_final_stats=1",
                "-timeout=10",
                "-rss_limit_mb=2048",
                "-close_fd_mask=1",
            ])
            .arg(format!("-error_exitcode={FOUND}"))
            .arg(format!("-timeout_exitcode={FOUND}"))
            .stderr(fs::File::create(&log)?)
            .status()
            .with_context(|| format!("running fuzz target {target}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let text = fs::read_to_string(&log).unwrap_or_default();
        let executed = final_stat(&text, "number_of_executed_units").unwrap_or(0);
        let corpus_files = fs::read_dir(&corpus)?.count();
        let outcome = match status.code() {
            Some(0) => "0 crashes",
            Some(FOUND) => "FOUND (crash, hang or leak)",
            _ => "did not finish",
        };
        println!(
            "fuzz {target}: {executed} inputs in {seconds:.0} s ({:.0}/s), corpus {corpus_files}, {outcome}",
            executed as f64 / seconds
        );
        rows.push((target.clone(), executed, seconds, corpus_files, outcome));
        if !status.success() {
            failed.push(format!(
                "{target} (log {}, input under {})",
                log.display(),
                artifacts.display()
            ));
        }
    }
    println!("\n| target | inputs | seconds | inputs/s | corpus | result |\n|---|---|---|---|---|---|");
    for (target, executed, seconds, corpus, outcome) in &rows {
        println!(
            "| {target} | {executed} | {seconds:.0} | {:.0} | {corpus} | {outcome} |",
            *executed as f64 / seconds
        );
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join("; "));
    }
    Ok(())
}

/// cargo-fuzz from crates.io, into `.cache` (pinned; built once).
fn install_cargo_fuzz(root: &Path) -> Result<PathBuf> {
    let prefix = root.join(".cache/cargo-fuzz");
    let bin = prefix.join("bin/cargo-fuzz");
    if !bin.exists() {
        run(Command::new("cargo")
            .args([
                "install",
                "--locked",
                "cargo-fuzz",
                "--version",
                CARGO_FUZZ_VERSION,
                "--root",
            ])
            .arg(&prefix))?;
    }
    Ok(bin)
}

/// The named targets, or every file under `fuzz/fuzz_targets`.
fn targets(root: &Path, only: &[String]) -> Result<Vec<String>> {
    let mut all: Vec<String> = fs::read_dir(root.join("fuzz/fuzz_targets"))?
        .filter_map(|e| Some(e.ok()?.path().file_stem()?.to_str()?.to_string()))
        .collect();
    all.sort();
    if only.is_empty() {
        return Ok(all);
    }
    if let Some(unknown) = only.iter().find(|t| !all.contains(t)) {
        bail!("no fuzz target {unknown}; there are: {}", all.join(", "));
    }
    Ok(only.to_vec())
}

/// Real inputs to start from where random bytes would take long to get
/// anywhere: for ELF reading, the committed eBPF objects (small real ELF files
/// with symbol tables).
fn seed(root: &Path, target: &str, corpus: &Path) -> Result<()> {
    if target != "elf_symbols" {
        return Ok(());
    }
    for entry in fs::read_dir(root.join("ebpf-programs/obj"))? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            fs::copy(&path, corpus.join(name))?;
        }
    }
    Ok(())
}

/// A `stat::NAME: VALUE` line of libFuzzer's final statistics.
fn final_stat(log: &str, name: &str) -> Option<u64> {
    let prefix = format!("stat::{name}:");
    log.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}
