//! Export through real receivers: OTLP/HTTP into VictoriaMetrics, OTLP/gRPC
//! into rotel (which logs what it received and forwards it to VictoriaMetrics),
//! and Prometheus scrapes checked by promtool. One scenario with known answers
//! (a streaming server that is also a GPU process, a GPU workload with a known
//! tally, a stand-in NVML with known device figures) is driven to its end;
//! every exported value is then compared with what the agent's own snapshot
//! said, as received by the receiver.

use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    net::TcpStream,
    path::{Path, PathBuf},
};

use inferscope::model::{Histogram, Snapshot};
use inferscope_tests::{
    Agent, STEP, TestServer, Workload, chat_request, read_chunked_response,
    receivers::{Rotel, VictoriaMetrics, free_port, promtool_check_metrics, sample, scrape, wait_until},
    stub_library,
};
use serde_json::Value;

const GIB: u64 = 1 << 30;
const MODEL: &str = "exported";
const REQUESTS: u64 = 3;
const TOKENS: u32 = 8;
const GPU: &str = "GPU-77777777-2222-3333-4444-555555555555";

/// The processes with known answers, and the stand-in NVML's script.
struct Scenario {
    server: TestServer,
    workload: Workload,
    script: PathBuf,
    nvml: PathBuf,
}

impl Scenario {
    fn start() -> Self {
        Self::start_with_nvml("")
    }

    /// With more lines for the stand-in NVML's script (e.g. an XID error).
    fn start_with_nvml(more: &str) -> Self {
        let lib = stub_library("libcudart.so.12");
        let server = TestServer::start_program_with(
            Path::new(env!("CARGO_BIN_EXE_sse_truth_server")),
            &["--gpu-library", lib.to_str().unwrap()],
        );
        let workload = Workload::start("cudart", &lib, 10, 4096);
        let script = std::env::temp_dir().join(format!("nvml-script-export-{}", server.pid()));
        fs::write(
            &script,
            format!(
                "device {GPU} NVIDIA_H100_80GB_HBM3 00000000:18:00.0 \
                 55 20 {used} {total} 60 400000 700000 1000000 1980 2619 0 0 0 0 0\n\
                 process 0 {pid} {mem} 55 20\n{more}",
                used = 20 * GIB,
                total = 80 * GIB,
                mem = 4 * GIB,
                pid = server.pid(),
            ),
        )
        .unwrap();
        Self {
            server,
            workload,
            script,
            nvml: stub_library("libnvidia-ml.so.1"),
        }
    }

    /// The agent, with the stand-in NVML and `env`.
    fn agent(&self, env: &[(&str, &str)], extra: &[&str]) -> Agent {
        let mut vars: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, Path::new(v))).collect();
        vars.push(("FAKE_NVML_SCRIPT", &self.script));
        let mut args = vec!["--nvml-library", self.nvml.to_str().unwrap()];
        args.extend_from_slice(extra);
        Agent::start_with_env(&vars, &args)
    }

    /// The agent exporting OTLP to `endpoint` every 200 ms, with more `env`.
    fn exporting_to(&self, endpoint: &str, env: &[(&str, &str)]) -> Agent {
        let mut vars = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci"),
        ];
        vars.extend_from_slice(env);
        self.agent(&vars, &[])
    }

    /// Runs the workload's calls and the requests; returns the workload's tally
    /// and the first snapshot that counts all of them.
    fn drive(&mut self, agent: &mut Agent) -> (Value, Snapshot) {
        agent.wait_for_log(&format!("capturing requests to port {}", self.server.port));
        let mut conn = TcpStream::connect(("127.0.0.1", self.server.port)).unwrap();
        for _ in 0..REQUESTS {
            conn.write_all(&chat_request(MODEL, TOKENS, 30, 5, false))
                .unwrap();
            read_chunked_response(&mut conn);
        }
        wait_until("the workload to be tracked", || {
            agent
                .next_snapshot("the workload tracked")
                .processes
                .iter()
                .any(|p| p.identity.pid == self.workload.pid())
        });
        let tally = self.workload.run_calls();
        let launches = tally["kernel_launches"].as_u64();
        let deadline = std::time::Instant::now() + STEP;
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no snapshot counting everything"
            );
            let s = agent.next_snapshot("a snapshot counting everything");
            let served = requests(&s, self.server.port).is_some_and(|r| r.0 == REQUESTS);
            let launched = s.processes.iter().any(|p| {
                p.identity.pid == self.workload.pid() && Some(p.gpu.total.kernel_launches) == launches
            });
            if served && launched && !s.devices.is_empty() {
                return (tally, s);
            }
        }
    }
}

