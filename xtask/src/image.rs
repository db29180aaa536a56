//! `cargo xtask image`: the DaemonSet's OCI image, built with Debian's buildah:
//! no container daemon, no registry, no base image to pull. The image holds the
//! tarball's binary and the C library files it loads (this machine's, from
//! Debian's packages), the mount points a runtime needs, nothing else: no shell,
//! no package manager.
//!
//! Reproducible: every file and the image's dates are the commit's, buildah
//! writes no build-host label, and the archive is a sorted tar of the OCI
//! layout. `--reproduce` builds it twice and fails if a byte differs.
//! The archive holds both an OCI index and Docker's `manifest.json`, so
//! `podman load` and `docker load` (any version) both take it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};

use crate::{
    dist::{self, Dist, reproducible_tar, sha256},
    kernels::shared_libraries,
};

/// What the container runs when the manifest gives no args.
const DEFAULT_CMD: [&str; 5] = ["run", "--output", "none", "--prometheus-listen", "0.0.0.0:9464"];
/// Where a runtime mounts /proc, sysfs and /dev (an image from scratch has none).
const MOUNT_POINTS: [&str; 3] = ["proc", "sys", "dev"];

/// Builds the image from the tarball's binary; returns its archive.
pub fn image(root: &Path, dist: &Dist, reproduce: bool) -> Result<PathBuf> {
    let number = dist
        .version
        .split_whitespace()
        .nth(1)
        .context("no version number")?
        .to_string();
    let tag = format!("inferscope:{number}");
    let epoch = dist::commit_time(root)?;
    let out = root.join("target/image");
    let built = build(&dist.binary, &tag, epoch, &out.join("build"))?;
    let archive = out.join(format!("inferscope-{number}.oci.tar"));
    fs::rename(&built.archive, &archive)?;
    if reproduce {
        let again = build(&dist.binary, &tag, epoch, &out.join("again"))?;
        let (first, second) = (sha256(&archive)?, sha256(&again.archive)?);
        ensure!(
            again.digest == built.digest && first == second,
            "the image is not reproducible: digests {} and {}, archives {first} and {second}",
            built.digest,
            again.digest
        );
        fs::remove_dir_all(out.join("again"))?;
        println!("built twice: the same digest and the same archive bytes");
    }
    loadable(&archive)?;
    println!(
        "{}: {tag}, {:.1} MB, image digest {}, archive sha256 {}",
        archive.display(),
        fs::metadata(&archive)?.len() as f64 / 1e6,
        built.digest,
        sha256(&archive)?
    );
    Ok(archive)
}

struct Built {
    /// The manifest's digest: what a registry names the image by.
    digest: String,
    archive: PathBuf,
}

fn build(binary: &Path, tag: &str, epoch: u64, work: &Path) -> Result<Built> {
    let _ = fs::remove_dir_all(work);
    let rootfs = work.join("rootfs");
    stage_rootfs(binary, &rootfs)?;
    let container = buildah(&["from", "scratch"])?;
    let committed = commit(&container, &rootfs, tag, epoch, &work.join("oci"));
    let removed = buildah(&["rm", &container]);
    committed?;
    removed?;
    let oci = work.join("oci");
    let digest = write_docker_manifest(&oci, tag)?;
    let archive = work.join("image.oci.tar");
    reproducible_tar(
        &oci,
        &["blobs", "index.json", "manifest.json", "oci-layout"],
        &archive,
        epoch,
        false,
    )?;
    Ok(Built { digest, archive })
}

/// The binary at /usr/local/bin, each library it loads at the path `ldd` finds
/// it at here (the loader's own path included), and the mount points.
fn stage_rootfs(binary: &Path, rootfs: &Path) -> Result<()> {
    let bin = rootfs.join("usr/local/bin");
    fs::create_dir_all(&bin)?;
    fs::copy(binary, bin.join("inferscope"))?;
    for lib in shared_libraries(&[binary.to_path_buf()])? {
        let to = rootfs.join(lib.strip_prefix("/")?);
        fs::create_dir_all(to.parent().context("library at /")?)?;
        fs::copy(&lib, &to).with_context(|| format!("copying {}", lib.display()))?;
    }
    for dir in MOUNT_POINTS {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    Ok(())
}

fn commit(container: &str, rootfs: &Path, tag: &str, epoch: u64, oci: &Path) -> Result<()> {
    let rootfs = format!("{}/", rootfs.display());
    buildah(&["copy", container, &rootfs, "/"])?;
    let entrypoint = json!(["/usr/local/bin/inferscope"]).to_string();
    let cmd = json!(DEFAULT_CMD).to_string();
    let version = tag.split(':').nth(1).unwrap_or_default();
    buildah(&[
        "config",
        "--os",
        "linux",
        "--arch",
        "amd64",
        "--entrypoint",
        &entrypoint,
        "--cmd",
        &cmd,
        "--label",
        &format!("org.opencontainers.image.version={version}"),
        "--label",
        "org.opencontainers.image.title=inferscope",
        "--label",
        "org.opencontainers.image.licenses=Apache-2.0",
        container,
    ])?;
    buildah(&[
        "commit",
        "--quiet",
        "--format",
        "oci",
        "--timestamp",
        &epoch.to_string(),
        "--identity-label=false",
        "--disable-compression=false",
        container,
        &format!("oci:{}:{tag}", oci.display()),
    ])?;
    Ok(())
}

fn buildah(args: &[&str]) -> Result<String> {
    let out = Command::new("buildah")
        .args(args)
        .output()
        .context("running buildah (Debian's package `buildah`)")?;
    if !out.status.success() {
        bail!(
            "buildah {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Adds Docker's `manifest.json` beside the OCI index (what `docker load`
/// before 25 reads); returns the image manifest's digest.
fn write_docker_manifest(oci: &Path, tag: &str) -> Result<String> {
    let blob = |digest: &str| -> Result<PathBuf> {
        let hex = digest.strip_prefix("sha256:").context("not a sha256 digest")?;
        Ok(PathBuf::from("blobs/sha256").join(hex))
    };
    let index: Value = serde_json::from_slice(&fs::read(oci.join("index.json"))?)?;
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .context("no manifest in the OCI index")?
        .to_string();
    let manifest: Value = serde_json::from_slice(&fs::read(oci.join(blob(&digest)?))?)?;
    let config = manifest["config"]["digest"].as_str().context("no config")?;
    let layers = manifest["layers"]
        .as_array()
        .context("no layers")?
        .iter()
        .map(|l| blob(l["digest"].as_str().context("a layer without a digest")?))
        .collect::<Result<Vec<_>>>()?;
    let docker = json!([{"Config": blob(config)?, "RepoTags": [tag], "Layers": layers}]);
    fs::write(oci.join("manifest.json"), docker.to_string())?;
    Ok(digest)
}

/// Reads the archive back as podman and docker would, through both of its
/// manifests (buildah uses the same image library as podman), then forgets it.
fn loadable(archive: &Path) -> Result<()> {
    for transport in ["oci-archive", "docker-archive"] {
        let id = buildah(&["pull", "--quiet", &format!("{transport}:{}", archive.display())])
            .with_context(|| format!("the archive does not load as {transport}"))?;
        buildah(&["rmi", &id])?;
    }
    Ok(())
}
