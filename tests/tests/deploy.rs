//! What deploy/ ships, checked with the real tools: the Helm chart rendered by
//! Helm's own code and equal to the plain manifest, every Kubernetes object
//! valid against the API schemas, and the alert rules loaded and unit-tested by
//! promtool. (That the dashboard and the rules query only metrics the agent
//! exports is checked against a real scrape in export.rs.)

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use inferscope_tests::{fixtures, venv_python};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn succeeds(what: &str, output: Output) {
    let say = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        say(&output.stdout),
        say(&output.stderr)
    );
    eprintln!("{}", say(&output.stdout));
}

#[test]
fn the_chart_renders_the_plain_manifest_and_every_object_is_valid() {
    let out = std::env::temp_dir().join(format!("inferscope-chart-{}", std::process::id()));
    succeeds(
        "rendering and linting the chart",
        Command::new(venv_python())
            .arg(repo("tests/deploy/check_chart.py"))
            .arg(repo("deploy/helm/inferscope"))
            .arg(repo("deploy/daemonset.yaml"))
            .arg(&out)
            .output()
            .unwrap(),
    );
    // ES modules resolve packages from their own location: run it beside node_modules.
    let validator = fixtures().join("npm/validate_k8s.mjs");
    std::fs::copy(repo("tests/deploy/validate_k8s.mjs"), &validator).unwrap();
    succeeds(
        "the Kubernetes schema check",
        Command::new("node")
            .arg(&validator)
            .arg(repo("deploy/daemonset.yaml"))
            .arg(repo("deploy/servicemonitor.yaml"))
            .arg(out.join("everything.yaml"))
            .output()
            .unwrap(),
    );
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn alert_rules_load_and_fire_as_their_unit_tests_say() {
    let promtool = fixtures().join("prometheus/usr/bin/promtool");
    let rules = repo("deploy/prometheus");
    succeeds(
        "promtool check rules",
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(rules.join("alerts.yaml"))
            .output()
            .unwrap(),
    );
    succeeds(
        "promtool test rules",
        Command::new(&promtool)
            .args(["test", "rules", "alerts.test.yaml"])
            .current_dir(&rules)
            .output()
            .unwrap(),
    );
}

#[test]
fn the_dashboard_is_grafana_json() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/inferscope.json")).unwrap())
            .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{panel}"));
        assert!(
            !targets.is_empty()
                && targets
                    .iter()
                    .all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty())),
            "a panel without queries: {}",
            panel["title"]
        );
    }
}
