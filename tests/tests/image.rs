//! The image as the DaemonSet runs it. The root filesystem comes from the
//! archive `cargo xtask image` wrote (`INFERSCOPE_IMAGE`), the entrypoint from
//! the image's own config, and everything else from the container spec in
//! deploy/daemonset.yaml itself: args, environment, capabilities (all dropped,
//! then those added), read-only root, volume mounts, the host's PID namespace,
//! and, as for every pod without `hostNetwork`, a network namespace of its own.
//!
//! No container runtime starts containers on CI's machines (podman's `crun` and
//! `runc` fail to set RLIMIT_NPROC there), so bubblewrap builds the same
//! sandbox: a fresh /proc of the host's PID namespace, a minimal /dev, /sys read
//! only, no new privileges. The runtime's default seccomp profile is the one part
//! not reproduced; it allows bpf() and perf_event_open() to holders of CAP_BPF
//! and CAP_PERFMON.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    thread,
    time::Instant,
};

use inferscope_tests::{
    Calls, STEP, Workload,
    llama::{LlamaServer, chat, sse_events},
    real_library,
    receivers::{sample, scrape, wait_until},
    require_root, venv_python,
};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The image's root filesystem and config, unpacked from its archive.
struct Image {
    dir: PathBuf,
    entrypoint: Vec<String>,
}

impl Image {
    fn unpack() -> Self {
        let archive = std::env::var_os("INFERSCOPE_IMAGE")
            .map(PathBuf::from)
            .expect("INFERSCOPE_IMAGE names the image archive: run `cargo xtask test`, which builds it");
        // One folder per unpacking: the tests of this file run at once, in one process.
        static UNPACKED: AtomicUsize = AtomicUsize::new(0);
        let n = UNPACKED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("inferscope-image-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (layout, rootfs) = (dir.join("layout"), dir.join("rootfs"));
        fs::create_dir_all(&layout).unwrap();
        fs::create_dir_all(&rootfs).unwrap();
        untar(&archive, &layout);
        let blob = |digest: &Value| {
            let hex = digest.as_str().and_then(|d| d.strip_prefix("sha256:")).unwrap();
            layout.join("blobs/sha256").join(hex)
        };
        let json = |path: PathBuf| -> Value { serde_json::from_slice(&fs::read(path).unwrap()).unwrap() };
        let index = json(layout.join("index.json"));
        let manifest = json(blob(&index["manifests"][0]["digest"]));
        for layer in manifest["layers"].as_array().unwrap() {
            untar(&blob(&layer["digest"]), &rootfs);
        }
        let config = json(blob(&manifest["config"]["digest"]));
        let entrypoint = config["config"]["Entrypoint"]
            .as_array()
            .expect("the image names its entrypoint")
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        Self { dir, entrypoint }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn untar(archive: &Path, into: &Path) {
    let out = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "untar {}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The agent's container in deploy/daemonset.yaml, as the API server would take it.
#[derive(Clone)]
struct ContainerSpec {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    capabilities: Vec<String>,
    read_only_root: bool,
    /// (host path, container path, read only)
    mounts: Vec<(String, String, bool)>,
    host_pid: bool,
    host_network: bool,
    /// The port `/metrics` is served on.
    metrics_port: u16,
    /// Folders hidden under an empty tmpfs (what a node may lack).
    hidden: Vec<&'static str>,
}

const NODE_NAME: &str = "gpu-node-1";

impl ContainerSpec {
    fn from_manifest() -> Self {
        let to_json = "import json, sys, yaml\n\
                       docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d['kind'] == 'DaemonSet']\n\
                       print(json.dumps(docs[0]['spec']['template']['spec']))";
        let out = Command::new(venv_python())
            .args(["-c", to_json])
            .arg(repo("deploy/daemonset.yaml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
        let container = &pod["containers"][0];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let env = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                    (Value::String(v), _) => v.clone(),
                    (_, Value::String(field)) if field == "spec.nodeName" => NODE_NAME.to_string(),
                    other => panic!("an env value this test cannot give: {other:?}"),
                };
                (e["name"].as_str().unwrap().to_string(), value)
            })
            .collect();
        let volumes: BTreeMap<&str, &str> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap(),
                    v["hostPath"]["path"].as_str().expect("hostPath volumes only"),
                )
            })
            .collect();
        let mounts = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    volumes[m["name"].as_str().unwrap()].to_string(),
                    m["mountPath"].as_str().unwrap().to_string(),
                    m["readOnly"] == true,
                )
            })
            .collect();
        let security = &container["securityContext"];
        assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        Self {
            args: strings(&container["args"]),
            env,
            capabilities: strings(&security["capabilities"]["add"]),
            read_only_root: security["readOnlyRootFilesystem"] == true,
            mounts,
            host_pid: pod["hostPID"] == true,
            host_network: pod["hostNetwork"] == true,
            metrics_port: container["ports"][0]["containerPort"].as_u64().unwrap() as u16,
            hidden: Vec::new(),
        }
    }
}

