//! Drives the real `inferscope` binary and real workload processes for the
//! integration tests. Every wait is bounded and fails with what was awaited.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    thread,
    time::{Duration, Instant},
};

pub mod kube;
pub mod llama;
pub mod receivers;

use inferscope::model::Snapshot;
use serde_json::{Map, Value};

/// How long any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(30);

pub fn require_root() {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        0,
        "these tests load eBPF programs: run them as root"
    );
}

/// Where build.rs put the compiled workload and stand-in libraries.
pub fn test_bin(name: &str) -> PathBuf {
    Path::new(env!("TEST_BIN_DIR")).join(name)
}

pub fn stub_library(name: &str) -> PathBuf {
    test_bin("stubs").join(name)
}

/// A real GPU runtime library: the CUDA runtime wheel (`cargo xtask fixtures`) or Debian's HIP.
pub fn real_library(name: &str) -> PathBuf {
    let path = match name {
        "libcudart.so.12" => fixtures().join("nvidia/cuda_runtime/lib").join(name),
        _ => Path::new("/usr/lib/x86_64-linux-gnu").join(name),
    };
    assert!(
        path.exists(),
        "{} missing: run `cargo xtask test` (or bash .ci/run) to install it",
        path.display()
    );
    path
}

pub fn fixtures() -> PathBuf {
    std::env::var_os("INFERSCOPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/fixtures"))
}

pub fn agent_binary() -> PathBuf {
    let path = std::env::var_os("INFERSCOPE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/inferscope"));
    assert!(
        path.exists(),
        "{} missing: build it first (cargo xtask test does)",
        path.display()
    );
    path
}

