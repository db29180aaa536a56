//! The GPU-process source: which processes use a GPU runtime (discovered at
//! start, on exec and on dlopen), which library files carry probes and who
//! holds them (the processes that map them, the mount namespaces they are
//! installed in), and each process's cumulative GPU counters.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use inferscope_shared::{DropReason, PROC_EXEC, PROC_EXIT, PROC_LIBS_CHANGED, ProcEvent};

use crate::{
    discover::{
        Discovery, ProbeTarget, ProcessLibraries, RuntimeLibrary,
        installed::{self, InstalledFile, LoaderEnv, Root},
        maps::FileId,
        process,
    },
    model::ProcessIdentity,
    probes::{GpuProbes, ProcessProbes},
    runtimes::Runtime,
    sources::{ProcessReading, Readings, Source},
};

/// Whether a rescan may find fewer runtimes than the process had.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Image {
    /// After exec: the new program's runtimes replace the old one's.
    New,
    /// The same program: runtimes are only added. A process's maps can read
    /// without a runtime it still calls (seen while it forks or exits), and
    /// dropping it would end the process's report early; one that dlclose's
    /// its runtime (rare: CUDA cannot be unloaded safely) keeps the probes
    /// until it exits.
    Same,
}

struct Tracked {
    identity: ProcessIdentity,
    /// When it started at the latest, since boot (the end of its clock tick);
    /// `None` when /proc could not say.
    started: Option<Duration>,
    /// The probed files it maps, and as which runtime.
    files: BTreeSet<(FileId, Runtime)>,
    exited: bool,
}

/// What keeps a probed file's probes attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Holder {
    /// A tracked process maps it.
    Process(u32),
    /// It is installed where the processes of this mount namespace load runtimes from.
    Namespace(u64),
}

/// A mount namespace whose installed runtime files were probed.
struct Namespace {
    /// A process known to live in it; another is looked for when it goes.
    member: u32,
    files: Vec<(FileId, Runtime)>,
}

pub struct GpuProcesses {
    discovery: Discovery,
    gpu: GpuProbes,
    process: ProcessProbes,
    /// Only these processes are tracked, when set.
    only_pids: Option<HashSet<u32>>,
    tracked: BTreeMap<u32, Tracked>,
    /// What holds each probed file.
    users: HashMap<(FileId, Runtime), BTreeSet<Holder>>,
    /// Mount namespaces looked into, by the inode that names them.
    namespaces: HashMap<u64, Namespace>,
    /// Probed files nothing holds any more, since when: their probes go after
    /// `linger`, unless a process maps the file again before.
    unused: HashMap<(FileId, Runtime), Instant>,
    linger: Duration,
    /// Exec'd processes to look at again once their loader has had time to run.
    exec_pending: HashSet<u32>,
    /// Per process, the runtime files the kernel named underneath the ones /proc shows.
    underneath: HashMap<u32, HashMap<FileId, FileId>>,
    proc_events_lost: u64,
    /// Loader files that failed to be watched, whose failure has been said.
    loaders_failed: HashSet<FileId>,
}

