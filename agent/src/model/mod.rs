//! What the agent knows, as plain data: one [`Snapshot`] per interval and one
//! [`RequestRecord`] per finished request. Every sink reads these and nothing
//! else; they serialise to the JSON documented in docs/output.md and read back
//! from it, so saved streams can be replayed by later commands and by tests.
//!
//! Each figure carries its **cumulative total** (since the agent started
//! watching the process, server or device: what OTLP and Prometheus export)
//! and the **interval's delta** (what a person reads per interval), built in
//! one place (`join`) so that every sink shows the same numbers.

pub mod device;
pub mod gpu;
pub mod histogram;
pub mod request;
pub mod time;

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

pub use device::{
    DeviceProcess, DeviceView, GpmView, GpuEvent, GpuEventKind, GpuUsage, MigInstance, ProcessGpu, Vendor,
};
pub use gpu::{CopyBytes, GpuActivity, NcclActivity};
pub use histogram::{Histogram, percentile};
/// Why the kernel side can lose events: the keys of [`Snapshot::drops`].
pub use inferscope_shared::DropReason;
pub use request::{Engine, Outcome, Protocol, RequestDrop, RequestRecord, TokenSource};

use crate::runtimes::Runtime;

/// Bumped whenever a field changes meaning or goes away (adding one does not).
/// 1: per-interval deltas only (before cumulative totals). 2: `{total, delta}` pairs.
pub const SCHEMA_VERSION: u32 = 2;

/// Everything the agent knows at the end of one interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema: u32,
    /// End of the interval (RFC 3339 UTC in JSON).
    #[serde(with = "time::rfc3339")]
    pub time: SystemTime,
    /// The interval's real length (`interval_s` in JSON).
    #[serde(rename = "interval_s", with = "time::seconds")]
    pub interval: Duration,
    /// Every tracked process (one that maps a GPU runtime), idle ones too.
    pub processes: Vec<ProcessView>,
    /// Inference servers whose traffic is captured.
    pub servers: Vec<ServerView>,
    /// GPUs, from NVML or ROCm SMI (empty without either).
    #[serde(default)]
    pub devices: Vec<DeviceView>,
    /// Kubernetes pods with a tracked process, each the sum of its processes.
    #[serde(default)]
    pub pods: Vec<PodView>,
    /// What GPUs reported during the interval (XID errors).
    #[serde(default)]
    pub gpu_events: Vec<GpuEvent>,
    /// Events the kernel side could not record, by reason (only reasons that ever occurred).
    pub drops: Counted<BTreeMap<String, u64>>,
    /// Generation requests seen arriving but not measured, by [`RequestDrop`]
    /// reason (only reasons that ever occurred).
    #[serde(default)]
    pub dropped_requests: Counted<BTreeMap<String, u64>>,
}

/// A figure's cumulative total and its change over the interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counted<T> {
    pub total: T,
    pub delta: T,
}

impl<T: Copy> Counted<T> {
    /// A first reading of a cumulative figure, before anything to take a delta from
    /// (sources produce these; the join sets the delta).
    pub fn first(total: T) -> Self {
        Self { total, delta: total }
    }
}

/// Who a process is: what a person needs to recognise it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    /// Its parent: inference servers often do GPU work in child processes
    /// (vLLM's engine core, tensor-parallel workers). 0 when unknown.
    #[serde(default)]
    pub ppid: u32,
    pub comm: String,
    /// Executable path, in the agent's view of the filesystem.
    pub exe: String,
    /// 64-hex container ID from the process's cgroup, when it runs in one.
    pub container_id: Option<String>,
}

impl ProcessIdentity {
    /// The conventions' `process.executable.name`: the base name of
    /// `/proc/PID/exe`; the command name where that is unreadable.
    pub fn executable_name(&self) -> &str {
        self.exe
            .rsplit('/')
            .next()
            .filter(|e| !e.is_empty())
            .unwrap_or(&self.comm)
    }

    /// `process.pid`, `process.executable.name`, `container.id` and the
    /// `k8s.*` of its pod: how every export names a process, metrics and
    /// profiles alike.
    pub fn attributes(&self, pod: Option<&PodRef>) -> Vec<(&'static str, AttributeValue)> {
        let mut attributes = vec![
            ("process.pid", AttributeValue::Int(i64::from(self.pid))),
            (
                "process.executable.name",
                AttributeValue::Text(self.executable_name().to_string()),
            ),
        ];
        if let Some(container) = &self.container_id {
            attributes.push(("container.id", AttributeValue::Text(container.clone())));
        }
        attributes.extend(pod.map(PodRef::attributes).unwrap_or_default());
        attributes
    }
}

