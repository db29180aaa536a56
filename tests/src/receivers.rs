//! Real telemetry receivers for the export tests, from the fixtures:
//! VictoriaMetrics (OTLP/HTTP in, PromQL out), rotel (an OTLP collector with
//! gRPC and HTTP receivers that logs what it got and forwards it), promtool,
//! and profile receivers (Pyroscope's push API, OTLP profiles) that decode
//! with published definitions.

use std::{
    fs,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{STEP, fixtures};

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fixture(path: &str) -> PathBuf {
    let path = fixtures().join(path);
    assert!(
        path.exists(),
        "{} missing: run `cargo xtask fixtures`",
        path.display()
    );
    path
}

/// Polls `ready` every 50 ms until it holds, failing after [`STEP`] with `what`.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_port(port: u16, what: &str) {
    wait_until(what, || TcpStream::connect(("127.0.0.1", port)).is_ok());
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A single-node VictoriaMetrics keeping names as OTLP sent them
/// (`gen_ai.server.time_to_first_token_bucket`), searchable at once.
pub struct VictoriaMetrics {
    child: Child,
    pub port: u16,
    data: PathBuf,
    agent: ureq::Agent,
}

impl VictoriaMetrics {
    pub fn start() -> Self {
        let data = std::env::temp_dir().join(format!("inferscope-vm-{}-{}", std::process::id(), free_port()));
        let port = free_port();
        let child = Self::spawn(&data, port);
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let vm = Self {
            child,
            port,
            data,
            agent,
        };
        wait_for_port(port, "VictoriaMetrics to listen");
        vm
    }

    fn spawn(data: &Path, port: u16) -> Child {
        Command::new(fixture("victoria-metrics/usr/bin/victoria-metrics"))
            .arg(format!("-storageDataPath={}", data.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .args([
                "-search.latencyOffset=0s",
                "-opentelemetry.usePrometheusNaming=false",
                "-loggerLevel=ERROR",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting VictoriaMetrics")
    }

    /// The base endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/opentelemetry", self.port)
    }

    /// Kills it (as a crash would); [`Self::restart`] brings it back with its data.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.data, self.port);
        wait_for_port(self.port, "VictoriaMetrics to listen again");
    }

    /// An instant PromQL query's result: (labels, value) per series.
    pub fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        instant_query(&self.agent, self.port, promql)
    }

    /// The base URL of its Prometheus query API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until `promql` has exactly one series and `accept` takes its value; returns it.
    pub fn value_where(&self, promql: &str, mut accept: impl FnMut(f64) -> bool) -> f64 {
        let deadline = Instant::now() + STEP;
        loop {
            let last = self.query(promql);
            if let [(_, v)] = last.as_slice()
                && accept(*v)
            {
                return *v;
            }
            assert!(Instant::now() < deadline, "{promql}: last answer {last:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `promql` has one series equal to `want`.
    pub fn expect(&self, promql: &str, want: f64) {
        self.value_where(promql, |v| v == want);
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = fs::remove_dir_all(&self.data);
    }
}

/// An instant PromQL query's result at the query API on `port`: (labels, value) per series.
fn instant_query(agent: &ureq::Agent, port: u16, promql: &str) -> Vec<(Value, f64)> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let body: Value = agent
        .get(&url)
        .query("query", promql)
        .call()
        .and_then(|mut r| r.body_mut().read_json())
        .unwrap_or_else(|e| panic!("querying {promql}: {e}"));
    body["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{promql}: {body}"))
        .iter()
        .map(|s| {
            (
                s["metric"].clone(),
                s["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// Debian's Prometheus server scraping `targets` (`host:port`) every second,
/// as a fleet's Prometheus scrapes each node's agent.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    data: PathBuf,
    agent: ureq::Agent,
}

impl Prometheus {
    pub fn start(targets: &[&str]) -> Self {
        let port = free_port();
        let data = std::env::temp_dir().join(format!("inferscope-prometheus-{}-{port}", std::process::id()));
        fs::create_dir_all(&data).unwrap();
        let config = data.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
                 scrape_configs:\n  - job_name: inferscope\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let child = Command::new(fixture("prometheus/usr/bin/prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting Prometheus");
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let prometheus = Self {
            child,
            port,
            data,
            agent,
        };
        wait_for_port(port, "Prometheus to listen");
        prometheus
    }

    /// The base URL of its query API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An instant PromQL query's result: (labels, value) per series.
    pub fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        instant_query(&self.agent, self.port, promql)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = fs::remove_dir_all(&self.data);
    }
}

/// rotel receiving OTLP over gRPC and HTTP, logging every metric, span and log
/// record it gets in detail (names, units, types, temporality, points,
/// attributes) and forwarding metrics to `forward`.
pub struct Rotel {
    child: Child,
    pub grpc_port: u16,
    log: PathBuf,
}

impl Rotel {
    pub fn start(forward: &VictoriaMetrics) -> Self {
        let grpc_port = free_port();
        let http_port = free_port();
        let log = std::env::temp_dir().join(format!("inferscope-rotel-{grpc_port}.log"));
        let path = fs::read_to_string(fixture("rotel.path")).unwrap();
        let child = Command::new(path.trim())
            .arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--exporter", "otlp", "--otlp-exporter-protocol", "http"])
            .args(["--otlp-exporter-endpoint", &forward.otlp_endpoint()])
            .args([
                "--debug-log",
                "metrics",
                "--debug-log",
                "traces",
                "--debug-log",
                "logs",
            ])
            .args(["--debug-log-verbosity", "detailed"])
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rotel");
        let rotel = Self {
            child,
            grpc_port,
            log,
        };
        wait_for_port(grpc_port, "rotel's gRPC receiver");
        rotel
    }

    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// rotel's description of metric `name` as last received: the lines from its
    /// `Name:` line to its first data point (description, unit, type, temporality).
    pub fn described(&self, name: &str) -> String {
        let mut found = String::new();
        wait_until(&format!("rotel to receive {name}"), || {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let needle = format!("-> Name: {name}\n");
            let Some(at) = log.rfind(&needle) else {
                return false;
            };
            let rest = &log[at..];
            let end = rest.find("DataPoints #0").unwrap_or(rest.len());
            found = rest[..end].to_string();
            true
        });
        found
    }
}

impl Rotel {
    /// Waits until rotel's log holds every one of `needles`; returns the log.
    pub fn log_with(&self, needles: &[&str]) -> String {
        let mut log = String::new();
        wait_until(&format!("rotel to log {needles:?}"), || {
            log = fs::read_to_string(&self.log).unwrap_or_default();
            needles.iter().all(|n| log.contains(n))
        });
        log
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = fs::remove_file(&self.log);
    }
}

/// `promtool check metrics` on a Prometheus exposition: its complaints, if any.
pub fn promtool_check_metrics(exposition: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(fixture("prometheus/usr/bin/promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A value in a Prometheus exposition: the one sample of `name` whose labels contain every `labels` pair.
pub fn sample(exposition: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let found: Vec<f64> = exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    match found.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// `GET http://ADDR/metrics`.
pub fn scrape(addr: &str) -> String {
    ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .unwrap_or_else(|e| panic!("scraping {addr}: {e}"))
}

/// A receiver of `tests/receivers/`: a script that decodes what it gets with
/// the published definitions of its protocol, not the agent's types, says
/// `listening PORT...`, then prints one JSON object per thing received.
struct DecodingReceiver {
    child: Child,
    ports: Vec<u16>,
    received: std::sync::mpsc::Receiver<String>,
    what: &'static str,
}

impl DecodingReceiver {
    /// `script` decoding with the definitions in fixture `protos`; it
    /// refuses its first `fail_first` requests, as a store that is down.
    fn start(script: &str, protos: &str, fail_first: u32, what: &'static str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("receivers")
            .join(script);
        let mut child = Command::new(crate::venv_python())
            .arg(script)
            .arg(fixture(protos))
            .args(["--fail-first", &fail_first.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let received = crate::line_reader(child.stdout.take().unwrap());
        let first = crate::next_line(&received, Instant::now() + STEP, &format!("{what} to listen"));
        let ports = first
            .strip_prefix("listening ")
            .and_then(|ports| ports.split(' ').map(|p| p.parse().ok()).collect())
            .unwrap_or_else(|| panic!("{what} said {first:?}"));
        Self {
            child,
            ports,
            received,
            what,
        }
    }

    /// What was received until `enough` holds of all of it; fails after
    /// [`STEP`] listing what came, each as `summary` tells it.
    fn until(
        &self,
        waiting_for: &str,
        mut enough: impl FnMut(&[Value]) -> bool,
        summary: impl Fn(&Value) -> String,
    ) -> Vec<Value> {
        let deadline = Instant::now() + STEP;
        let mut received = Vec::new();
        while !enough(&received) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.received.recv_timeout(left) {
                Ok(line) => received.push(serde_json::from_str(&line).unwrap()),
                Err(_) => panic!(
                    "timed out waiting for {waiting_for} from {}; received:\n{}",
                    self.what,
                    received.iter().map(&summary).collect::<Vec<_>>().join("\n")
                ),
            }
        }
        received
    }
}

impl Drop for DecodingReceiver {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A Grafana Pyroscope push endpoint (`tests/receivers/pyroscope.py`),
/// decoding with pprof's `profile.proto` and Pyroscope's push messages.
pub struct PyroscopeReceiver(DecodingReceiver);

impl PyroscopeReceiver {
    /// Answers its first `fail_first` pushes 503, as a server that is down.
    pub fn start(fail_first: u32) -> Self {
        Self(DecodingReceiver::start(
            "pyroscope.py",
            "pprof/usr/share/gocode/src/github.com/google/pprof/proto",
            fail_first,
            "the Pyroscope receiver",
        ))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.ports[0])
    }

    /// Series received (decoded, one JSON object each) until `enough` holds
    /// of all received so far.
    pub fn series_until(&self, what: &str, enough: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        self.0.until(what, enough, |s| s["labels"].to_string())
    }
}

/// An OTLP profiles receiver over gRPC and HTTP (`tests/receivers/otlp_profiles.py`),
/// decoding with the OpenTelemetry profiles protocol's published definitions.
pub struct OtlpProfilesReceiver(DecodingReceiver);

impl OtlpProfilesReceiver {
    /// Refuses its first `fail_first` requests, as a collector that is down.
    pub fn start(fail_first: u32) -> Self {
        Self(DecodingReceiver::start(
            "otlp_profiles.py",
            "otlp-proto",
            fail_first,
            "the OTLP profiles receiver",
        ))
    }

    /// The base endpoint of its HTTP receiver (`/v1development/profiles` follows).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.ports[0])
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.ports[1])
    }

    /// Profiles received (decoded, one JSON object each) until `enough`
    /// holds of all received so far.
    pub fn profiles_until(&self, what: &str, enough: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        self.0.until(what, enough, |p| {
            let pids: std::collections::BTreeSet<String> = p["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| s["attributes"]["process.pid"].to_string())
                .collect();
            format!("{} of {pids:?} over {}", p["sample_type"], p["transport"])
        })
    }
}
