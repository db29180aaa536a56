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
    /// The processes whose calls record stacks.
    stacked: BpfHashMap<MapData, u32, u8>,
    tables: StackTables,
}

impl GpuCallStacks {
    pub(super) fn take(ebpf: &mut Ebpf, every: u32) -> Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("{name} missing from {OBJECT}"))
        };
        Ok(Self {
            every,
            samples: BpfHashMap::try_from(take("call_samples")?)?,
            stacked: BpfHashMap::try_from(take("stacked")?)?,
            tables: StackTables::take(ebpf, OBJECT)?,
        })
    }

    /// Records stacks of `pid`'s calls from now on.
    pub fn sample(&mut self, pid: u32) -> Result<()> {
        self.stacked
            .insert(pid, 1, 0)
            .context("the table of processes with GPU call stacks is full")
    }

    /// 1 in how many calls (at random) records its stack.
    pub fn every(&self) -> u32 {
        self.every
    }

    /// Reads `pid`'s Python frames too, where `proc` says.
    pub fn sample_python(&mut self, pid: u32, proc: PythonProc) -> Result<()> {
        self.tables.sample_python(pid, proc)
    }

    /// Stops recording `pid`'s stacks (it exited: its number may come back as
    /// another process). Its samples so far stay.
    pub fn forget(&mut self, pid: u32) {
        let _ = self.stacked.remove(&pid);
        self.tables.forget(pid);
    }

    /// Every distinct call stack sampled so far.
    pub fn samples(&self) -> Result<Vec<CallStackSample>> {
        Ok(self.read()?.into_iter().filter_map(|(_, s)| s).collect())
    }

    /// Every distinct call stack since the last drain, taken out of the
    /// kernel's tables (every entry, shown or not). A synchronisation still
    /// waiting adds its wait to the next period's entry.
    pub fn drain(&mut self) -> Result<Vec<CallStackSample>> {
        let read = self.read()?;
        for (key, _) in &read {
            let _ = self.samples.remove(key);
        }
        self.tables.remove(
            read.iter().map(|(k, _)| k.user_stack),
            read.iter().map(|(k, _)| k.py_stack),
        );
        Ok(read.into_iter().filter_map(|(_, s)| s).collect())
    }

    /// Sampled calls whose stacks were lost, by cause ([`super::STACK_LOSSES`]).
    pub fn losses(&self) -> BTreeMap<&'static str, u64> {
        self.tables.losses()
    }

    /// Every entry, and its sample where it can be shown: not one whose stack
    /// was lost (counted in the losses) or removed by a drain meanwhile, which
    /// would show as a stack without the runtime function.
    fn read(&self) -> Result<Vec<(CallStackKey, Option<CallStackSample>)>> {
        let mut out = Vec::new();
        for entry in self.samples.iter() {
            let (key, count) = entry.context("reading the GPU call stacks")?;
            let user = self.tables.frames(key.user_stack);
            let sample = GpuCall::of(key.op)
                .filter(|_| !user.is_empty())
                .map(|call| CallStackSample {
                    call,
                    pid: key.pid,
                    user: with_caller(user, key.caller),
                    python: self.tables.python(key.py_stack),
                    calls: count.calls,
                    wait_ns: count.wait_ns,
                });
            out.push((key, sample));
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
