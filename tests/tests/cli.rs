//! The command line as a person meets it: `check`, refusal without privileges,
//! and `run --duration` stopping by itself with everything reported.

use std::{io::Write as _, net::TcpStream, process::Command};

use inferscope_tests::{
    Agent, TestServer, Workload, agent_binary, chat_request, comparable, finished_requests,
    read_chunked_response, real_library, require_root,
};
use serde_json::json;

#[test]
fn check_reports_what_works_here_and_says_the_agent_can_run() {
    require_root();
    let out = Command::new(agent_binary()).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "uprobe",
        "uretprobe",
        "tp_btf",
        "tracefs",
        "kprobe",
        "fentry",
        "BTF",
        "CAP_BPF",
        "gpu_calls.bpf.o",
        "net_capture.bpf.o",
    ] {
        assert!(
            stdout.lines().any(|l| l.contains(line)),
            "no line about {line}:\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("uprobe") && l.contains("fired")),
        "{stdout}"
    );
    assert!(stdout.contains("inferscope can run here."), "{stdout}");
}

#[test]
fn without_privileges_run_and_check_fail_with_one_clear_sentence() {
    require_root();
    for command in ["run", "check"] {
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(agent_binary())
            .arg(command)
            .output()
            .expect("setpriv (util-linux)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains("CAP_BPF"),
            "{command} should name what is missing: {stderr}"
        );
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{command}: one sentence, got: {stderr}"
        );
    }
}

#[test]
fn run_profile_without_a_place_to_ship_to_fails_at_once_saying_so() {
    let out = Command::new(agent_binary())
        .args(["run", "--profile"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--pyroscope-url"), "{stderr}");
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence, got: {stderr}");
}

#[test]
fn mcp_over_http_off_localhost_without_a_token_fails_at_once_saying_so() {
    let out = Command::new(agent_binary())
        .args(["mcp", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--token-file"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence, got: {stderr}");
}

#[test]
fn run_with_duration_stops_by_itself_having_reported_every_call() {
    let mut agent = Agent::start(&["--duration", "10s"]);
    let mut w = Workload::start("cudart", &real_library("libcudart.so.12"), 100, 1 << 20);
    let pid = w.pid();
    agent.wait_until_tracked(pid);
    let tally = w.run_calls();
    w.exit();
    let seen = agent.activity_until_exit(pid);
    assert_eq!(comparable(&seen), tally);
    assert_eq!(seen["kernel_launches"], json!(300));
    assert!(agent.wait_for_exit().success());
}

/// The capabilities `check` lists, and no others, under an unprivileged uid
/// (as the DaemonSet runs it): GPU calls of a root process are still counted
/// exactly, and a streamed request is still measured.
#[test]
fn with_only_its_capabilities_an_unprivileged_user_gets_gpu_counts_and_request_metrics() {
    let caps = "-all,+bpf,+perfmon,+sys_admin,+sys_ptrace,+dac_read_search";
    let (inherit, ambient) = (format!("--inh-caps={caps}"), format!("--ambient-caps={caps}"));
    let launcher = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &inherit,
        &ambient,
    ];
    let server = TestServer::start_program(std::path::Path::new(env!("CARGO_BIN_EXE_sse_truth_server")));
    let port = server.port.to_string();
    let mut agent = Agent::start_through(&launcher, "json", &["--port", &port]);

    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let sent_at = inferscope_tests::monotonic_ns();
    conn.write_all(&chat_request("least-privilege", 3, 20, 5, false))
        .unwrap();
    read_chunked_response(&mut conn);
    let truth = server.next_truth();
    let ns = |i: usize, j: usize| truth["body_sends"][i][j].as_u64().unwrap();
    // Read before the role-only delta went out; the first token between the stamps around its write.
    let (low, high) = (
        (ns(1, 0) - ns(0, 0)) as f64 / 1e9,
        (ns(1, 1) - sent_at) as f64 / 1e9,
    );
    let report = agent.report_with_finished_request(|_| {});
    let server = report["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| finished_requests(s) > 0))
        .unwrap();
    // Found by --port, not by name: named all the same (the kernel keeps 15 bytes of it).
    assert_eq!(server["comm"], "sse_truth_serve", "{server}");
    let model = &server["models"][0];
    assert_eq!(model["model"], "least-privilege", "{model}");
    assert_eq!(model["delta"]["requests"], 1, "{model}");
    let ttft = model["delta"]["ttft_s"]["sum"].as_f64().unwrap();
    assert!(
        low <= ttft && ttft <= high,
        "ttft {ttft} s outside [{low}, {high}]"
    );

    let mut w = Workload::start("cudart", &real_library("libcudart.so.12"), 20, 4096);
    let pid = w.pid();
    agent.wait_until_tracked(pid);
    let tally = w.run_calls();
    w.exit();
    assert_eq!(comparable(&agent.activity_until_exit(pid)), tally);
}
