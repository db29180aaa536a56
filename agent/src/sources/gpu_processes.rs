//! The GPU-process source: which processes use a GPU runtime (discovered at
//! start, on exec and on dlopen), which library files carry probes and who
//! maps them, and each process's cumulative GPU counters.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use inferscope_shared::{DROP_PROC_EVENT, DROP_REASONS, PROC_EXEC, PROC_EXIT, PROC_LIBS_CHANGED, ProcEvent};

use crate::{
    discover::{Discovery, ProcessLibraries, maps::FileId, process},
    join::ProcessReading,
    model::ProcessIdentity,
    probes::{GpuProbes, ProcessProbes},
    runtimes::Runtime,
};

struct Tracked {
    identity: ProcessIdentity,
    /// The probed files it maps, and as which runtime.
    files: BTreeSet<(FileId, Runtime)>,
    exited: bool,
}

pub struct GpuProcesses {
    discovery: Discovery,
    gpu: GpuProbes,
    process: ProcessProbes,
    /// Only these processes are tracked, when set.
    only_pids: Option<HashSet<u32>>,
    tracked: BTreeMap<u32, Tracked>,
    /// Which tracked processes map each probed file: probes go when the last one does.
    users: HashMap<(FileId, Runtime), BTreeSet<u32>>,
    /// Exec'd processes to look at again once their loader has had time to run.
    exec_pending: HashSet<u32>,
    proc_events_lost: u64,
}

impl GpuProcesses {
    pub fn start(
        discovery: Discovery,
        gpu: GpuProbes,
        process: ProcessProbes,
        only_pids: Option<HashSet<u32>>,
    ) -> Result<Self> {
        let mut source = Self {
            discovery,
            gpu,
            process,
            only_pids,
            tracked: BTreeMap::new(),
            users: HashMap::new(),
            exec_pending: HashSet::new(),
            proc_events_lost: 0,
        };
        for pid in source.all_pids()? {
            source.rescan(pid);
        }
        Ok(source)
    }

    pub fn tracked_pids(&self) -> Vec<u32> {
        self.tracked.keys().copied().collect()
    }

    /// Every process on the host, tracked or not.
    pub fn all_pids(&self) -> Result<Vec<u32>> {
        self.discovery
            .pids()
            .with_context(|| format!("listing {}", self.discovery.proc_root().display()))
    }

    /// The process lifecycle ring buffer, for the pipeline to poll (once).
    pub fn events(&mut self) -> Result<RingBuf<MapData>> {
        self.process.events()
    }

    pub fn handle(&mut self, event: &ProcEvent) {
        match event.kind {
            PROC_EXEC => {
                // A statically linked runtime is visible now, shared ones once the loader ran.
                self.rescan(event.pid);
                self.exec_pending.insert(event.pid);
            }
            PROC_LIBS_CHANGED => self.rescan(event.pid),
            PROC_EXIT => {
                self.exec_pending.remove(&event.pid);
                if let Some(t) = self.tracked.get_mut(&event.pid) {
                    t.exited = true;
                }
            }
            other => log::debug!("unknown process event kind {other}"),
        }
    }

    fn wanted(&self, pid: u32) -> bool {
        pid != std::process::id() && self.only_pids.as_ref().is_none_or(|p| p.contains(&pid))
    }

