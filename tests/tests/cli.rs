//! The command line as a person meets it: `check`, refusal without privileges,
//! and `run --duration` stopping by itself with everything reported.

use std::process::Command;

use inferscope_tests::{Agent, Workload, agent_binary, comparable, real_library, require_root};
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
        "capabilities",
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
