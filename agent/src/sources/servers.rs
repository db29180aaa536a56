//! The inference-server source: which servers' traffic to capture, and the
//! requests it carries. Ports named on the command line, and the listening
//! ports of recognised inference servers, of GPU processes and of processes
//! named with `--pid`/`--comm`: looked at when a process becomes a candidate,
//! then again at growing intervals up to [`PORT_REFRESH`] (servers often start
//! listening long after they start: vLLM loads its model first).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    path::PathBuf,
    time::Duration,
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};

use super::{Readings, Source};
use crate::{
    clock::Clock,
    decode::NetEvent,
    derive::requests::{QueueReport, RequestTracker, ServerKey},
    discover::{
        listeners::{listening_ports, namespace_listeners, net_namespace},
        process, tls_libraries,
    },
    engines,
    model::{Engine, RequestRecord},
    probes::NetProbes,
};

/// The longest a candidate's listening ports (and TLS library) go unchecked;
/// a new candidate is checked again after 100 ms, then after twice as long
/// each time, up to this.
const PORT_REFRESH: Duration = Duration::from_secs(5);

const FIRST_WAIT_NS: u64 = 100_000_000;

/// When a candidate's ports are next looked at, and the wait after that.
#[derive(Clone, Copy, Default)]
struct Refresh {
    due_ns: u64,
    wait_ns: u64,
}

/// A process whose listening ports are watched.
struct Candidate {
    comm: String,
    /// The engine it runs, where recognised.
    engine: Option<Engine>,
}

pub struct Servers {
    net: NetProbes,
    tracker: RequestTracker,
    proc_root: PathBuf,
    comms: Vec<String>,
    /// Processes whose listening ports are watched.
    candidates: BTreeMap<u32, Candidate>,
    /// Command names of the processes serving ports named with `--port`
    /// (not candidates), read once each.
    port_owners: BTreeMap<u32, String>,
    /// (port, network namespace inode); `None`: any namespace (`--port`).
    watched_ports: BTreeSet<(u16, Option<u32>)>,
    /// Requests finished since [`Servers::take_finished`] was last called.
    finished: Vec<RequestRecord>,
    refresh: HashMap<u32, Refresh>,
}

impl Servers {
    pub fn start(
        mut net: NetProbes,
        proc_root: PathBuf,
        ports: &[u16],
        comms: Vec<String>,
        clock: Clock,
    ) -> Result<Self> {
        for &port in ports {
            net.watch_port(port, None)?;
        }
        Ok(Self {
            net,
            tracker: RequestTracker::new(clock, clock.now_ns()),
            proc_root,
            comms,
            candidates: BTreeMap::new(),
            port_owners: BTreeMap::new(),
            watched_ports: ports.iter().map(|&p| (p, None)).collect(),
            finished: Vec::new(),
            refresh: HashMap::new(),
        })
    }

    /// The socket-capture ring buffer, for the pipeline to poll (once).
    pub fn events(&mut self) -> Result<RingBuf<MapData>> {
        self.net.events()
    }

    /// Watches `pid`'s ports from now on if it is a server, or `always`.
    pub fn consider(&mut self, pid: u32, always: bool) {
        if self.candidates.contains_key(&pid) {
            return;
        }
        let dir = self.proc_root.join(pid.to_string());
        let comm = process::comm(&self.proc_root, pid);
        let cmdline = fs::read_to_string(dir.join("cmdline")).unwrap_or_default();
        let engine = engines::recognise(&comm, &cmdline);
        if always || engine.is_some() || self.comms.contains(&comm) {
            self.candidates.insert(pid, Candidate { comm, engine });
            let netns = net_namespace(&self.proc_root, pid);
            let listeners = namespace_listeners(&self.proc_root, pid, netns);
            self.refresh_ports(pid, netns, &listeners);
        }
    }

    /// A process ended: its open requests end with it (aborted), and its probes go.
    pub fn process_exited(&mut self, pid: u32, now_ns: u64) {
        let engine = self.candidates.remove(&pid).and_then(|c| c.engine);
        self.refresh.remove(&pid);
        self.net.detach_tls(pid);
        let before = self.finished.len();
        self.tracker.forget_pid(pid, now_ns, &mut self.finished);
        // Its last requests are named now: it will not be a candidate when they are taken.
        for request in &mut self.finished[before..] {
            request.engine = engine.clone();
        }
    }