impl GpuProcesses {
    /// `linger`: how long a library file keeps its probes after the last
    /// process that mapped it is gone. Probing takes time, during which the
    /// next process to load the library (a job run again, a health check, a
    /// test suite) makes uncounted calls (seconds on a GPU machine:
    /// docs/architecture.md). A file nobody maps costs nothing to keep probed
    /// but its inode.
    pub fn start(
        discovery: Discovery,
        gpu: GpuProbes,
        process: ProcessProbes,
        only_pids: Option<HashSet<u32>>,
        linger: Duration,
    ) -> Result<Self> {
        let mut source = Self {
            discovery,
            gpu,
            process,
            only_pids,
            tracked: BTreeMap::new(),
            users: HashMap::new(),
            namespaces: HashMap::new(),
            unused: HashMap::new(),
            linger,
            exec_pending: HashSet::new(),
            underneath: HashMap::new(),
            proc_events_lost: 0,
            loaders_failed: HashSet::new(),
        };
        for pid in source.all_pids()? {
            source.probe_namespace_of(pid);
            source.rescan(pid, Image::Same);
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
                // A container's first program: its runtimes, probed before it loads them.
                self.probe_namespace_of(event.pid);
                // A statically linked runtime is visible now, shared ones once the loader ran.
                self.rescan(event.pid, Image::New);
                self.exec_pending.insert(event.pid);
            }
            PROC_LIBS_CHANGED => {
                // The loader is watched and has loaded what the program needs: no second look.
                self.exec_pending.remove(&event.pid);
                self.rescan(event.pid, Image::Same);
            }
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
    fn rescan(&mut self, pid: u32, image: Image) {
        if !self.wanted(pid) {
            return;
        }
        // Before its mappings: a process that exits between the two reads
        // leaves no mappings, rather than mappings without a start time.
        let started = process::started(self.discovery.proc_root(), pid);
        let libs = match self.discovery.libraries(pid) {
            Ok(libs) => libs,
            Err(e) => {
                // Gone already, or a kernel thread: nothing to probe.
                log::trace!("pid {pid}: {e}");
                return;
            }
        };
        let ProcessLibraries {
            runtimes,
            loader,
            exe,
        } = self.underneath(pid, libs);
        if let Some(loader) = &loader
            && let Err(e) = self.process.watch_loader(loader)
        {
            // Tried again with each process (another may be permitted), said
            // once per loader file: without a capability, every process fails alike.
            if self.loaders_failed.insert(loader.file) {
                log::warn!("pid {pid}: dlopen will be noticed late: {e:#}");
            } else {
                log::debug!("pid {pid}: dlopen will be noticed late: {e:#}");
            }
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
            self.underneath.remove(&pid);
            return;
        }
        // exec replaces the image: refresh who it is, unless the new program maps
        // no runtime: then this is the last report of what the old one did.
        let identity = (!files.is_empty()).then(|| self.identity(pid, exe.as_deref()));
        let tracked = self.tracked.entry(pid).or_insert_with(|| Tracked {
            identity: ProcessIdentity::default(),
            started,
            files: BTreeSet::new(),
            exited: false,
        });
        if let Some(identity) = identity {
            tracked.identity = identity;
        }
        if image == Image::Same {
            files.extend(tracked.files.iter().copied());
        }
        let gone: Vec<_> = tracked.files.difference(&files).copied().collect();
        tracked.files = files.clone();
        for key in files {
            self.hold(key, Holder::Process(pid));
        }
        for key in gone {
            self.release(key, Holder::Process(pid));
        }
    }

    /// Probes the runtime files installed in `pid`'s mount namespace, the
    /// first time a process of that namespace is seen: the processes that
    /// load them later are counted from their first call.
    fn probe_namespace_of(&mut self, pid: u32) {
        if !self.wanted(pid) {
            return;
        }
        let proc_root = self.discovery.proc_root();
        let Some(ns) = process::mount_namespace(proc_root, pid) else {
            return;
        };
        if self.namespaces.contains_key(&ns) {
            return;
        }
        let found = match Root::of_process(proc_root, pid) {
            Ok(root) => installed::runtime_files(&root, &LoaderEnv::of_process(proc_root, pid)),
            Err(e) => {
                log::debug!("pid {pid}: cannot open its root: {e}");
                return;
            }
        };
        let mut files = Vec::new();
        for (file, id) in self.uprobe_identities(found) {
            let lib = RuntimeLibrary {
                runtime: file.runtime,
                target: ProbeTarget {
                    file: id,
                    mapped_at: 0,
                    open_path: installed::fd_path(&file.file),
                    path: file.path.clone(),
                },
                statically_linked: false,
            };
            match self.gpu.attach(&lib) {
                Ok(0) => {}
                Ok(n) => log::info!(
                    "probing {n} {} functions in {}, installed in the mount namespace of pid {pid}",
                    file.runtime.name(),
                    file.path.display()
                ),
                Err(e) => {
                    log::warn!(
                        "cannot probe {} (mount namespace of pid {pid}): {e:#}",
                        file.path.display()
                    );
                    continue;
                }
            }
            files.push((id, file.runtime));
        }
        for &key in &files {
            self.hold(key, Holder::Namespace(ns));
        }
        self.namespaces.insert(ns, Namespace { member: pid, files });
    }

    /// Each installed file with the identity its uprobes will have: `stat`'s
    /// where the file lives on a block device, the kernel's elsewhere (see
    /// [`Self::underneath`]), read from a mapping of the file made here for
    /// the purpose. Where the kernel cannot say, those files are left to be
    /// probed when a process maps them: probed under another identity, they
    /// would be probed twice.
    fn uprobe_identities(&mut self, files: Vec<InstalledFile>) -> Vec<(InstalledFile, FileId)> {
        let (plain, layered): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| libc::major(f.id.dev) != 0);
        let mut out: Vec<_> = plain
            .into_iter()
            .map(|f| {
                let id = f.id;
                (f, id)
            })
            .collect();
        if layered.is_empty() || !self.process.knows_mapped_files() {
            return out;
        }
        let mapped: Vec<_> = layered
            .iter()
            .map(|f| installed::ReadMapping::of(&f.file))
            .collect();
        let underneath = match self.process.mapped_files(std::process::id()) {
            Ok(Some(files)) => files,
            Ok(None) => return out,
            Err(e) => {
                log::debug!("reading the agent's own mappings: {e:#}");
                return out;
            }
        };
        for (file, mapping) in layered.into_iter().zip(&mapped) {
            if let Some(id) = mapping.as_ref().ok().and_then(|m| underneath.get(&m.start())) {
                out.push((file, *id));
            }
        }
        out
    }

