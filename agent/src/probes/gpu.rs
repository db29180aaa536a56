//! GPU runtime probes: one entry and one return program (`gpu_calls.bpf.c`),
//! attached to every probed function of every runtime library file in use,
//! once per file: a uprobe on a file fires in every process that maps it.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapError, PerCpuHashMap},
    programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
};
use inferscope_shared::{AllocKey, GpuProcess, GpuStats};

use super::{detach, gpu_stacks::GpuCallStacks, read_drops};
use crate::{
    discover::{RuntimeLibrary, maps::FileId, symbols},
    model::gpu::zip_with,
    runtimes::Runtime,
};

const ENTRY: &str = super::compat::GPU_CALL.name;
const RETURN: &str = super::compat::GPU_CALL_RETURN.name;
/// Frames per stack in the stack table (`MAX_FRAMES` in `stacks.h`).
const STACK_FRAMES: u32 = 127;
/// The tables only call stacks use (`stacks.h`, `call_samples`, `stacked`).
const CALL_STACK_TABLES: [&str; 5] = ["stacks", "py_stacks", "python_procs", "call_samples", "stacked"];

/// When a file's probes were attached: calls made before, by processes that
/// mapped it already, were not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttachedAt {
    /// Since boot (see [`crate::clock::since_boot`]), to compare with process start times.
    pub since_boot: Duration,
    pub wall: SystemTime,
}

struct Attached {
    links: Vec<UProbeLink>,
    at: AttachedAt,
}

pub struct GpuProbes {
    ebpf: Ebpf,
    /// Entry and return probes per library file and runtime.
    attached: HashMap<(FileId, Runtime), Attached>,
    /// Probes still being detached: attached again only once they are gone, or
    /// the calls in between would be counted twice.
    detaching: HashMap<(FileId, Runtime), detach::Detaching>,
    /// Where launches and synchronisations are made from, when sampled and not taken yet.
    call_stacks: Option<GpuCallStacks>,
}

