//! `diagnose --prometheus`: the fleet's history read back from real stores.
//! Two agents stand for two nodes (`k8s.node.name` set apart), each watching
//! a streaming server on a GPU (the stand-in NVML, tests/c/fake_nvml.c). Both
//! export OTLP to a VictoriaMetrics keeping OTLP's names and are scraped by
//! Debian's Prometheus, which translates them. On node-a the GPU is busy, on
//! node-b it idles; on both, requests first come one at a time with quick
//! first tokens, then four at a time with slow ones, so that a queue builds.
//! Against each store, each node's finding must be its own (saturated on
//! node-a, a queue on an idle GPU on node-b), over the scripted time, with
//! the queries behind it, and the same as the local diagnosis of that node's
//! own stream.

use std::{
    io::Write as _,
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use inferscope::{
    diagnose::{self, Diagnosis, Finding, FindingKind, Recording},
    model::Snapshot,
};
use inferscope_tests::{
    Agent, TestServer, agent_binary, chat_request, read_chunked_response,
    receivers::{Prometheus, VictoriaMetrics, free_port, wait_until},
    stub_library,
};

const GIB: u64 = 1 << 30;
/// Each phase of the traffic lasts this long.
const PHASE: Duration = Duration::from_secs(4);
const QUICK_TTFT_MS: u32 = 20;
const SLOW_TTFT_MS: u32 = 400;
const CONCURRENT: usize = 4;
const MODEL: &str = "fleet";

/// One node: its server on a scripted GPU, and the agent watching it.
struct Node {
    name: &'static str,
    server: TestServer,
    agent: Agent,
    scrape: String,
    _script: Script,
}

/// The stand-in NVML's script, removed at the end.
struct Script(PathBuf);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Node {
    fn start(name: &'static str, gpu_percent: u32, vm: &VictoriaMetrics) -> Self {
        let lib = stub_library("libcudart.so.12");
        let server = TestServer::start_program_with(
            Path::new(env!("CARGO_BIN_EXE_sse_truth_server")),
            &["--gpu-library", lib.to_str().unwrap()],
        );
        let script = Script(std::env::temp_dir().join(format!("nvml-fleet-{name}-{}", server.pid())));
        std::fs::write(
            &script.0,
            format!(
                "device GPU-{gpu_percent:08}-2222-3333-4444-555555555555 NVIDIA_H100_80GB_HBM3 00000000:18:00.0 \
                 {gpu_percent} 20 {used} {total} 60 400000 700000 1000000 1980 2619 0 0 0 0 0\n\
                 process 0 {pid} {used} {gpu_percent} 20\n",
                used = 20 * GIB,
                total = 80 * GIB,
                pid = server.pid(),
            ),
        )
        .unwrap();
        let scrape = format!("127.0.0.1:{}", free_port());
        let nvml = stub_library("libnvidia-ml.so.1");
        let endpoint = vm.otlp_endpoint();
        let resource = format!("k8s.node.name={name}");
        let env: [(&str, &Path); 4] = [
            ("FAKE_NVML_SCRIPT", &script.0),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", Path::new(&endpoint)),
            ("OTEL_METRIC_EXPORT_INTERVAL", Path::new("500")),
            ("OTEL_RESOURCE_ATTRIBUTES", Path::new(&resource)),
        ];
        let pid = server.pid().to_string();
        let agent = Agent::start_with_env(
            &env,
            &[
                "--nvml-library",
                nvml.to_str().unwrap(),
                "--pid",
                &pid,
                "--prometheus-listen",
                &scrape,
            ],
        );
        Self {
            name,
            server,
            agent,
            scrape,
            _script: script,
        }
    }

    /// The scripted traffic: one client with quick first tokens, then
    /// [`CONCURRENT`] clients with slow ones; returns how many requests.
    fn traffic(port: u16) -> usize {
        let until = Instant::now() + PHASE;
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut sent = 0;
        while Instant::now() < until {
            conn.write_all(&chat_request(MODEL, 3, QUICK_TTFT_MS, 5, false))
                .unwrap();
            read_chunked_response(&mut conn);
            sent += 1;
        }
        let until = Instant::now() + PHASE;
        let clients: Vec<_> = (0..CONCURRENT)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    let mut sent = 0;
                    while Instant::now() < until {
                        conn.write_all(&chat_request(MODEL, 3, SLOW_TTFT_MS, 5, false))
                            .unwrap();
                        read_chunked_response(&mut conn);
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        sent + clients.into_iter().map(|c| c.join().unwrap()).sum::<usize>()
    }

    /// Its own stream, up to the snapshot counting all `requests`.
    fn recording(&mut self, requests: usize) -> Recording {
        let mut snapshots: Vec<Snapshot> = Vec::new();
        loop {
            let s = self.agent.next_snapshot("every request counted");
            let counted: u64 = s
                .servers
                .iter()
                .flat_map(|v| &v.models)
                .map(|m| m.requests.total.requests)
                .sum();
            snapshots.push(s);
            if counted as usize >= requests {
                return Recording {
                    snapshots,
                    requests: Vec::new(),
                };
            }
        }
    }
}

/// `diagnose --prometheus URL` from `since` until now.
fn diagnose_store(url: &str, since: SystemTime) -> Diagnosis {
    let back = since.elapsed().unwrap().as_secs() + 1;
    let out = Command::new(agent_binary())
        .args(["diagnose", "--prometheus", url, "--since", &format!("{back}s")])
        .args(["--step", "1s", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "diagnose --prometheus {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not a diagnosis ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `record --prometheus URL` from `since` until now: the report's HTML.
fn record_store(url: &str, since: SystemTime) -> String {
    let back = since.elapsed().unwrap().as_secs() + 1;
    let path = std::env::temp_dir().join(format!(
        "fleet-report-{}-{}.html",
        std::process::id(),
        free_port()
    ));
    let out = Command::new(agent_binary())
        .args([
            "record",
            "--prometheus",
            url,
            "--since",
            &format!("{back}s"),
            "--step",
            "1s",
            "-o",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "record --prometheus {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(path).unwrap();
    html
}

/// What a finding says and about what, without where it was read.
fn gist(
    f: &Finding,
) -> (
    FindingKind,
    Option<u32>,
    Option<u16>,
    Option<String>,
    Option<String>,
) {
    let s = &f.subject;
    (f.finding, s.pid, s.port, s.model.clone(), s.gpu_uuid.clone())
}

#[test]
fn each_store_gives_each_node_its_own_finding_as_its_local_diagnosis_does() {
    let vm = VictoriaMetrics::start();
    let mut nodes = [Node::start("node-a", 95, &vm), Node::start("node-b", 10, &vm)];
    let scrapes: Vec<&str> = nodes.iter().map(|n| n.scrape.as_str()).collect();
    let prometheus = Prometheus::start(&scrapes);
    for node in &mut nodes {
        let port = node.server.port;
        node.agent
            .wait_for_log(&format!("capturing requests to port {port}"));
        // The fleet's Prometheus is already scraping when traffic comes.
        wait_until(&format!("Prometheus to scrape {}", node.name), || {
            prometheus
                .query(&format!(r#"up{{instance="{}"}}"#, node.scrape))
                .first()
                .is_some_and(|r| r.1 == 1.0)
        });
    }
    let since = SystemTime::now();
    let ports: Vec<u16> = nodes.iter().map(|n| n.server.port).collect();
    let traffic: Vec<_> = ports
        .into_iter()
        .map(|port| std::thread::spawn(move || Node::traffic(port)))
        .collect();
    let sent: Vec<usize> = traffic.into_iter().map(|t| t.join().unwrap()).collect();
    let scripted = (since, SystemTime::now());
    let local: Vec<Diagnosis> = nodes
        .iter_mut()
        .zip(&sent)
        .map(|(node, &n)| diagnose::diagnose(&node.recording(n)))
        .collect();
    // Both stores hold every request before they are read.
    for (node, &n) in nodes.iter().zip(&sent) {
        let counted = |results: Vec<(serde_json::Value, f64)>| results.first().map(|r| r.1);
        wait_until(
            &format!("VictoriaMetrics to count {n} requests of {}", node.name),
            || {
                counted(vm.query(&format!(
                    r#"sum(gen_ai.server.request.duration_count{{k8s.node.name="{}"}})"#,
                    node.name
                ))) == Some(n as f64)
            },
        );
        wait_until(
            &format!("Prometheus to count {n} requests of {}", node.name),
            || {
                counted(prometheus.query(&format!(
                    r#"sum(gen_ai_server_request_duration_seconds_count{{instance="{}"}})"#,
                    node.scrape
                ))) == Some(n as f64)
            },
        );
    }
    let expected = [FindingKind::Saturated, FindingKind::QueueWithIdleGpu];
    for (store, url) in [("VictoriaMetrics", vm.url()), ("Prometheus", prometheus.url())] {
        let d = diagnose_store(&url, since - Duration::from_secs(5));
        let source = d.store.as_ref().expect("a diagnosis read from a store says so");
        assert_eq!(source.nodes, ["node-a", "node-b"], "{store}: {d:#?}");
        for ((node, local), kind) in nodes.iter().zip(&local).zip(expected) {
            let mine: Vec<&Finding> = d
                .findings
                .iter()
                .filter(|f| f.subject.node.as_deref() == Some(node.name))
                .collect();
            let finding = mine
                .iter()
                .find(|f| f.finding == kind)
                .unwrap_or_else(|| panic!("{store}: no {kind:?} on {}: {d:#?}", node.name));
            assert_eq!(
                (finding.subject.pid, finding.subject.port),
                (Some(node.server.pid()), Some(node.server.port)),
                "{store}: {finding:#?}"
            );
            assert!(
                finding.from < scripted.1 && finding.to > scripted.0,
                "{store}: {kind:?} on {} from {:?} to {:?}, outside the scripted {scripted:?}",
                node.name,
                finding.from,
                finding.to
            );
            assert!(
                finding.queries.len() >= 3
                    && finding
                        .queries
                        .iter()
                        .all(|q| q.contains(node.name) || q.contains(&node.scrape)),
                "{store}: {:#?}",
                finding.queries
            );
            let mut from_store: Vec<_> = mine.iter().map(|f| gist(f)).collect();
            let mut from_stream: Vec<_> = local.findings.iter().map(gist).collect();
            from_store.sort();
            from_stream.sort();
            assert_eq!(
                from_store, from_stream,
                "{store}: {}'s findings differ from its local diagnosis: {d:#?}\nlocal: {local:#?}",
                node.name
            );
        }
        // The report of the same slice: the findings, then each node's figures.
        let html = record_store(&url, since - Duration::from_secs(5));
        for needle in [
            "saturated",
            "queue_with_idle_gpu",
            "Node node-a</h2>",
            "Node node-b</h2>",
            "Time to first token, mean per interval",
            "GPU utilisation",
            "sse_truth_serve",
        ] {
            assert!(html.contains(needle), "{store}: {needle:?} not in the report");
        }
        assert!(
            !html.contains("never print"),
            "{store}: prompt text in the report"
        );
    }
}
