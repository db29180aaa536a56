//! Process lifecycle probes (`process.bpf.c`): exec and exit tracepoints, a
//! uprobe on each dynamic loader file's `_dl_debug_state`, and the iterator
//! that tells which file each mapping of a process really is.

use std::{collections::HashMap, os::fd::AsFd as _};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, RingBuf},
    programs::{
        Iter,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use inferscope_shared::{MappedFile, ProcEvent};

use super::{iter, read_drops};
use crate::discover::{ProbeTarget, maps::FileId, symbols};

const LOADER_PROGRAM: &str = super::compat::ON_LOADER_DEBUG_STATE.name;
const MAPPED_FILES: &str = super::compat::MAPPED_FILES.name;
/// glibc's (and musl's) debugger hook, called before and after the loader changes the set of objects.
const LOADER_HOOK: &str = "_dl_debug_state";
/// glibc's debugger interface, whose `r_state` says which of the two calls it is.
const LOADER_STATE: &str = "_r_debug";

pub struct ProcessProbes {
    ebpf: Ebpf,
    loaders: HashMap<FileId, UProbeLinkId>,
    /// Whether `mapped_files` loaded: without it, /proc's identities stand.
    mapped_files: bool,
}

impl ProcessProbes {
    pub fn load(btf: &Btf) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .load(super::PROCESS_OBJ)
            .context("loading process.bpf.o")?;
        for program in super::compat::kernel_hooks(super::compat::ON_EXEC.object) {
            super::compat::attach(&mut ebpf, btf, program)?;
        }
        let loader = super::uprobe(&mut ebpf, LOADER_PROGRAM)?;
        loader.load().context("verifying the loader probe")?;
        let mapped_files = match load_mapped_files(&mut ebpf, btf) {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "which file a mapping really is cannot be asked here ({e:#}): replicas of one \
                     image mapping a GPU runtime through overlayfs may be counted once per replica"
                );
                false
            }
        };
        Ok(Self {
            ebpf,
            loaders: HashMap::new(),
            mapped_files,
        })
    }

    /// Whether [`Self::mapped_files`] can answer here.
    pub fn knows_mapped_files(&self) -> bool {
        self.mapped_files
    }

    /// The inode each file-backed mapping of `pid` is, by the address where
    /// the mapping starts: the file its uprobes belong to, which under
    /// overlayfs is not the one /proc shows. `None` where the kernel cannot
    /// say (the iterator did not load here).
    pub fn mapped_files(&mut self, pid: u32) -> Result<Option<HashMap<u64, FileId>>> {
        if !self.mapped_files {
            return Ok(None);
        }
        let mut target: Array<_, u32> = Array::try_from(
            self.ebpf
                .map_mut("mapped_files_of")
                .ok_or_else(|| anyhow!("mapped_files_of missing"))?,
        )?;
        target.set(0, pid, 0).context("naming the process to iterate")?;
        let program: &Iter = self
            .ebpf
            .program(MAPPED_FILES)
            .ok_or_else(|| anyhow!("{MAPPED_FILES} missing"))?
            .try_into()?;
        let bytes = iter::read_for_process(program.fd()?.as_fd(), pid)
            .with_context(|| format!("iterating the mappings of pid {pid}"))?;
        Ok(Some(
            bytes
                .chunks_exact(size_of::<MappedFile>())
                .map(|record| {
                    // SAFETY: MappedFile is plain integers; read_unaligned copes with any alignment.
                    let m = unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<MappedFile>()) };
                    (m.start, file_id(m.dev, m.ino))
                })
                .collect(),
        ))
    }

    /// Watches a dynamic loader file for dlopen/dlclose (once per file).
    pub fn watch_loader(&mut self, loader: &ProbeTarget) -> Result<()> {
        if self.loaders.contains_key(&loader.file) {
            return Ok(());
        }
        let offsets = symbols::function_offsets(&loader.open_path, [LOADER_HOOK])?;
        let offset = *offsets
            .get(LOADER_HOOK)
            .ok_or_else(|| anyhow!("{} has no {LOADER_HOOK}", loader.path.display()))?;
        let program = super::uprobe(&mut self.ebpf, LOADER_PROGRAM)?;
        let link = program
            .attach(
                UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(offset),
                    cookie: Some(loader_state_distance(&loader.open_path)),
                },
                &loader.open_path,
                UProbeScope::AllProcesses,
            )
            .with_context(|| format!("attaching to {LOADER_HOOK} in {}", loader.path.display()))?;
        self.loaders.insert(loader.file, link);
        Ok(())
    }

    /// The ring buffer of [`ProcEvent`]s; call once.
    pub fn events(&mut self) -> Result<RingBuf<MapData>> {
        super::take_ring_buf(&mut self.ebpf, "proc_events")
    }

    pub fn drops(&self) -> Result<super::Drops> {
        read_drops(&self.ebpf)
    }
}

fn load_mapped_files(ebpf: &mut Ebpf, btf: &Btf) -> Result<()> {
    let program: &mut Iter = ebpf
        .program_mut(MAPPED_FILES)
        .ok_or_else(|| anyhow!("{MAPPED_FILES} missing"))?
        .try_into()?;
    program
        .load("task_vma", btf)
        .with_context(|| format!("verifying {MAPPED_FILES}"))
}

/// A file identity from the kernel's encoding of a device number (major << 20 | minor).
fn file_id(kernel_dev: u64, ino: u64) -> FileId {
    const MINOR_BITS: u64 = 20;
    FileId {
        dev: libc::makedev(
            (kernel_dev >> MINOR_BITS) as u32,
            (kernel_dev & ((1 << MINOR_BITS) - 1)) as u32,
        ),
        ino,
    }
}

/// How far `_r_debug` lies from `_dl_debug_state` in the loader (the probe
/// reads `r_state` there, to skip the call made before a change); 0, which
/// makes the probe report every call, when the loader does not say (musl).
fn loader_state_distance(loader: &std::path::Path) -> u64 {
    match symbols::symbol_addresses(loader, [LOADER_HOOK, LOADER_STATE]) {
        Ok(found) => match (found.get(LOADER_STATE), found.get(LOADER_HOOK)) {
            (Some(&state), Some(&hook)) => state.wrapping_sub(hook),
            _ => 0,
        },
        Err(e) => {
            log::debug!("{}: {e:#}", loader.display());
            0
        }
    }
}

/// Decodes one ring buffer record; `None` for a record of the wrong size.
pub fn decode_event(bytes: &[u8]) -> Option<ProcEvent> {
    if bytes.len() < size_of::<ProcEvent>() {
        return None;
    }
    // SAFETY: ProcEvent is plain integers; read_unaligned copes with any alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ProcEvent>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_device_number_reads_as_the_one_proc_shows() {
        // fe:01 in /proc/PID/maps; 00:2a for an overlay mount.
        assert_eq!(file_id((0xfe << 20) | 1, 7).dev, libc::makedev(0xfe, 1));
        assert_eq!(
            file_id(0x2a, 7),
            FileId {
                dev: libc::makedev(0, 0x2a),
                ino: 7
            }
        );
        assert_eq!(file_id(0x2a, 7).dev, 0x2a);
    }
}
