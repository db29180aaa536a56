//! Continuous profiles pushed to Grafana Pyroscope (or Grafana Cloud
//! Profiles) through its push API, `POST /push.v1.PusherService/Push`, as
//! Grafana Alloy pushes: one pprof per process and kind of profile, labelled
//! with `__name__` (the kind), `service_name` (the workload) and the
//! process's identity as the metrics carry it (OpenTelemetry names with `_`
//! for `.`, as Prometheus spells them).
//!
//! Each period is encoded on the pipeline's thread and shipped as every
//! profile store is ([`super::ship`]): counted under
//! `inferscope.export.dropped_batches{exporter="pyroscope"}`.

use std::{collections::BTreeMap, io, time::Duration};

use base64::Engine as _;
use prost::Message as _;

use super::{
    Destination, Period, ProfileKind, StackProfile, Workload, pprof,
    ship::{HttpPush, Shipper},
};
use crate::sinks::{Export, ExportHealth};

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
        let var = crate::sinks::env_value;
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
    shipper: Shipper<Vec<u8>>,
}

impl Pyroscope {
    pub fn start(config: PyroscopeConfig, health: ExportHealth) -> io::Result<Self> {
        // A Connect unary call with a protobuf body.
        let mut headers = vec![
            ("Content-Type".to_string(), "application/proto".to_string()),
            ("Connect-Protocol-Version".to_string(), "1".to_string()),
        ];
        if let Some(tenant) = &config.tenant {
            headers.push(("X-Scope-OrgID".to_string(), tenant.clone()));
        }
        if let Some((user, password)) = &config.basic_auth {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            headers.push(("Authorization".to_string(), format!("Basic {token}")));
        }
        let push = HttpPush::new(
            format!("{}{PUSH_PATH}", config.url.trim_end_matches('/')),
            headers,
            config.timeout,
            |_| Ok(()),
        );
        Ok(Self {
            shipper: Shipper::start("pyroscope", Export::Pyroscope, push, health)?,
            url: config.url,
            node_name: config.node_name,
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
                let workload = period.workload(pid);
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
        self.shipper.ship(request.encode_to_vec())
    }

    fn close(&mut self) -> io::Result<()> {
        self.shipper.close()
    }

    fn describe(&self) -> String {
        format!("Pyroscope at {}", self.url)
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
}