/// The agent running in the image's root filesystem under a container spec.
struct Container {
    bwrap: Child,
    agent: u32,
    log: Receiver<String>,
    seen: Vec<String>,
}

impl Container {
    fn start(image: &Image, spec: &ContainerSpec) -> Self {
        require_root();
        let mut cmd = Command::new("bwrap");
        cmd.args([
            "--die-with-parent",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup",
        ]);
        if !spec.host_pid {
            cmd.arg("--unshare-pid");
        }
        if !spec.host_network {
            cmd.arg("--unshare-net");
        }
        let root = if spec.read_only_root {
            "--ro-bind"
        } else {
            "--bind"
        };
        cmd.arg(root).arg(image.rootfs()).arg("/");
        // What every runtime gives a container: /proc of its PID namespace, a
        // minimal /dev, and sysfs read only.
        cmd.args(["--proc", "/proc", "--dev", "/dev", "--ro-bind", "/sys", "/sys"]);
        for (host, path, read_only) in &spec.mounts {
            cmd.arg(if *read_only { "--ro-bind" } else { "--bind" })
                .args([host, path]);
        }
        for path in &spec.hidden {
            cmd.args(["--tmpfs", path]);
        }
        cmd.arg("--clearenv");
        for (name, value) in &spec.env {
            cmd.args(["--setenv", name, value]);
        }
        cmd.args(["--cap-drop", "ALL"]);
        for cap in &spec.capabilities {
            cmd.args(["--cap-add", &format!("CAP_{cap}")]);
        }
        cmd.arg("--").args(&image.entrypoint).args(&spec.args);
        let mut bwrap = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bwrap (Debian's bubblewrap)");
        let (tx, log) = channel();
        let stderr = bwrap.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("container: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // bwrap clones the sandboxed process and waits for it: its one child is
        // the agent (0: it has already stopped).
        let children = format!("/proc/{0}/task/{0}/children", bwrap.id());
        let mut agent = 0;
        wait_until("bwrap to start the agent", || {
            agent = fs::read_to_string(&children)
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            agent != 0 || bwrap.try_wait().is_ok_and(|ended| ended.is_some())
        });
        Self {
            bwrap,
            agent,
            log,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`; `None` if the agent exits first.
    fn log_line(&mut self, needle: &str) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(line.clone());
        }
        let deadline = Instant::now() + STEP;
        loop {
            match self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no log line with {needle:?}; log: {:#?}", self.seen)
                }
            }
        }
    }

    /// Waits for the agent to stop by itself.
    fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_until("the agent to stop", || {
            status = self.bwrap.try_wait().unwrap();
            status.is_some()
        });
        self.seen.extend(self.log.iter());
        status.unwrap()
    }

    /// `/metrics` from inside the container's network namespace.
    fn scrape(&self, port: u16) -> String {
        let netns = fs::File::open(format!("/proc/{}/ns/net", self.agent)).unwrap();
        thread::spawn(move || {
            // SAFETY: a valid namespace fd; this thread alone moves into it.
            let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            scrape(&format!("127.0.0.1:{port}"))
        })
        .join()
        .unwrap()
    }

    /// Stops the agent as the kubelet does (SIGTERM), if it still runs;
    /// returns how it ended and its whole log.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        if self.agent != 0 {
            // SAFETY: kill has no memory preconditions; an agent already gone makes it fail harmlessly.
            unsafe { libc::kill(self.agent as i32, libc::SIGTERM) };
        }
        let status = self.bwrap.wait().unwrap();
        self.seen.extend(self.log.iter());
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.bwrap.kill();
        let _ = self.bwrap.wait();
    }
}

#[test]
fn the_image_under_the_daemonsets_spec_counts_a_host_process_exactly_and_measures_a_servers_requests() {
    let image = Image::unpack();
    let spec = ContainerSpec::from_manifest();
    assert!(
        spec.host_pid && !spec.host_network,
        "the manifest changed: hostPID, own network"
    );
    // Both on the host, started before the agent as on a node the DaemonSet rolls onto.
    let server = LlamaServer::start(1);
    let mut workload = Workload::start_with(
        &[],
        "cudart",
        &real_library("libcudart.so.12"),
        50,
        1 << 20,
        Calls::WhenTold,
    );
    let mut container = Container::start(&image, &spec);
    container
        .log_line("attached;")
        .expect("the agent exited before attaching");
    container
        .log_line(&format!("capturing requests to port {}", server.port))
        .expect("the agent exited");

    let tally = workload.run_calls();
    let response = server.exchange("POST", "/v1/chat/completions", Some(&chat(true, 16)));
    let usage = sse_events(&response)
        .into_iter()
        .rev()
        .find_map(|e| e.get("usage").filter(|u| !u.is_null()).cloned())
        .expect("usage in the stream");

    let pid = format!(r#"process_pid="{}""#, workload.pid());
    let port = format!(r#"server_port="{}""#, server.port);
    let output = [&port[..], r#"gen_ai_token_type="output""#];
    let mut exposition = String::new();
    wait_until(
        "a scrape of the container's /metrics with the calls and the request",
        || {
            exposition = container.scrape(spec.metrics_port);
            sample(&exposition, "gpu_cuda_kernel_launch_calls_total", &[&pid])
                == tally["kernel_launches"].as_f64()
                && sample(
                    &exposition,
                    "gen_ai_server_time_to_first_token_seconds_count",
                    &[&port],
                ) == Some(1.0)
        },
    );
    for (metric, field) in [
        ("gpu_cuda_memory_allocations_bytes_total", "alloc_bytes"),
        ("inferscope_gpu_memory_copy_calls_total", "memcpy_calls"),
        ("inferscope_gpu_sync_calls_total", "sync_calls"),
    ] {
        assert_eq!(
            sample(&exposition, metric, &[&pid]),
            tally[field].as_f64(),
            "{metric}"
        );
    }
    assert_eq!(
        sample(&exposition, "inferscope_server_token_usage_sum", &output),
        usage["completion_tokens"].as_f64(),
        "output tokens"
    );
    workload.exit();
    let (status, log) = container.stop();
    assert!(
        status.success(),
        "the agent did not stop cleanly: {status}; log: {log:#?}"
    );
    // Under the manifest's own spec nothing is missing, so nothing is warned of.
    let warnings: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("inferscope warn:") || l.starts_with("inferscope error:"))
        .collect();
    assert!(
        warnings.is_empty(),
        "warnings under the manifest's spec: {warnings:#?}"
    );
}

/// Each capability the manifest adds, taken away in turn, and the BTF mount.
/// Without CAP_BPF, CAP_PERFMON or BTF nothing can load: the agent stops, its
/// whole log one sentence naming what is missing. Without any other it runs and
/// says in one line what it cannot do.
#[test]
fn without_one_capability_or_the_btf_mount_the_agent_names_what_is_missing() {
    let image = Image::unpack();
    let full = ContainerSpec::from_manifest();
    let mut cases: Vec<(String, ContainerSpec)> = full
        .capabilities
        .iter()
        .map(|cap| {
            let mut spec = full.clone();
            spec.capabilities.retain(|c| c != cap);
            (format!("CAP_{cap}"), spec)
        })
        .collect();
    // Without the volume, and without BTF in the runtime's sysfs either (a
    // kernel built without it, or a runtime that masks it).
    let mut no_btf = full.clone();
    no_btf.mounts.retain(|(_, path, _)| path != "/sys/kernel/btf");
    assert_eq!(
        no_btf.mounts.len() + 1,
        full.mounts.len(),
        "the manifest mounts /sys/kernel/btf"
    );
    no_btf.hidden.push("/sys/kernel/btf");
    cases.push(("BTF".into(), no_btf));
    let needed = ["CAP_BPF", "CAP_PERFMON", "BTF"];
    for (missing, spec) in cases {
        let mut container = Container::start(&image, &spec);
        // The stopping sentence names both needed capabilities: the one lacking follows "lacks".
        let needle = match missing.as_str() {
            "CAP_BPF" | "CAP_PERFMON" => format!("lacks {missing}"),
            _ => missing.clone(),
        };
        let said = container.log_line(&needle);
        assert!(
            said.is_some(),
            "without {missing} the agent stopped saying nothing of it: {:#?}",
            container.seen
        );
        if needed.contains(&missing.as_str()) {
            let status = container.wait_for_exit();
            let log = std::mem::take(&mut container.seen);
            assert_eq!(status.code(), Some(1), "without {missing}: {log:#?}");
            assert_eq!(log.len(), 1, "without {missing}, one sentence: {log:#?}");
        } else {
            container.log_line("attached;").expect("the agent stopped");
            let (status, log) = container.stop();
            assert!(status.success(), "without {missing}: {status}; {log:#?}");
            let line = said.unwrap_or_default();
            assert!(line.starts_with("inferscope warn:"), "without {missing}: {line}");
        }
    }
}