/// The value of an OpenTelemetry attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttributeValue {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessView {
    #[serde(flatten)]
    pub identity: ProcessIdentity,
    /// The runtimes it maps.
    pub runtimes: Vec<Runtime>,
    /// Since when every GPU runtime call it makes is counted, when that is
    /// not its start: it loaded a runtime before the agent probed the file
    /// (running before the agent started, or a runtime installed where the
    /// agent does not look). Calls before it are missing from `gpu`.
    #[serde(
        default,
        with = "time::rfc3339_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub counted_since: Option<SystemTime>,
    /// Its GPU runtime calls since the agent first saw it, and in the interval.
    pub gpu: Counted<GpuActivity>,
    /// The GPUs it has a context on, with its memory and share of each (NVML).
    #[serde(default)]
    pub gpus: Vec<ProcessGpu>,
    /// Its Kubernetes pod and container, from its container ID and the API server.
    #[serde(default)]
    pub pod: Option<PodRef>,
    /// The servers it works for: its own listening ports', or its ancestors'
    /// (a GPU worker under an HTTP front end). Keys into `servers[]`.
    #[serde(default)]
    pub serves: Vec<ServerRef>,
    /// Conditions derived from its figures, each with the numbers behind it.
    #[serde(default)]
    pub signals: Vec<Signal>,
    /// This is its last snapshot: the process ended during this interval, or
    /// no longer maps a GPU runtime (exec'd another program, unloaded it).
    pub exited: bool,
}

/// A container in a Kubernetes pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub container: String,
    /// The workload whose replica the pod is, when a controller owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<PodOwner>,
}

/// The controller a pod belongs to, as people name it: a Deployment rather
/// than the ReplicaSet of one of its rollouts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodOwner {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `ReplicaSet`, `Job`, ...
    pub kind: String,
    pub name: String,
}

impl PodRef {
    /// `k8s.*` of the container: namespace, pod, container, and the workload
    /// that owns the pod (`k8s.deployment.name`, ...).
    pub fn attributes(&self) -> Vec<(&'static str, AttributeValue)> {
        let owner = self
            .owner
            .as_ref()
            .and_then(|o| Some((o.attribute()?, AttributeValue::Text(o.name.clone()))));
        [
            ("k8s.namespace.name", &self.namespace),
            ("k8s.pod.name", &self.name),
            ("k8s.container.name", &self.container),
        ]
        .map(|(key, value)| (key, AttributeValue::Text(value.clone())))
        .into_iter()
        .chain(owner)
        .collect()
    }
}

impl PodOwner {
    /// The OpenTelemetry attribute that names an owner of this kind
    /// (`k8s.deployment.name`, ...); `None` for kinds the conventions do not name.
    pub fn attribute(&self) -> Option<&'static str> {
        Some(match self.kind.as_str() {
            "Deployment" => "k8s.deployment.name",
            "StatefulSet" => "k8s.statefulset.name",
            "DaemonSet" => "k8s.daemonset.name",
            "ReplicaSet" => "k8s.replicaset.name",
            "Job" => "k8s.job.name",
            "CronJob" => "k8s.cronjob.name",
            _ => return None,
        })
    }
}

/// One Kubernetes pod: the sum of its tracked processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    /// Its tracked processes in this snapshot.
    pub pids: Vec<u32>,
    /// GPU runtime activity: since the pod was first seen (processes that
    /// exited still count), and in the interval.
    pub gpu: Counted<GpuActivity>,
    /// Device memory its processes hold (NVML), now.
    pub gpu_memory_used_bytes: Option<u64>,
    /// Finished requests and output tokens of the servers its processes work
    /// for, in the interval (totals are the servers').
    pub requests: Counted<u64>,
    pub output_tokens: Counted<u64>,
}

/// A server by its key in `servers[]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServerRef {
    pub pid: u32,
    pub port: u16,
}

/// A condition a person should know about, computed from the snapshot's own
/// figures (the same for every sink), with the numbers that show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum Signal {
    /// Many kernel launches while the process keeps the GPU's SMs mostly idle:
    /// the CPU side cannot feed the GPU (CUDA graphs, larger batches or
    /// torch.compile would help). At least [`LAUNCH_BOUND_MIN_RATE`] launches/s
    /// with at most [`LAUNCH_BOUND_MAX_SM_PERCENT`] % SM share on every GPU it uses.
    LaunchBound {
        kernel_launches_per_second: f64,
        /// Its highest SM share over its GPUs (NVML, per process).
        sm_utilization_percent: u32,
    },
}

/// See [`Signal::LaunchBound`].
pub const LAUNCH_BOUND_MIN_RATE: f64 = 1000.0;
/// See [`Signal::LaunchBound`].
pub const LAUNCH_BOUND_MAX_SM_PERCENT: u32 = 25;

