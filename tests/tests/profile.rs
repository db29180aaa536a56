//! `inferscope profile` on a program whose profile is known: real perf-event
//! sampling, stacks walked by the kernel, symbols read by blazesym.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use inferscope_tests::{Agent, test_bin};

/// A child killed when dropped.
struct Burner(std::process::Child);

impl Drop for Burner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn burner() -> Burner {
    let mut child = Command::new(test_bin("cpu_burner"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting cpu_burner");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    Burner(child)
}

/// Runs `profile` on `pid` for `seconds` and returns what it wrote.
fn profile(pid: u32, seconds: u32, file: &str) -> String {
    let out = std::env::temp_dir().join(format!("{pid}-{file}"));
    let pid_arg = pid.to_string();
    let duration = format!("{seconds}s");
    let agent = Agent::start_command(
        "profile",
        &[],
        &[
            "--pid",
            &pid_arg,
            "--frequency",
            "499",
            "--duration",
            &duration,
            "-o",
            out.to_str().unwrap(),
        ],
    );
    agent.finish();
    let written = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(out).unwrap();
    written
}

#[test]
fn a_cpu_bound_program_is_profiled_with_its_functions_in_their_proportions() {
    let burner = burner();
    let pid = burner.0.id();
    let folded = profile(pid, 3, "profile.folded");
    // Samples per call path below main.
    let mut paths: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0;
    for line in folded.lines() {
        let (stack, count) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not folded: {line}"));
        let count: u64 = count.parse().unwrap();
        total += count;
        assert!(stack.starts_with(&format!("cpu_burner ({pid});")), "{line}");
        for path in ["main;hot_path;spin", "main;cold_path;spin"] {
            if stack.contains(path) {
                *paths.entry(path).or_default() += count;
            }
        }
    }
    // 499 Hz for 3 s on the one CPU it runs on at a time, if it got the CPU.
    assert!(total >= 100, "only {total} samples:\n{folded}");
    let share = |path| paths.get(path).copied().unwrap_or(0) as f64 / total as f64;
    // Three to one: with hundreds of samples, far from these bounds.
    assert!(
        (0.6..0.9).contains(&share("main;hot_path;spin")),
        "hot path {:.2} of {total}:\n{folded}",
        share("main;hot_path;spin")
    );
    assert!(
        (0.1..0.4).contains(&share("main;cold_path;spin")),
        "cold path {:.2} of {total}:\n{folded}",
        share("main;cold_path;spin")
    );

    let svg = profile(pid, 1, "profile.svg");
    assert!(
        svg.starts_with("<?xml") && svg.contains("hot_path"),
        "{}",
        &svg[..svg.len().min(400)]
    );
}