    /// Looks for `pid`'s TLS library and listening ports (`listeners`: those of
    /// its network namespace, `netns`).
    fn refresh_ports(&mut self, pid: u32, netns: Option<u32>, listeners: &[(u16, u64)]) {
        // TLS: the plaintext of its OpenSSL calls (libssl may be loaded late: look until found).
        if !self.net.has_tls(pid)
            && let Some(libraries) = tls_libraries(&self.proc_root, pid)
        {
            match self.net.attach_tls(pid, &libraries) {
                Ok(0) => {}
                Ok(n) => log::info!(
                    "capturing TLS plaintext of pid {pid} ({n} functions in {})",
                    libraries.libssl.path.display()
                ),
                Err(e) => log::warn!("pid {pid}: TLS traffic will not be decoded: {e:#}"),
            }
        }
        for port in listening_ports(&self.proc_root, pid, listeners) {
            if self.watched_ports.insert((port, netns)) {
                match self.net.watch_port(port, netns) {
                    Ok(()) => log::info!("capturing requests to port {port} (pid {pid})"),
                    Err(e) => log::warn!("cannot watch port {port}: {e:#}"),
                }
            }
        }
    }

    pub fn on_event(&mut self, ev: &NetEvent<'_>) {
        self.tracker.on_event(ev, &mut self.finished);
    }

    /// Requests finished since the last call.
    pub fn take_finished(&mut self) -> Vec<RequestRecord> {
        let mut finished = std::mem::take(&mut self.finished);
        for request in &mut finished {
            if request.engine.is_none() {
                request.engine = self.candidates.get(&request.pid).and_then(|c| c.engine.clone());
            }
        }
        finished
    }

    /// The command name of each process whose ports are watched, and of each
    /// process in `serving` (those serving a port named with `--port`).
    pub fn comms(&mut self, serving: impl IntoIterator<Item = u32>) -> BTreeMap<u32, String> {
        let mut comms: BTreeMap<u32, String> = self
            .candidates
            .iter()
            .map(|(&pid, c)| (pid, c.comm.clone()))
            .collect();
        let mut owners = BTreeMap::new();
        for pid in serving {
            if !comms.contains_key(&pid) {
                let comm = self
                    .port_owners
                    .remove(&pid)
                    .unwrap_or_else(|| process::comm(&self.proc_root, pid));
                owners.insert(pid, comm);
            }
        }
        // A process gone before its name was read is not named by an empty string.
        owners.retain(|_, comm| !comm.is_empty());
        comms.extend(owners.iter().map(|(&pid, comm)| (pid, comm.clone())));
        // Only those still serving are kept.
        self.port_owners = owners;
        comms
    }

    /// Every server's queue at the interval's end; exited candidates are let go,
    /// and those due have their ports looked at again.
    fn interval_end(&mut self, now_ns: u64) -> BTreeMap<ServerKey, QueueReport> {
        let queues = self.tracker.interval_end(now_ns);
        // One listener table per network namespace, however many candidates share it.
        let mut tables: HashMap<Option<u32>, Vec<(u16, u64)>> = HashMap::new();
        for pid in self.candidates.keys().copied().collect::<Vec<_>>() {
            let refresh = self.refresh.entry(pid).or_default();
            let due = now_ns >= refresh.due_ns;
            if due {
                refresh.wait_ns = (refresh.wait_ns * 2).clamp(FIRST_WAIT_NS, PORT_REFRESH.as_nanos() as u64);
                refresh.due_ns = now_ns + refresh.wait_ns;
            }
            if !process::exists(&self.proc_root, pid) {
                self.process_exited(pid, now_ns);
            } else if due {
                let netns = net_namespace(&self.proc_root, pid);
                let listeners = tables
                    .entry(netns)
                    .or_insert_with(|| namespace_listeners(&self.proc_root, pid, netns))
                    .clone();
                self.refresh_ports(pid, netns, &listeners);
            }
        }
        queues
    }
}

impl Source for Servers {
    fn read(&mut self, now_ns: u64, readings: &mut Readings) -> Result<()> {
        readings.add_drops(self.net.drops()?);
        readings.dropped_requests = self.tracker.dropped();
        let queues = self.interval_end(now_ns);
        // A GPU process's ports are captured whatever its name.
        for p in readings.processes.iter().filter(|p| !p.exited) {
            self.consider(p.identity.pid, true);
        }
        readings.server_comms = self.comms(queues.keys().map(|&(pid, _)| pid));
        readings.queues = queues;
        Ok(())
    }
}
