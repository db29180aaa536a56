//! `inferscope diagnose`, live and over a saved stream, and `inferscope
//! record`'s report in a headless browser, on one scenario with known causes: a server on a GPU whose first tokens are slow while NVML
//! (the stand-in, tests/c/fake_nvml.c) says the GPU idles, its memory is
//! nearly full and it reported an XID error, and clients that leave before
//! their first token. Each finding must name its subject and carry the
//! numbers that were set up.

use std::{fs, io::Write as _, net::TcpStream, path::Path, process::Command};

use inferscope::diagnose::{Diagnosis, Evidence, Finding, FindingKind, Severity};
use inferscope_tests::{Agent, TestServer, agent_binary, chat_request, read_chunked_response, stub_library};

const GIB: u64 = 1 << 30;
/// Time to first token of the scenario's requests.
const TTFT_MS: u32 = 600;
const COMPLETED: usize = 3;
const CANCELLED: usize = 2;

struct Scenario {
    server: TestServer,
    script: std::path::PathBuf,
    nvml: std::path::PathBuf,
}

impl Scenario {
    fn start(name: &str) -> Self {
        let lib = stub_library("libcudart.so.12");
        let server = TestServer::start_program_with(
            Path::new(env!("CARGO_BIN_EXE_sse_truth_server")),
            &["--gpu-library", lib.to_str().unwrap()],
        );
        let script = std::env::temp_dir().join(format!("nvml-diagnose-{name}-{}", server.pid()));
        // 10 % busy, 78 of 80 GiB used, XID 79; the server holds 70 GiB at 10 % SM.
        fs::write(
            &script,
            format!(
                "device GPU-dddddddd-2222-3333-4444-555555555555 NVIDIA_H100_80GB_HBM3 00000000:18:00.0 \
                 10 5 {used} {total} 60 100000 700000 1000000 1980 2619 0 0 0 0 0\n\
                 process 0 {pid} {held} 10 5\n\
                 xid 0 79\n",
                used = 78 * GIB,
                total = 80 * GIB,
                held = 70 * GIB,
                pid = server.pid(),
            ),
        )
        .unwrap();
        Self {
            server,
            script,
            nvml: stub_library("libnvidia-ml.so.1"),
        }
    }

    fn agent_args(&self) -> Vec<String> {
        // Only this scenario's server: tests run in parallel, each with a server on a "GPU".
        vec![
            "--nvml-library".into(),
            self.nvml.to_str().unwrap().into(),
            "--pid".into(),
            self.server.pid().to_string(),
        ]
    }

