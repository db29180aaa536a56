//! `cargo xtask dist`: the release tarball, for the engineer on a GPU box with
//! no Rust toolchain. One binary (the eBPF objects are embedded) built against
//! glibc 2.28 with `cargo-zigbuild` and Zig (both from PyPI, pinned), so it runs
//! on the distributions GPU fleets still have (RHEL 8, Ubuntu 20.04, Debian 10
//! and newer); LICENSE, README, docs/ and deploy/ as the commit has them beside
//! it; its SHA-256 and a CycloneDX bill of materials beside the tarball.
//!
//! The archive is reproducible: its files are sorted, owned by root and dated
//! at the commit, and gzip stores no name or time.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};

use crate::run;

/// The target triple the binary is built for, and the oldest glibc it may need.
const TARGET: &str = "x86_64-unknown-linux-gnu";
const GLIBC_FLOOR: (u32, u32) = (2, 28);
/// cargo-zigbuild and the Zig it drives, pinned (cargo-zigbuild 0.24 filters
/// the linker flags newer rustc passes; Zig 0.16 builds `ring`).
const ZIGBUILD_PACKAGES: [&str; 2] = ["cargo-zigbuild==0.24.1", "ziglang==0.16.0"];
/// What the tarball holds beside the binary, from the commit (not the working tree).
const BESIDE_THE_BINARY: [&str; 4] = ["LICENSE", "README.md", "docs", "deploy"];
/// The only libraries the binary may need: glibc's, present on every system.
const GLIBC_LIBRARIES: [&str; 6] = [
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
];

/// What `dist` made, under `target/dist`.
pub struct Dist {
    /// The stripped binary, as it is in the tarball.
    pub binary: PathBuf,
    /// `inferscope 0.1.0 (commit)`, as the binary says it.
    pub version: String,
    /// The CycloneDX bill of materials beside the tarball.
    pub sbom: PathBuf,
}

pub fn dist(root: &Path) -> Result<Dist> {
    let binary = build(root)?;
    let floor = glibc_floor(&binary)?;
    ensure!(
        floor <= GLIBC_FLOOR,
        "{} needs glibc {}.{}, newer than the {}.{} it is built for",
        binary.display(),
        floor.0,
        floor.1,
        GLIBC_FLOOR.0,
        GLIBC_FLOOR.1
    );
    let needed = needed_libraries(&binary)?;
    let foreign: Vec<&String> = needed
        .iter()
        .filter(|l| !GLIBC_LIBRARIES.contains(&l.as_str()))
        .collect();
    ensure!(
        foreign.is_empty(),
        "{} needs libraries beyond glibc: {foreign:?}",
        binary.display()
    );
    let version = binary_version(&binary)?;
    let number = version
        .split_whitespace()
        .nth(1)
        .context("no version number in --version")?;
    let name = format!("inferscope-{number}-x86_64-linux");
    let out = root.join("target/dist");
    let staging = out.join(&name);
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    fs::copy(&binary, staging.join("inferscope"))?;
    let files = format!(
        "git archive --format=tar HEAD -- {} | tar -x -C {}",
        BESIDE_THE_BINARY.join(" "),
        shell_quote(&staging)
    );
    run(Command::new("bash")
        .current_dir(root)
        .args(["-o", "pipefail", "-c", &files]))
    .context("copying the commit's docs and manifests")?;
    let epoch = commit_time(root)?;
    let sbom = sbom(root, &version, &binary, epoch)?;
    let sbom_path = out.join(format!("{name}.cdx.json"));
    fs::write(&sbom_path, serde_json::to_vec_pretty(&sbom)?)?;
    fs::copy(&sbom_path, staging.join("sbom.cdx.json"))?;
    let tarball = out.join(format!("{name}.tar.gz"));
    reproducible_tar(&out, &[&name], &tarball, epoch, true)?;
    let sha = sha256(&tarball)?;
    fs::write(
        out.join(format!("{name}.tar.gz.sha256")),
        format!("{sha}  {name}.tar.gz\n"),
    )?;
    runs_alone(&tarball, &name, &version)?;
    let size = |p: &Path| fs::metadata(p).map(|m| m.len() as f64 / 1e6);
    println!(
        "{}: {:.1} MB (binary {:.1} MB, needs glibc {}.{}), sha256 {sha}\n{}",
        tarball.display(),
        size(&tarball)?,
        size(&binary)?,
        floor.0,
        floor.1,
        sbom_path.display()
    );
    Ok(Dist {
        binary: staging.join("inferscope"),
        version,
        sbom: sbom_path,
    })
}

