//! One view per process of everything the agent knows about it, per interval:
//! who it is (discovery), which runtimes it uses, and its GPU activity.

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
    /// Events the kernel side could not record during this interval, all reasons together.
    pub dropped_events: u64,
    /// The same, per reason (only reasons that occurred).
    pub drops: BTreeMap<&'static str, u64>,
}
