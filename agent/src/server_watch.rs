//! Which servers' traffic to capture, and what it says: ports named on the
//! command line, and the listening ports of recognised inference servers, of
//! GPU processes and of processes named with `--pid`/`--comm`, refreshed every
//! interval (servers often start listening long after they start).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::PathBuf,
};

use anyhow::Result;

use crate::{
    derive::requests::{RequestRecord, RequestTracker},
    discover::{
        listeners::{listening_ports, net_namespace},
        process::is_known_server,
        tls_library,
    },
    join::servers::{ServerReport, server_reports},
    probes::{DropDeltas, NetEvent, NetProbes},
};

pub struct ServerWatch {
    net: NetProbes,
    tracker: RequestTracker,
    proc_root: PathBuf,
    comms: Vec<String>,
    /// Processes whose listening ports are watched.
    candidates: BTreeSet<u32>,
    /// (port, network namespace inode); `None`: any namespace (`--port`).
    watched_ports: BTreeSet<(u16, Option<u32>)>,
    /// Requests finished in this interval; the first `printed` were handed out by `new_requests`.
    finished: Vec<RequestRecord>,
    printed: usize,
    drops: DropDeltas,
}

impl ServerWatch {
    pub fn start(
        mut net: NetProbes,
        proc_root: PathBuf,
        ports: &[u16],
        comms: Vec<String>,
        now_ns: u64,
    ) -> Result<Self> {
        for &port in ports {
            net.watch_port(port, None)?;
        }
        Ok(Self {
            net,
            tracker: RequestTracker::new(now_ns),
            proc_root,
            comms,
            candidates: BTreeSet::new(),
            watched_ports: ports.iter().map(|&p| (p, None)).collect(),
            finished: Vec::new(),
            printed: 0,
            drops: DropDeltas::default(),
        })
    }

    pub fn net_probes(&mut self) -> &mut NetProbes {
        &mut self.net
    }

    /// Watches `pid`'s ports from now on if it is a server, or `always`.
    pub fn consider(&mut self, pid: u32, always: bool) {
        let dir = self.proc_root.join(pid.to_string());
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim_end();
        let cmdline = fs::read_to_string(dir.join("cmdline")).unwrap_or_default();
        if always || is_known_server(comm, &cmdline) || self.comms.iter().any(|c| c == comm) {
            self.candidates.insert(pid);
            self.refresh_ports(pid);
        }
    }

    /// A process ended: its open requests end with it (aborted), and its probes go.
    pub fn process_exited(&mut self, pid: u32, now_ns: u64) {
        self.candidates.remove(&pid);
        self.net.detach_tls(pid);
        self.tracker.forget_pid(pid, now_ns, &mut self.finished);
    }

    fn refresh_ports(&mut self, pid: u32) {
        // TLS: the plaintext of its OpenSSL calls (libssl may be loaded late: look until found).
        if !self.net.has_tls(pid)
            && let Some(libssl) = tls_library(&self.proc_root, pid)
        {
            match self.net.attach_tls(pid, &libssl) {
                Ok(0) => {}
                Ok(n) => log::info!(
                    "capturing TLS plaintext of pid {pid} ({n} functions in {})",
                    libssl.path.display()
                ),
                Err(e) => log::warn!("pid {pid}: TLS traffic will not be decoded: {e:#}"),
            }
        }
        let netns = net_namespace(&self.proc_root, pid);
        for port in listening_ports(&self.proc_root, pid) {
            if self.watched_ports.insert((port, netns)) {
                match self.net.watch_port(port, netns) {
                    Ok(()) => log::info!("capturing requests to port {port} (pid {pid})"),
                    Err(e) => log::warn!("cannot watch port {port}: {e:#}"),
                }
            }
        }
    }

    pub fn on_event(&mut self, ev: &NetEvent) {
        self.tracker.on_event(ev, &mut self.finished);
    }

    /// Requests finished since the last call (for `--output requests`).
    pub fn new_requests(&mut self) -> &[RequestRecord] {
        let from = self.printed.min(self.finished.len());
        self.printed = self.finished.len();
        &self.finished[from..]
    }

    /// Captures lost since the last call, by reason.
    pub fn drops(&mut self) -> Result<BTreeMap<&'static str, u64>> {
        Ok(self.drops.take(self.net.drops()?))
    }

    /// The interval's servers; ports are refreshed for the next one.
    pub fn report(&mut self, interval_s: f64, now_ns: u64) -> Vec<ServerReport> {
        let queues: BTreeMap<_, _> = self.tracker.interval_end(now_ns);
        let reports = server_reports(&self.finished, &queues, interval_s);
        self.finished.clear();
        self.printed = 0;
        for pid in self.candidates.clone() {
            if self.proc_root.join(pid.to_string()).exists() {
                self.refresh_ports(pid);
            } else {
                self.process_exited(pid, now_ns);
            }
        }
        reports
    }
}
