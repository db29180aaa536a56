//! Who made a profile's samples, named as the metrics name the same process,
//! so that a backend can go from a series to the stacks behind it.

use crate::{
    engines,
    model::{AttributeValue, Engine, PodRef, ProcessIdentity},
};

/// A profiled process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub identity: ProcessIdentity,
    pub pod: Option<PodRef>,
    /// The serving engine, where its command or that of the server it works for is recognised.
    pub engine: Option<Engine>,
}

impl Workload {
    /// What is known of a process found by its pid alone: its command name,
    /// and the engine its command or command line names.
    pub fn of_pid(pid: u32) -> Self {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim_end().to_string();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        Self {
            engine: engines::recognise(&comm, &String::from_utf8_lossy(&cmdline)),
            identity: ProcessIdentity {
                pid,
                comm,
                ..ProcessIdentity::default()
            },
            pod: None,
        }
    }

    /// The name a profile backend groups it under (Pyroscope's `service_name`,
    /// OpenTelemetry's `service.name`): what replicas share and restarts keep.
    /// In a pod, `namespace/owner` (its Deployment, StatefulSet, ...), else
    /// `namespace/pod`; outside, its executable's name.
    pub fn service_name(&self) -> String {
        match &self.pod {
            Some(pod) => {
                let owner = pod.owner.as_ref().map_or(&pod.name, |o| &o.name);
                format!("{}/{owner}", pod.namespace)
            }
            None => self.identity.executable_name().to_string(),
        }
    }

    /// Its attributes as the metrics carry them, and `gen_ai.provider.name`
    /// for its engine.
    pub fn attributes(&self) -> Vec<(&'static str, AttributeValue)> {
        let mut attributes = self.identity.attributes(self.pod.as_ref());
        if let Some(engine) = &self.engine {
            attributes.push((
                "gen_ai.provider.name",
                AttributeValue::Text(engine.name().to_string()),
            ));
        }
        attributes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PodOwner;

    #[test]
    fn replicas_share_their_owners_service_name_and_keep_their_own_pod() {
        let pod = |name: &str, owner: Option<&str>| PodRef {
            namespace: "inference".into(),
            name: name.into(),
            container: "engine".into(),
            owner: owner.map(|o| PodOwner {
                kind: "Deployment".into(),
                name: o.into(),
            }),
        };
        let workload = |pid, pod| Workload {
            identity: ProcessIdentity {
                pid,
                comm: "python3".into(),
                exe: "/usr/bin/python3.12".into(),
                container_id: Some("c0ffee".into()),
                ..ProcessIdentity::default()
            },
            pod,
            engine: Some(Engine::named("vllm")),
        };
        let a = workload(10, Some(pod("vllm-7d9f8b6c5-abcde", Some("vllm"))));
        let b = workload(20, Some(pod("vllm-7d9f8b6c5-fghij", Some("vllm"))));
        assert_eq!(a.service_name(), "inference/vllm");
        assert_eq!(a.service_name(), b.service_name());
        assert_eq!(
            workload(30, Some(pod("bare", None))).service_name(),
            "inference/bare"
        );
        assert_eq!(workload(40, None).service_name(), "python3.12");
        let text = |s: &str| AttributeValue::Text(s.into());
        assert_eq!(
            a.attributes(),
            [
                ("process.pid", AttributeValue::Int(10)),
                ("process.executable.name", text("python3.12")),
                ("container.id", text("c0ffee")),
                ("k8s.namespace.name", text("inference")),
                ("k8s.pod.name", text("vllm-7d9f8b6c5-abcde")),
                ("k8s.container.name", text("engine")),
                ("k8s.deployment.name", text("vllm")),
                ("gen_ai.provider.name", text("vllm")),
            ]
        );
    }
}
