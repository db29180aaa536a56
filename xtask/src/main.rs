//! `cargo xtask`: the project's build, check, fixture and test tasks, in Rust so
//! that they run the same on a laptop and in CI.

mod dist;
mod ebpf;
mod fixtures;
mod fuzz;
mod image;
mod kernels;
mod llama;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "inferscope's development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Compile ebpf-programs/*.bpf.c into the committed objects under ebpf-programs/obj.
    Ebpf {
        /// Rebuild into a scratch folder and fail if any committed object differs.
        #[arg(long)]
        check: bool,
    },
    /// Fetch the real GPU runtime libraries the tests run against into .cache/fixtures.
    Fixtures,
    /// Fetch fixtures, build the agent and its image, and run every test (the kernel ones need root).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build in release mode and run the benchmarks, printing ratios.
    Bench {
        /// Only these benchmarks: launch, socket, server, decode, profile, startup (default: all);
        /// `outage [MINUTES]` and `soak [MINUTES]` run only when named.
        only: Vec<String>,
    },
    /// Fuzz every decoder of outside data (or those named) for RUNS inputs each,
    /// with cargo-fuzz (installed into .cache); prints a table of runs and crashes.
    Fuzz {
        /// Inputs per target.
        #[arg(long, default_value_t = 10_000_000)]
        runs: u64,
        /// Only these targets (file names under fuzz/fuzz_targets).
        targets: Vec<String>,
    },
    /// The release tarball under target/dist: the binary built for glibc 2.28
    /// with cargo-zigbuild (from PyPI), docs and manifests, its SHA-256 and SBOM.
    Dist,
    /// The DaemonSet's OCI image under target/image, built with buildah from the
    /// tarball's binary: no daemon, no registry, no base image.
    Image {
        /// Build it twice and fail if the digest or the archive's bytes differ.
        #[arg(long)]
        reproduce: bool,
    },
    /// Boot Debian's 6.1 and 6.12 kernels under QEMU and run the agent's tests
    /// there and on this host's kernel; print one table (needs root).
    Kernels {
        /// Only the kernels whose release contains this (repeatable), e.g. `6.1.0`.
        #[arg(long)]
        only: Vec<String>,
    },
}

fn main() -> Result<()> {
    let root = workspace_root();
    match Cli::parse().task {
        Task::Ebpf { check } => ebpf::build(&root, check),
        Task::Fixtures => fixtures::fetch(&root).map(|_| ()),
        Task::Test { args } => test(&root, &args),
        Task::Bench { only } => bench(&root, &only),
        Task::Fuzz { runs, targets } => fuzz::fuzz(&root, runs, &targets),
        Task::Dist => dist::dist(&root).map(|_| ()),
        Task::Image { reproduce } => image::image(&root, &dist::dist(&root)?, reproduce).map(|_| ()),
        Task::Kernels { only } => kernels::matrix(&root, &fixtures::fetch(&root)?, &only),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn test(root: &Path, args: &[String]) -> Result<()> {
    let fixtures = fixtures::fetch(root)?;
    // The image and release tests check what users install: the tarball's
    // bill of materials, the image.
    let dist = dist::dist(root)?;
    let image = image::image(root, &dist, false)?;
    // Integration tests run the real binary; build it first so they find it.
    let agent = build_agent(root)?;
    run(Command::new("cargo")
        .current_dir(root)
        .args(["test", "--workspace"])
        .args(args)
        .env("INFERSCOPE_BIN", agent)
        .env("INFERSCOPE_FIXTURES", fixtures)
        .env("INFERSCOPE_IMAGE", image)
        .env("INFERSCOPE_SBOM", dist.sbom))
}

/// Builds the agent (debug) for the integration tests; returns the binary.
pub(crate) fn build_agent(root: &Path) -> Result<PathBuf> {
    run(Command::new("cargo")
        .current_dir(root)
        .args(["build", "--package", "inferscope"]))?;
    Ok(root.join("target/debug/inferscope"))
}

fn bench(root: &Path, only: &[String]) -> Result<()> {
    let fixtures = fixtures::fetch(root)?;
    fixtures::fetch_nccl(&fixtures)?;
    run(Command::new("cargo")
        .current_dir(root)
        .args(["build", "--release", "--package", "inferscope"]))?;
    run(Command::new("cargo")
        .current_dir(root)
        .args(["run", "--release", "--package", "inferscope-benches", "--"])
        .args(only)
        .env("INFERSCOPE_FIXTURES", fixtures)
        .env("INFERSCOPE_AGENT", root.join("target/release/inferscope")))
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
