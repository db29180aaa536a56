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
    os::unix::fs::PermissionsExt as _,
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
/// Beyond the binary's own: what the GPU management libraries it loads from
/// the host need. ROCm SMI is C++ (`ldd` of Debian's librocm-smi64-1 names
/// these two beside glibc); NVML needs glibc only.
const FOR_LOADED_LIBRARIES: [&str; 2] = ["libstdc++.so.6", "libgcc_s.so.1"];

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
    // A storage of its own: the user's images (podman's, buildah's) are not touched.
    let buildah = Buildah::private(&out.join("storage"))?;
    let built = build(&buildah, &dist.binary, &tag, epoch, &out.join("build"))?;
    let archive = out.join(format!("inferscope-{number}.oci.tar"));
    fs::rename(&built.archive, &archive)?;
    if reproduce {
        let again = build(&buildah, &dist.binary, &tag, epoch, &out.join("again"))?;
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
    loadable(&buildah, &archive)?;
    buildah.remove()?;
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

fn build(buildah: &Buildah, binary: &Path, tag: &str, epoch: u64, work: &Path) -> Result<Built> {
    let _ = fs::remove_dir_all(work);
    let rootfs = work.join("rootfs");
    stage_rootfs(binary, &rootfs)?;
    let container = buildah.run(&["from", "scratch"])?;
    let committed = commit(buildah, &container, &rootfs, tag, epoch, &work.join("oci"));
    let removed = buildah.run(&["rm", &container]);
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
/// it at here (the loader's own path included), those the host libraries it
/// loads need beside libc's, and the mount points; folders 0755 whatever the umask.
fn stage_rootfs(binary: &Path, rootfs: &Path) -> Result<()> {
    let bin = rootfs.join("usr/local/bin");
    fs::create_dir_all(&bin)?;
    fs::copy(binary, bin.join("inferscope"))?;
    let mut libraries = shared_libraries(&[binary.to_path_buf()])?;
    let libc_dir = libraries
        .iter()
        .find(|l| l.ends_with("libc.so.6"))
        .and_then(|l| l.parent())
        .context("ldd found no libc.so.6")?
        .to_path_buf();
    libraries.extend(FOR_LOADED_LIBRARIES.iter().map(|name| libc_dir.join(name)));
    for lib in libraries {
        let to = rootfs.join(lib.strip_prefix("/")?);
        fs::create_dir_all(to.parent().context("library at /")?)?;
        fs::copy(&lib, &to).with_context(|| format!("copying {}", lib.display()))?;
    }
    for dir in MOUNT_POINTS {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    open_folders(rootfs)
}

fn open_folders(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            open_folders(&entry.path())?;
        }
    }
    Ok(())
}

fn commit(
    buildah: &Buildah,
    container: &str,
    rootfs: &Path,
    tag: &str,
    epoch: u64,
    oci: &Path,
) -> Result<()> {
    let rootfs = format!("{}/", rootfs.display());
    buildah.run(&["copy", container, &rootfs, "/"])?;
    let entrypoint = json!(["/usr/local/bin/inferscope"]).to_string();
    let cmd = json!(DEFAULT_CMD).to_string();
    let version = tag.split(':').nth(1).unwrap_or_default();
    buildah.run(&[
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
    buildah.run(&[
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

/// buildah with a storage of its own (vfs: no overlay mounts needed).
struct Buildah {
    root: PathBuf,
}

impl Buildah {
    fn private(root: &Path) -> Result<Self> {
        let _ = fs::remove_dir_all(root);
        fs::create_dir_all(root)?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("buildah")
            .arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "vfs"])
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

    /// Forgets the storage (vfs leaves plain folders; nothing is mounted).
    fn remove(self) -> Result<()> {
        fs::remove_dir_all(&self.root).with_context(|| format!("removing {}", self.root.display()))
    }
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
/// manifests (buildah uses the same image library as podman), in the
/// private storage.
fn loadable(buildah: &Buildah, archive: &Path) -> Result<()> {
    for transport in ["oci-archive", "docker-archive"] {
        let id = buildah
            .run(&["pull", "--quiet", &format!("{transport}:{}", archive.display())])
            .with_context(|| format!("the archive does not load as {transport}"))?;
        buildah.run(&["rmi", &id])?;
    }
    Ok(())
}
