//! Kubernetes identity of processes: which pod, namespace and container each
//! container ID belongs to, from the API server's list of the pods on this
//! node, fetched on a thread of its own and refreshed, so that a slow or
//! unreachable API server never holds up a snapshot.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::Deserialize;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::{Readings, Source};
use crate::model::{PodOwner, PodRef};

/// Where a pod's service account credentials are mounted.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The largest pod list read (a node runs at most a few hundred pods).
const MAX_LIST_BYTES: u64 = 64 << 20;

/// How to reach the API server.
#[derive(Clone, Debug, Default)]
pub struct KubeConfig {
    /// Base URL (`https://10.96.0.1:443`).
    pub api: String,
    /// Bearer token file (the service account's, read at each refresh: it rotates).
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle for HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Only this node's pods (`spec.nodeName`).
    pub node: String,
}

impl KubeConfig {
    /// In a pod: the API server from `KUBERNETES_SERVICE_HOST`/`_PORT`, the
    /// service account's token and CA, the node from `NODE_NAME` (set it from
    /// the downward API) or else the host name (the kubelet's default).
    pub fn in_cluster() -> Option<Self> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Some(Self {
            api: format!("https://{host}:{port}"),
            token_file: Some(Path::new(SERVICE_ACCOUNT).join("token")),
            ca_file: Some(Path::new(SERVICE_ACCOUNT).join("ca.crt")),
            node: node_name(),
        })
    }
}