    /// The libraries with each runtime file named by the inode its uprobes
    /// belong to. /proc names a file on overlayfs by the overlay's inode, one
    /// per container, while uprobes are set on the layer's file underneath,
    /// shared by every replica of an image: probed once per replica, each call
    /// would be counted once per replica. Asked of the kernel only for runtime
    /// files on filesystems without a block device of their own (overlayfs
    /// among them; elsewhere /proc's identity is the file's), and once per
    /// file per process: the walk (of every task, before 6.1) is not paid at
    /// each rescan, nor for processes without a runtime. The dynamic loader
    /// keeps /proc's identity: a probe per container costs a rescan more per
    /// dlopen, never a count.
    fn underneath(&mut self, pid: u32, mut libs: ProcessLibraries) -> ProcessLibraries {
        if !libs.runtimes.iter().any(|r| libc::major(r.target.file.dev) == 0) {
            return libs;
        }
        let known = self.underneath.entry(pid).or_default();
        let unknown = libs
            .runtimes
            .iter()
            .any(|r| libc::major(r.target.file.dev) == 0 && !known.contains_key(&r.target.file));
        if unknown {
            match self.process.mapped_files(pid) {
                Ok(Some(files)) => {
                    for lib in &libs.runtimes {
                        if let Some(&file) = files.get(&lib.target.mapped_at) {
                            known.insert(lib.target.file, file);
                        }
                    }
                }
                Ok(None) => {}
                // Gone meanwhile: the caller finds out from /proc.
                Err(e) => log::debug!("pid {pid}: {e:#}"),
            }
        }
        for lib in &mut libs.runtimes {
            if let Some(&file) = known.get(&lib.target.file) {
                lib.target.file = file;
            }
        }
        libs
    }

