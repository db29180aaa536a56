//! Process lifecycle probes (`process.bpf.c`): exec and exit tracepoints, and a
//! uprobe on each dynamic loader file's `_dl_debug_state`.

use std::collections::HashMap;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
};
use inferscope_shared::{DROP_REASONS, ProcEvent};

use super::read_drops;
use crate::discover::{ProbeTarget, maps::FileId, symbols};

const LOADER_PROGRAM: &str = "on_loader_debug_state";
/// glibc's (and musl's) debugger hook, called before and after the loader changes the set of objects.
const LOADER_HOOK: &str = "_dl_debug_state";
/// glibc's debugger interface, whose `r_state` says which of the two calls it is.
const LOADER_STATE: &str = "_r_debug";

pub struct ProcessProbes {
    ebpf: Ebpf,
    loaders: HashMap<FileId, UProbeLinkId>,
}

impl ProcessProbes {
    pub fn load(btf: &Btf) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .load(super::PROCESS_OBJ)
            .context("loading process.bpf.o")?;
        super::attach_tp_btf(
            &mut ebpf,
            btf,
            &[
                ("on_exec", "sched_process_exec"),
                ("on_exit", "sched_process_exit"),
            ],
        )?;
        let loader = super::uprobe(&mut ebpf, LOADER_PROGRAM)?;
        loader.load().context("verifying the loader probe")?;
        Ok(Self {
            ebpf,
            loaders: HashMap::new(),
        })
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

    pub fn drops(&self) -> Result<[u64; DROP_REASONS.len()]> {
        read_drops(&self.ebpf)
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
