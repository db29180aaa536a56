//! Continuous profiles pushed to Grafana Pyroscope (or Grafana Cloud
//! Profiles) through its push API, `POST /push.v1.PusherService/Push`, as
//! Grafana Alloy pushes: one pprof per process and kind of profile, labelled
//! with `__name__` (the kind), `service_name` (the workload) and the
//! process's identity as the metrics carry it (OpenTelemetry names with `_`
//! for `.`, as Prometheus spells them).
//!
//! A period is encoded on the pipeline's thread and sent from a thread of
//! its own, one at a time, with retries; while the server is down at most
//! [`QUEUED_PERIODS`] wait, and a period that finds the queue full, or that
//! fails every try, is counted as a dropped batch
//! (`inferscope.export.dropped_batches{exporter="pyroscope"}`).

use std::{
    collections::BTreeMap,
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::Duration,
};

use base64::Engine as _;
use prost::Message as _;

use super::{Destination, Period, ProfileKind, StackProfile, Workload, pprof};
use crate::sinks::{Export, ExportHealth};

/// Periods waiting to be sent while one is being sent: what memory holds when the server is down.
pub const QUEUED_PERIODS: usize = 2;
/// Tries per period, the first included, with [`BACKOFF`] doubling between them.
const TRIES: u32 = 3;
const BACKOFF: Duration = Duration::from_secs(1);
/// The push path, after the server's base URL.
const PUSH_PATH: &str = "/push.v1.PusherService/Push";

/// `push.v1.PushRequest` of Pyroscope's API (`api/push/v1/push.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    series: Vec<RawProfileSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<RawSample>,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, prost::Message)]
struct LabelPair {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawSample {
    /// A pprof profile, gzipped.
    #[prost(bytes = "vec", tag = "1")]
    raw_profile: Vec<u8>,
    #[prost(string, tag = "2")]
    id: String,
}

/// Where to push, and as whom.
#[derive(Clone, Debug)]
pub struct PyroscopeConfig {
    /// The server's base URL (`http://pyroscope:4040`).
    pub url: String,
    /// `X-Scope-OrgID`, for a multi-tenant server.
    pub tenant: Option<String>,
    /// User and password (Grafana Cloud: the stack's user and an access token).
    pub basic_auth: Option<(String, String)>,
    /// `k8s_node_name` of every profile, when known.
    pub node_name: Option<String>,
    pub timeout: Duration,
}

impl PyroscopeConfig {
    /// `url`, with the tenant and credentials from the environment as
    /// Pyroscope's own SDKs read them: `PYROSCOPE_TENANT_ID`,
    /// `PYROSCOPE_BASIC_AUTH_USER` and `PYROSCOPE_BASIC_AUTH_PASSWORD`.
    pub fn from_env(url: String, node_name: Option<String>) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            url,
            tenant: var("PYROSCOPE_TENANT_ID"),
            basic_auth: var("PYROSCOPE_BASIC_AUTH_USER")
                .map(|user| (user, var("PYROSCOPE_BASIC_AUTH_PASSWORD").unwrap_or_default())),
            node_name,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Pushes each period it is given.
pub struct Pyroscope {
    url: String,
    node_name: Option<String>,
    queue: Option<SyncSender<Vec<u8>>>,
    sender: Option<JoinHandle<()>>,
    /// Set at close: the last periods get one try each, not a backoff.
    closing: Arc<AtomicBool>,
    health: ExportHealth,
}

impl Pyroscope {
    pub fn start(config: PyroscopeConfig, health: ExportHealth) -> io::Result<Self> {
        health.register(Export::Pyroscope);
        let (queue, queued) = sync_channel(QUEUED_PERIODS);
        let closing = Arc::new(AtomicBool::new(false));
        let client = Client::new(&config);
        let sender = std::thread::Builder::new().name("pyroscope".into()).spawn({
            let (closing, health) = (closing.clone(), health.clone());
            move || send_all(&client, &queued, &closing, &health)
        })?;
        Ok(Self {
            url: config.url,
            node_name: config.node_name,
            queue: Some(queue),
            sender: Some(sender),
            closing,
            health,
        })
    }

