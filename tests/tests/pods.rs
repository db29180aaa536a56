//! Kubernetes pods: a GPU process in a container's cgroup is named by its pod,
//! namespace and container, from a fake API server serving a recorded pod
//! list the way the real one does (a list filtered by node, bearer token).

use std::{sync::atomic::Ordering, time::Instant};

use inferscope::model::{PodOwner, PodRef, Snapshot};
use inferscope_tests::{
    Agent, STEP, Workload,
    kube::{CONTAINER, ContainerCgroup, FakeCluster},
    stub_library,
};

#[test]
fn a_gpu_process_in_a_pod_is_named_by_its_pod_and_summed_per_pod() {
    let lib = stub_library("libcudart.so.12");
    let mut workload = Workload::start("cudart", &lib, 10, 4096);
    let pid = workload.pid();
    let _cgroup = ContainerCgroup::enter(pid);
    let cluster = FakeCluster::start();
    let kube_args = cluster.agent_args();
    let mut agent = Agent::start(&kube_args.iter().map(String::as_str).collect::<Vec<_>>());
    let in_pod = |s: &Snapshot| {
        s.processes
            .iter()
            .find(|p| p.identity.pid == pid)
            .and_then(|p| p.pod.clone())
    };
    let deadline = Instant::now() + STEP;
    loop {
        let s = agent.next_snapshot("the workload named by its pod");
        if in_pod(&s).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the workload was never named by its pod ({} requests to the API): {:?}",
            cluster.served.load(Ordering::Relaxed),
            s.processes.iter().find(|p| p.identity.pid == pid)
        );
    }
    let tally = workload.run_calls();
    let launches = tally["kernel_launches"].as_u64().unwrap();
    let deadline = Instant::now() + STEP;
    let s = loop {
        let s = agent.next_snapshot("the pod with the workload's launches");
        if s.pods
            .first()
            .is_some_and(|p| p.gpu.total.kernel_launches == launches)
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the pod never summed the workload's launches"
        );
    };
    assert_eq!(
        in_pod(&s),
        Some(PodRef {
            namespace: "inference".into(),
            name: "vllm-0".into(),
            container: "engine".into(),
            owner: Some(PodOwner {
                kind: "StatefulSet".into(),
                name: "vllm".into(),
            }),
        })
    );
    let process = s.processes.iter().find(|p| p.identity.pid == pid).unwrap();
    assert_eq!(process.identity.container_id.as_deref(), Some(CONTAINER));
    let [pod] = s.pods.as_slice() else {
        panic!("one pod expected: {:?}", s.pods)
    };
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str(), pod.pids.as_slice()),
        ("inference", "vllm-0", &[pid][..])
    );
    assert!(cluster.served.load(Ordering::Relaxed) >= 1);
    // Nothing of the pod's spec (its environment, a token) is ever printed.
    assert!(!serde_json::to_string(&s).unwrap().contains("secret"));
    workload.exit();
}
