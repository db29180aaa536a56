//! `inferscope mcp` as an assistant meets it: the official MCP Python SDK
//! (tests/clients/mcp_client.py) reaches it over stdio or streamable HTTP,
//! lists its tools and calls each while a server on a "GPU" streams real
//! requests. Answers carry figures and names, bounded, and never the
//! requests' text; over HTTP off localhost, only with the token. Over stdio
//! it also profiles (a CPU-bound process among what it watches) and reads a
//! real VictoriaMetrics that another agent exports the same server's figures to.

use std::{
    io::Write as _,
    net::TcpStream,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use inferscope::diagnose::Diagnosis;
use inferscope_tests::{
    Agent, STEP, TestServer, agent_binary, chat_request, cpu_burner, line_reader, next_line,
    read_chunked_response,
    receivers::{VictoriaMetrics, free_port},
    require_root, stub_library, venv_python,
};
use serde_json::{Value, json};

/// The prompt `chat_request` sends: no answer may carry it.
const CANARY: &str = "a prompt the agent must never print";
const REQUESTS: usize = 3;
const TTFT_MS: u32 = 300;

/// The Python client, with the agent it started.
struct Assistant {
    child: Child,
    /// Closed to leave.
    calls: Option<ChildStdin>,
    answers: Receiver<String>,
}

impl Assistant {
    /// Starts `inferscope mcp AGENT_ARGS` over stdio; also its log.
    fn over_stdio(agent_args: &[&str]) -> (Self, Receiver<String>) {
        require_root();
        let agent = agent_binary();
        let mut args = vec![
            "stdio",
            agent.to_str().unwrap(),
            "mcp",
            "--log",
            "info",
            "--interval",
            "100ms",
        ];
        args.extend(agent_args);
        Self::start(&args)
    }

    /// The client with `args`, and what it (and a server it started) logs.
    fn start(args: &[&str]) -> (Self, Receiver<String>) {
        let mut child = Command::new(venv_python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/mcp_client.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the MCP client");
        let log = line_reader(child.stderr.take().unwrap());
        let assistant = Self {
            calls: child.stdin.take(),
            answers: line_reader(child.stdout.take().unwrap()),
            child,
        };
        (assistant, log)
    }

    fn next_answer(&self, what: &str) -> Value {
        let line = next_line(&self.answers, Instant::now() + STEP, what);
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
    }

    /// Calls `tool`; its answer's text, checked for the canary.
    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let calls = self.calls.as_mut().unwrap();
        writeln!(calls, "{}", json!({"tool": tool, "arguments": arguments})).unwrap();
        let answer = self.next_answer(&format!("{tool}'s answer"));
        assert_eq!(answer["tool"], tool);
        let text = answer["text"].as_str().unwrap();
        assert!(!text.contains(CANARY), "{tool} answered with the prompt: {text}");
        answer
    }

    /// Calls `tool` and reads its answer as JSON.
    fn call_json(&mut self, tool: &str, arguments: Value) -> Value {
        let answer = self.call(tool, arguments);
        assert_eq!(answer["is_error"], false, "{answer}");
        serde_json::from_str(answer["text"].as_str().unwrap()).unwrap()
    }

    /// Leaves as a client does (its input closes); its exit status once the
    /// server went with it.
    fn leave(&mut self) -> std::process::ExitStatus {
        self.calls = None;
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the session did not end with its client"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Assistant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on a "GPU" whose requests the agent is told to watch.
fn gpu_server() -> TestServer {
    let lib = stub_library("libcudart.so.12");
    TestServer::start_program_with(
        Path::new(env!("CARGO_BIN_EXE_sse_truth_server")),
        &["--gpu-library", lib.to_str().unwrap()],
    )
}

/// The tools of a plain watch.
const LIVE_TOOLS: [&str; 3] = ["running_now", "slowest_requests", "diagnose"];
/// With --profile and --prometheus, also these.
const MORE_TOOLS: [&str; 3] = ["profile", "diagnose_fleet", "query_store"];

/// What every transport must give: the tools listed (`expected`, no more),
/// read-only, with schemas; each live one called over requests of known
/// first-token times (sent once `captured` says the agent captures the
/// server); bounded answers without the prompt; a refused argument an error
/// that ends nothing.
fn tools_answer_with_figures_never_text(
    assistant: &mut Assistant,
    server: &TestServer,
    expected: &[&str],
    captured: impl FnOnce(&str),
) {
    let listed = assistant.next_answer("the tools listed");
    assert_eq!(listed["server"], "inferscope");
    let tools = listed["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    let mut want = expected.to_vec();
    names.sort_unstable();
    want.sort_unstable();
    assert_eq!(names, want);
    for tool in tools {
        assert_eq!(tool["read_only"], true, "{tool}");
        assert_eq!(tool["input_schema"]["type"], "object", "{tool}");
        assert!(!tool["description"].as_str().unwrap().is_empty(), "{tool}");
    }
    let slowest = tools.iter().find(|t| t["name"] == "slowest_requests").unwrap();
    for parameter in ["limit", "last_seconds"] {
        assert!(
            slowest["input_schema"]["properties"].get(parameter).is_some(),
            "{slowest}"
        );
    }

    // Requests of known first-token times, the last the slowest.
    captured(&format!("capturing requests to port {}", server.port));
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    for i in 0..REQUESTS as u32 {
        conn.write_all(&chat_request("mcp-model", 4, TTFT_MS * (i + 1), 10, false))
            .unwrap();
        read_chunked_response(&mut conn);
    }
    let deadline = Instant::now() + STEP;
    let slowest = loop {
        let answer = assistant.call_json("slowest_requests", json!({"limit": 10}));
        if answer.as_array().unwrap().len() == REQUESTS {
            break answer;
        }
        assert!(Instant::now() < deadline, "the requests never came: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let ttfts: Vec<f64> = slowest
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ttft_s"].as_f64().unwrap())
        .collect();
    assert!(ttfts.windows(2).all(|w| w[0] >= w[1]), "slowest first: {slowest}");
    assert!(
        ttfts[0] >= f64::from(TTFT_MS * REQUESTS as u32) / 1e3,
        "{slowest}"
    );
    for request in slowest.as_array().unwrap() {
        assert_eq!(request["model"], "mcp-model");
        assert_eq!(request["status"], 200);
        assert_eq!(request["port"], server.port);
        assert_eq!(request["output_tokens"], 4);
    }
    let all = assistant.call_json("slowest_requests", json!({"limit": 1000, "last_seconds": 600}));
    assert_eq!(all.as_array().unwrap().len(), REQUESTS, "{all}");
    let one = assistant.call_json("slowest_requests", json!({"limit": 1}));
    assert_eq!(one.as_array().unwrap().len(), 1);

    let now = assistant.call_json("running_now", json!({}));
    let servers = now["servers"].as_array().unwrap();
    assert!(
        servers
            .iter()
            .any(|s| s["port"] == server.port && s["pid"].as_u64() == Some(u64::from(server.pid()))),
        "{now}"
    );
    assert_eq!(now["left_out"], 0);

    let diagnosis: Diagnosis =
        serde_json::from_value(assistant.call_json("diagnose", json!({"last_seconds": 600}))).unwrap();
    assert!(diagnosis.intervals > 0, "{diagnosis:?}");
    assert!(diagnosis.servers >= 1, "{diagnosis:?}");
    assert!(diagnosis.requests >= REQUESTS as u64, "{diagnosis:?}");

    // A call the schema refuses is an MCP error, and the session goes on.
    let refused = assistant.call("slowest_requests", json!({"limit": "many"}));
    assert!(
        refused.get("error").is_some() || refused["is_error"] == true,
        "{refused}"
    );
    assistant.call_json("running_now", json!({}));
}

/// Calls `tool` with `arguments` until `done` takes its JSON answer; returns it.
fn call_until(
    assistant: &mut Assistant,
    tool: &str,
    arguments: Value,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let answer = assistant.call_json(tool, arguments.clone());
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{tool} never answered as expected: {answer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_assistant_lists_and_calls_every_tool_over_stdio_and_its_leaving_ends_the_server() {
    let vm = VictoriaMetrics::start();
    let server = gpu_server();
    let burner = cpu_burner();
    let pid = server.pid().to_string();
    let burner_pid = burner.pid().to_string();
    // Another agent exports the server's figures to the store, as a node's DaemonSet would.
    let endpoint = vm.otlp_endpoint();
    let mut exporter = Agent::start_with_env(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", Path::new(&endpoint)),
            ("OTEL_METRIC_EXPORT_INTERVAL", Path::new("200")),
            ("OTEL_RESOURCE_ATTRIBUTES", Path::new("k8s.node.name=mcp-node")),
        ],
        &["--pid", &pid],
    );
    let store = vm.url();
    let (mut assistant, log) = Assistant::over_stdio(&[
        "--pid",
        &pid,
        "--pid",
        &burner_pid,
        "--profile",
        "--profile-every",
        "1s",
        "--prometheus",
        &store,
    ]);
    let all: Vec<&str> = LIVE_TOOLS.iter().chain(&MORE_TOOLS).copied().collect();
    tools_answer_with_figures_never_text(&mut assistant, &server, &all, |needle| {
        exporter.wait_for_log(needle);
        let deadline = Instant::now() + STEP;
        while !next_line(&log, deadline, needle).contains(needle) {}
    });

    // The profile: the burner's functions lead its CPU stacks; every list bounded.
    let profile = call_until(&mut assistant, "profile", json!({"limit": 5}), |answer| {
        answer.as_array().unwrap().iter().any(|kind| {
            kind["kind"] == "process_cpu"
                && kind["stacks"].as_array().unwrap().iter().any(|s| {
                    s["pid"].as_u64() == Some(u64::from(burner.pid()))
                        && s["stack"].as_str().unwrap().contains("hot_path")
                })
        })
    });
    for kind in profile.as_array().unwrap() {
        assert!(kind["stacks"].as_array().unwrap().len() <= 5, "{kind}");
    }

    // The store: the fleet's diagnosis names the exporting node and counts its requests.
    let fleet = call_until(
        &mut assistant,
        "diagnose_fleet",
        json!({"since_seconds": 600, "step_seconds": 1}),
        |d| d["requests"].as_u64() >= Some(REQUESTS as u64),
    );
    let fleet: Diagnosis = serde_json::from_value(fleet).unwrap();
    assert_eq!(fleet.store.as_ref().unwrap().nodes, ["mcp-node"], "{fleet:?}");
    let counted = assistant.call_json(
        "query_store",
        json!({"query": r#"sum(gen_ai.server.request.duration_count{k8s.node.name="mcp-node"})"#}),
    );
    assert_eq!(counted["series"][0]["values"][0][1], REQUESTS as f64, "{counted}");
    // Every series the store holds: bounded, saying how many were left out.
    let everything = assistant.call_json("query_store", json!({"query": r#"{__name__=~".+"}"#}));
    assert_eq!(everything["series"].as_array().unwrap().len(), 50, "{everything}");
    assert!(everything["left_out"].as_u64().unwrap() > 0, "{everything}");
    // A range: its series at the step giving at most 100 points.
    let range = assistant.call_json(
        "query_store",
        json!({"query": "gen_ai.server.request.duration_count", "range_seconds": 300}),
    );
    let points = range["series"][0]["values"].as_array().unwrap().len();
    assert!((1..=100).contains(&points), "{range}");
    let refused = assistant.call("query_store", json!({"query": "sum("}));
    assert!(
        refused.get("error").is_some() || refused["is_error"] == true,
        "{refused}"
    );

    let status = assistant.leave();
    assert!(status.success(), "{status}");
    drop((exporter, burner));
}

#[test]
fn over_http_off_localhost_only_a_client_with_the_token_is_served() {
    let server = gpu_server();
    let pid = server.pid().to_string();
    let token_file = std::env::temp_dir().join(format!("inferscope-mcp-token-{pid}"));
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let token_path = token_file.to_str().unwrap();
    let mut agent = Agent::start_command(
        "mcp",
        &[],
        &["--listen", &listen, "--token-file", token_path, "--pid", &pid],
    );
    agent.wait_for_log(&format!(
        "MCP over streamable HTTP at http://{listen}/mcp, bearer token required"
    ));
    let url = format!("http://127.0.0.1:{port}/mcp");
    // Without the token, or with another, nothing is served.
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}});
    for authorization in [None, Some("Bearer wrong-token"), Some("Basic czNjcmV0LXRva2Vu")] {
        let mut request = ureq::post(&url)
            .header("Accept", "application/json, text/event-stream")
            .config()
            .http_status_as_error(false)
            .build();
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let response = request.send_json(&initialize).unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
    }
    let (mut assistant, _) = Assistant::start(&["http", &url, "s3cret-token"]);
    tools_answer_with_figures_never_text(&mut assistant, &server, &LIVE_TOOLS, |needle| {
        agent.wait_for_log(needle)
    });
    assistant.leave();
    agent.interrupt();
    std::fs::remove_file(token_file).unwrap();
}
