//! Per-request LLM metrics from the wire, end to end: the real agent, real eBPF
//! on the socket layer, and a real Starlette/uvicorn server streaming on a
//! schedule. Timing is checked against when the server handed each chunk to the
//! socket (CLOCK_MONOTONIC on both sides), not against a tolerance.

use std::{io::Write as _, net::TcpStream, path::Path, sync::Mutex, thread};

use inferscope_tests::{
    Agent, TestServer, chat_request, finished_requests, monotonic_ns, read_chunked_response,
};
use serde_json::Value;

/// Timing checks need the CPU: run these one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The plain Rust ground-truth server (`src/bin/sse_truth_server.rs`).
fn rust_server(args: &[&str]) -> TestServer {
    TestServer::start_program_with(Path::new(env!("CARGO_BIN_EXE_sse_truth_server")), args)
}

/// `[before, after]` of the i-th body send, in ns.
fn send(truth: &Value, i: usize) -> (u64, u64) {
    let s = &truth["body_sends"][i];
    (s[0].as_u64().unwrap(), s[1].as_u64().unwrap())
}

fn assert_within(what: &str, value: f64, low_ns: u64, high_ns: u64) {
    let (low, high) = (secs(low_ns), secs(high_ns));
    assert!(
        low <= value && value <= high,
        "{what} {value:.6}s outside [{low:.6}, {high:.6}]"
    );
}

#[test]
fn ttft_gaps_duration_and_tokens_match_when_the_server_wrote() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    timed_as_the_server_wrote(&TestServer::start());
}

/// The same on a server with blocking sockets that times each `write()` itself:
/// the windows hold however slow the machine (the kernel matrix's emulated guests).
#[test]
fn ttft_and_gaps_match_the_write_windows_of_a_plain_rust_server() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    timed_as_the_server_wrote(&rust_server(&[]));
}

/// A server that peeks at each request (`recv(MSG_PEEK)`) receives its bytes
/// twice; the peeked copy is not a second request.
#[test]
fn a_peeked_request_is_captured_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = rust_server(&["--peek"]);
    let mut agent = timed_as_the_server_wrote(&server);
    // A phantom second copy of the first request would end, aborted, when its
    // connection closed, before this next request is even sent.
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    conn.write_all(&chat_request("second", 1, 0, 0, false)).unwrap();
    read_chunked_response(&mut conn);
    let r = agent.next_report("the second request's record");
    assert_eq!(
        (r["model"].as_str(), r["outcome"].as_str()),
        (Some("second"), Some("ok")),
        "{r}"
    );
}

/// One streamed chat completion: every figure inside the server's own send windows.
/// Returns the agent (`--output requests`), the connection's end not yet reported.
fn timed_as_the_server_wrote(server: &TestServer) -> Agent {
    let mut agent = Agent::start_with_output("requests", &["--port", &server.port.to_string()]);
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let sent_at = monotonic_ns();
    conn.write_all(&chat_request("gt-model", 8, 120, 25, false))
        .unwrap();
    let body = read_chunked_response(&mut conn);
    let truth = server.next_truth();
    let r = agent.next_report("the request's record");

    assert_eq!(r["model"], "gt-model");
    assert_eq!(
        (r["status"].as_u64(), r["stream"].as_bool(), r["outcome"].as_str()),
        (Some(200), Some(true), Some("ok"))
    );
    assert_eq!(
        (r["output_tokens"].as_u64(), r["token_source"].as_str()),
        (Some(8), Some("events"))
    );
    assert_eq!(r["pid"].as_u64(), Some(server.pid() as u64));
    // The request was read after the client sent it and before the server's first
    // chunk (the role-only delta, which is no token); the first token left between
    // the two timestamps around its send.
    let role = send(&truth, 0);
    let first = send(&truth, 1);
    assert_within(
        "ttft",
        r["ttft_s"].as_f64().unwrap(),
        first.0 - role.0,
        first.1 - sent_at,
    );
    let gaps = r["itl_s"].as_array().unwrap();
    assert_eq!(gaps.len(), 7, "{r}");
    for (i, gap) in gaps.iter().enumerate() {
        let (a, b) = (send(&truth, 1 + i), send(&truth, 2 + i));
        assert_within(&format!("gap {i}"), gap.as_f64().unwrap(), b.0 - a.1, b.1 - a.0);
    }
    let last = &truth["last_send"];
    let last = (last[0].as_u64().unwrap(), last[1].as_u64().unwrap());
    assert_within(
        "duration",
        r["duration_s"].as_f64().unwrap(),
        last.0 - role.0,
        last.1 - sent_at,
    );
    assert!(String::from_utf8_lossy(&body).contains("tok7"));
    assert!(!r.to_string().contains("never print"), "prompt text leaked: {r}");
    agent
}