/// Builds the agent with the `dist` profile for glibc 2.28; returns the binary.
fn build(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".cache/zigbuild");
    let python = venv.join("bin/python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("creating the venv for cargo-zigbuild")?;
    }
    let zigbuild = venv.join("bin/cargo-zigbuild");
    let pinned = Command::new(&python).args(["-m", "pip", "freeze"]).output()?;
    let pinned = String::from_utf8_lossy(&pinned.stdout);
    if !ZIGBUILD_PACKAGES.iter().all(|p| pinned.lines().any(|l| l == *p)) {
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(ZIGBUILD_PACKAGES))
        .context("installing cargo-zigbuild and Zig from PyPI")?;
    }
    // cargo-zigbuild finds Zig as `python3 -m ziglang`: the venv's python first.
    let path = std::env::join_paths(std::iter::once(venv.join("bin")).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    run(Command::new(&zigbuild)
        .current_dir(root)
        .env("PATH", path)
        .args([
            "zigbuild",
            "--locked",
            "--profile",
            "dist",
            "--package",
            "inferscope",
        ])
        .arg("--target")
        .arg(format!("{TARGET}.{}.{}", GLIBC_FLOOR.0, GLIBC_FLOOR.1)))
    .context("building the release binary with cargo-zigbuild")?;
    Ok(root.join(format!("target/{TARGET}/dist/inferscope")))
}

/// The newest glibc symbol version the binary needs, from its `.gnu.version_r`.
pub fn glibc_floor(binary: &Path) -> Result<(u32, u32)> {
    let versions: BTreeSet<(u32, u32)> = readelf(binary, "--version-info")?
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|n| n.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .collect();
    versions
        .last()
        .copied()
        .with_context(|| format!("{} names no glibc version", binary.display()))
}

/// The shared libraries the binary names (`DT_NEEDED`).
fn needed_libraries(binary: &Path) -> Result<Vec<String>> {
    Ok(readelf(binary, "--dynamic")?
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once("[")?.1.split_once(']')?.0.to_string()))
        .collect())
}

