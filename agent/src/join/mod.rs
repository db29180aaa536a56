//! One view per process of everything the agent knows about it, per interval:
//! who it is (discovery), which runtimes it uses, and its GPU activity; and one
//! view per inference server of its requests.

pub mod histogram;
pub mod servers;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{derive::gpu::GpuActivity, discover::process::ProcessInfo, runtimes::Runtime};

#[derive(Clone, Debug, Serialize)]
pub struct ProcessReport {
    #[serde(flatten)]
    pub info: ProcessInfo,
    pub runtimes: Vec<Runtime>,
    pub gpu: GpuActivity,
    /// The process ended during this interval; this is its last report.
    pub exited: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// End of the interval, RFC 3339 UTC.
    pub time: String,
    pub interval_s: f64,
    pub processes: Vec<ProcessReport>,
    /// Inference servers whose traffic is captured (see docs/output.md).
    pub servers: Vec<servers::ServerReport>,
    /// Events the kernel side could not record during this interval, all reasons together.
    pub dropped_events: u64,
    /// The same, per reason (only reasons that occurred).
    pub drops: BTreeMap<&'static str, u64>,
}

impl Report {
    /// Adds drops counted elsewhere (another eBPF object) to this interval's.
    pub fn add_drops(&mut self, more: BTreeMap<&'static str, u64>) {
        for (reason, n) in more {
            *self.drops.entry(reason).or_default() += n;
            self.dropped_events += n;
        }
    }
}