    /// Looks at a process's mappings again and attaches or releases probes to match.
    fn rescan(&mut self, pid: u32) {
        if !self.wanted(pid) {
            return;
        }
        let libs = match self.discovery.libraries(pid) {
            Ok(libs) => libs,
            Err(e) => {
                // Gone already, or a kernel thread: nothing to probe.
                log::trace!("pid {pid}: {e}");
                return;
            }
        };
        let ProcessLibraries { runtimes, loader } = libs;
        if let Some(loader) = &loader
            && let Err(e) = self.process.watch_loader(loader)
        {
            log::warn!("pid {pid}: dlopen will be noticed late: {e:#}");
        }
        let mut files = BTreeSet::new();
        for lib in &runtimes {
            match self.gpu.attach(lib) {
                Ok(0) => {}
                Ok(n) => log::info!(
                    "probing {n} {} functions in {}{} (first seen in pid {pid})",
                    lib.runtime.name(),
                    lib.target.path.display(),
                    if lib.statically_linked {
                        " (statically linked)"
                    } else {
                        ""
                    },
                ),
                Err(e) => {
                    log::warn!("pid {pid}: cannot probe {}: {e:#}", lib.target.path.display());
                    continue;
                }
            }
            files.insert((lib.target.file, lib.runtime));
        }
        if files.is_empty() && !self.tracked.contains_key(&pid) {
            return;
        }
        let tracked = self.tracked.entry(pid).or_insert_with(|| Tracked {
            identity: ProcessIdentity::default(),
            files: BTreeSet::new(),
            exited: false,
        });
        // exec replaces the image: refresh who it is.
        tracked.identity = process::identity(self.discovery.proc_root(), pid);
        let gone: Vec<_> = tracked.files.difference(&files).copied().collect();
        for key in &files {
            self.users.entry(*key).or_default().insert(pid);
        }
        tracked.files = files;
        for key in gone {
            self.release(key, pid);
        }
    }

    fn release(&mut self, key: (FileId, Runtime), pid: u32) {
        if let Some(users) = self.users.get_mut(&key) {
            users.remove(&pid);
            if users.is_empty() {
                self.users.remove(&key);
                self.gpu.detach(key.0, key.1);
                log::info!(
                    "no process maps {:?} file {:?} any more: probes detached",
                    key.1,
                    key.0
                );
            }
        }
    }

    /// Whether process events were lost since the last call.
    fn process_events_lost(&mut self) -> Result<bool> {
        let lost = self.process.drops()?[DROP_PROC_EVENT];
        let new = lost != self.proc_events_lost;
        self.proc_events_lost = lost;
        Ok(new)
    }

    /// Every tracked process's cumulative counters; exited processes are read
    /// a last time and then released.
    pub fn read(&mut self) -> Result<Vec<ProcessReading>> {
        for pid in std::mem::take(&mut self.exec_pending) {
            self.rescan(pid);
        }
        if self.process_events_lost()? {
            // dlopen or exec events were lost: look at every process again.
            for pid in self.discovery.pids().unwrap_or_default() {
                self.rescan(pid);
            }
        }
        let stats = self.gpu.stats()?;
        // A process can use an already probed library before discovery saw it;
        // one the agent does not track (--pid) is counted in the kernel all the same: drop that.
        for pid in stats
            .keys()
            .copied()
            .filter(|p| !self.tracked.contains_key(p))
            .collect::<Vec<_>>()
        {
            self.rescan(pid);
            if !self.tracked.contains_key(&pid) {
                self.gpu.forget(pid);
            }
        }
        let readings = self
            .tracked
            .iter()
            .map(|(pid, t)| {
                let runtimes: BTreeSet<_> = t.files.iter().map(|(_, rt)| *rt).collect();
                ProcessReading {
                    identity: t.identity.clone(),
                    runtimes: runtimes.into_iter().collect(),
                    stats: stats.get(pid).copied().unwrap_or_default(),
                    exited: t.exited,
                    pod: None,
                }
            })
            .collect();
        // Gone, or no longer mapping any runtime (exec'd another program, dlclose'd).
        let done: Vec<_> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.exited || t.files.is_empty())
            .map(|(p, _)| *p)
            .collect();
        for pid in done {
            if let Some(t) = self.tracked.remove(&pid) {
                self.gpu.forget(pid);
                for key in t.files {
                    self.release(key, pid);
                }
            }
        }
        Ok(readings)
    }

    /// Cumulative drops of the GPU and process objects, by reason.
    pub fn drops(&self) -> Result<[u64; DROP_REASONS.len()]> {
        let (gpu, process) = (self.gpu.drops()?, self.process.drops()?);
        Ok(std::array::from_fn(|i| gpu[i] + process[i]))
    }
}