#[test]
fn keep_alive_and_pipelined_requests_are_each_attributed_to_their_own_request() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start();
    let mut agent = Agent::start_with_output("requests", &["--port", &server.port.to_string()]);
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    for (model, tokens) in [("a", 2), ("b", 3)] {
        conn.write_all(&chat_request(model, tokens, 10, 5, false))
            .unwrap();
        read_chunked_response(&mut conn);
    }
    // Two requests in one write: the server answers them in order on the same connection.
    let mut both = chat_request("c", 1, 10, 5, false);
    both.extend(chat_request("d", 4, 10, 5, true));
    conn.write_all(&both).unwrap();
    read_chunked_response(&mut conn);
    read_chunked_response(&mut conn);
    let records: Vec<Value> = (0..4).map(|_| agent.next_report("a request record")).collect();
    let seen: Vec<_> = records
        .iter()
        .map(|r| (r["model"].as_str().unwrap(), r["output_tokens"].as_u64().unwrap()))
        .collect();
    assert_eq!(seen, [("a", 2), ("b", 3), ("c", 1), ("d", 4)]);
    assert_eq!(records[3]["token_source"], "usage");
    assert_eq!(records[3]["input_tokens"], 7);
    assert!(
        records
            .iter()
            .all(|r| r["outcome"] == "ok" && r["ttft_s"].as_f64().unwrap() >= 0.010),
        "{records:?}"
    );
}

#[test]
fn queue_depth_follows_the_scripted_concurrency() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start();
    let mut agent = Agent::start(&["--port", &server.port.to_string()]);
    let port = server.port;
    // Three clients at once: 600 ms before the first token, then 6 tokens 100 ms apart.
    let clients: Vec<_> = (0..3)
        .map(|i| {
            thread::spawn(move || {
                let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
                conn.write_all(&chat_request(&format!("m{}", i % 2), 6, 600, 100, false))
                    .unwrap();
                read_chunked_response(&mut conn);
            })
        })
        .collect();
    let server_of = |report: &Value| {
        report["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["port"] == port)
            .cloned()
    };
    let mut phases = Vec::new();
    let mut finished = 0;
    while finished < 3 {
        let report = agent.next_report("reports while the three requests run");
        let Some(s) = server_of(&report) else { continue };
        let phase = (
            s["queue"]["waiting"].as_u64().unwrap(),
            s["queue"]["running"].as_u64().unwrap(),
        );
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        finished += finished_requests(&s);
    }
    clients.into_iter().for_each(|c| c.join().unwrap());
    assert!(
        phases.contains(&(3, 0)),
        "never saw all three waiting: {phases:?}"
    );
    assert!(
        phases.contains(&(0, 3)),
        "never saw all three running: {phases:?}"
    );
    assert_eq!(phases.last(), Some(&(0, 0)), "{phases:?}");
}

#[test]
fn a_client_that_leaves_mid_stream_is_counted_as_cancelled() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start();
    let mut agent = Agent::start_with_output("requests", &["--port", &server.port.to_string()]);
    {
        let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        conn.write_all(&chat_request("gone", 50, 10, 50, false)).unwrap();
        let mut first = [0u8; 64];
        std::io::Read::read(&mut conn, &mut first).unwrap();
    } // dropped: the client goes away after the first bytes
    let r = agent.next_report("the cancelled request's record");
    assert_eq!(
        (r["model"].as_str(), r["outcome"].as_str()),
        (Some("gone"), Some("cancelled")),
        "{r}"
    );
    assert!(r["output_tokens"].as_u64().unwrap() < 50, "{r}");
}

#[test]
fn an_ndjson_stream_in_ollamas_shape_is_timed_and_its_token_counts_read() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start();
    let mut agent = Agent::start_with_output("requests", &["--port", &server.port.to_string()]);
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let sent_at = monotonic_ns();
    conn.write_all(&inferscope_tests::ollama_request("llama3.2", 6, 80, 20))
        .unwrap();
    read_chunked_response(&mut conn);
    let truth = server.next_truth();
    let r = agent.next_report("the NDJSON request's record");
    assert_eq!(
        (r["model"].as_str(), r["path"].as_str()),
        (Some("llama3.2"), Some("/api/chat"))
    );
    assert_eq!(
        (r["output_tokens"].as_u64(), r["input_tokens"].as_u64()),
        (Some(6), Some(11))
    );
    assert_eq!(r["token_source"], "usage");
    let first = send(&truth, 0);
    assert_within("ttft", r["ttft_s"].as_f64().unwrap(), 0, first.1 - sent_at);
    assert!(r["ttft_s"].as_f64().unwrap() >= 0.080, "{r}");
    assert_eq!(r["itl_s"].as_array().unwrap().len(), 5, "{r}");
}

