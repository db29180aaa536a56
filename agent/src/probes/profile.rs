//! CPU stack sampling (`profile.bpf.c`): a perf-event program on every CPU,
//! counting the (process, user stack, kernel stack) it interrupts.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
    programs::perf_event::{PerfEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    util::online_cpus,
};

use super::stacks::{PythonProc, StackTables};

const PROGRAM: &str = super::compat::ON_CPU_SAMPLE.name;
const OBJECT: &str = "profile.bpf.o";

/// `struct stack_sample`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct StackSampleKey {
    py_stack: u64,
    pid: u32,
    user_stack: i32,
    kernel_stack: i32,
    pad: u32,
}

// SAFETY: plain integers, no padding beyond the explicit field.
unsafe impl aya::Pod for StackSampleKey {}

/// One distinct stack of one process and how often it was interrupted there.
/// Addresses are leaf first, as the kernel walks them; `python`: the code
/// objects of the interpreter's frames, innermost first (CPython processes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackSample {
    pub pid: u32,
    pub user: Vec<u64>,
    pub kernel: Vec<u64>,
    pub python: Vec<u64>,
    pub count: u64,
}

pub struct ProfileProbes {
    ebpf: Ebpf,
    samples: BpfHashMap<MapData, StackSampleKey, u64>,
    tables: StackTables,
}

impl ProfileProbes {
    /// Starts sampling every CPU `frequency_hz` times a second (a software
    /// clock, which needs no PMU); only processes named by [`Self::sample`] count.
    pub fn start(frequency_hz: u64) -> Result<Self> {
        let mut ebpf = Ebpf::load(super::PROFILE_OBJ).with_context(|| format!("loading {OBJECT}"))?;
        let program: &mut PerfEvent = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| anyhow!("{PROGRAM} missing"))?
            .try_into()?;
        program.load().context("verifying the sampling program")?;
        let cpus = online_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        for cpu in cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency_hz),
                    false,
                )
                .with_context(|| format!("sampling CPU {cpu} (perf_event_open)"))?;
        }
        let samples = BpfHashMap::try_from(
            ebpf.take_map("samples")
                .ok_or_else(|| anyhow!("samples missing from {OBJECT}"))?,
        )?;
        let tables = StackTables::take(&mut ebpf, OBJECT)?;
        Ok(Self {
            ebpf,
            samples,
            tables,
        })
    }

    /// Samples `pid` from now on.
    pub fn sample(&mut self, pid: u32) -> Result<()> {
        self.profiled()?
            .insert(pid, 1, 0)
            .context("the profiled-process table is full")
    }

    /// Stops sampling `pid` (it exited: its number may come back as another
    /// process). Its samples so far stay.
    pub fn forget(&mut self, pid: u32) -> Result<()> {
        let _ = self.profiled()?.remove(&pid);
        self.tables.forget(pid);
        Ok(())
    }

    /// Reads `pid`'s Python frames too, where `proc` says.
    pub fn sample_python(&mut self, pid: u32, proc: PythonProc) -> Result<()> {
        self.tables.sample_python(pid, proc)
    }

    /// Every distinct stack sampled so far.
    pub fn samples(&self) -> Result<Vec<StackSample>> {
        Ok(self.read()?.into_iter().map(|(_, s)| s).collect())
    }

    /// Every distinct stack sampled since the last drain, taken out of the
    /// kernel's tables: a continuous profile's next period starts empty. A
    /// sample taken while they are emptied may lose its count or its stack.
    pub fn drain(&mut self) -> Result<Vec<StackSample>> {
        let read = self.read()?;
        for (key, _) in &read {
            let _ = self.samples.remove(key);
        }
        self.tables.remove(
            read.iter().flat_map(|(k, _)| [k.user_stack, k.kernel_stack]),
            read.iter().map(|(k, _)| k.py_stack),
        );
        Ok(read.into_iter().map(|(_, s)| s).collect())
    }

    /// Samples whose stacks were lost, by cause ([`super::STACK_LOSSES`]).
    pub fn losses(&self) -> BTreeMap<&'static str, u64> {
        self.tables.losses()
    }

    fn profiled(&mut self) -> Result<BpfHashMap<&mut MapData, u32, u8>> {
        let map = self
            .ebpf
            .map_mut("profiled")
            .ok_or_else(|| anyhow!("profiled missing from {OBJECT}"))?;
        Ok(BpfHashMap::try_from(map)?)
    }

    /// The sample table's entries, with their stacks.
    fn read(&self) -> Result<Vec<(StackSampleKey, StackSample)>> {
        let mut out = Vec::new();
        for entry in self.samples.iter() {
            let (key, count) = entry.context("reading the sampled stacks")?;
            let sample = StackSample {
                pid: key.pid,
                user: self.tables.frames(key.user_stack),
                kernel: self.tables.frames(key.kernel_stack),
                python: self.tables.python(key.py_stack),
                count,
            };
            out.push((key, sample));
        }
        Ok(out)
    }
}
