//! Kubernetes pods: a GPU process in a container's cgroup is named by its pod,
//! namespace and container, from a fake API server serving a recorded pod
//! list the way the real one does (a list filtered by node, bearer token).

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use inferscope::model::{PodRef, Snapshot};
use inferscope_tests::{Agent, STEP, Workload, stub_library};

const CONTAINER: &str = "3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

/// What `GET /api/v1/pods?fieldSelector=spec.nodeName=...` returns, trimmed
/// to one pod but with the fields a real one has (the agent must keep none of the spec).
fn pod_list() -> String {
    format!(
        r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"48211"}},"items":[
  {{"metadata":{{"name":"vllm-0","generateName":"vllm-","namespace":"inference","uid":"6f1d1c0e-4c1a-4a8e-9d5e-0a1b2c3d4e5f",
     "labels":{{"app":"vllm"}}}},
   "spec":{{"nodeName":"gpu-node-7","containers":[{{"name":"engine","image":"vllm/vllm-openai:v0.11.0",
     "env":[{{"name":"HF_TOKEN","value":"a secret the agent must not keep"}}],
     "resources":{{"limits":{{"nvidia.com/gpu":"1"}}}}}}]}},
   "status":{{"phase":"Running","podIP":"10.4.2.17",
     "containerStatuses":[{{"name":"engine","ready":true,"restartCount":0,
       "image":"vllm/vllm-openai:v0.11.0","containerID":"containerd://{CONTAINER}"}}]}}}}]}}"#
    )
}

/// A process moved into a cgroup named like a containerd container of a pod; removed on drop.
struct ContainerCgroup(Vec<PathBuf>);

impl ContainerCgroup {
    fn enter(pid: u32) -> Self {
        let root = cgroup2_root();
        let mut dirs = Vec::new();
        let mut path = root;
        for part in [
            "kubepods.slice".to_string(),
            "kubepods-besteffort.slice".to_string(),
            "kubepods-besteffort-pod6f1d1c0e.slice".to_string(),
            format!("cri-containerd-{CONTAINER}.scope"),
        ] {
            path = path.join(part);
            if !path.exists() {
                fs::create_dir(&path).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
                dirs.push(path.clone());
            }
        }
        fs::write(path.join("cgroup.procs"), pid.to_string()).expect("moving the workload into its cgroup");
        Self(dirs)
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `.../unified` on hybrid hosts).
fn cgroup2_root() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|line| {
            let (mount, fs_type) = line.split_once(" - ")?;
            let mount_point = mount.split_whitespace().nth(4)?;
            fs_type
                .starts_with("cgroup2 ")
                .then(|| PathBuf::from(mount_point))
        })
        .expect("a cgroup2 mount")
}

/// Serves the pod list to requests that carry the token and ask for this node's pods.
fn fake_api_server(token: &'static str, node: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(&stream);
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push(line);
            }
            let wanted = format!("GET /api/v1/pods?fieldSelector=spec.nodeName%3D{node} HTTP/1.1\r\n");
            let authorized = head
                .iter()
                .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {token}\r\n")));
            let (status, body) = match (head.first() == Some(&wanted), authorized) {
                (true, true) => ("200 OK", pod_list()),
                (true, false) => ("401 Unauthorized", String::from("{}")),
                _ => ("404 Not Found", String::from("{}")),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let mut stream = &stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, served)
}

#[test]
fn a_gpu_process_in_a_pod_is_named_by_its_pod_and_summed_per_pod() {
    let lib = stub_library("libcudart.so.12");
    let mut workload = Workload::start("cudart", &lib, 10, 4096);
    let pid = workload.pid();
    let _cgroup = ContainerCgroup::enter(pid);
    let (port, served) = fake_api_server("test-token", "gpu-node-7");
    let token = std::env::temp_dir().join(format!("inferscope-kube-token-{pid}"));
    fs::write(&token, "test-token\n").unwrap();
    let api = format!("http://127.0.0.1:{port}");
    let mut agent = Agent::start(&[
        "--kube-api",
        &api,
        "--kube-token-file",
        token.to_str().unwrap(),
        "--kube-node",
        "gpu-node-7",
        "--kube-refresh",
        "1s",
    ]);
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
            served.load(Ordering::Relaxed),
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
    assert!(served.load(Ordering::Relaxed) >= 1);
    // Nothing of the pod's spec (its environment, a token) is ever printed.
    assert!(!serde_json::to_string(&s).unwrap().contains("secret"));
    workload.exit();
    let _ = fs::remove_file(token);
}
