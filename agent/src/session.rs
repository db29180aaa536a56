//! A running agent: which processes it tracks, which library files carry its
//! probes, and the counters it last reported. The CLI feeds it process events
//! and asks it for one report per interval.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use inferscope_shared::{DROP_PROC_EVENT, GpuStats, PROC_EXEC, PROC_EXIT, PROC_LIBS_CHANGED, ProcEvent};

use crate::{
    derive::gpu::GpuActivity,
    discover::{Discovery, ProcessLibraries, maps::FileId, process::ProcessInfo},
    join::{ProcessReport, Report},
    probes::{DropDeltas, GpuProbes, ProcessProbes},
    runtimes::Runtime,
};

struct Tracked {
    info: ProcessInfo,
    /// The probed files it maps, and as which runtime.
    files: BTreeSet<(FileId, Runtime)>,
    reported: GpuStats,
    exited: bool,
}

pub struct Session {
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
    drops: DropDeltas,
    proc_events_lost: u64,
}

impl Session {
    pub fn start(
        discovery: Discovery,
        gpu: GpuProbes,
        process: ProcessProbes,
        only_pids: Option<HashSet<u32>>,
    ) -> Result<Self> {
        let pids = discovery
            .pids()
            .with_context(|| format!("listing {}", discovery.proc_root().display()))?;
        let mut session = Self {
            discovery,
            gpu,
            process,
            only_pids,
            tracked: BTreeMap::new(),
            users: HashMap::new(),
            exec_pending: HashSet::new(),
            drops: DropDeltas::default(),
            proc_events_lost: 0,
        };
        for pid in pids {
            session.rescan(pid);
        }
        Ok(session)
    }

    pub fn tracked_pids(&self) -> Vec<u32> {
        self.tracked.keys().copied().collect()
    }

    pub fn process_probes(&mut self) -> &mut ProcessProbes {
        &mut self.process
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
            info: ProcessInfo::default(),
            files: BTreeSet::new(),
            reported: GpuStats::default(),
            exited: false,
        });
        // exec replaces the image: refresh who it is.
        tracked.info = ProcessInfo::read(self.discovery.proc_root(), pid);
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

    /// One interval's report; exited processes appear a last time and are then released.
    pub fn report(&mut self, interval: Duration) -> Result<Report> {
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
        let mut processes = Vec::new();
        for (pid, t) in &mut self.tracked {
            let now = stats.get(pid).copied().unwrap_or(t.reported);
            let gpu = GpuActivity::between(&t.reported, &now);
            t.reported = now;
            let runtimes: BTreeSet<_> = t.files.iter().map(|(_, rt)| *rt).collect();
            let runtimes = runtimes.into_iter().collect();
            processes.push(ProcessReport {
                info: t.info.clone(),
                runtimes,
                gpu,
                exited: t.exited,
            });
        }
        // Gone, or no longer mapping any runtime (exec'd another program, dlclose'd).
        let exited: Vec<_> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.exited || t.files.is_empty())
            .map(|(p, _)| *p)
            .collect();
        for pid in exited {
            if let Some(t) = self.tracked.remove(&pid) {
                self.gpu.forget(pid);
                for key in t.files {
                    self.release(key, pid);
                }
            }
        }

        let (gpu_drops, proc_drops) = (self.gpu.drops()?, self.process.drops()?);
        let drops = self
            .drops
            .take(std::array::from_fn(|i| gpu_drops[i] + proc_drops[i]));
        Ok(Report {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            interval_s: interval.as_secs_f64(),
            processes,
            servers: Vec::new(),
            dropped_events: drops.values().sum(),
            drops,
        })
    }
}