/// An inference server: a process and one of its listening ports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    pub pid: u32,
    /// Its process's command name, where known (not for a `--port` alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub port: u16,
    /// From its latest finished request, or before any, its connections' framing.
    pub protocol: Protocol,
    /// Requests waiting for their first token and requests streaming.
    pub queue: QueueView,
    /// Connections open at the interval's end, as far as capture saw them.
    #[serde(default)]
    pub connections: u64,
    /// Generation requests that arrived (read by the server).
    pub arrivals: Counted<u64>,
    /// Per model named by the requests (`unknown` when none), every model seen so far.
    pub models: Vec<ModelView>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueView {
    /// At the interval's end.
    pub waiting: u64,
    pub running: u64,
    /// Time-weighted over the interval.
    pub waiting_mean: f64,
    pub running_mean: f64,
    /// Request-seconds spent waiting since the agent first saw the server:
    /// the integral of `waiting`, cumulative, so that a store can give the
    /// mean queue of any window (its increase over the window's length).
    #[serde(default)]
    pub waiting_time_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelView {
    pub model: String,
    /// Energy of the GPUs its server's processes use, in the interval, shared
    /// among the models on those GPUs by output tokens (needs NVML).
    #[serde(default)]
    pub energy_joules: Option<f64>,
    /// That energy per output token of the interval.
    #[serde(default)]
    pub energy_per_output_token_joules: Option<f64>,
    /// Requests that finished: since the server was first seen, and in the interval.
    /// Only the interval's histograms carry percentiles.
    #[serde(flatten)]
    pub requests: Counted<RequestStats>,
}

/// Finished generation requests of one server and model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestStats {
    pub requests: u64,
    /// Of those: status >= 400, cancelled by the client, or cut off.
    pub errors: u64,
    pub cancelled: u64,
    /// Time to first token, streaming requests only.
    pub ttft_s: Histogram,
    /// Gaps between content-carrying sends after the first (inter-token latency).
    pub itl_s: Histogram,
    pub duration_s: Histogram,
    pub output_tokens: u64,
    pub input_tokens: u64,
}

#[cfg(test)]
impl Snapshot {
    /// A one-second interval ending at `time` in which nothing was seen.
    pub fn empty_at(time: SystemTime) -> Self {
        Self {
            schema: SCHEMA_VERSION,
            time,
            interval: Duration::from_secs(1),
            processes: Vec::new(),
            servers: Vec::new(),
            devices: Vec::new(),
            pods: Vec::new(),
            gpu_events: Vec::new(),
            drops: Counted::default(),
            dropped_requests: Counted::default(),
        }
    }
}

impl RequestStats {
    /// No requests yet, with the OpenTelemetry GenAI buckets.
    pub fn empty() -> Self {
        Self {
            requests: 0,
            errors: 0,
            cancelled: 0,
            ttft_s: Histogram::new(histogram::TTFT_BOUNDS),
            itl_s: Histogram::new(histogram::TPOT_BOUNDS),
            duration_s: Histogram::new(histogram::DURATION_BOUNDS),
            output_tokens: 0,
            input_tokens: 0,
        }
    }

    pub fn record(&mut self, r: &RequestRecord) {
        self.requests += 1;
        self.errors += u64::from(r.outcome.is_error());
        self.cancelled += u64::from(r.outcome == Outcome::Cancelled);
        if let Some(t) = r.ttft_s {
            self.ttft_s.record(t);
        }
        r.itl_s.iter().for_each(|&g| self.itl_s.record(g));
        self.duration_s.record(r.duration_s);
        self.output_tokens += r.output_tokens.unwrap_or(0);
        self.input_tokens += r.input_tokens.unwrap_or(0);
    }

    /// Adds an interval's figures into a running total.
    /// Saturating: saved streams read back may hold any numbers.
    pub fn add(&mut self, delta: &RequestStats) {
        self.requests = self.requests.saturating_add(delta.requests);
        self.errors = self.errors.saturating_add(delta.errors);
        self.cancelled = self.cancelled.saturating_add(delta.cancelled);
        self.ttft_s.add(&delta.ttft_s);
        self.itl_s.add(&delta.itl_s);
        self.duration_s.add(&delta.duration_s);
        self.output_tokens = self.output_tokens.saturating_add(delta.output_tokens);
        self.input_tokens = self.input_tokens.saturating_add(delta.input_tokens);
    }
}

/// A sum that stops at `u64::MAX`: figures read back from a file may be anything.
pub fn saturating_sum(values: impl IntoIterator<Item = u64>) -> u64 {
    values.into_iter().fold(0, u64::saturating_add)
}

/// The name a unit variant has in JSON (`http2+tls`, `cancelled`), for text views.
pub fn json_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A delta as a rate over `interval`; 0 over an empty interval.
pub fn per_second(delta: f64, interval: Duration) -> f64 {
    let s = interval.as_secs_f64();
    if s > 0.0 { delta / s } else { 0.0 }
}

impl Snapshot {
    /// When the interval began (never before 1970: a saved stream may say anything).
    pub fn start(&self) -> SystemTime {
        self.time
            .checked_sub(self.interval)
            .map_or(self.time, |t| t.max(std::time::UNIX_EPOCH))
    }

    /// The per-second rate of a delta over this snapshot's interval.
    pub fn per_second(&self, delta: f64) -> f64 {
        per_second(delta, self.interval)
    }

    pub fn dropped_in_interval(&self) -> u64 {
        self.drops.delta.values().sum()
    }
}