impl GpuProbes {
    /// Loads the probes; with `call_stack_every` above 0, 1 in that many
    /// launches and synchronisations (at random) also records its
    /// stack (see [`Self::take_call_stacks`]).
    pub fn load(btf: &Btf, call_stack_every: u32) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        // aya has no typed API for task storage, which only the kernel side touches.
        loader.btf(Some(btf)).allow_unsupported_maps().override_global(
            "call_stack_every",
            &call_stack_every,
            true,
        );
        if call_stack_every == 0 {
            // Unused then: a stack table alone would hold 8 MiB.
            for table in CALL_STACK_TABLES {
                loader.map_max_entries(table, 1);
            }
        }
        let mut ebpf = loader.load(super::GPU_CALLS_OBJ).map_err(|e| {
            // The stack table's frames must not exceed the host's limit.
            let limit = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_stack")
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            match limit {
                Some(n) if n < STACK_FRAMES => anyhow!(e).context(format!(
                    "loading gpu_calls.bpf.o: its stack table needs kernel.perf_event_max_stack >= {STACK_FRAMES} (it is {n})"
                )),
                _ => anyhow!(e).context("loading gpu_calls.bpf.o"),
            }
        })?;
        for name in [ENTRY, RETURN] {
            super::uprobe(&mut ebpf, name)?
                .load()
                .with_context(|| format!("verifying {name}"))?;
        }
        let call_stacks = match call_stack_every {
            0 => None,
            every => Some(GpuCallStacks::take(&mut ebpf, every)?),
        };
        Ok(Self {
            ebpf,
            attached: HashMap::new(),
            detaching: HashMap::new(),
            call_stacks,
        })
    }

    /// The stacks of sampled launches and synchronisations, for whoever names
    /// them (the profiler); `None` when not sampled, or taken already.
    pub fn take_call_stacks(&mut self) -> Option<GpuCallStacks> {
        self.call_stacks.take()
    }

    /// Attaches the runtime's table to the library file; returns how many functions were probed.
    pub fn attach(&mut self, lib: &RuntimeLibrary) -> Result<usize> {
        let key = (lib.target.file, lib.runtime);
        if self.attached.contains_key(&key) {
            return Ok(0);
        }
        if let Some(detaching) = self.detaching.remove(&key) {
            detaching.wait();
        }
        let path = &lib.target.open_path;
        let specs = lib.runtime.probes();
        let offsets = symbols::function_offsets(path, specs.iter().map(|p| p.symbol))?;
        // A library of its own is all runtime code; a program linking the runtime has code of its own.
        let code = if lib.statically_linked {
            Vec::new()
        } else {
            symbols::code_ranges(path)?
        };
        let mut links = Vec::new();
        let mut probed = 0;
        let result = (|| -> Result<()> {
            for spec in specs {
                let Some(&offset) = offsets.get(spec.symbol) else {
                    continue;
                };
                let cookie = match code.iter().find(|r| r.contains(&offset)) {
                    Some(r) => spec.cookie.within_code(offset - r.start, r.end - offset),
                    None => spec.cookie,
                };
                let point = || UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(offset),
                    cookie: Some(cookie.encode()),
                };
                let mut attach = |name| -> Result<UProbeLink> {
                    let program = super::uprobe(&mut self.ebpf, name)?;
                    let link = program
                        .attach(point(), path, UProbeScope::AllProcesses)
                        .with_context(|| {
                            format!("attaching {name} to {} in {}", spec.symbol, path.display())
                        })?;
                    Ok(program.take_link(link)?)
                };
                links.push(attach(ENTRY)?);
                probed += 1;
                if spec.needs_return_probe() {
                    links.push(attach(RETURN)?);
                }
            }
            Ok(())
        })();
        let at = AttachedAt {
            since_boot: crate::clock::since_boot(),
            wall: SystemTime::now(),
        };
        self.attached.insert(key, Attached { links, at });
        if let Err(e) = result {
            self.detach(lib.target.file, lib.runtime);
            return Err(e);
        }
        Ok(probed)
    }

    /// Detaches the probes of a library file, in the background (see [`detach`]).
    pub fn detach(&mut self, file: FileId, runtime: Runtime) {
        self.detaching.retain(|_, d| !d.is_done());
        if let Some(attached) = self.attached.remove(&(file, runtime)) {
            self.detaching
                .insert((file, runtime), detach::in_background(attached.links));
        }
    }

    /// When the file's probes were attached, if they are.
    pub fn attached_at(&self, file: FileId, runtime: Runtime) -> Option<AttachedAt> {
        self.attached.get(&(file, runtime)).map(|a| a.at)
    }

    /// Cumulative counters of every process that made a probed call, summed over CPUs.
    pub fn stats(&self) -> Result<HashMap<u32, GpuStats>> {
        let map: PerCpuHashMap<_, u32, GpuStats> =
            PerCpuHashMap::try_from(self.map("gpu_stats")?).context("gpu_stats")?;
        let mut out = HashMap::new();
        for entry in map.iter() {
            let (pid, per_cpu) = entry.context("reading gpu_stats")?;
            out.insert(
                pid,
                per_cpu.iter().fold(GpuStats::default(), |acc, cpu| {
                    zip_with(&acc, cpu, u64::wrapping_add)
                }),
            );
        }
        Ok(out)
    }

    /// Who the kernel recorded `pid` to be at its first counted call.
    pub fn recorded_process(&self, pid: u32) -> Result<Option<GpuProcess>> {
        let map: BpfHashMap<_, u32, GpuProcess> =
            BpfHashMap::try_from(self.map("gpu_processes")?).context("gpu_processes")?;
        match map.get(&pid, 0) {
            Ok(p) => Ok(Some(p)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading gpu_processes"),
        }
    }

    /// Releases what the kernel holds for processes that are gone (or not
    /// wanted): their counters, who they were, and their live allocations, in
    /// one pass over the allocation table however many processes go.
    pub fn forget(&mut self, pids: &HashSet<u32>) {
        if pids.is_empty() {
            return;
        }
        if let Some(Ok(mut stats)) = self
            .ebpf
            .map_mut("gpu_stats")
            .map(PerCpuHashMap::<_, u32, GpuStats>::try_from)
        {
            pids.iter().for_each(|pid| drop(stats.remove(pid)));
        }
        if let Some(Ok(mut recorded)) = self
            .ebpf
            .map_mut("gpu_processes")
            .map(BpfHashMap::<_, u32, GpuProcess>::try_from)
        {
            pids.iter().for_each(|pid| drop(recorded.remove(pid)));
        }
        if let Some(Ok(mut allocs)) = self
            .ebpf
            .map_mut("live_allocs")
            .map(BpfHashMap::<_, AllocKey, u64>::try_from)
        {
            let dead: Vec<AllocKey> = allocs
                .keys()
                .flatten()
                .filter(|k| pids.contains(&k.tgid))
                .collect();
            for key in dead {
                let _ = allocs.remove(&key);
            }
        }
    }

    pub fn drops(&self) -> Result<super::Drops> {
        read_drops(&self.ebpf)
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| anyhow!("map {name} missing from gpu_calls.bpf.o"))
    }
}
