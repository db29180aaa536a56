//! Where GPU calls are made from: the stacks `gpu_calls.bpf.c` records at 1 in
//! N kernel launches, graph launches and synchronisations, when profiling.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
};
use inferscope_shared::GpuOp;

use super::stacks::{PythonProc, StackTables};

const OBJECT: &str = "gpu_calls.bpf.o";

/// `struct call_stack_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CallStackKey {
    py_stack: u64,
    caller: u64,
    pid: u32,
    user_stack: i32,
    op: u32,
    pad: u32,
}

// SAFETY: plain integers, no padding beyond the explicit field.
unsafe impl aya::Pod for CallStackKey {}

/// `struct call_stack_count`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct CallStackCount {
    calls: u64,
    wait_ns: u64,
}

// SAFETY: plain integers.
unsafe impl aya::Pod for CallStackCount {}

/// The GPU calls whose stacks are sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GpuCall {
    KernelLaunch,
    GraphLaunch,
    Sync,
}

impl GpuCall {
    fn of(op: u32) -> Option<Self> {
        match op {
            op if op == GpuOp::KernelLaunch as u32 => Some(Self::KernelLaunch),
            op if op == GpuOp::GraphLaunch as u32 => Some(Self::GraphLaunch),
            op if op == GpuOp::Sync as u32 => Some(Self::Sync),
            _ => None,
        }
    }
}

/// One distinct place GPU calls of one kind were made from, as sampled.
/// `user`: leaf first, starting at the probed function (the caller's frame
/// added where the kernel's walk skipped it); `python` as for CPU samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallStackSample {
    pub call: GpuCall,
    pub pid: u32,
    pub user: Vec<u64>,
    pub python: Vec<u64>,
    /// Sampled calls (1 in [`GpuCallStacks::every`] of all).
    pub calls: u64,
    /// Synchronisations: how long the sampled ones waited.
    pub wait_ns: u64,
}

/// The call-stack tables of the loaded GPU probes.
pub struct GpuCallStacks {
    every: u32,
    samples: BpfHashMap<MapData, CallStackKey, CallStackCount>,
    tables: StackTables,
}

impl GpuCallStacks {
    pub(super) fn take(ebpf: &mut Ebpf, every: u32) -> Result<Self> {
        let samples = BpfHashMap::try_from(
            ebpf.take_map("call_samples")
                .ok_or_else(|| anyhow!("call_samples missing from {OBJECT}"))?,
        )?;
        Ok(Self {
            every,
            samples,
            tables: StackTables::take(ebpf, OBJECT)?,
        })
    }

    /// 1 in how many calls (at random) records its stack.
    pub fn every(&self) -> u32 {
        self.every
    }

    /// Reads `pid`'s Python frames too, where `proc` says.
    pub fn sample_python(&mut self, pid: u32, proc: PythonProc) -> Result<()> {
        self.tables.sample_python(pid, proc)
    }

    /// Stops reading `pid`'s Python frames (it exited).
    pub fn forget(&mut self, pid: u32) {
        self.tables.forget(pid);
    }

    /// Every distinct call stack sampled so far.
    pub fn samples(&self) -> Result<Vec<CallStackSample>> {
        Ok(self.read()?.into_iter().map(|(_, s)| s).collect())
    }

    /// Every distinct call stack since the last drain, taken out of the
    /// kernel's tables. A synchronisation in progress meanwhile loses its wait.
    pub fn drain(&mut self) -> Result<Vec<CallStackSample>> {
        let read = self.read()?;
        for (key, _) in &read {
            let _ = self.samples.remove(key);
        }
        self.tables.remove(
            read.iter().map(|(k, _)| k.user_stack),
            read.iter().map(|(k, _)| k.py_stack),
        );
        Ok(read.into_iter().map(|(_, s)| s).collect())
    }

    /// Sampled calls whose stacks were lost, by cause ([`super::STACK_LOSSES`]).
    pub fn losses(&self) -> BTreeMap<&'static str, u64> {
        self.tables.losses()
    }

    fn read(&self) -> Result<Vec<(CallStackKey, CallStackSample)>> {
        let mut out = Vec::new();
        for entry in self.samples.iter() {
            let (key, count) = entry.context("reading the GPU call stacks")?;
            let Some(call) = GpuCall::of(key.op) else {
                continue;
            };
            out.push((
                key,
                CallStackSample {
                    call,
                    pid: key.pid,
                    user: with_caller(self.tables.frames(key.user_stack), key.caller),
                    python: self.tables.python(key.py_stack),
                    calls: count.calls,
                    wait_ns: count.wait_ns,
                },
            ));
        }
        Ok(out)
    }
}

/// A stack walked from a function's first instruction, with its caller (the
/// return address) second: the kernel's frame-pointer walk starts at the frame
/// the function has not pushed yet, so it skips the caller (tested on 6.1, 6.12
/// and 6.18). Added once, should a kernel's walk have it.
fn with_caller(mut user: Vec<u64>, caller: u64) -> Vec<u64> {
    if caller != 0 && !user.is_empty() && user.get(1) != Some(&caller) {
        user.insert(1, caller);
    }
    user
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_added_once_after_the_probed_function() {
        assert_eq!(with_caller(vec![10, 30, 40], 20), [10, 20, 30, 40]);
        assert_eq!(with_caller(vec![10, 20, 30], 20), [10, 20, 30]);
        assert_eq!(with_caller(vec![10], 20), [10, 20]);
        assert_eq!(with_caller(vec![], 20), Vec::<u64>::new());
        assert_eq!(with_caller(vec![10, 30], 0), [10, 30]);
    }
}