/// A new self-signed certificate and its key (in `dir`), as paths.
fn self_signed(dir: &Path) -> [String; 2] {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let openssl = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    [cert, key].map(|p| p.display().to_string())
}

/// A uvicorn server serving HTTPS with a new self-signed certificate (in `dir`).
fn tls_server(dir: &Path, args: &[&str]) -> TestServer {
    let [cert, key] = self_signed(dir);
    let mut all = vec!["--tls", &cert, &key];
    all.extend(args);
    TestServer::start_with(&all)
}

/// The agent watching only `server`, one line per finished request, once it captures its TLS.
fn tls_agent(server: &TestServer) -> Agent {
    let mut agent = Agent::start_with_output(
        "requests",
        &[
            "--pid",
            &server.pid().to_string(),
            "--port",
            &server.port.to_string(),
        ],
    );
    agent.wait_for_log(&format!("capturing TLS plaintext of pid {}", server.pid()));
    agent
}

/// HTTPS through OpenSSL: the agent reads the plaintext at SSL_read/SSL_write
/// (uprobes on the server's libssl, for that process only) under the socket's
/// identity, and drops the ciphertext it sees at the socket.
#[test]
fn a_tls_server_is_measured_from_its_openssl_plaintext() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("inferscope-tls-{}", std::process::id()));
    let server = tls_server(&dir, &[]);
    let mut agent = tls_agent(&server);
    let body = r#"{"model":"tls-model","tokens":8,"ttft_ms":120,"gap_ms":25,"stream":true}"#;
    let sent_at = monotonic_ns();
    let curl = std::process::Command::new("curl")
        .args([
            "-sSk",
            "--no-buffer",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ])
        .arg(format!("https://127.0.0.1:{}/v1/chat/completions", server.port))
        .output()
        .expect("curl");
    assert!(
        curl.status.success() && String::from_utf8_lossy(&curl.stdout).contains("tok7"),
        "{curl:?}"
    );
    let truth = server.next_truth();
    let r = agent.next_report("the TLS request's record");
    assert_eq!(
        (r["model"].as_str(), r["outcome"].as_str()),
        (Some("tls-model"), Some("ok")),
        "{r}"
    );
    assert_eq!(
        (r["output_tokens"].as_u64(), r["token_source"].as_str()),
        (Some(8), Some("events")),
        "{r}"
    );
    let (role, first) = (send(&truth, 0), send(&truth, 1));
    assert_within(
        "ttft",
        r["ttft_s"].as_f64().unwrap(),
        first.0 - role.0,
        first.1 - sent_at,
    );
    assert_eq!(r["itl_s"].as_array().unwrap().len(), 7, "{r}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// TLS on an event loop (asyncio's OpenSSL on memory BIOs, as uvicorn, vLLM
/// and SGLang serve HTTPS) does its socket I/O outside the OpenSSL calls, so
/// each SSL object must be tied to its own connection, also as connections
/// come and go and SSL objects are freed and allocated again.
#[test]
fn every_request_of_a_tls_event_loop_server_is_reported_under_concurrent_and_churned_connections() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("inferscope-tls-load-{}", std::process::id()));
    each_request_reported_under_tls_load(&tls_server(&dir, &["--quiet"]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same load on an event loop that receives from every ready connection
/// before it decrypts any, and streams to all in turn: the socket its thread
/// received from last is another connection's, and a guess from it mixes
/// two connections' streams. The ciphertext each SSL object is fed says whose
/// it is.
#[test]
fn a_tls_event_loop_that_reads_every_ready_connection_first_has_each_request_reported() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("inferscope-tls-batch-{}", std::process::id()));
    let [cert, key] = self_signed(&dir);
    each_request_reported_under_tls_load(&TestServer::start_script(
        "tls_batch_server.py",
        &[],
        &[&cert, &key],
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Twenty runs of keep-alive connections streaming at once and one-shot
/// connections in between (tests/clients/tls_load.py): every request answered
/// is reported whole.
fn each_request_reported_under_tls_load(server: &TestServer) {
    const RUNS: u32 = 20;
    let mut agent = tls_agent(server);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/tls_load.py");
    for run in 0..RUNS {
        let out = std::process::Command::new(inferscope_tests::venv_python())
            .arg(&client)
            .args([&server.port.to_string(), "4", "3", "4"])
            .output()
            .expect("running the TLS load client");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let answered: Value = serde_json::from_slice(&out.stdout).unwrap();
        let answered = answered["answered"].as_u64().unwrap();
        assert_eq!(
            answered,
            4 * 3 + 4,
            "run {run}: the server left requests unanswered"
        );
        for i in 0..answered {
            let r = agent.next_report(&format!("request {i} of {answered} in run {run}"));
            assert_eq!(
                (
                    r["model"].as_str(),
                    r["outcome"].as_str(),
                    r["output_tokens"].as_u64()
                ),
                (Some("tls-load"), Some("ok"), Some(4)),
                "run {run}, request {i}: {r}"
            );
        }
    }
}

/// Runs a server in a network namespace of its own, with loopback up.
const NEW_NETWORK_NAMESPACE: &[&str] = &[
    "unshare",
    "--net",
    "sh",
    "-c",
    "ip link set lo up && exec \"$0\" \"$@\"",
];

/// A two-token chat completion for `model`, sent from inside `pid`'s network
/// namespace to its loopback `port`; checks that it was answered.
fn chat_in_namespace_of(pid: u32, port: &str, model: &str) {
    let curl = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["curl", "-sS", "-H", "Content-Type: application/json", "-d"])
        .arg(format!(
            r#"{{"model":"{model}","tokens":2,"ttft_ms":1,"gap_ms":1}}"#
        ))
        .arg(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .output()
        .expect("nsenter curl");
    assert!(String::from_utf8_lossy(&curl.stdout).contains("tok1"), "{curl:?}");
}

/// Containers have their own network namespaces and often the same port
/// numbers: a watched server's port is watched in its own namespace only.
#[test]
fn the_same_port_in_another_network_namespace_is_not_captured() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let host = TestServer::start();
    let port = host.port.to_string();
    let other = TestServer::start_in(NEW_NETWORK_NAMESPACE, &["--port", &port]);
    assert_eq!(other.port, host.port);
    let mut agent = Agent::start_with_output("requests", &["--pid", &host.pid().to_string()]);
    agent.wait_for_log(&format!("capturing requests to port {port} (pid {})", host.pid()));

    // A request inside the other namespace, then one to the watched server.
    chat_in_namespace_of(other.pid(), &port, "other-netns");
    other.next_truth();
    let mut conn = TcpStream::connect(("127.0.0.1", host.port)).unwrap();
    conn.write_all(&chat_request("watched", 2, 1, 1, false)).unwrap();
    read_chunked_response(&mut conn);
    let r = agent.next_report("the watched server's request");
    assert_eq!(
        (r["model"].as_str(), r["pid"].as_u64()),
        (Some("watched"), Some(host.pid() as u64)),
        "{r}"
    );
}

/// A server in a container's network namespace: its listening port is found
/// from inside that namespace (socket diagnostics asked there) and captured.
#[test]
fn a_server_in_another_network_namespace_is_found_and_captured() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start_in(NEW_NETWORK_NAMESPACE, &[]);
    let port = server.port.to_string();
    let mut agent = Agent::start_with_output("requests", &["--pid", &server.pid().to_string()]);
    agent.wait_for_log(&format!(
        "capturing requests to port {port} (pid {})",
        server.pid()
    ));
    chat_in_namespace_of(server.pid(), &port, "in-container");
    let r = agent.next_report("the request inside the namespace");
    assert_eq!(
        (r["model"].as_str(), r["pid"].as_u64()),
        (Some("in-container"), Some(server.pid() as u64)),
        "{r}"
    );
}

/// gRPC server streaming over HTTP/2 (grpcio), Triton's method: each response
/// message is one streamed item; the model is the request's `model_name`.
#[test]
fn a_grpc_server_stream_is_timed_per_message() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start_script("grpc_server.py", &[], &["6", "100", "20"]);
    let port = server.port.to_string();
    let mut agent = Agent::start_with_output("requests", &["--port", &port]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("servers/grpc_server.py");
    let call = std::process::Command::new(inferscope_tests::venv_python())
        .arg(script)
        .args(["--call", &port, "ensemble-7b"])
        .output()
        .expect("grpc client");
    assert_eq!(String::from_utf8_lossy(&call.stdout).trim(), "6", "{call:?}");
    let r = agent.next_report("the gRPC call's record");
    assert_eq!(
        (r["protocol"].as_str(), r["model"].as_str()),
        (Some("grpc"), Some("ensemble-7b")),
        "{r}"
    );
    assert_eq!(r["path"], "/inference.GRPCInferenceService/ModelStreamInfer");
    assert_eq!(
        (
            r["output_tokens"].as_u64(),
            r["outcome"].as_str(),
            r["stream"].as_bool()
        ),
        (Some(6), Some("ok"), Some(true)),
        "{r}"
    );
    assert!(r["ttft_s"].as_f64().unwrap() >= 0.100, "{r}");
    let gaps = r["itl_s"].as_array().unwrap();
    assert_eq!(gaps.len(), 5, "{r}");
    assert!(gaps.iter().all(|g| g.as_f64().unwrap() >= 0.015), "{r}");
}

#[test]
fn a_server_that_dies_mid_stream_leaves_an_aborted_request() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut server = TestServer::start();
    let mut agent = Agent::start_with_output("requests", &["--port", &server.port.to_string()]);
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    conn.write_all(&chat_request("doomed", 100, 10, 50, false))
        .unwrap();
    // Read until the first token is there, then the server crashes.
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&seen).contains("tok0") {
        let n = std::io::Read::read(&mut conn, &mut buf).unwrap();
        assert!(n > 0, "closed before the first token");
        seen.extend_from_slice(&buf[..n]);
    }
    server.kill();
    let r = agent.next_report("the aborted request's record");
    assert_eq!(
        (r["model"].as_str(), r["outcome"].as_str()),
        (Some("doomed"), Some("aborted")),
        "{r}"
    );
    assert!(r["output_tokens"].as_u64().unwrap() < 100, "{r}");
    assert!(r["ttft_s"].as_f64().unwrap() >= 0.010, "{r}");
}