/// The node's name: `NODE_NAME`, else the host name.
pub fn node_name() -> String {
    std::env::var("NODE_NAME").unwrap_or_else(|_| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    })
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("the CA bundle {0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("listing pods: {0}")]
    Http(#[from] ureq::Error),
    #[error("the pod list is not what the API serves: {0}")]
    Json(#[from] serde_json::Error),
}

pub struct KubePods {
    /// Container ID (64 hex) → its pod.
    containers: Arc<Mutex<HashMap<String, PodRef>>>,
    stop: Arc<AtomicBool>,
}

impl KubePods {
    /// Starts listing this node's pods every `refresh`; the first list comes as soon as the API answers.
    pub fn start(config: KubeConfig, refresh: Duration) -> Result<Self, KubeError> {
        let client = client(&config)?;
        let containers = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (containers.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("kube-pods".into())
            .spawn(move || {
                let mut failing = false;
                while !stopped.load(Ordering::Relaxed) {
                    match list(&client, &config) {
                        Ok(pods) => {
                            if failing {
                                log::info!(
                                    "Kubernetes API answers again: {} containers on {}",
                                    pods.len(),
                                    config.node
                                );
                            }
                            failing = false;
                            if let Ok(mut map) = shared.lock() {
                                *map = pods;
                            }
                        }
                        // Said once per outage; the last list stays in use.
                        Err(e) if !failing => {
                            failing = true;
                            log::warn!(
                                "pods unknown until the Kubernetes API answers ({}): {e}",
                                config.api
                            );
                        }
                        Err(_) => {}
                    }
                    std::thread::park_timeout(refresh);
                }
            });
        spawned.map_err(|e| KubeError::Read("a thread".into(), e))?;
        Ok(Self { containers, stop })
    }

    /// The pod a container belongs to, as of the last list.
    pub fn pod_of(&self, container_id: &str) -> Option<PodRef> {
        self.containers.lock().ok()?.get(container_id).cloned()
    }
}

impl Drop for KubePods {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn client(config: &KubeConfig) -> Result<ureq::Agent, KubeError> {
    let mut builder = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10)));
    if let Some(ca) = &config.ca_file {
        let pem = std::fs::read(ca).map_err(|e| KubeError::Read(ca.clone(), e))?;
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(KubeError::NoCertificate(ca.clone()));
        }
        builder = builder.tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    Ok(builder.build().into())
}

/// One list of this node's pods: container ID → pod.
fn list(client: &ureq::Agent, config: &KubeConfig) -> Result<HashMap<String, PodRef>, KubeError> {
    let url = format!(
        "{}/api/v1/pods?fieldSelector=spec.nodeName%3D{}",
        config.api.trim_end_matches('/'),
        config.node
    );
    let mut request = client.get(&url);
    if let Some(file) = &config.token_file {
        let token = std::fs::read_to_string(file).map_err(|e| KubeError::Read(file.clone(), e))?;
        request = request.header("Authorization", format!("Bearer {}", token.trim()));
    }
    let body = request
        .call()?
        .body_mut()
        .with_config()
        .limit(MAX_LIST_BYTES)
        .read_to_string()?;
    Ok(containers(&serde_json::from_str(&body)?))
}

/// What of a `PodList` the join needs; the rest (specs, env, annotations) is never kept.
#[derive(Deserialize)]
struct PodList {
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    metadata: Metadata,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    name: String,
    namespace: String,
    #[serde(default)]
    owner_references: Vec<OwnerReference>,
    /// Only `pod-template-hash` is read.
    #[serde(default)]
    labels: HashMap<String, String>,
}

#[derive(Deserialize)]
struct OwnerReference {
    kind: String,
    name: String,
    #[serde(default)]
    controller: bool,
}

impl Metadata {
    /// The pod's controller; a Deployment's for a ReplicaSet that a
    /// Deployment made (named after it, then `-` and the pod template's hash,
    /// which the pod carries as a label).
    fn owner(&self) -> Option<PodOwner> {
        let owner = self.owner_references.iter().find(|o| o.controller)?;
        let deployment = self
            .labels
            .get("pod-template-hash")
            .filter(|_| owner.kind == "ReplicaSet")
            .and_then(|hash| owner.name.strip_suffix(hash.as_str())?.strip_suffix('-'))
            .filter(|name| !name.is_empty());
        Some(match deployment {
            Some(name) => PodOwner {
                kind: "Deployment".into(),
                name: name.into(),
            },
            None => PodOwner {
                kind: owner.kind.clone(),
                name: owner.name.clone(),
            },
        })
    }
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    init_container_statuses: Vec<ContainerStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    name: String,
    /// `containerd://<64 hex>`, `cri-o://...`, `docker://...`; absent before it starts.
    #[serde(default, rename = "containerID")]
    container_id: Option<String>,
}

fn containers(list: &PodList) -> HashMap<String, PodRef> {
    let mut out = HashMap::new();
    for pod in &list.items {
        let owner = pod.metadata.owner();
        let statuses = pod
            .status
            .container_statuses
            .iter()
            .chain(&pod.status.init_container_statuses);
        for c in statuses {
            let Some(id) = c.container_id.as_deref().and_then(|id| id.rsplit("://").next()) else {
                continue;
            };
            out.insert(
                id.to_string(),
                PodRef {
                    namespace: pod.metadata.namespace.clone(),
                    name: pod.metadata.name.clone(),
                    container: c.name.clone(),
                    owner: owner.clone(),
                },
            );
        }
    }
    out
}

impl Source for KubePods {
    /// Names the pod of each process read before, by its container.
    fn read(&mut self, _now_ns: u64, readings: &mut Readings) -> anyhow::Result<()> {
        for p in &mut readings.processes {
            p.pod = p.identity.container_id.as_deref().and_then(|id| self.pod_of(id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_of_every_runtime_map_to_their_pod_and_container() {
        let list: PodList = serde_json::from_str(
            r#"{"kind":"PodList","items":[
              {"metadata":{"name":"vllm-0","namespace":"inference","uid":"u1",
                 "ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"vllm","uid":"s1","controller":true}]},
               "spec":{"containers":[{"name":"engine","env":[{"name":"SECRET","value":"x"}]}]},
               "status":{"containerStatuses":[
                 {"name":"engine","containerID":"containerd://aaaa"},
                 {"name":"sidecar","containerID":"cri-o://bbbb"},
                 {"name":"starting"}],
                 "initContainerStatuses":[{"name":"fetch-model","containerID":"docker://cccc"}]}},
              {"metadata":{"name":"pending","namespace":"default"}}]}"#,
        )
        .unwrap();
        let map = containers(&list);
        assert_eq!(map.len(), 3);
        assert_eq!(
            map["aaaa"],
            PodRef {
                namespace: "inference".into(),
                name: "vllm-0".into(),
                container: "engine".into(),
                owner: Some(PodOwner {
                    kind: "StatefulSet".into(),
                    name: "vllm".into()
                }),
            }
        );
        assert_eq!(
            (map["bbbb"].container.as_str(), map["cccc"].container.as_str()),
            ("sidecar", "fetch-model")
        );
    }

    #[test]
    fn a_replicaset_made_by_a_deployment_is_named_by_its_deployment() {
        let owner = |references: &str, labels: &str| {
            let metadata: Metadata = serde_json::from_str(&format!(
                r#"{{"name":"p","namespace":"n","ownerReferences":{references},"labels":{labels}}}"#
            ))
            .unwrap();
            metadata.owner().map(|o| (o.kind, o.name))
        };
        let replicaset = r#"[{"kind":"ReplicaSet","name":"vllm-7d9f8b6c5","controller":true}]"#;
        assert_eq!(
            owner(replicaset, r#"{"pod-template-hash":"7d9f8b6c5"}"#),
            Some(("Deployment".into(), "vllm".into()))
        );
        // A ReplicaSet of its own: no template hash, or one its name does not end in.
        assert_eq!(
            owner(replicaset, "{}"),
            Some(("ReplicaSet".into(), "vllm-7d9f8b6c5".into()))
        );
        assert_eq!(
            owner(replicaset, r#"{"pod-template-hash":"0000"}"#),
            Some(("ReplicaSet".into(), "vllm-7d9f8b6c5".into()))
        );
        // Only the controller counts.
        assert_eq!(owner(r#"[{"kind":"Node","name":"gpu-node-7"}]"#, "{}"), None);
        assert_eq!(owner("[]", "{}"), None);
    }
}