    /// Who `pid`, whose maps showed `mapped_exe`, is: from /proc, unless /proc
    /// no longer tells (the process is exiting) or tells of another program
    /// (it exec'd since its maps were read; seen under QEMU: a churn child
    /// named after the `true` it exec'd into): then from the kernel's record
    /// of its first GPU call.
    fn identity(&self, pid: u32, mapped_exe: Option<&Path>) -> ProcessIdentity {
        let mut identity = process::identity(self.discovery.proc_root(), pid);
        let exec_since = mapped_exe.is_some_and(|exe| exe.display().to_string() != identity.exe);
        if (identity.comm.is_empty() || exec_since)
            && let Some(recorded) = self.recorded(pid)
        {
            identity.comm = recorded.comm;
            identity.ppid = recorded.ppid;
            if let Some(exe) = mapped_exe {
                identity.exe = exe.display().to_string();
            }
        }
        identity
    }

    /// The kernel's record of who `pid` was at its first counted GPU call.
    fn recorded(&self, pid: u32) -> Option<ProcessIdentity> {
        match self.gpu.recorded_process(pid) {
            Ok(recorded) => recorded.map(|r| ProcessIdentity {
                pid,
                ppid: r.ppid,
                comm: command_name(&r.comm),
                ..ProcessIdentity::default()
            }),
            Err(e) => {
                log::warn!("pid {pid}: {e:#}");
                None
            }
        }
    }

    fn hold(&mut self, key: (FileId, Runtime), holder: Holder) {
        self.users.entry(key).or_default().insert(holder);
        self.unused.remove(&key);
    }

    fn release(&mut self, key: (FileId, Runtime), holder: Holder) {
        if let Some(users) = self.users.get_mut(&key) {
            users.remove(&holder);
            if users.is_empty() {
                self.users.remove(&key);
                self.unused.insert(key, Instant::now());
            }
        }
    }

    /// Releases the files of mount namespaces no process lives in any more
    /// (a container that stopped). Asked of one member per namespace; /proc is
    /// listed only when a member left.
    fn release_gone_namespaces(&mut self) {
        let proc_root = self.discovery.proc_root();
        let mut orphans: HashSet<u64> = self
            .namespaces
            .iter()
            .filter(|(ns, n)| process::mount_namespace(proc_root, n.member) != Some(**ns))
            .map(|(ns, _)| *ns)
            .collect();
        if orphans.is_empty() {
            return;
        }
        for pid in self.discovery.pids().unwrap_or_default() {
            if let Some(ns) = process::mount_namespace(proc_root, pid)
                && orphans.remove(&ns)
                && let Some(n) = self.namespaces.get_mut(&ns)
            {
                n.member = pid;
            }
        }
        for ns in orphans {
            if let Some(gone) = self.namespaces.remove(&ns) {
                for key in gone.files {
                    self.release(key, Holder::Namespace(ns));
                }
            }
        }
    }

    /// Since when every call of `t` is counted, when not from its start: the
    /// latest attachment of its files' probes made after it started, before
    /// which it may have called them unseen. An attachment within the clock
    /// tick it started in counts as before: a process cannot load a runtime
    /// and call it in the few milliseconds left, and saying otherwise would
    /// flag processes counted whole. Nothing is said of a process whose start
    /// is unknown (one seen only by its counters, after it exited).
    fn counted_since(&self, t: &Tracked) -> Option<SystemTime> {
        let started = t.started?;
        t.files
            .iter()
            .filter_map(|&(file, runtime)| self.gpu.attached_at(file, runtime))
            .filter(|at| at.since_boot > started)
            .max()
            .map(|at| at.wall)
    }

    /// Detaches the probes of files nobody has mapped for `linger`.
    fn detach_unused(&mut self) {
        let linger = self.linger;
        let expired: Vec<_> = self
            .unused
            .extract_if(|_, since| since.elapsed() >= linger)
            .map(|(key, _)| key)
            .collect();
        for (file, runtime) in expired {
            self.gpu.detach(file, runtime);
            log::info!("no process has mapped {runtime:?} file {file:?} for {linger:?}: probes detached");
        }
    }

    /// Whether process events were lost since the last call.
    fn process_events_lost(&mut self) -> Result<bool> {
        let lost = self.process.drops()?.get(DropReason::ProcEventRingFull);
        let new = lost != self.proc_events_lost;
        self.proc_events_lost = lost;
        Ok(new)
    }

