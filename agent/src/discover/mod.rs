//! Which processes use a GPU runtime, and through which library files.
//!
//! Sources: a `/proc` scan at start, then the process probes (exec, exit, and
//! the dynamic loader's "objects changed" hook) tell the agent whom to rescan.
//! Libraries inside containers are reached through `/proc/PID/map_files`, which
//! names the very inode mapped, whatever mount namespace the process lives in.

pub mod installed;
pub mod listeners;
pub mod maps;
pub mod process;
pub mod sock_diag;
pub mod symbols;

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
};

use maps::{FileId, Mapping};

use crate::runtimes::Runtime;

/// A file a process maps that the agent attaches uprobes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The inode uprobes attach to: what /proc shows, until the kernel says
    /// otherwise (overlayfs, see `GpuProcesses`).
    pub file: FileId,
    /// Where the process maps it.
    pub mapped_at: u64,
    /// A path that opens this very file from the agent's mount namespace.
    pub open_path: PathBuf,
    /// The path as the process sees it, for messages.
    pub path: PathBuf,
}

/// A GPU runtime found in a process: its own shared library, or linked into the executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeLibrary {
    pub runtime: Runtime,
    pub target: ProbeTarget,
    pub statically_linked: bool,
}

/// What one process maps that matters to the probes.
#[derive(Clone, Debug, Default)]
pub struct ProcessLibraries {
    pub runtimes: Vec<RuntimeLibrary>,
    /// The dynamic loader (`ld-linux*.so*`), whose debugger hook reports dlopen.
    pub loader: Option<ProbeTarget>,
    /// The executable, read before the mappings: a different one read later
    /// means the process exec'd another program since.
    pub exe: Option<PathBuf>,
}

/// Remembers, per executable file, which runtimes are linked into it statically.
#[derive(Default)]
pub struct Discovery {
    proc_root: PathBuf,
    static_runtimes: HashMap<FileId, Vec<Runtime>>,
}

impl Discovery {
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            static_runtimes: HashMap::new(),
        }
    }

    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    /// Every process ID under /proc.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        Ok(fs::read_dir(&self.proc_root)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect())
    }

    /// Reads the process's mappings; `Err` when it is gone or unreadable.
    pub fn libraries(&mut self, pid: u32) -> io::Result<ProcessLibraries> {
        let dir = self.proc_root.join(pid.to_string());
        let exe = fs::read_link(dir.join("exe")).ok();
        let listing = fs::read_to_string(dir.join("maps"))?;
        let mappings = maps::parse(&listing);
        let mut found = ProcessLibraries::default();
        for m in mappings.iter().filter(|m| m.executable) {
            let target = || ProbeTarget {
                file: m.file,
                mapped_at: m.start,
                open_path: map_files_path(&dir, m),
                path: m.path.clone(),
            };
            let name = m.file_name().unwrap_or_default();
            if let Some(runtime) = Runtime::of_library(name) {
                found.runtimes.push(RuntimeLibrary {
                    runtime,
                    target: target(),
                    statically_linked: false,
                });
            } else if name.starts_with("ld-linux") || name.starts_with("ld-musl") {
                found.loader.get_or_insert_with(target);
            } else if exe.as_deref() == Some(m.path.as_path()) {
                for &runtime in self.static_runtimes_of(m.file, &map_files_path(&dir, m)) {
                    found.runtimes.push(RuntimeLibrary {
                        runtime,
                        target: target(),
                        statically_linked: true,
                    });
                }
            }
        }
        found.runtimes.sort_by_key(|r| (r.runtime, r.target.file));
        found.runtimes.dedup_by_key(|r| (r.runtime, r.target.file));
        found.exe = exe;
        Ok(found)
    }

    fn static_runtimes_of(&mut self, file: FileId, path: &Path) -> &[Runtime] {
        self.static_runtimes.entry(file).or_insert_with(|| {
            let markers = Runtime::ALL.map(Runtime::marker_symbol);
            match symbols::function_offsets(path, markers) {
                Ok(found) => Runtime::ALL
                    .into_iter()
                    .filter(|rt| found.contains_key(rt.marker_symbol()))
                    .collect(),
                Err(e) => {
                    log::debug!("cannot read symbols of {}: {e:#}", path.display());
                    Vec::new()
                }
            }
        })
    }
}

/// The OpenSSL libraries a process maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsLibraries {
    pub libssl: ProbeTarget,
    /// Where `BIO_write` is, with which event loops feed ciphertext to OpenSSL.
    pub libcrypto: Option<ProbeTarget>,
}

/// The OpenSSL `libssl` a process maps, if any, and its `libcrypto`.
pub fn tls_libraries(proc_root: &Path, pid: u32) -> Option<TlsLibraries> {
    let dir = proc_root.join(pid.to_string());
    let listing = fs::read_to_string(dir.join("maps")).ok()?;
    let mappings = maps::parse(&listing);
    let find = |prefix: &str| {
        mappings
            .iter()
            .find(|m| m.executable && m.file_name().is_some_and(|n| n.starts_with(prefix)))
            .map(|m| ProbeTarget {
                file: m.file,
                mapped_at: m.start,
                open_path: map_files_path(&dir, m),
                path: m.path.clone(),
            })
    };
    Some(TlsLibraries {
        libssl: find("libssl.so")?,
        libcrypto: find("libcrypto.so"),
    })
}

fn map_files_path(proc_dir: &Path, m: &Mapping) -> PathBuf {
    proc_dir
        .join("map_files")
        .join(format!("{:x}-{:x}", m.start, m.end))
}