/// What `readelf SECTION --wide` prints of the binary.
fn readelf(binary: &Path, section: &str) -> Result<String> {
    let out = Command::new("readelf")
        .args([section, "--wide"])
        .arg(binary)
        .output()
        .context("running readelf (binutils)")?;
    ensure!(
        out.status.success(),
        "readelf {section} failed on {}",
        binary.display()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn binary_version(binary: &Path) -> Result<String> {
    let out = Command::new(binary).arg("--version").output()?;
    ensure!(out.status.success(), "{} --version failed", binary.display());
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The commit's time, the date every file in the archive carries.
pub fn commit_time(root: &Path) -> Result<u64> {
    if let Some(epoch) = std::env::var_os("SOURCE_DATE_EPOCH") {
        return Ok(epoch.to_string_lossy().parse()?);
    }
    let out = Command::new("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%ct"])
        .output()?;
    ensure!(
        out.status.success(),
        "git log failed: not a checkout? Set SOURCE_DATE_EPOCH"
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Writes `entries` of `dir` as a tar (gzipped or not) whose bytes depend only
/// on the files: sorted, owned by root, dated `epoch`, no name or time in gzip.
pub fn reproducible_tar(dir: &Path, entries: &[&str], out: &Path, epoch: u64, gzip: bool) -> Result<()> {
    let entries: Vec<String> = entries.iter().map(|e| shell_quote(Path::new(e))).collect();
    let tar = format!(
        "tar --create --sort=name --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
         --mtime=@{epoch} --owner=0 --group=0 --numeric-owner --mode=u+rwX,go+rX,go-w \
         -C {dir} {entries} {compress} > {out}",
        dir = shell_quote(dir),
        entries = entries.join(" "),
        compress = if gzip { "| gzip -9 --no-name" } else { "" },
        out = shell_quote(out),
    );
    run(Command::new("bash").args(["-o", "pipefail", "-c", &tar]))
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

pub fn sha256(file: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(file).output()?;
    ensure!(out.status.success(), "sha256sum {} failed", file.display());
    Ok(String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_string())
}

/// Unpacks the tarball into an empty folder and runs the binary there with an
/// empty environment: it needs no file but itself and glibc's libraries
/// (checked above from what it names).
fn runs_alone(tarball: &Path, name: &str, version: &str) -> Result<()> {
    let scratch = tarball.with_extension("unpacked");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(&scratch))?;
    let out = Command::new("./inferscope")
        .current_dir(scratch.join(name))
        .env_clear()
        .arg("--version")
        .output()
        .context("running the unpacked binary")?;
    fs::remove_dir_all(&scratch)?;
    if !out.status.success() || String::from_utf8_lossy(&out.stdout).trim() != version {
        bail!(
            "the unpacked binary does not run alone: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A CycloneDX 1.6 bill of materials: every crate compiled into the binary for
/// this target (not build scripts' or tests' dependencies), with its license
/// and the checksum Cargo.lock pins, and how they depend on each other.
fn sbom(root: &Path, version: &str, binary: &Path, epoch: u64) -> Result<Value> {
    let out = Command::new("cargo")
        .current_dir(root)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            TARGET,
        ])
        .output()?;
    ensure!(out.status.success(), "cargo metadata failed");
    let metadata: Value = serde_json::from_slice(&out.stdout)?;
    let lock = fs::read_to_string(root.join("Cargo.lock"))?;
    let checksums = lock_checksums(&lock);
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .context("no packages in cargo metadata")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, Vec<&str>> = metadata["resolve"]["nodes"]
        .as_array()
        .context("no resolve in cargo metadata")?
        .iter()
        .filter_map(|n| {
            let normal = n["deps"]
                .as_array()?
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
                })
                .filter_map(|d| d["pkg"].as_str())
                .collect();
            Some((n["id"].as_str()?, normal))
        })
        .collect();
    let agent = packages
        .iter()
        .find(|(_, p)| p["name"] == "inferscope")
        .map(|(id, _)| *id)
        .context("no inferscope package")?;
    // Everything the agent reaches through normal dependencies.
    let mut reached = BTreeSet::from([agent]);
    let mut queue = vec![agent];
    while let Some(id) = queue.pop() {
        for dep in nodes.get(id).into_iter().flatten() {
            if reached.insert(dep) {
                queue.push(dep);
            }
        }
    }
    let purl = |p: &Value| {
        format!(
            "pkg:cargo/{}@{}",
            p["name"].as_str().unwrap_or(""),
            p["version"].as_str().unwrap_or("")
        )
    };
    let component = |p: &Value, kind: &str| {
        let mut c = json!({
            "type": kind,
            "bom-ref": purl(p),
            "name": p["name"],
            "version": p["version"],
            "purl": purl(p),
        });
        if let Some(license) = p["license"].as_str() {
            // Old crates write "MIT/Apache-2.0"; SPDX says "MIT OR Apache-2.0".
            c["licenses"] = json!([{"expression": license.replace('/', " OR ")}]);
        }
        let key = (
            p["name"].as_str().unwrap_or(""),
            p["version"].as_str().unwrap_or(""),
        );
        if let Some(sum) = checksums.get(&key) {
            c["hashes"] = json!([{"alg": "SHA-256", "content": sum}]);
        }
        if p["targets"].as_array().is_some_and(|t| {
            t.iter().any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
            })
        }) {
            // Runs in the compiler; nothing of it is in the binary.
            c["scope"] = json!("excluded");
        }
        c
    };
    let mut main = component(packages[agent], "application");
    main["hashes"] = json!([{"alg": "SHA-256", "content": sha256(binary)?}]);
    main["description"] = json!(version);
    let components: Vec<Value> = reached
        .iter()
        .filter(|id| **id != agent)
        .map(|id| component(packages[id], "library"))
        .collect();
    let dependencies: Vec<Value> = reached
        .iter()
        .map(|id| {
            let on: BTreeSet<String> = nodes[id].iter().map(|d| purl(packages[d])).collect();
            json!({"ref": purl(packages[id]), "dependsOn": on})
        })
        .collect();
    let timestamp = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(epoch)).to_string();
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{"type": "application", "name": "cargo xtask dist"}]},
            "component": main,
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

/// (name, version) → checksum, from Cargo.lock's `[[package]]` entries.
fn lock_checksums(lock: &str) -> BTreeMap<(&str, &str), &str> {
    let mut sums = BTreeMap::new();
    for entry in lock.split("[[package]]") {
        let field = |key: &str| {
            entry.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .trim_start()
                    .strip_prefix('=')?
                    .trim()
                    .strip_prefix('"')?
                    .strip_suffix('"')
            })
        };
        if let (Some(name), Some(version), Some(sum)) = (field("name"), field("version"), field("checksum")) {
            sums.insert((name, version), sum);
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_read_per_package_and_version_and_local_packages_have_none() {
        let lock = "version = 4\n\n[[package]]\nname = \"anyhow\"\nversion = \"1.0.104\"\n\
                    source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\
                    checksum = \"abc\"\n\n[[package]]\nname = \"inferscope\"\nversion = \"0.1.0\"\n\
                    dependencies = [\n \"anyhow\",\n]\n";
        let sums = lock_checksums(lock);
        assert_eq!(sums.get(&("anyhow", "1.0.104")), Some(&"abc"));
        assert_eq!(sums.len(), 1);
    }

    #[test]
    fn the_glibc_floor_of_this_machines_true_is_read_from_its_symbol_versions() {
        let floor = glibc_floor(Path::new("/bin/true")).unwrap();
        assert!(floor >= (2, 2), "{floor:?}");
    }
}