    /// The push request of one period: a series per process and kind of profile.
    fn request(&self, period: &Period<'_>) -> io::Result<PushRequest> {
        let mut series = Vec::new();
        for profile in period.delivered() {
            let mut by_pid: BTreeMap<u32, Vec<_>> = BTreeMap::new();
            for stack in &profile.stacks {
                by_pid.entry(stack.pid).or_default().push(stack.clone());
            }
            for (pid, stacks) in by_pid {
                let workload = period
                    .workloads
                    .get(&pid)
                    .cloned()
                    .unwrap_or_else(|| Workload::of_pid(pid));
                let own = StackProfile {
                    kind: profile.kind,
                    rate: profile.rate,
                    stacks,
                };
                let mut raw_profile = Vec::new();
                pprof::write(
                    &mut raw_profile,
                    &pprof::profile(&own, period.start, period.duration),
                )?;
                series.push(RawProfileSeries {
                    labels: labels(profile.kind, &workload, self.node_name.as_deref()),
                    samples: vec![RawSample {
                        raw_profile,
                        id: String::new(),
                    }],
                });
            }
        }
        Ok(PushRequest { series })
    }
}

/// A series' labels: the kind, the service, who made it; sorted by name.
fn labels(kind: ProfileKind, workload: &Workload, node: Option<&str>) -> Vec<LabelPair> {
    let mut labels: BTreeMap<String, String> = workload
        .attributes()
        .into_iter()
        .map(|(key, value)| (key.replace('.', "_"), value.to_string()))
        .collect();
    if let Some(node) = node {
        labels.insert("k8s_node_name".into(), node.into());
    }
    labels.insert("__name__".into(), kind.name().into());
    labels.insert("service_name".into(), workload.service_name());
    labels
        .into_iter()
        .map(|(name, value)| LabelPair { name, value })
        .collect()
}

impl Destination for Pyroscope {
    fn deliver(&mut self, period: &Period<'_>) -> io::Result<()> {
        let request = self.request(period)?;
        if request.series.is_empty() {
            return Ok(());
        }
        let queue = self.queue.as_ref().ok_or_else(|| io::Error::other("closed"))?;
        match queue.try_send(request.encode_to_vec()) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                let full = format!("{QUEUED_PERIODS} periods already wait to be sent");
                self.health.record(Export::Pyroscope, &Err(full));
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(io::Error::other("the sending thread ended")),
        }
    }

    /// Sends what waits, one try each, and ends the sending thread.
    fn close(&mut self) -> io::Result<()> {
        self.closing.store(true, Ordering::Relaxed);
        self.queue = None;
        if let Some(sender) = self.sender.take() {
            sender
                .join()
                .map_err(|_| io::Error::other("the Pyroscope sending thread panicked"))?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("Pyroscope at {}", self.url)
    }
}

/// The HTTP side: one agent, the push URL, the headers every push carries.
struct Client {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(&'static str, String)>,
}

impl Client {
    fn new(config: &PyroscopeConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        // A Connect unary call with a protobuf body.
        let mut headers = vec![
            ("Content-Type", "application/proto".to_string()),
            ("Connect-Protocol-Version", "1".to_string()),
        ];
        if let Some(tenant) = &config.tenant {
            headers.push(("X-Scope-OrgID", tenant.clone()));
        }
        if let Some((user, password)) = &config.basic_auth {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            headers.push(("Authorization", format!("Basic {token}")));
        }
        Self {
            agent,
            url: format!("{}{PUSH_PATH}", config.url.trim_end_matches('/')),
            headers,
        }
    }

    fn push(&self, body: &[u8]) -> Result<(), PushError> {
        let mut request = self.agent.post(&self.url);
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        let mut response = request.send(body).map_err(PushError::Transport)?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(());
        }
        // The server's own error message, for the log; bounded.
        let message = response
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        Err(PushError::Status {
            status,
            message: message.trim().chars().take(200).collect(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
enum PushError {
    #[error("{0}")]
    Transport(ureq::Error),
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
}

impl PushError {
    /// Worth another try: the server may answer later (down, overloaded, rate limiting).
    fn transient(&self) -> bool {
        match self {
            PushError::Transport(_) => true,
            PushError::Status { status, .. } => *status == 429 || *status >= 500,
        }
    }
}

/// Sends every period queued until the queue closes.
fn send_all(client: &Client, queued: &Receiver<Vec<u8>>, closing: &AtomicBool, health: &ExportHealth) {
    for body in queued {
        let mut backoff = BACKOFF;
        let mut tries = 1;
        let result = loop {
            match client.push(&body) {
                Err(e) if e.transient() && tries < TRIES && !closing.load(Ordering::Relaxed) => {
                    std::thread::sleep(backoff);
                    backoff *= 2;
                    tries += 1;
                }
                result => break result,
            }
        };
        health.record(Export::Pyroscope, &result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PodOwner, PodRef, ProcessIdentity};

    #[test]
    fn a_series_is_named_by_its_kind_and_workload_with_prometheus_label_names() {
        let workload = Workload {
            identity: ProcessIdentity {
                pid: 7,
                comm: "python3".into(),
                exe: "/usr/bin/python3.12".into(),
                ..ProcessIdentity::default()
            },
            pod: Some(PodRef {
                namespace: "inference".into(),
                name: "vllm-0".into(),
                container: "engine".into(),
                owner: Some(PodOwner {
                    kind: "StatefulSet".into(),
                    name: "vllm".into(),
                }),
            }),
            engine: None,
        };
        let labels: Vec<(String, String)> = labels(ProfileKind::GpuSyncWait, &workload, Some("gpu-node-7"))
            .into_iter()
            .map(|l| (l.name, l.value))
            .collect();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
        };
        assert_eq!(
            labels,
            pairs(&[
                ("__name__", "gpu_sync_wait"),
                ("k8s_container_name", "engine"),
                ("k8s_namespace_name", "inference"),
                ("k8s_node_name", "gpu-node-7"),
                ("k8s_pod_name", "vllm-0"),
                ("k8s_statefulset_name", "vllm"),
                ("process_executable_name", "python3.12"),
                ("process_pid", "7"),
                ("service_name", "inference/vllm"),
            ])
        );
    }

    #[test]
    fn only_a_server_that_may_answer_later_is_tried_again() {
        let status = |status| PushError::Status {
            status,
            message: String::new(),
        };
        assert!(status(503).transient() && status(429).transient());
        assert!(!status(400).transient() && !status(401).transient());
    }
}
