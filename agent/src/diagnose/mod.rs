//! Findings a person can act on, each grounded in the measured figures: the
//! numbers, the time range, the process, server, model or GPU they come from.
//!
//! Input is a [`Recording`]: the snapshots of a live run, or of a saved
//! `run --output json` stream (request lines from `--output requests` may be
//! mixed in; they add detail where a snapshot has only counts). Every rule
//! reads the recording and nothing else, so a saved stream diagnoses the same
//! as the live run that wrote it, and a rule's thresholds are named constants
//! in [`rules`] (documented in docs/diagnose.md).

mod evidence;
pub mod rules;
mod text;

use std::{
    collections::BTreeMap,
    io::{self, BufRead},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

pub use evidence::{Evidence, Slowdown};
pub use text::write_text;

use crate::{
    model::{RequestRecord, SCHEMA_VERSION, Snapshot, time},
    sinks::Sink,
};

/// What was watched: snapshots in time order, and any finished requests.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub snapshots: Vec<Snapshot>,
    pub requests: Vec<RequestRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading line {line}: {source}")]
    Io { line: usize, source: io::Error },
    #[error("line {line} is neither a snapshot nor a request: {source}")]
    Json { line: usize, source: serde_json::Error },
    #[error("line {line} is a schema {found} snapshot; this inferscope reads schema {SCHEMA_VERSION}")]
    Schema { line: usize, found: u64 },
}

impl Recording {
    /// JSON lines as `run --output json` (snapshots) and `--output requests`
    /// (finished requests) write them; blank lines are skipped.
    pub fn read(input: impl BufRead) -> Result<Self, ReadError> {
        let mut recording = Self::default();
        for (i, line) in input.lines().enumerate() {
            let line_no = i + 1;
            let line = line.map_err(|source| ReadError::Io {
                line: line_no,
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let json = |source| ReadError::Json {
                line: line_no,
                source,
            };
            let value: serde_json::Value = serde_json::from_str(&line).map_err(json)?;
            match value.get("schema").map(|s| s.as_u64().unwrap_or(0)) {
                Some(found) if found != u64::from(SCHEMA_VERSION) => {
                    return Err(ReadError::Schema { line: line_no, found });
                }
                Some(_) => recording
                    .snapshots
                    .push(serde_json::from_value(value).map_err(json)?),
                None => recording
                    .requests
                    .push(serde_json::from_value(value).map_err(json)?),
            }
        }
        recording.snapshots.sort_by_key(|s| s.time);
        Ok(recording)
    }
}

/// A sink that keeps what the pipeline delivers, for a diagnosis or a report
/// once the run ends.
#[derive(Default)]
pub struct Recorder(std::sync::Arc<std::sync::Mutex<Recording>>);

impl Recorder {
    /// The recording this sink fills, to read once the pipeline has stopped.
    pub fn recording(&self) -> std::sync::Arc<std::sync::Mutex<Recording>> {
        self.0.clone()
    }

    fn with(&self, f: impl FnOnce(&mut Recording)) {
        // A poisoned lock only means a reader panicked; the data is still whole.
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl Sink for Recorder {
    fn snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        self.with(|r| r.snapshots.push(snapshot.clone()));
        Ok(())
    }

    fn request(&mut self, request: &RequestRecord) -> io::Result<()> {
        self.with(|r| r.requests.push(request.clone()));
        Ok(())
    }
}

/// Bumped when a field of [`Diagnosis`] changes meaning or goes away.
pub const DIAGNOSIS_SCHEMA: u32 = 1;

/// The findings over one recording (`diagnose --output json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub schema: u32,
    /// The time the recording covers; absent when it holds no snapshot.
    #[serde(default, with = "time::rfc3339_option")]
    pub from: Option<SystemTime>,
    #[serde(default, with = "time::rfc3339_option")]
    pub to: Option<SystemTime>,
    pub intervals: usize,
    /// What the recording holds: servers, GPU processes, devices, finished requests.
    pub servers: usize,
    pub gpu_processes: usize,
    pub devices: usize,
    pub requests: u64,
    /// Most severe first.
    pub findings: Vec<Finding>,
    /// Checks that could not run, and why (no GPU figures, no requests...).
    pub not_checked: Vec<String>,
    /// Where the figures came from, when read from a metrics store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreSource>,
}

/// The store a diagnosis read, and what of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreSource {
    pub url: String,
    pub dialect: crate::store::Dialect,
    #[serde(flatten)]
    pub slice: crate::store::Slice,
    /// The nodes whose series were read.
    pub nodes: Vec<String>,
}

/// One condition, with what it was seen on and the numbers that show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub finding: FindingKind,
    pub severity: Severity,
    /// One or two sentences for a person: what, how much, what would help.
    pub summary: String,
    pub subject: Subject,
    #[serde(with = "time::rfc3339")]
    pub from: SystemTime,
    #[serde(with = "time::rfc3339")]
    pub to: SystemTime,
    /// The figures behind it, for tools to ground answers in.
    pub evidence: BTreeMap<Evidence, f64>,
    /// Read from a store: PromQL giving the evidence's series, to paste into
    /// Grafana or the store's own console.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A GPU reported XID errors.
    XidErrors,
    /// A GPU's memory is nearly full.
    GpuMemoryNearLimit,
    /// Time to first token rose while requests queued and the GPU was busy.
    Saturated,
    /// Requests queued although the GPU had room.
    QueueWithIdleGpu,
    /// Requests queued; no GPU figures to say why.
    Queueing,
    /// Slow first tokens with no queue and an idle GPU: the time goes elsewhere.
    SlowFirstTokenGpuIdle,
    /// Many kernel launches with the SMs mostly idle.
    LaunchBound,
    /// A large share of time blocked in GPU synchronisation calls.
    BlockedInSync,
    /// A GPU slowed its clocks for heat or power.
    ClockThrottled,
    /// Requests that failed (status >= 400, cut off).
    RequestErrors,
    /// Requests the clients gave up on.
    ClientCancellations,
    /// The agent lost events: some figures undercount.
    MeasurementGaps,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

/// What a finding is about; only the fields that apply are present.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// The node (`k8s.node.name`, host or scrape target), read from a store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// In Kubernetes, the process's pod as `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A GPU: its index and UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_uuid: Option<String>,
}