    fn env(&self) -> [(&'static str, &Path); 1] {
        [("FAKE_NVML_SCRIPT", self.script.as_path())]
    }

    /// Requests once the agent captures the port: some complete, slowly, some
    /// are left by their clients before the first token.
    fn traffic(&self, agent: &mut Agent) {
        let port = self.server.port;
        agent.wait_for_log(&format!("capturing requests to port {port}"));
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        for _ in 0..COMPLETED {
            conn.write_all(&chat_request("slow-start", 3, TTFT_MS, 10, false))
                .unwrap();
            read_chunked_response(&mut conn);
        }
        for _ in 0..CANCELLED {
            let mut gone = TcpStream::connect(("127.0.0.1", port)).unwrap();
            gone.write_all(&chat_request("slow-start", 3, TTFT_MS, 10, false))
                .unwrap();
            // The head and the role-only chunk come at once; the first token would take TTFT_MS.
            let mut first = [0u8; 64];
            std::io::Read::read(&mut gone, &mut first).unwrap();
        }
    }

    fn check(&self, d: &Diagnosis) {
        let pid = self.server.pid();
        let find = |kind| -> &Finding {
            d.findings
                .iter()
                .find(|f| f.finding == kind)
                .unwrap_or_else(|| panic!("no {kind:?} finding in {d:#?}"))
        };
        // Most severe first: the XID error leads.
        assert_eq!(d.findings[0].finding, FindingKind::XidErrors, "{d:#?}");
        let xid = find(FindingKind::XidErrors);
        assert_eq!(xid.severity, Severity::Critical);
        assert_eq!(xid.subject.gpu, Some(0));
        assert_eq!(xid.evidence[&Evidence::Xid(79)], 1.0, "{xid:#?}");

        let memory = find(FindingKind::GpuMemoryNearLimit);
        assert_eq!(memory.evidence[&Evidence::MemoryUsedBytes], (78 * GIB) as f64);
        assert_eq!(memory.evidence[&Evidence::MemoryTotalBytes], (80 * GIB) as f64);
        assert_eq!(memory.evidence[&Evidence::LargestProcessPid], f64::from(pid));

        let slow = find(FindingKind::SlowFirstTokenGpuIdle);
        assert_eq!(
            (slow.subject.pid, slow.subject.port),
            (Some(pid), Some(self.server.port))
        );
        assert_eq!(slow.evidence[&Evidence::GpuUtilizationMeanPercent], 10.0);
        assert_eq!(slow.evidence[&Evidence::RequestsWithFirstToken], COMPLETED as f64);
        let ttft = slow.evidence[&Evidence::TtftMeanS];
        assert!(
            (f64::from(TTFT_MS) / 1e3..f64::from(TTFT_MS) / 1e3 + 0.1).contains(&ttft),
            "mean TTFT {ttft} s for {TTFT_MS} ms first tokens"
        );

        let cancelled = find(FindingKind::ClientCancellations);
        assert_eq!(cancelled.subject.model.as_deref(), Some("slow-start"));
        assert_eq!(cancelled.evidence[&Evidence::Cancelled], CANCELLED as f64);
        assert_eq!(
            cancelled.evidence[&Evidence::Requests],
            (COMPLETED + CANCELLED) as f64
        );
        // Findings stand on the agent's own figures: nothing this scenario did not set up.
        let kinds: Vec<FindingKind> = d.findings.iter().map(|f| f.finding).collect();
        assert_eq!(
            kinds,
            [
                FindingKind::XidErrors,
                FindingKind::GpuMemoryNearLimit,
                FindingKind::SlowFirstTokenGpuIdle,
                FindingKind::ClientCancellations,
            ],
            "{d:#?}"
        );
    }
}

#[test]
fn live_diagnosis_names_each_cause_with_its_numbers() {
    let scenario = Scenario::start("live");
    let args = scenario.agent_args();
    let mut extra: Vec<&str> = args.iter().map(String::as_str).collect();
    extra.extend(["--output", "json", "--duration", "10m"]);
    let mut agent = Agent::start_command("diagnose", &scenario.env(), &extra);
    scenario.traffic(&mut agent);
    // Ctrl-C ends the watch early; what was seen is diagnosed.
    let out = agent.interrupt();
    let d: Diagnosis = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not a diagnosis ({e}): {out}"));
    scenario.check(&d);
    // Live, the finished requests' records are kept: how long the leavers waited.
    let cancelled = d
        .findings
        .iter()
        .find(|f| f.finding == FindingKind::ClientCancellations)
        .unwrap();
    assert_eq!(
        cancelled.evidence[&Evidence::CancelledBeforeFirstToken],
        CANCELLED as f64
    );
    assert!(cancelled.evidence[&Evidence::CancelledAfterMeanS] < f64::from(TTFT_MS) / 1e3);
}

#[test]
fn a_saved_stream_is_diagnosed_like_the_live_run_that_wrote_it() {
    let scenario = Scenario::start("saved");
    let args = scenario.agent_args();
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::start_with_env(&scenario.env(), &extra);
    scenario.traffic(&mut agent);
    // Snapshots until every request is counted, saved as `run --output json` wrote them.
    let mut saved = String::new();
    let mut requests = 0;
    while requests < COMPLETED + CANCELLED {
        let s = agent.next_snapshot("every request counted");
        requests = s
            .servers
            .iter()
            .flat_map(|v| &v.models)
            .map(|m| m.requests.total.requests as usize)
            .sum();
        saved.push_str(&serde_json::to_string(&s).unwrap());
        saved.push('\n');
    }
    drop(agent);
    let path = std::env::temp_dir().join(format!("diagnose-saved-{}.jsonl", scenario.server.pid()));
    fs::write(&path, saved).unwrap();

    let run = |format: &str| {
        let out = Command::new(agent_binary())
            .args(["diagnose", "--input", path.to_str().unwrap(), "--output", format])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let d: Diagnosis = serde_json::from_str(&run("json")).unwrap();
    scenario.check(&d);
    let text = run("text");
    for needle in [
        "CRITICAL xid_errors: GPU 0 (GPU-dddddddd-2222-3333-4444-555555555555)",
        "WARNING slow_first_token_gpu_idle: sse_truth_serve",
        "evidence: ",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    fs::remove_file(path).unwrap();
}

#[test]
fn a_recorded_report_renders_offline_in_a_browser_without_errors() {
    let scenario = Scenario::start("record");
    // A CPU-bound process watched too: the report's flame graph must show its
    // functions; and one launching kernels, for the flame graph of launches.
    let burner = inferscope_tests::cpu_burner();
    let burner_pid = burner.pid().to_string();
    let mut launcher = Command::new(inferscope_tests::test_bin("gpu_launcher"));
    launcher.arg(stub_library("libcudart.so.12"));
    let launcher = inferscope_tests::ReadyChild::start(launcher);
    let launcher_pid = launcher.pid().to_string();
    let report = std::env::temp_dir().join(format!("report-{}.html", scenario.server.pid()));
    let args = scenario.agent_args();
    let mut extra: Vec<&str> = args.iter().map(String::as_str).collect();
    extra.extend([
        "--pid",
        &burner_pid,
        "--pid",
        &launcher_pid,
        "--duration",
        "10m",
        "-o",
        report.to_str().unwrap(),
    ]);
    let mut agent = Agent::start_command("record", &scenario.env(), &extra);
    scenario.traffic(&mut agent);
    agent.interrupt();
    drop((burner, launcher));
    let html = fs::read_to_string(&report).unwrap();
    // The flame graphs, CPU first, each under its heading.
    let graphs: Vec<(&str, String)> = html
        .split("<h2>")
        .filter_map(|section| {
            let (heading, rest) = section.split_once("</h2>")?;
            let (_, image) = rest.split_once("data:image/svg+xml;base64,")?;
            let svg = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                &image[..image.find('"').unwrap()],
            )
            .unwrap();
            Some((heading, String::from_utf8(svg).unwrap()))
        })
        .collect();
    let graph = |heading: &str| {
        graphs
            .iter()
            .find(|(h, _)| *h == heading)
            .map(|(_, svg)| svg.as_str())
            .unwrap_or_else(|| panic!("no flame graph {heading:?} in the report"))
    };
    let cpu = graph("CPU time of GPU processes and servers");
    assert!(
        cpu.contains("hot_path") && cpu.contains("cold_path"),
        "the flame graph lacks the burner's functions"
    );
    let launches = graph("Where GPU kernels and graphs are launched from");
    assert!(
        launches.contains("prefill") && launches.contains("cudaLaunchKernel"),
        "the flame graph of launches lacks the launcher's functions"
    );
    // The findings and every section, the server by name, no payload text.
    for needle in [
        "xid_errors",
        "slow_first_token_gpu_idle",
        "sse_truth_serve",
        "Time to first token, mean per interval",
        "GPU memory used",
        "slow-start",
    ] {
        assert!(html.contains(needle), "{needle:?} not in the report");
    }
    assert!(!html.contains("tok0"), "a generated token reached the report");

    // Headless Chromium: it must render with no console message (a blocked
    // fetch would be one: the page's policy forbids them all) and draw something.
    let dir = std::env::temp_dir().join(format!("chromium-{}", scenario.server.pid()));
    let shot = dir.join("report.png");
    let out = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.display()))
        .args(["--window-size=1280,1800", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", report.display()))
        .output()
        .expect("running chromium (Debian's `chromium` package; .ci/run installs it)");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Refused to"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let bytes = &pixels[..frame.buffer_size()];
    let step = frame.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> = bytes.chunks(step).collect();
    let ink = bytes.chunks(step).filter(|p| p[..3] != [255, 255, 255]).count();
    assert!(
        colours.len() > 20 && ink > bytes.len() / step / 100,
        "the screenshot looks blank: {} colours, {ink} non-white pixels",
        colours.len()
    );
    fs::remove_dir_all(dir).unwrap();
    fs::remove_file(report).unwrap();
}