/// `program` run through a launcher command line (`unshare ...`, `setpriv ...`), or directly.
fn through(launcher: &[&str], program: &Path) -> Command {
    match launcher.split_first() {
        Some((launcher, args)) => {
            let mut c = Command::new(launcher);
            c.args(args).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Lines of a child's stdout, read on a thread so that waits can time out.
pub fn line_reader(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn next_line(rx: &Receiver<String>, deadline: Instant, what: &str) -> String {
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(line) => line,
        Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}"),
        Err(RecvTimeoutError::Disconnected) => panic!("output ended while waiting for {what}"),
    }
}

/// `inferscope run --output json` as a child process.
pub struct Agent {
    child: Child,
    reports: Receiver<String>,
    log: Receiver<String>,
    /// Log lines read so far (a line may be awaited after it was read).
    seen_log: Vec<String>,
}

impl Agent {
    /// `run --output json` every 100 ms.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_output("json", extra)
    }

    /// Returns once the agent says it is attached (its probes loaded, the initial scan done).
    pub fn start_with_output(output: &str, extra: &[&str]) -> Self {
        Self::start_through(&[], output, extra)
    }

    /// Through a launcher command line (e.g. `setpriv ...` to drop privileges).
    pub fn start_through(launcher: &[&str], output: &str, extra: &[&str]) -> Self {
        Self::launch(launcher, &[], output, extra)
    }

    /// `run --output json` with these environment variables set.
    pub fn start_with_env(env: &[(&str, &Path)], extra: &[&str]) -> Self {
        Self::launch(&[], env, "json", extra)
    }

    /// Another command that watches live (`diagnose`, ...), every 100 ms, until
    /// [`Agent::interrupt`]; its standard output is read as lines.
    pub fn start_command(command: &str, env: &[(&str, &Path)], extra: &[&str]) -> Self {
        Self::spawn(&[], env, command, extra)
    }

    fn launch(launcher: &[&str], env: &[(&str, &Path)], output: &str, extra: &[&str]) -> Self {
        let extra: Vec<&str> = ["--output", output].iter().chain(extra).copied().collect();
        Self::spawn(launcher, env, "run", &extra)
    }

    fn spawn(launcher: &[&str], env: &[(&str, &Path)], command: &str, extra: &[&str]) -> Self {
        require_root();
        let mut child = through(launcher, &agent_binary())
            .args([command, "--log", "info", "--interval", "100ms"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting inferscope");
        let reports = line_reader(child.stdout.take().unwrap());
        let log = line_reader(child.stderr.take().unwrap());
        let mut agent = Self {
            child,
            reports,
            log,
            seen_log: Vec::new(),
        };
        agent.wait_for_log("attached;");
        agent
    }

    /// Waits until the agent has logged a line containing `needle` (echoing its log).
    pub fn wait_for_log(&mut self, needle: &str) {
        self.wait_for_log_lines(needle, 1);
    }

    /// Waits until the agent has logged `n` lines containing `needle`.
    pub fn wait_for_log_lines(&mut self, needle: &str, n: usize) {
        let deadline = Instant::now() + STEP;
        while self.seen_log.iter().filter(|l| l.contains(needle)).count() < n {
            let line = next_line(&self.log, deadline, &format!("'{needle}' in the agent's log"));
            eprintln!("[agent] {line}");
            self.seen_log.push(line);
        }
    }

    /// Stops the agent as Ctrl-C does and returns the rest of its standard
    /// output, once it has exited successfully.
    pub fn interrupt(self) -> String {
        // SAFETY: a signal to our own child, which has not been waited for yet.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) }, 0);
        self.finish()
    }

    /// Waits for the agent to end by itself (`--duration`) and returns the
    /// rest of its standard output, once it has exited successfully.
    pub fn finish(mut self) -> String {
        let deadline = Instant::now() + STEP;
        let mut rest = Vec::new();
        loop {
            match self
                .reports
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("the agent did not stop"),
            }
        }
        let status = self.child.wait().expect("waiting for the agent");
        assert!(status.success(), "the agent stopped with {status}");
        rest.join("\n")
    }

    /// The next line of output as JSON (a report, or a request with `--output requests`).
    pub fn next_report(&mut self, what: &str) -> Value {
        let line = next_line(&self.reports, Instant::now() + STEP, what);
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("report is not JSON ({e}): {line}"))
    }

    /// The next snapshot (`--output json`), as the agent's own type.
    pub fn next_snapshot(&mut self, what: &str) -> Snapshot {
        let line = next_line(&self.reports, Instant::now() + STEP, what);
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a snapshot ({e}): {line}"))
    }

    /// Reads reports (`--output json`) until one has a server with a finished
    /// request, and returns it; `each` sees every report read on the way.
    pub fn report_with_finished_request(&mut self, mut each: impl FnMut(&Value)) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            assert!(Instant::now() < deadline, "no request was reported finished");
            let report = self.next_report("a report with a finished request");
            each(&report);
            let servers = report["servers"].as_array().map_or(&[][..], Vec::as_slice);
            if servers.iter().any(|s| finished_requests(s) > 0) {
                return report;
            }
        }
    }

    /// Reads reports until one lists `pid`: from then on, its calls are counted.
    pub fn wait_until_tracked(&mut self, pid: u32) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            assert!(Instant::now() < deadline, "pid {pid} never appeared in a report");
            let report = self.next_report(&format!("a report listing pid {pid}"));
            if let Some(p) = process(&report, pid) {
                return p.clone();
            }
        }
    }

    /// `pid`'s activity over every report until the one that says it exited:
    /// the sum of the interval deltas, checked equal to the last cumulative total.
    pub fn activity_until_exit(&mut self, pid: u32) -> Value {
        self.activities_until_exit(&[pid]).remove(0)
    }

    /// The same for several processes at once (reports read for one are lost to the others).
    pub fn activities_until_exit(&mut self, pids: &[u32]) -> Vec<Value> {
        self.processes_until_exit(pids)
            .into_iter()
            .map(|p| p.last["gpu"]["total"].clone())
            .collect()
    }

    /// Each of `pids` as reported until its report that says it exited (its
    /// last), with every command name it was reported under; the interval
    /// deltas are checked to add up to the last cumulative total.
    pub fn processes_until_exit(&mut self, pids: &[u32]) -> Vec<ReportedProcess> {
        let deadline = Instant::now() + STEP;
        let index: std::collections::HashMap<u32, usize> =
            pids.iter().enumerate().map(|(i, &p)| (p, i)).collect();
        let mut sums = vec![Value::Object(Map::new()); pids.len()];
        let mut seen: Vec<Option<ReportedProcess>> = vec![None; pids.len()];
        let mut exited = vec![false; pids.len()];
        while exited.contains(&false) {
            assert!(
                Instant::now() < deadline,
                "{} of {} processes were not reported as exited, among them {:?}",
                exited.iter().filter(|e| !**e).count(),
                pids.len(),
                pids.iter()
                    .zip(&exited)
                    .filter(|(_, e)| !**e)
                    .map(|(p, _)| p)
                    .take(10)
                    .collect::<Vec<_>>()
            );
            let report = self.next_report("the reports of processes exiting");
            for p in report["processes"].as_array().into_iter().flatten() {
                let Some(&i) = p["pid"].as_u64().and_then(|pid| index.get(&(pid as u32))) else {
                    continue;
                };
                add_into(&mut sums[i], &p["gpu"]["delta"]);
                let entry = seen[i].get_or_insert_with(|| ReportedProcess {
                    last: Value::Null,
                    names: Vec::new(),
                });
                let name = p["comm"].as_str().unwrap_or_default().to_string();
                if !entry.names.contains(&name) {
                    entry.names.push(name);
                }
                entry.last = p.clone();
                exited[i] |= p["exited"] == true;
            }
        }
        let seen: Vec<ReportedProcess> = seen.into_iter().map(Option::unwrap).collect();
        for (pid, (sum, p)) in pids.iter().zip(sums.iter().zip(&seen)) {
            assert_eq!(
                comparable(sum),
                comparable(&p.last["gpu"]["total"]),
                "pid {pid}: the deltas do not add up to the total"
            );
        }
        seen
    }
}