impl std::fmt::Display for Subject {
    /// `comm (pid N), port P, model M, GPU I (uuid)`, or `the agent`. Names come
    /// from outside (a request's model, a process's name): control characters
    /// are left out, so no terminal sequence travels with them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(node) = &self.node {
            parts.push(format!("node {node}"));
        }
        match (&self.comm, self.pid) {
            (Some(comm), Some(pid)) => parts.push(format!("{comm} (pid {pid})")),
            (None, Some(pid)) => parts.push(format!("pid {pid}")),
            _ => {}
        }
        if let Some(pod) = &self.pod {
            parts.push(format!("pod {pod}"));
        }
        if let Some(port) = self.port {
            parts.push(format!("port {port}"));
        }
        if let Some(model) = &self.model {
            parts.push(format!("model {model}"));
        }
        if let Some(index) = self.gpu {
            parts.push(match &self.gpu_uuid {
                Some(uuid) => format!("GPU {index} ({uuid})"),
                None => format!("GPU {index}"),
            });
        }
        let text = if parts.is_empty() {
            "the agent".to_string()
        } else {
            parts.join(", ")
        };
        f.write_str(&text.chars().filter(|c| !c.is_control()).collect::<String>())
    }
}

/// An evidence value for a person: integers as integers, the rest with up to
/// four decimals.
pub fn evidence_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}").trim_end_matches('0').to_string()
    }
}

/// Every rule over `recording`, most severe findings first.
pub fn diagnose(recording: &Recording) -> Diagnosis {
    let snapshots = &recording.snapshots;
    let count_distinct =
        |keys: &mut dyn Iterator<Item = String>| keys.collect::<std::collections::BTreeSet<_>>().len();
    let (mut findings, not_checked) = rules::run(recording);
    findings.sort_by_key(|f| (f.severity, f.finding, f.from));
    Diagnosis {
        schema: DIAGNOSIS_SCHEMA,
        from: snapshots.first().map(Snapshot::start),
        to: snapshots.last().map(|s| s.time),
        intervals: snapshots.len(),
        servers: count_distinct(
            &mut snapshots
                .iter()
                .flat_map(|s| s.servers.iter().map(|v| format!("{}:{}", v.pid, v.port))),
        ),
        gpu_processes: count_distinct(
            &mut snapshots
                .iter()
                .flat_map(|s| s.processes.iter().map(|p| p.identity.pid.to_string())),
        ),
        devices: count_distinct(
            &mut snapshots
                .iter()
                .flat_map(|s| s.devices.iter().map(|d| d.uuid.clone())),
        ),
        requests: crate::model::saturating_sum(
            snapshots
                .iter()
                .flat_map(|s| &s.servers)
                .flat_map(|v| &v.models)
                .map(|m| m.requests.delta.requests),
        ),
        findings,
        not_checked,
        store: None,
    }
}

impl Diagnosis {
    /// One diagnosis of several, each of one node: the findings together
    /// (most severe first), what each could not check said per node.
    pub fn merge(parts: Vec<(String, Diagnosis)>) -> Diagnosis {
        let mut all = diagnose(&Recording::default());
        all.not_checked.clear();
        for (node, d) in parts {
            all.from = [all.from, d.from].into_iter().flatten().min();
            all.to = [all.to, d.to].into_iter().flatten().max();
            all.intervals = all.intervals.max(d.intervals);
            all.servers += d.servers;
            all.gpu_processes += d.gpu_processes;
            all.devices += d.devices;
            all.requests = all.requests.saturating_add(d.requests);
            all.findings.extend(d.findings);
            all.not_checked
                .extend(d.not_checked.into_iter().map(|why| format!("node {node}: {why}")));
        }
        all.findings.sort_by_key(|f| (f.severity, f.finding, f.from));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_stream_reads_back_and_bad_lines_say_where() {
        let d = diagnose(&Recording::default());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Diagnosis>(&json).unwrap(), d);

        let err = |text: &str| Recording::read(text.as_bytes()).unwrap_err().to_string();
        assert_eq!(
            err("\n{\"schema\": 1, \"time\": 0}\n"),
            "line 2 is a schema 1 snapshot; this inferscope reads schema 2"
        );
        assert!(err("not json").starts_with("line 1 is neither a snapshot nor a request"));
        assert!(err("{\"pid\": 1}").starts_with("line 1 is neither"));
        assert_eq!(Recording::read(&b"\n\n"[..]).unwrap().snapshots.len(), 0);
    }
}
