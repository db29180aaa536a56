//! The tables every program that records stacks has (`stacks.h`): the kernel's
//! stack table, the Python processes and stacks, and the stacks lost. Taken
//! out of their object, so that the profiler can hold those of the CPU
//! sampler and of the GPU call probes alike.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, StackTraceMap},
};

/// Why a sample has no stack, in the order of `enum stack_loss`.
pub const STACK_LOSSES: [&str; 3] = ["sample_table_full", "no_stack", "stack_collision"];

/// Python frames per stack, as `stacks.h` keeps them.
const MAX_PY_FRAMES: usize = 32;

/// `struct python_proc`: where a CPython process's thread states are, and its version's offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonProc {
    /// Address of `_PyRuntime.interpreters.head` in the process.
    pub interpreters_head: u64,
    pub interp_threads_head: u16,
    pub tstate_next: u16,
    pub tstate_thread_id: u16,
    /// The innermost frame, or (3.11, 3.12) the C frame that holds it.
    pub tstate_frame: u16,
    /// [`Self::NO_CFRAME`]: `tstate_frame` is the frame itself.
    pub cframe_current_frame: u16,
    pub frame_code: u16,
    pub frame_previous: u16,
    pub frame_owner: u16,
    /// Frames with this owner are the interpreter's own; [`Self::NO_SHIM`]: none.
    pub shim_owner: u8,
    pub pad: [u8; 7],
}

impl PythonProc {
    /// `PY_NO_CFRAME` of `stacks.h`.
    pub const NO_CFRAME: u16 = 0xffff;
    /// `PY_NO_SHIM` of `stacks.h`.
    pub const NO_SHIM: u8 = 0xff;
}

// SAFETY: plain integers, laid out as the C struct with no implicit padding.
unsafe impl aya::Pod for PythonProc {}

/// `struct py_stack`.
#[repr(C)]
#[derive(Clone, Copy)]
struct PyStack {
    code: [u64; MAX_PY_FRAMES],
}

// SAFETY: plain integers.
unsafe impl aya::Pod for PyStack {}

pub(super) struct StackTables {
    stacks: StackTraceMap<MapData>,
    py_stacks: BpfHashMap<MapData, u64, PyStack>,
    python_procs: BpfHashMap<MapData, u32, PythonProc>,
    losses: PerCpuArray<MapData, u64>,
}

impl StackTables {
    /// Takes the tables out of `ebpf` (loaded from `object`).
    pub(super) fn take(ebpf: &mut Ebpf, object: &str) -> Result<Self> {
        let mut take = |name: &str| -> Result<Map> {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("map {name} missing from {object}"))
        };
        Ok(Self {
            stacks: StackTraceMap::try_from(take("stacks")?).context("stacks")?,
            py_stacks: BpfHashMap::try_from(take("py_stacks")?).context("py_stacks")?,
            python_procs: BpfHashMap::try_from(take("python_procs")?).context("python_procs")?,
            losses: PerCpuArray::try_from(take("stack_losses")?).context("stack_losses")?,
        })
    }

    /// The addresses of stack `id`, leaf first; none for a negative id (no stack) or one gone.
    pub(super) fn frames(&self, id: i32) -> Vec<u64> {
        u32::try_from(id)
            .ok()
            .and_then(|id| self.stacks.get(&id, 0).ok())
            .map(|t| t.frames().iter().map(|f| f.ip).collect())
            .unwrap_or_default()
    }

    /// The code objects of Python stack `id`, innermost first; none for 0.
    pub(super) fn python(&self, id: u64) -> Vec<u64> {
        if id == 0 {
            return Vec::new();
        }
        self.py_stacks
            .get(&id, 0)
            .map(|s| s.code.iter().copied().filter(|&c| c != 0).collect())
            .unwrap_or_default()
    }

    /// Removes stacks once their samples are drained.
    pub(super) fn remove(
        &mut self,
        stack_ids: impl IntoIterator<Item = i32>,
        python_ids: impl IntoIterator<Item = u64>,
    ) {
        for id in stack_ids {
            if let Ok(id) = u32::try_from(id) {
                let _ = self.stacks.remove(&id);
            }
        }
        for id in python_ids.into_iter().filter(|&id| id != 0) {
            let _ = self.py_stacks.remove(&id);
        }
    }

    /// Reads `pid`'s Python frames from now on, where `proc` says.
    pub(super) fn sample_python(&mut self, pid: u32, proc: PythonProc) -> Result<()> {
        self.python_procs
            .insert(pid, proc, 0)
            .context("the Python process table is full")
    }

    /// Stops reading `pid`'s Python frames (it exited).
    pub(super) fn forget(&mut self, pid: u32) {
        let _ = self.python_procs.remove(&pid);
    }

    /// Samples whose stacks were lost, by cause ([`STACK_LOSSES`]).
    pub(super) fn losses(&self) -> BTreeMap<&'static str, u64> {
        STACK_LOSSES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let n = self
                    .losses
                    .get(&(i as u32), 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                (*name, n)
            })
            .collect()
    }
}