/// One process as the agent reported it until its last report.
#[derive(Clone, Debug)]
pub struct ReportedProcess {
    /// Its last report (the one that says it exited).
    pub last: Value,
    /// Every command name it was reported under, in order.
    pub names: Vec<String>,
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the agent to stop by itself (`--duration`) and returns its exit status.
    pub fn wait_for_exit(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + STEP;
        while self
            .reports
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
        {}
        assert!(Instant::now() < deadline, "the agent did not stop by itself");
        self.child.wait().expect("waiting for the agent")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests a server entry of a report says finished in its interval, all models together.
pub fn finished_requests(server: &Value) -> u64 {
    server["models"].as_array().map_or(0, |models| {
        models
            .iter()
            .filter_map(|m| m["delta"]["requests"].as_u64())
            .sum()
    })
}

pub fn process(report: &Value, pid: u32) -> Option<&Value> {
    report["processes"].as_array()?.iter().find(|p| p["pid"] == pid)
}

/// Adds counters field by field; `live_bytes` is a level, so the latest wins.
fn add_into(total: &mut Value, delta: &Value) {
    match (total, delta) {
        (Value::Object(t), Value::Object(d)) => {
            for (k, v) in d {
                let slot = t.entry(k.clone()).or_insert_with(|| match v {
                    Value::Object(_) => Value::Object(Map::new()),
                    _ => Value::from(0),
                });
                if k == "live_bytes" {
                    *slot = v.clone();
                } else {
                    add_into(slot, v);
                }
            }
        }
        (t, d) => {
            *t = match (t.as_u64(), d.as_u64()) {
                (Some(a), Some(b)) => Value::from(a + b),
                _ => Value::from(t.as_f64().unwrap_or(0.0) + d.as_f64().unwrap_or(0.0)),
            }
        }
    }
}

/// A test program driven line by line over its stdin and stdout.
struct Dialogue {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Dialogue {
    fn spawn(name: &'static str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let lines = line_reader(child.stdout.take().unwrap());
        Self {
            name,
            child,
            stdin,
            lines,
        }
    }

    fn next(&self, what: &str) -> String {
        next_line(
            &self.lines,
            Instant::now() + STEP,
            &format!("{what} from {}", self.name),
        )
    }

    fn expect(&self, want: &str) {
        let got = self.next(&format!("'{want}'"));
        assert_eq!(got, want, "{} said something else", self.name);
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap_or_else(|e| panic!("{}'s stdin: {e}", self.name));
    }

    /// Tells it to exit and checks that it did so cleanly.
    fn exit(mut self) {
        self.say("exit");
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name));
        assert!(status.success(), "{} failed: {status}", self.name);
    }
}

/// `gpu_workload` (tests/c): calls a runtime's functions N times and prints the exact tally.
pub struct Workload(Dialogue);

/// When a workload loads its runtime and calls it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// Loads at start, calls when told (`run_calls`).
    WhenTold,
    /// Loads when told ("open"), then calls when told.
    LoadLate,
    /// Loads at start and calls at once, without a word from the test.
    AtOnce,
}

impl Workload {
    pub fn start(runtime: &str, library: &Path, rounds: u32, bytes: u64) -> Self {
        Self::start_with(&[], runtime, library, rounds, bytes, Calls::WhenTold)
    }

    /// Another build of the workload (e.g. `gpu_workload_static`).
    pub fn start_program(program: &Path, runtime: &str, library: &Path, rounds: u32, bytes: u64) -> Self {
        Self::spawn(
            Command::new(program),
            runtime,
            library,
            rounds,
            bytes,
            Calls::WhenTold,
        )
    }

