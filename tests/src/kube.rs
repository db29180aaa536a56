//! Kubernetes as the agent meets it on a node: a process in a container's
//! cgroup, and an API server serving a recorded pod list the way the real one
//! does (a list filtered by node, bearer token).

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

/// The container ID of the recorded pod's container (`engine` of `vllm-0`).
pub const CONTAINER: &str = "3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

/// What `GET /api/v1/pods?fieldSelector=spec.nodeName=...` returns, trimmed
/// to one pod but with the fields a real one has (the agent must keep none of the spec).
fn pod_list() -> String {
    format!(
        r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"48211"}},"items":[
  {{"metadata":{{"name":"vllm-0","generateName":"vllm-","namespace":"inference","uid":"6f1d1c0e-4c1a-4a8e-9d5e-0a1b2c3d4e5f",
     "labels":{{"app":"vllm","apps.kubernetes.io/pod-index":"0"}},
     "ownerReferences":[{{"apiVersion":"apps/v1","kind":"StatefulSet","name":"vllm","uid":"0c5b7a3e-1d2f-4e6a-8b9c-7d6e5f4a3b2c","controller":true,"blockOwnerDeletion":true}}]}},
   "spec":{{"nodeName":"gpu-node-7","containers":[{{"name":"engine","image":"vllm/vllm-openai:v0.11.0",
     "env":[{{"name":"HF_TOKEN","value":"a secret the agent must not keep"}}],
     "resources":{{"limits":{{"nvidia.com/gpu":"1"}}}}}}]}},
   "status":{{"phase":"Running","podIP":"10.4.2.17",
     "containerStatuses":[{{"name":"engine","ready":true,"restartCount":0,
       "image":"vllm/vllm-openai:v0.11.0","containerID":"containerd://{CONTAINER}"}}]}}}}]}}"#
    )
}

/// A process moved into a cgroup named like a containerd container of a pod; removed on drop.
pub struct ContainerCgroup(Vec<PathBuf>);

impl ContainerCgroup {
    pub fn enter(pid: u32) -> Self {
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

/// The node the recorded pod runs on.
pub const NODE: &str = "gpu-node-7";
const TOKEN: &str = "test-token";

/// The recorded API server, answering only with its bearer token, and the
/// agent's flags to list [`NODE`]'s pods from it every second.
pub struct FakeCluster {
    /// Requests it answered.
    pub served: Arc<AtomicUsize>,
    port: u16,
    token_file: PathBuf,
}

impl FakeCluster {
    pub fn start() -> Self {
        let (port, served) = fake_api_server(TOKEN, NODE);
        let token_file = std::env::temp_dir().join(format!("inferscope-kube-token-{port}"));
        fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        Self {
            served,
            port,
            token_file,
        }
    }

    pub fn agent_args(&self) -> Vec<String> {
        [
            "--kube-api",
            &format!("http://127.0.0.1:{}", self.port),
            "--kube-token-file",
            &self.token_file.display().to_string(),
            "--kube-node",
            NODE,
            "--kube-refresh",
            "1s",
        ]
        .map(String::from)
        .to_vec()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.token_file);
    }
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
