//! What the tests run against, fetched once into `.cache/fixtures`: real GPU
//! runtime libraries, a Python venv with the ground-truth servers' frameworks,
//! and the telemetry receivers export is tested against.
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
/// The venv's packages, pinned: the ground-truth servers' frameworks
/// (tests/servers); rotel, a Rust OTLP collector (gRPC and HTTP receivers)
/// shipped as a Python wheel; and Helm v4 as a library (helm-python-sdk: no
/// helm binary) with PyYAML, for the chart check (tests/deploy); the official
/// OpenAI and Anthropic clients, which the Responses and Messages API tests
/// stream through (tests/clients); CycloneDX's own library, whose schema
/// validator checks the release's bill of materials; protoc and protobuf
/// (grpcio-tools), with which the profile receivers decode what they get from
/// the published definitions (tests/receivers); the official MCP SDK, the
/// assistant's side of `inferscope mcp` (tests/clients).
const SERVER_PACKAGES: [&str; 11] = [
    "starlette==0.49.1",
    "uvicorn==0.38.0",
    "grpcio==1.76.0",
    "rotel==0.0.1a15",
    "helm-python-sdk==0.2.2",
    "PyYAML==6.0.3",
    "openai==3.51.0",
    "anthropic==2.10.0",
    "cyclonedx-python-lib[json-validation]==11.12.0",
    "grpcio-tools==1.76.0",
    "mcp==2.3.0",
];
/// VictoriaMetrics from Debian trixie (bookworm has none): ingests OTLP/HTTP and
/// answers PromQL. Runs on bookworm once unpacked; pinned by digest.
const VICTORIA_METRICS_DEB: (&str, &str) = (
    "http://deb.debian.org/debian/pool/main/v/victoriametrics/victoria-metrics_1.112.0+ds1-2_amd64.deb",
    "1d3717f1a8ab5bf690271095dd286730f6fb0761cc8c09c0fc8f529c9838f346",
);
/// Debian's Prometheus, for `promtool` (checks the exposition format and alert rules).
const PROMETHEUS_PACKAGE: &str = "prometheus";
/// pprof's sources, for its published `profile.proto` (the profile receivers' decoder).
const PPROF_PACKAGE: &str = "golang-github-google-pprof-dev";
/// The OpenTelemetry profiles protocol's published definitions, as the
/// opentelemetry-proto crate the agent builds with vendors them from the
/// opentelemetry-proto repository (the OTLP profiles receiver's decoder).
const OTLP_PROFILES_PROTOS: [&str; 4] = [
    "opentelemetry/proto/common/v1/common.proto",
    "opentelemetry/proto/resource/v1/resource.proto",
    "opentelemetry/proto/profiles/v1development/profiles.proto",
    "opentelemetry/proto/collector/profiles/v1development/profiles_service.proto",
];

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
        .map(|p| p.split(['[', '=']).next().unwrap())
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
    let rotel = Command::new(&python)
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()?;
    anyhow::ensure!(rotel.status.success(), "rotel is not importable from the venv");
    std::fs::write(dir.join("rotel.path"), String::from_utf8(rotel.stdout)?.trim())?;
    fetch_receivers(&dir)?;
    copy_otlp_profiles_protos(root, &dir.join("otlp-proto"))
        .context("copying the OTLP profiles definitions")?;
    fetch_npm(root, &dir)?;
    let (server, model) = crate::llama::fetch(&python)?;
    std::fs::write(
        dir.join("llama-server.path"),
        server.as_os_str().as_encoded_bytes(),
    )?;
    std::fs::write(dir.join("smollm2.path"), model.as_os_str().as_encoded_bytes())?;
    Ok(dir)
}

/// VictoriaMetrics, promtool and pprof's profile.proto, unpacked from their Debian packages into the fixtures.
fn fetch_receivers(dir: &Path) -> Result<()> {
    let victoria = dir.join("victoria-metrics/usr/bin/victoria-metrics");
    if !victoria.exists() {
        let (url, sha256) = VICTORIA_METRICS_DEB;
        let deb = dir.join("victoria-metrics.deb");
        run(Command::new("curl").args(["-fsSL", "-o"]).arg(&deb).arg(url))
            .context("downloading VictoriaMetrics from Debian")?;
        let sum = Command::new("sha256sum").arg(&deb).output()?;
        anyhow::ensure!(
            String::from_utf8_lossy(&sum.stdout).starts_with(sha256),
            "{url}: unexpected SHA-256 digest"
        );
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("victoria-metrics")))?;
        std::fs::remove_file(&deb)?;
    }
    let promtool = dir.join("prometheus/usr/bin/promtool");
    if !promtool.exists() {
        unpack_debian_package(PROMETHEUS_PACKAGE, dir, &dir.join("prometheus"))
            .context("fetching Debian's prometheus package (for promtool)")?;
    }
    let profile_proto = dir.join("pprof/usr/share/gocode/src/github.com/google/pprof/proto/profile.proto");
    if !profile_proto.exists() {
        unpack_debian_package(PPROF_PACKAGE, dir, &dir.join("pprof"))
            .context("fetching pprof's profile.proto from Debian")?;
        anyhow::ensure!(
            profile_proto.exists(),
            "{} missing after unpacking {PPROF_PACKAGE}",
            profile_proto.display()
        );
    }
    Ok(())
}

/// [`OTLP_PROFILES_PROTOS`] from the locked opentelemetry-proto crate's
/// sources into `into`, at the same paths (their imports name them so).
fn copy_otlp_profiles_protos(root: &Path, into: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let metadata = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root)
        .output()?;
    anyhow::ensure!(
        metadata.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&metadata.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout)?;
    let manifest = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "opentelemetry-proto")
        .and_then(|p| p["manifest_path"].as_str())
        .context("opentelemetry-proto is not among the workspace's packages")?;
    let protos = Path::new(manifest)
        .parent()
        .context("a manifest path without a folder")?
        .join("src/proto/opentelemetry-proto");
    for proto in OTLP_PROFILES_PROTOS {
        let to = into.join(proto);
        std::fs::create_dir_all(to.parent().context("a proto path without a folder")?)?;
        std::fs::copy(protos.join(proto), &to).with_context(|| format!("copying {proto}"))?;
    }
    Ok(())
}

/// Downloads Debian's `package` (as apt verifies it) and unpacks it into `into`.
fn unpack_debian_package(package: &str, dir: &Path, into: &Path) -> Result<()> {
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    // A fresh machine's package lists may be empty.
    let known = Command::new("apt-cache").args(["show", package]).output()?;
    if !known.status.success() {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    run(Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(&debs))?;
    for deb in std::fs::read_dir(&debs)? {
        run(Command::new("dpkg-deb").arg("-x").arg(deb?.path()).arg(into))?;
    }
    std::fs::remove_dir_all(&debs)?;
    Ok(())
}

/// The Kubernetes schema validators (tests/deploy/package.json, locked), into `fixtures/npm`.
fn fetch_npm(root: &Path, dir: &Path) -> Result<()> {
    let npm = dir.join("npm");
    let lock = root.join("tests/deploy/package-lock.json");
    let installed = npm.join("package-lock.json");
    if std::fs::read(&installed).ok() != Some(std::fs::read(&lock)?) {
        std::fs::create_dir_all(&npm)?;
        std::fs::copy(root.join("tests/deploy/package.json"), npm.join("package.json"))?;
        std::fs::copy(&lock, &installed)?;
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&npm))
        .context("installing the Kubernetes schema validators from npm")?;
    }
    Ok(())
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