    /// Starts it through `launcher` (a command line such as `unshare ...`, or none).
    pub fn start_with(
        launcher: &[&str],
        runtime: &str,
        library: &Path,
        rounds: u32,
        bytes: u64,
        calls: Calls,
    ) -> Self {
        let workload = test_bin("gpu_workload");
        Self::spawn(
            through(launcher, &workload),
            runtime,
            library,
            rounds,
            bytes,
            calls,
        )
    }

    fn spawn(mut cmd: Command, runtime: &str, library: &Path, rounds: u32, bytes: u64, calls: Calls) -> Self {
        cmd.arg(runtime)
            .arg(library)
            .arg(rounds.to_string())
            .arg(bytes.to_string());
        match calls {
            Calls::WhenTold => {}
            Calls::LoadLate => drop(cmd.arg("--late")),
            Calls::AtOnce => drop(cmd.arg("--at-once")),
        }
        let w = Self(Dialogue::spawn("gpu_workload", cmd));
        match calls {
            Calls::WhenTold => w.expect("ready"),
            Calls::LoadLate => w.expect("started"),
            Calls::AtOnce => {}
        }
        w
    }

    pub fn pid(&self) -> u32 {
        self.0.child.id()
    }

    pub fn expect(&self, want: &str) {
        self.0.expect(want);
    }

    pub fn say(&mut self, line: &str) {
        self.0.say(line);
    }

    /// Lets it make its calls; returns its own tally of what an exact observer sees.
    pub fn run_calls(&mut self) -> Value {
        self.say("go");
        self.tally()
    }

    /// Its tally, once it has made its calls (by itself, with [`Calls::AtOnce`]).
    pub fn tally(&mut self) -> Value {
        let line = self.0.next("the tally");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("tally is not JSON ({e}): {line}"))
    }

    pub fn exit(self) {
        self.0.exit();
    }
}

/// `gpu_churn` (tests/c): a process mapping the CUDA runtime that forks N
/// short-lived children calling it, each ending by exit, exec or mid-call.
pub struct Churn(Dialogue);

impl Churn {
    pub fn start(library: &Path, children: u32) -> Self {
        let mut cmd = Command::new(test_bin("gpu_churn"));
        cmd.arg(library).arg(children.to_string());
        let churn = Self(Dialogue::spawn("gpu_churn", cmd));
        churn.0.expect("ready");
        churn
    }

    pub fn pid(&self) -> u32 {
        self.0.child.id()
    }

    /// Forks the children, waits for them all; returns each one's pid, name,
    /// way of ending and exact tally.
    pub fn run(&mut self) -> Vec<Value> {
        self.0.say("go");
        let mut children = Vec::new();
        loop {
            let line = self.0.next("a child's tally");
            if line == "done" {
                return children;
            }
            children.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
        }
    }

    pub fn exit(self) {
        self.0.exit();
    }
}

/// The pids among `pids` that some loaded inferscope agent's per-process GPU
/// maps (`gpu_stats`, `gpu_processes`) still hold, whichever agent loaded them.
pub fn pids_in_kernel_maps(pids: &std::collections::HashSet<u32>) -> Vec<(String, u32)> {
    use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap, loaded_maps};
    use inferscope_shared::{GpuProcess, GpuStats};
    let mut held = Vec::new();
    for info in loaded_maps().flatten() {
        let name = info.name_as_str().unwrap_or_default().to_string();
        if name != "gpu_stats" && name != "gpu_processes" {
            continue;
        }
        // Maps of agents that stopped meanwhile are gone: skip what cannot be opened.
        let Ok(data) = MapData::from_id(info.id()) else {
            continue;
        };
        let keys: Vec<u32> = if name == "gpu_stats" {
            PerCpuHashMap::<_, u32, GpuStats>::try_from(aya::maps::Map::PerCpuHashMap(data))
                .map(|m| m.keys().flatten().collect())
                .unwrap_or_default()
        } else {
            BpfHashMap::<_, u32, GpuProcess>::try_from(aya::maps::Map::HashMap(data))
                .map(|m| m.keys().flatten().collect())
                .unwrap_or_default()
        };
        held.extend(
            keys.into_iter()
                .filter(|k| pids.contains(k))
                .map(|k| (name.clone(), k)),
        );
    }
    held
}

/// How many links in the kernel attach the program named `program` of the
/// agent process `agent` (its programs found through the ids in its file
/// descriptors' fdinfo): other agents' are not counted.
pub fn links_of_program(agent: u32, program: &str) -> usize {
    let mut ids = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{agent}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|id| id.trim().parse::<u32>().ok()),
        );
    }
    let named: std::collections::HashSet<u32> = aya::programs::loaded_programs()
        .flatten()
        .filter(|p| ids.contains(&p.id()) && p.name_as_str() == Some(program))
        .map(|p| p.id())
        .collect();
    aya::programs::loaded_links()
        .flatten()
        .filter(|l| named.contains(&l.program_id()))
        .count()
}