/// The model's requests, TTFT and duration histograms (totals) in a snapshot,
/// on the server at `port` (other tests' servers run meanwhile, with the same model).
fn requests(s: &Snapshot, port: u16) -> Option<(u64, Histogram, Histogram)> {
    let m = s
        .servers
        .iter()
        .filter(|v| v.port == port)
        .flat_map(|v| &v.models)
        .find(|m| m.model == MODEL)?;
    let t = &m.requests.total;
    Some((t.requests, t.ttft_s.clone(), t.duration_s.clone()))
}

/// Asserts, through VictoriaMetrics, what every OTLP path must deliver.
fn assert_received(vm: &VictoriaMetrics, scenario: &Scenario, tally: &Value, s: &Snapshot) {
    let port = scenario.server.port;
    let workload = scenario.workload.pid();
    let server = scenario.server.pid();
    let (count, ttft, duration) = requests(s, scenario.server.port).unwrap();
    let request =
        format!(r#"server.port="{port}",gen_ai.request.model="{MODEL}",gen_ai.operation.name="chat""#);
    vm.expect(
        &format!("gen_ai.server.time_to_first_token_count{{{request}}}"),
        count as f64,
    );
    let sum = vm.value_where(
        &format!("gen_ai.server.time_to_first_token_sum{{{request}}}"),
        |_| true,
    );
    assert!(
        (sum - ttft.sum).abs() < 1e-9,
        "TTFT sum {sum} exported, {} in the snapshot",
        ttft.sum
    );
    // Cumulative bucket counts with the conventions' boundaries, as in the snapshot.
    for (bound, cumulative) in ttft.bounds.iter().zip(cumulative(&ttft.counts)) {
        vm.expect(
            &format!(r#"gen_ai.server.time_to_first_token_bucket{{{request},le="{bound}"}}"#),
            cumulative as f64,
        );
    }
    vm.expect(
        &format!("gen_ai.server.request.duration_count{{{request}}}"),
        duration.count as f64,
    );
    vm.expect(
        &format!("gen_ai.server.time_per_output_token_count{{{request}}}"),
        count as f64,
    );
    vm.expect(
        &format!(r#"inferscope.server.token.usage_sum{{{request},gen_ai.token.type="output"}}"#),
        (REQUESTS * u64::from(TOKENS)) as f64,
    );
    // GPU runtime activity, under OpenTelemetry eBPF Instrumentation's names where it has them.
    let process = format!(r#"process.pid="{workload}",process.executable.name="gpu_workload""#);
    for (metric, field) in [
        ("gpu.cuda.kernel.launch.calls", "kernel_launches"),
        ("gpu.cuda.graph.launch.calls", "graph_launches"),
        ("gpu.cuda.memory.allocations", "alloc_bytes"),
        ("inferscope.gpu.sync.calls", "sync_calls"),
    ] {
        vm.expect(
            &format!("{metric}{{{process}}}"),
            tally[field].as_u64().unwrap() as f64,
        );
    }
    vm.expect(
        &format!(r#"inferscope.gpu.memory.copied{{{process},inferscope.copy.direction="host_to_device"}}"#),
        tally["memcpy_bytes"]["htod"].as_u64().unwrap() as f64,
    );
    // NVML's figures under the hardware conventions, and the process's share.
    let device =
        format!(r#"hw.id="{GPU}",hw.type="gpu",hw.vendor="NVIDIA",hw.model="NVIDIA_H100_80GB_HBM3""#);
    vm.expect(&format!("hw.power{{{device}}}"), 400.0);
    vm.expect(
        &format!(r#"hw.gpu.utilization{{{device},hw.gpu.task="general"}}"#),
        0.55,
    );
    vm.expect(&format!("hw.gpu.memory.limit{{{device}}}"), (80 * GIB) as f64);
    vm.expect(&format!("hw.gpu.memory.utilization{{{device}}}"), 0.25);
    vm.value_where(&format!("hw.energy{{{device}}}"), |joules| joules >= 1.0);
    vm.expect(
        &format!(r#"inferscope.process.gpu.memory.usage{{process.pid="{server}",hw.id="{GPU}"}}"#),
        (4 * GIB) as f64,
    );
    // The resource: ours, and the environment's.
    vm.expect(
        &format!(r#"count(gpu.cuda.kernel.launch.calls{{{process},service.name="inferscope",deployment.environment.name="ci"}})"#),
        1.0,
    );
}

/// Per-bucket counts → cumulative counts (`le` semantics).
fn cumulative(counts: &[u64]) -> Vec<u64> {
    counts
        .iter()
        .scan(0, |sum, c| {
            *sum += c;
            Some(*sum)
        })
        .collect()
}

#[test]
fn otlp_over_http_delivers_convention_names_with_the_snapshots_values() {
    let vm = VictoriaMetrics::start();
    let mut scenario = Scenario::start();
    let mut agent = scenario.exporting_to(&vm.otlp_endpoint(), &[]);
    let (tally, s) = scenario.drive(&mut agent);
    assert_received(&vm, &scenario, &tally, &s);
}

#[test]
fn otlp_over_grpc_reaches_a_collector_with_units_and_temporality() {
    let vm = VictoriaMetrics::start();
    let rotel = Rotel::start(&vm);
    let mut scenario = Scenario::start();
    let mut agent = scenario.exporting_to(&rotel.otlp_endpoint(), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
    let (tally, s) = scenario.drive(&mut agent);
    assert_received(&vm, &scenario, &tally, &s);
    for (name, unit, kind) in [
        ("gen_ai.server.time_to_first_token", "s", "Histogram"),
        ("gen_ai.server.request.duration", "s", "Histogram"),
        ("gpu.cuda.kernel.launch.calls", "{call}", "Sum"),
        ("hw.energy", "J", "Sum"),
        ("hw.gpu.memory.usage", "By", "Sum"),
        ("hw.power", "W", "Gauge"),
    ] {
        let described = rotel.described(name);
        assert!(
            described.contains(&format!("-> Unit: {unit}\n")),
            "{name}: {described}"
        );
        assert!(
            described.contains(&format!("-> DataType: {kind}\n")),
            "{name}: {described}"
        );
        if kind != "Gauge" {
            assert!(
                described.contains("AGGREGATION_TEMPORALITY_CUMULATIVE"),
                "{name}: {described}"
            );
        }
    }
}

#[test]
fn delta_temporality_is_used_when_asked_for() {
    let vm = VictoriaMetrics::start();
    let rotel = Rotel::start(&vm);
    let mut scenario = Scenario::start();
    let mut agent = scenario.exporting_to(
        &rotel.otlp_endpoint(),
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
        ],
    );
    scenario.drive(&mut agent);
    for name in [
        "gen_ai.server.time_to_first_token",
        "gpu.cuda.kernel.launch.calls",
        "hw.energy",
    ] {
        let described = rotel.described(name);
        assert!(
            described.contains("AGGREGATION_TEMPORALITY_DELTA"),
            "{name}: {described}"
        );
    }
}

#[test]
fn prometheus_scrapes_serve_the_same_metrics_under_translated_names() {
    // OTLP at the same time: both readers of one provider, and the export's own metrics exist.
    let vm = VictoriaMetrics::start();
    let mut scenario = Scenario::start();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut agent = scenario.agent(
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &vm.otlp_endpoint())],
        &["--prometheus-listen", &addr],
    );
    let (tally, s) = scenario.drive(&mut agent);
    let (count, ttft, _) = requests(&s, scenario.server.port).unwrap();
    let port = format!(r#"server_port="{}""#, scenario.server.port);
    let pid = format!(r#"process_pid="{}""#, scenario.workload.pid());
    let model = format!(r#"gen_ai_request_model="{MODEL}""#);
    let mut exposition = String::new();
    wait_until("a scrape counting every request and launch", || {
        exposition = scrape(&addr);
        sample(
            &exposition,
            "gen_ai_server_time_to_first_token_seconds_count",
            &[&port, &model],
        ) == Some(count as f64)
            && sample(&exposition, "gpu_cuda_kernel_launch_calls_total", &[&pid])
                == tally["kernel_launches"].as_f64()
    });
    let check = promtool_check_metrics(&exposition);
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let sum = sample(
        &exposition,
        "gen_ai_server_time_to_first_token_seconds_sum",
        &[&port, &model],
    )
    .unwrap();
    assert!((sum - ttft.sum).abs() < 1e-9, "{sum} vs {}", ttft.sum);
    let device = format!(r#"hw_id="{GPU}""#);
    assert_eq!(sample(&exposition, "hw_power_watts", &[&device]), Some(400.0));
    assert_eq!(
        sample(&exposition, "gpu_cuda_memory_allocations_bytes_total", &[&pid]),
        tally["alloc_bytes"].as_f64()
    );
    assert!(
        exposition.contains(r#"service_name="inferscope""#),
        "target_info: {exposition}"
    );
    assert!(!exposition.contains("never print"), "prompt text in the metrics");
    dashboards_and_alerts_query_what_is_exported(&scenario, &addr);
}

/// Every metric and label the Grafana dashboard and the alert rules name is in
/// some scrape while the server serves (energy per token exists only for an
/// interval with tokens; pod labels aside: this scenario runs outside Kubernetes).
fn dashboards_and_alerts_query_what_is_exported(scenario: &Scenario, addr: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let ours = [
        "gen_ai_",
        "gpu_",
        "hw_",
        "inferscope_",
        "k8s_",
        "process_",
        "server_",
    ];
    let mut queried: Vec<(String, &str)> = Vec::new();
    for file in ["grafana/inferscope.json", "prometheus/alerts.yaml"] {
        let text = fs::read_to_string(root.join(file)).unwrap();
        queried.extend(
            identifiers(&text)
                .filter(|name| ours.iter().any(|p| name.starts_with(p)))
                .map(|name| (name.to_string(), file)),
        );
    }
    let mut exported: BTreeSet<String> = ["k8s_namespace_name", "k8s_pod_name", "k8s_container_name"]
        .map(String::from)
        .into();
    let mut conn = TcpStream::connect(("127.0.0.1", scenario.server.port)).unwrap();
    let deadline = std::time::Instant::now() + STEP;
    while std::time::Instant::now() < deadline && queried.iter().any(|(name, _)| !exported.contains(name)) {
        conn.write_all(&chat_request(MODEL, TOKENS, 0, 1, false)).unwrap();
        read_chunked_response(&mut conn);
        let exposition = scrape(addr);
        for line in exposition.lines().filter(|l| !l.starts_with('#')) {
            let (name, rest) = line.split_once(['{', ' ']).unwrap_or((line, ""));
            exported.insert(name.to_string());
            let labels = rest.split_once('}').map_or("", |(labels, _)| labels);
            exported.extend(
                labels
                    .split(',')
                    .filter_map(|kv| Some(kv.split_once('=')?.0.to_string())),
            );
        }
    }
    for (name, file) in &queried {
        assert!(
            exported.contains(name),
            "deploy/{file} queries {name}, which the agent does not export"
        );
    }
}

/// Identifier-shaped words (`[a-z0-9_]+` starting with a letter).
fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase()))
}

/// A collector that goes away and comes back: snapshots go on meanwhile, the
/// outage is said once and counted, and export resumes by itself with totals
/// that include what happened while it was down.
#[test]
fn export_resumes_after_the_receiver_restarts() {
    let mut vm = VictoriaMetrics::start();
    let mut scenario = Scenario::start();
    let mut agent = scenario.exporting_to(&vm.otlp_endpoint(), &[("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")]);
    agent.wait_for_log(&format!("capturing requests to port {}", scenario.server.port));
    let pid = scenario.workload.pid();
    wait_until("the workload to be tracked", || {
        agent
            .next_snapshot("the workload tracked")
            .processes
            .iter()
            .any(|p| p.identity.pid == pid)
    });
    vm.expect(
        &format!(r#"gpu.cuda.kernel.launch.calls{{process.pid="{pid}"}}"#),
        0.0,
    );

    vm.stop();
    agent.wait_for_log("OTLP metrics export failed");
    // The workload's calls happen during the outage; snapshots keep coming.
    let tally = scenario.workload.run_calls();
    let launches = tally["kernel_launches"].as_u64().unwrap();
    wait_until("a snapshot with the calls made during the outage", || {
        agent
            .next_snapshot("snapshots during the outage")
            .processes
            .iter()
            .any(|p| p.identity.pid == pid && p.gpu.total.kernel_launches == launches)
    });

    vm.restart();
    agent.wait_for_log("OTLP metrics export works again");
    vm.expect(
        &format!(r#"gpu.cuda.kernel.launch.calls{{process.pid="{pid}"}}"#),
        launches as f64,
    );
    vm.value_where(
        r#"inferscope.export.dropped_batches{exporter="otlp",signal="metrics"}"#,
        |dropped| dropped >= 1.0,
    );
}

/// With --trace-ratio 1 every request is a span, with the conventions' name and
/// attributes, its outcome and its first token as an event; an XID error is a
/// log record. Neither carries prompt text.
#[test]
fn requests_become_spans_and_xid_errors_log_records() {
    let vm = VictoriaMetrics::start();
    let rotel = Rotel::start(&vm);
    let mut scenario = Scenario::start_with_nvml("xid 0 79\n");
    let mut agent = scenario.agent(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &rotel.otlp_endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
        ],
        &["--trace-ratio", "1"],
    );
    scenario.drive(&mut agent);
    let log = rotel.log_with(&[
        &format!("-> server.port: Int({})", scenario.server.port),
        "EventName: hw.gpu.xid",
    ]);
    assert!(
        !log.contains("never print"),
        "prompt text in a span or log record"
    );
    // Other tests' agents run meanwhile and see other servers: this one's spans carry its port.
    let port = format!("-> server.port: Int({})", scenario.server.port);
    let span = log
        .split("\nSpan #")
        .skip(1)
        .find(|span| {
            span.split("Events:")
                .next()
                .is_some_and(|head| head.contains(&port))
        })
        .unwrap_or_else(|| panic!("no span with {port}:\n{log}"));
    for want in [
        &format!("Name           : chat {MODEL}\n"),
        "Kind           : SPAN_KIND_SERVER",
        "Status code    : STATUS_CODE_UNSET",
        "-> gen_ai.operation.name: Str(chat)",
        &format!("-> gen_ai.request.model: Str({MODEL})"),
        &format!("-> process.pid: Int({})", scenario.server.pid()),
        "-> http.response.status_code: Int(200)",
        &format!("-> gen_ai.usage.output_tokens: Int({TOKENS})"),
        "-> Name: gen_ai.first_token",
    ] {
        assert!(span.contains(want), "{want} missing from the span:\n{span}");
    }
    // The first-token event sits at start + TTFT (the server waits 30 ms before its first token).
    let nanos = |key: &str| -> u64 {
        let at = span.find(key).unwrap_or_else(|| panic!("{key} in {span}")) + key.len();
        span[at..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let (start, first, end) = (
        nanos("Start time: "),
        nanos("-> Timestamp: "),
        nanos("End time: "),
    );
    assert!(
        start + 30_000_000 <= first && first < end,
        "start {start}, first token {first}, end {end}"
    );

    let record = block(&log, "EventName: hw.gpu.xid", "LogRecord #");
    for want in [
        "SeverityNumber: SEVERITY_NUMBER_ERROR",
        &format!("Body: Str(XID 79 on GPU 0 ({GPU}))"),
        &format!("-> hw.id: Str({GPU})"),
        "-> inferscope.gpu.xid: Int(79)",
    ] {
        assert!(
            record.contains(want),
            "{want} missing from the log record:\n{record}"
        );
    }
}

/// The part of rotel's log around `needle`: from the `starts` line before it to the next one.
fn block<'a>(log: &'a str, needle: &str, starts: &str) -> &'a str {
    let at = log.find(needle).unwrap();
    let from = log[..at].rfind(starts).unwrap_or(0);
    let to = log[at..].find(starts).map_or(log.len(), |n| at + n);
    &log[from..to]
}
