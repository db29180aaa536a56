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
    pid: u32,
    user_stack: i32,
    kernel_stack: i32,
    pad: u32,
}

// SAFETY: plain integers, no padding beyond the explicit field.
unsafe impl aya::Pod for StackSampleKey {}

/// One distinct stack of one process and how often it was interrupted there.
/// Addresses are leaf first, as the kernel walks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSample {
    pub pid: u32,
    pub user: Vec<u64>,
    pub kernel: Vec<u64>,
    pub count: u64,
}

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

    /// Every distinct stack sampled so far.
    pub fn samples(&self) -> Result<Vec<StackSample>> {
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
        let mut out = Vec::new();
        for entry in samples.iter() {
            let (key, count) = entry?;
            out.push(StackSample {
                pid: key.pid,
                user: frames(key.user_stack),
                kernel: frames(key.kernel_stack),
                count,
            });
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
