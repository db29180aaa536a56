//! CPU stack sampling (`profile.bpf.c`): a perf-event program on every CPU,
//! counting the (process, user stack, kernel stack) it interrupts.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, StackTraceMap},
    programs::perf_event::{PerfEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    util::online_cpus,
};

const PROGRAM: &str = "on_cpu_sample";

/// Why a sample has no stack, in the order of `enum profile_loss`.
pub const PROFILE_LOSSES: [&str; 3] = ["sample_table_full", "no_stack", "stack_collision"];

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

/// `struct python_proc`: where a CPython process's thread states are, and its version's offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonProc {
    /// Address of `_PyRuntime.interpreters.head` in the process.
    pub interpreters_head: u64,
    pub interp_threads_head: u16,
    pub tstate_next: u16,
    pub tstate_thread_id: u16,
    pub tstate_cframe: u16,
    pub cframe_current_frame: u16,
    pub frame_code: u16,
    pub frame_previous: u16,
    pub frame_owner: u16,
    /// Frames with this owner are the interpreter's own; 0xff: none.
    pub shim_owner: u8,
    pub pad: [u8; 7],
}

// SAFETY: plain integers, laid out as the C struct with no implicit padding.
unsafe impl aya::Pod for PythonProc {}

/// `struct py_stack`.
#[repr(C)]
#[derive(Clone, Copy)]
struct PyStack {
    code: [u64; 32],
}

// SAFETY: plain integers.
unsafe impl aya::Pod for PyStack {}

pub struct ProfileProbes {
    ebpf: Ebpf,
}

impl ProfileProbes {
    /// Starts sampling every CPU `frequency_hz` times a second (a software
    /// clock, which needs no PMU); only processes named by [`Self::sample`] count.
    pub fn start(frequency_hz: u64) -> Result<Self> {
        let mut ebpf = Ebpf::load(super::PROFILE_OBJ).context("loading profile.bpf.o")?;
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
        Ok(Self { ebpf })
    }

    /// Samples `pid` from now on.
    pub fn sample(&mut self, pid: u32) -> Result<()> {
        let mut profiled: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("profiled")
                .ok_or_else(|| anyhow!("profiled missing"))?,
        )?;
        profiled
            .insert(pid, 1, 0)
            .context("the profiled-process table is full")?;
        Ok(())
    }

    /// Stops sampling `pid` (it exited: its number may come back as another
    /// process). Its samples so far stay.
    pub fn forget(&mut self, pid: u32) -> Result<()> {
        let mut profiled: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(self.map_mut("profiled")?)?;
        let _ = profiled.remove(&pid);
        let mut procs: BpfHashMap<_, u32, PythonProc> = BpfHashMap::try_from(self.map_mut("python_procs")?)?;
        let _ = procs.remove(&pid);
        Ok(())
    }

    /// Reads `pid`'s Python frames too, where `proc` says.
    pub fn sample_python(&mut self, pid: u32, proc: PythonProc) -> Result<()> {
        let mut procs: BpfHashMap<_, u32, PythonProc> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("python_procs")
                .ok_or_else(|| anyhow!("python_procs missing"))?,
        )?;
        procs
            .insert(pid, proc, 0)
            .context("the Python process table is full")?;
        Ok(())
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
        let mut samples: BpfHashMap<_, StackSampleKey, u64> = BpfHashMap::try_from(self.map_mut("samples")?)?;
        for (key, _) in &read {
            let _ = samples.remove(key);
        }
        let mut stacks: StackTraceMap<&mut MapData> = StackTraceMap::try_from(self.map_mut("stacks")?)?;
        for (key, _) in &read {
            for id in [key.user_stack, key.kernel_stack] {
                if let Ok(id) = u32::try_from(id) {
                    let _ = stacks.remove(&id);
                }
            }
        }
        let mut py_stacks: BpfHashMap<_, u64, PyStack> = BpfHashMap::try_from(self.map_mut("py_stacks")?)?;
        for (key, _) in &read {
            let _ = py_stacks.remove(&key.py_stack);
        }
        Ok(read.into_iter().map(|(_, s)| s).collect())
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf.map_mut(name).ok_or_else(|| anyhow!("{name} missing"))
    }

    /// The sample table's entries, with their stacks.
    fn read(&self) -> Result<Vec<(StackSampleKey, StackSample)>> {
        let samples: BpfHashMap<_, StackSampleKey, u64> = BpfHashMap::try_from(
            self.ebpf
                .map("samples")
                .ok_or_else(|| anyhow!("samples missing"))?,
        )?;
        let stacks: StackTraceMap<&MapData> =
            StackTraceMap::try_from(self.ebpf.map("stacks").ok_or_else(|| anyhow!("stacks missing"))?)?;
        let frames = |id: i32| -> Vec<u64> {
            u32::try_from(id)
                .ok()
                .and_then(|id| stacks.get(&id, 0).ok())
                .map(|t| t.frames().iter().map(|f| f.ip).collect())
                .unwrap_or_default()
        };
        let py_stacks: BpfHashMap<_, u64, PyStack> = BpfHashMap::try_from(
            self.ebpf
                .map("py_stacks")
                .ok_or_else(|| anyhow!("py_stacks missing"))?,
        )?;
        let mut out = Vec::new();
        for entry in samples.iter() {
            let (key, count) = entry?;
            let python = match key.py_stack {
                0 => Vec::new(),
                id => py_stacks
                    .get(&id, 0)
                    .map(|s| s.code.iter().copied().filter(|&c| c != 0).collect())
                    .unwrap_or_default(),
            };
            let sample = StackSample {
                pid: key.pid,
                user: frames(key.user_stack),
                kernel: frames(key.kernel_stack),
                python,
                count,
            };
            out.push((key, sample));
        }
        Ok(out)
    }

    /// Samples whose stacks were lost, by cause ([`PROFILE_LOSSES`]).
    pub fn losses(&self) -> Result<BTreeMap<&'static str, u64>> {
        let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("profile_losses")
                .ok_or_else(|| anyhow!("profile_losses missing"))?,
        )?;
        let mut out = BTreeMap::new();
        for (i, name) in PROFILE_LOSSES.iter().enumerate() {
            let n: u64 = map.get(&(i as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
            out.insert(*name, n);
        }
        Ok(out)
    }
}
