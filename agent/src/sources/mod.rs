//! Where data comes from. A source owns its eBPF objects (or library handles)
//! and turns what they produce into readings for the join; it never formats
//! output and never knows about other sources.
//!
//! Each is one file and one [`Source`]: the pipeline reads every source once
//! per interval, the same way, into one [`Readings`].

mod gpu_processes;
mod kube;
mod nvml;
mod rocm_smi;
mod servers;

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use anyhow::Result;
use inferscope_shared::GpuStats;

pub use gpu_processes::GpuProcesses;
pub use kube::{KubeConfig, KubePods, node_name as kube_node_name};
pub use nvml::{NvmlReading, NvmlSource};
pub use rocm_smi::RocmSmiSource;
pub use servers::Servers;

use crate::{
    derive::requests::{QueueReport, ServerKey},
    model::{DeviceView, GpuEvent, PodRef, ProcessIdentity, RequestDrop, RequestRecord},
    probes::Drops,
    runtimes::Runtime,
};

/// A source of readings. Sources are read in the order the pipeline lists
/// them, and a later one may complete what an earlier one read (pods are
/// named on the processes read before them; servers capture the ports of
/// GPU processes).
pub trait Source {
    /// Adds what it has read by `now_ns` (the agent's monotonic clock) to the interval's readings.
    fn read(&mut self, now_ns: u64, readings: &mut Readings) -> Result<()>;
}

/// One process as the GPU source read it at the interval's end.
#[derive(Clone, Debug)]
pub struct ProcessReading {
    pub identity: ProcessIdentity,
    pub runtimes: Vec<Runtime>,
    /// Cumulative since the agent attached.
    pub stats: GpuStats,
    /// It ended during the interval: this is its last reading.
    pub exited: bool,
    /// Since when its calls are all counted, where not from its start.
    pub counted_since: Option<SystemTime>,
    /// Its Kubernetes pod, when it runs in one the API server named.
    pub pod: Option<PodRef>,
}

/// Everything read for one interval: what the join builds a snapshot from.
#[derive(Debug)]
pub struct Readings {
    pub time: SystemTime,
    pub interval: Duration,
    pub processes: Vec<ProcessReading>,
    /// Requests that finished during the interval.
    pub finished: Vec<RequestRecord>,
    /// Every server's queue at the interval's end.
    pub queues: BTreeMap<ServerKey, QueueReport>,
    /// Command names of server processes, by pid (GPU processes carry their own).
    pub server_comms: BTreeMap<u32, String>,
    /// Cumulative drops by reason, all eBPF objects together.
    pub drops: Drops,
    /// Cumulative generation requests given up on, by reason.
    pub dropped_requests: BTreeMap<RequestDrop, u64>,
    /// GPUs as their management library reads them; counted figures carry totals only.
    pub devices: Vec<DeviceView>,
    /// GPU events since the last interval.
    pub gpu_events: Vec<GpuEvent>,
}

impl Readings {
    /// Nothing read yet, for the interval of `interval` ending at `time`.
    pub fn new(time: SystemTime, interval: Duration) -> Self {
        Self {
            time,
            interval,
            processes: Vec::new(),
            finished: Vec::new(),
            queues: BTreeMap::new(),
            server_comms: BTreeMap::new(),
            drops: Drops::default(),
            dropped_requests: BTreeMap::new(),
            devices: Vec::new(),
            gpu_events: Vec::new(),
        }
    }

    /// Adds one eBPF object's cumulative drops.
    pub fn add_drops(&mut self, drops: Drops) {
        self.drops += drops;
    }
}