/// TGI's router shape, on the framework it is written with (Rust, axum):
/// native `/generate_stream` events, the end-of-sequence token is not content,
/// and the final event's `details.generated_tokens` is the usage.
#[test]
fn a_tgi_shaped_rust_server_is_timed_against_when_it_yielded_each_token() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start_program(Path::new(env!("CARGO_BIN_EXE_axum_sse_server")));
    let mut agent = Agent::start_with_output("requests", &["--port", &server.port.to_string()]);
    let body = r#"{"inputs":"never printed","parameters":{"max_new_tokens":10},"ttft_ms":100,"gap_ms":20}"#;
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let sent_at = monotonic_ns();
    write!(conn, "POST /generate_stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    read_chunked_response(&mut conn);
    let yields: Vec<u64> = server.next_truth()["yields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    let r = agent.next_report("the TGI-shaped request's record");
    assert_eq!(
        (r["path"].as_str(), r["model"].is_null()),
        (Some("/generate_stream"), true),
        "{r}"
    );
    assert_eq!(
        (r["output_tokens"].as_u64(), r["token_source"].as_str()),
        (Some(10), Some("usage")),
        "{r}"
    );
    // The first token cannot leave before the framework had it, nor before the request was sent.
    let ttft = r["ttft_s"].as_f64().unwrap();
    assert!(
        ttft >= 0.100 && secs(yields[0] - sent_at) <= ttft + 0.001,
        "ttft {ttft} vs yield {}",
        secs(yields[0] - sent_at)
    );
    // Each gap within 1 ms of the gap between the framework receiving the two tokens.
    let gaps = r["itl_s"].as_array().unwrap();
    assert_eq!(gaps.len(), 9, "{r}");
    for (i, gap) in gaps.iter().enumerate() {
        let want = secs(yields[i + 1] - yields[i]);
        let got = gap.as_f64().unwrap();
        assert!(
            (got - want).abs() <= 0.001,
            "gap {i}: {got:.6} s on the wire vs {want:.6} s yielded"
        );
    }
}

/// A 64 KiB request, far larger than a capture (4 KiB), arrives in receives of
/// more than 4 KiB: each is copied to the full capture size, and none is
/// counted as unreadable.
#[test]
fn a_receive_larger_than_a_capture_is_copied_to_the_full_capture_size() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = rust_server(&[]);
    let mut agent = Agent::start(&["--port", &server.port.to_string()]);
    let body = format!(
        r#"{{"model":"long-prompt","tokens":2,"ttft_ms":5,"gap_ms":5,"stream":true,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(64 * 1024)
    );
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_chunked_response(&mut conn);
    server.next_truth();
    agent.report_with_finished_request(|report| {
        assert!(
            report["drops"]["total"]["unreadable_argument"].is_null(),
            "a full-size copy was counted as unreadable: {}",
            report["drops"]
        );
    });
}
