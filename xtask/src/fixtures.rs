//! Real GPU runtime libraries for the tests, fetched once into `.cache/fixtures`.
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

/// Returns the fixtures folder, fetching what is missing.
pub fn fetch(root: &Path) -> Result<PathBuf> {
    let dir = root.join(".cache/fixtures");
    let cudart = dir.join("nvidia/cuda_runtime/lib/libcudart.so.12");
    if !cudart.exists() {
        let wheels = dir.join("wheels");
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
            .arg(&wheels)
            .arg(CUDA_RUNTIME_WHEEL))
        .context("downloading the CUDA runtime wheel from PyPI")?;
        for wheel in std::fs::read_dir(&wheels)? {
            run(Command::new("python3")
                .args(["-m", "zipfile", "-e"])
                .arg(wheel?.path())
                .arg(&dir))?;
        }
        anyhow::ensure!(
            cudart.exists(),
            "{} missing after unpacking the wheel",
            cudart.display()
        );
    }
    Ok(dir)
}