/// The agent's activity with the fields the workload's tally has (timing aside: a float).
pub fn comparable(activity: &Value) -> Value {
    let mut a = activity.clone();
    a.as_object_mut().unwrap().remove("sync_seconds");
    a
}

/// A ground-truth Python server from `tests/servers/` (by default `sse_server.py`:
/// Starlette on uvicorn, streaming on a schedule, printing when each chunk went
/// to the socket), run in the fixtures' venv.
pub struct TestServer {
    child: Child,
    pub port: u16,
    truth: Receiver<String>,
}

/// The fixtures' Python, with the test servers' frameworks.
pub fn venv_python() -> PathBuf {
    fixtures().join("venv/bin/python")
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra arguments, e.g. `--tls CERT KEY`.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_in(&[], args)
    }

    /// Through a launcher command line (e.g. `unshare --net ...`), with extra arguments.
    pub fn start_in(launcher: &[&str], args: &[&str]) -> Self {
        Self::start_script("sse_server.py", launcher, args)
    }

    /// A program that prints `listening PORT` first (e.g. one of this crate's binaries).
    pub fn start_program(program: &Path) -> Self {
        Self::start_program_with(program, &[])
    }

    /// The same, with arguments.
    pub fn start_program_with(program: &Path, args: &[&str]) -> Self {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::spawn(cmd)
    }

    /// Another script of `tests/servers/`; it must print `listening PORT` first.
    pub fn start_script(script: &str, launcher: &[&str], args: &[&str]) -> Self {
        let python = venv_python();
        assert!(
            python.exists(),
            "{} missing: run `cargo xtask fixtures`",
            python.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("servers").join(script);
        let mut cmd = through(launcher, &python);
        cmd.arg(script).args(args);
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting a test server");
        let truth = line_reader(child.stdout.take().unwrap());
        // Built first, so that a failed start still kills the process.
        let mut server = Self {
            child,
            port: 0,
            truth,
        };
        let line = next_line(
            &server.truth,
            Instant::now() + STEP,
            "the server's 'listening' line",
        );
        server.port = line
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .expect("listening PORT");
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the server recorded about its next finished request.
    pub fn next_truth(&self) -> Value {
        let line = next_line(
            &self.truth,
            Instant::now() + STEP,
            "the server's record of a request",
        );
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the kernel's (and the server's) timestamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An HTTP/1.1 POST of a streaming chat completion to the ground-truth server.
pub fn chat_request(model: &str, tokens: u32, ttft_ms: u32, gap_ms: u32, usage: bool) -> Vec<u8> {
    post("/v1/chat/completions", model, tokens, ttft_ms, gap_ms, usage)
}

/// The same as Ollama's `/api/chat` (NDJSON).
pub fn ollama_request(model: &str, tokens: u32, ttft_ms: u32, gap_ms: u32) -> Vec<u8> {
    post("/api/chat", model, tokens, ttft_ms, gap_ms, false)
}

fn post(path: &str, model: &str, tokens: u32, ttft_ms: u32, gap_ms: u32, usage: bool) -> Vec<u8> {
    let body = serde_json::json!({
        "model": model, "tokens": tokens, "ttft_ms": ttft_ms, "gap_ms": gap_ms, "usage": usage, "stream": true,
        "messages": [{"role": "user", "content": "a prompt the agent must never print"}],
    })
    .to_string();
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one chunked response off a keep-alive connection (up to its final empty chunk).
pub fn read_chunked_response(stream: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read as _;
    stream.set_read_timeout(Some(STEP)).unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n0\r\n\r\n") {
        let n = stream.read(&mut byte).expect("reading the response");
        assert!(
            n > 0,
            "the server closed the connection mid-response: {}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    got
}

/// A program that prints `ready` once it runs; killed when dropped.
pub struct ReadyChild(Child);

impl ReadyChild {
    /// Starts `command` and waits for its `ready` line.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n", "{command:?} did not start");
        Self(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ReadyChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tests/c/cpu_burner.c: three quarters of its time under `hot_path`, one
/// quarter under `cold_path`, both in `spin`, until killed.
pub fn cpu_burner() -> ReadyChild {
    ReadyChild::start(Command::new(test_bin("cpu_burner")))
}