    /// Every tracked process's cumulative counters; a process that exited (or
    /// maps no runtime any more) is read a last time, marked so, and released.
    fn processes(&mut self) -> Result<Vec<ProcessReading>> {
        for pid in std::mem::take(&mut self.exec_pending) {
            self.rescan(pid, Image::New);
        }
        let events_lost = self.process_events_lost()?;
        if events_lost {
            // dlopen or exec events were lost: look at every process again.
            for pid in self.discovery.pids().unwrap_or_default() {
                self.rescan(pid, Image::Same);
            }
        }
        let mut stats = self.gpu.stats()?;
        let mut found_gone = false;
        let mut forget = HashSet::new();
        // A process can call an already probed library and exit before discovery
        // sees it (a fork of a process that mapped it runs no loader and no exec):
        // the kernel kept its counters and who it was, so it is reported all the same.
        let unknown: Vec<u32> = stats
            .keys()
            .copied()
            .filter(|p| !self.tracked.contains_key(p))
            .collect();
        for pid in unknown {
            if !self.wanted(pid) {
                // Counted in the kernel all the same (--pid names others).
                forget.insert(pid);
                continue;
            }
            self.rescan(pid, Image::Same);
            // While its /proc entry exists it may still be calling (a process's
            // maps can read without the runtime while it forks, execs or exits):
            // its counters wait in the kernel until it is tracked or gone.
            if !self.tracked.contains_key(&pid) && !process::exists(self.discovery.proc_root(), pid) {
                found_gone = true;
                let identity = self.recorded(pid).unwrap_or(ProcessIdentity {
                    pid,
                    ..ProcessIdentity::default()
                });
                self.tracked.insert(
                    pid,
                    Tracked {
                        identity,
                        started: None,
                        files: BTreeSet::new(),
                        exited: true,
                    },
                );
            }
        }
        if events_lost {
            // Exits may have been among the lost events.
            for (pid, t) in &mut self.tracked {
                t.exited |= !process::exists(self.discovery.proc_root(), *pid);
                found_gone |= t.exited;
            }
        }
        if found_gone {
            // Counters read before a process was seen gone can miss its last
            // calls (seen: a call made between the two): read them again now
            // that nothing more can come.
            stats = self.gpu.stats()?;
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
                    // Gone, or exec'd a program that maps no runtime.
                    exited: t.exited || t.files.is_empty(),
                    counted_since: self.counted_since(t),
                    pod: None,
                }
            })
            .collect::<Vec<_>>();
        for reading in readings.iter().filter(|r| r.exited) {
            let pid = reading.identity.pid;
            self.underneath.remove(&pid);
            if let Some(t) = self.tracked.remove(&pid) {
                forget.insert(pid);
                for key in t.files {
                    self.release(key, Holder::Process(pid));
                }
            }
        }
        self.gpu.forget(&forget);
        self.release_gone_namespaces();
        self.detach_unused();
        Ok(readings)
    }
}

impl Source for GpuProcesses {
    fn read(&mut self, _now_ns: u64, readings: &mut Readings) -> Result<()> {
        readings.processes = self.processes()?;
        readings.add_drops(self.gpu.drops()?);
        readings.add_drops(self.process.drops()?);
        Ok(())
    }
}

/// A kernel `comm` (NUL-padded, possibly all 16 bytes used), lossily decoded.
fn command_name(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::command_name;

    #[test]
    fn a_command_name_ends_at_its_first_nul_and_may_fill_all_sixteen_bytes() {
        assert_eq!(command_name(b"churn-7\0garbage\0"), "churn-7");
        assert_eq!(command_name(b"sixteen-bytes-xy"), "sixteen-bytes-xy");
        assert_eq!(command_name(&[0; 16]), "");
        assert_eq!(command_name(b"\xffok\0"), "\u{fffd}ok");
    }
}
