//! `inferscope mcp` as an assistant meets it: the official MCP Python SDK
//! (tests/clients/mcp_client.py) starts it over stdio, lists its tools and
//! calls each while a server on a "GPU" streams real requests. Answers carry
//! figures and names, bounded, and never the requests' text.

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
    STEP, TestServer, agent_binary, chat_request, line_reader, next_line, read_chunked_response,
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
    log: Receiver<String>,
}

impl Assistant {
    fn start(agent_args: &[&str]) -> Self {
        require_root();
        let mut child = Command::new(venv_python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/mcp_client.py"))
            .arg(agent_binary())
            .args(["mcp", "--log", "info", "--interval", "100ms"])
            .args(agent_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the MCP client");
        Self {
            calls: child.stdin.take(),
            answers: line_reader(child.stdout.take().unwrap()),
            log: line_reader(child.stderr.take().unwrap()),
            child,
        }
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

    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + STEP;
        while !next_line(&self.log, deadline, needle).contains(needle) {}
    }
}

impl Drop for Assistant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_assistant_lists_and_calls_every_tool_over_stdio_and_gets_figures_never_text() {
    let lib = stub_library("libcudart.so.12");
    let server = TestServer::start_program_with(
        Path::new(env!("CARGO_BIN_EXE_sse_truth_server")),
        &["--gpu-library", lib.to_str().unwrap()],
    );
    let pid = server.pid().to_string();
    let mut assistant = Assistant::start(&["--pid", &pid]);
    let listed = assistant.next_answer("the tools listed");
    assert_eq!(listed["server"], "inferscope");
    let tools = listed["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for want in ["running_now", "slowest_requests", "diagnose"] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
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
    assistant.wait_for_log(&format!("capturing requests to port {}", server.port));
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

    // The client leaving ends the server.
    let status = assistant.leave();
    assert!(status.success(), "{status}");
}
