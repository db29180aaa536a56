//! `inferscope profile` on a program whose profile is known: real perf-event
//! sampling, stacks walked by the kernel, symbols read by blazesym.

use std::{collections::BTreeMap, path::Path, process::Command};

use inferscope::profile::pprof;
use inferscope_tests::{
    Agent, ReadyChild, cpu_burner,
    kube::{CONTAINER, ContainerCgroup, FakeCluster, NODE},
    receivers::{OtlpProfilesReceiver, PyroscopeReceiver, free_port, sample, scrape, wait_until},
};
use serde_json::Value;

/// Runs `profile --pid PID ARGS -o OUT` to its end.
fn run_profile(pid: u32, args: &[&str], out: &Path) {
    let pid_arg = pid.to_string();
    let mut all = vec!["--pid", &pid_arg];
    all.extend(args);
    all.extend(["-o", out.to_str().unwrap()]);
    Agent::start_command("profile", &[], &all).finish();
}

/// Runs `profile` on `pid` for `seconds` and returns what it wrote.
fn profile(pid: u32, seconds: u32, file: &str) -> String {
    let out = std::env::temp_dir().join(format!("{pid}-{file}"));
    let duration = format!("{seconds}s");
    run_profile(pid, &["--frequency", "499", "--duration", &duration], &out);
    let written = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(out).unwrap();
    written
}

#[test]
fn a_cpu_bound_program_is_profiled_with_its_functions_in_their_proportions() {
    let burner = cpu_burner();
    let pid = burner.pid();
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

/// A CPython program, three quarters of its time under `hot_path`, one
/// quarter under `cold_path`, both in `spin`.
const PYTHON_BURNER: &str = r#"
import sys
want = tuple(int(v) for v in sys.argv[1].split("."))
assert sys.version_info[:2] == want, f"{sys.executable} is {sys.version}, not {sys.argv[1]}"

def spin(n):
    x = 0
    for i in range(n):
        x += i
    return x

def hot_path():
    return spin(300000)

def cold_path():
    return spin(100000)

print("ready", flush=True)
while True:
    hot_path()
    cold_path()
"#;

/// Profiles `python` running the burner and checks its Python frames.
fn python_functions_are_named(python: &Path, version: &str, label: &str) {
    let script = std::env::temp_dir().join(format!("burner-{}-{label}.py", std::process::id()));
    std::fs::write(&script, PYTHON_BURNER).unwrap();
    let mut command = Command::new(python);
    command.arg(&script).arg(version);
    let burner = ReadyChild::start(command);
    let pid = burner.pid();
    let folded = profile(pid, 3, &format!("python-{label}.folded"));
    let file = script.file_name().unwrap().to_str().unwrap();
    let path = |function: &str, line: u32| format!("{function} ({file}:{line});spin ({file}:6)");
    let (hot, cold) = (path("hot_path", 12), path("cold_path", 15));
    let (mut with_hot, mut with_cold, mut total) = (0, 0, 0);
    for l in folded.lines() {
        let (stack, count) = l.rsplit_once(' ').unwrap();
        let count: u64 = count.parse().unwrap();
        total += count;
        with_hot += if stack.contains(&hot) { count } else { 0 };
        with_cold += if stack.contains(&cold) { count } else { 0 };
    }
    assert!(total >= 100, "Python {version}: only {total} samples:\n{folded}");
    let share = |n: u64| n as f64 / total as f64;
    assert!(
        (0.6..0.9).contains(&share(with_hot)) && (0.1..0.4).contains(&share(with_cold)),
        "Python {version}: hot {with_hot}, cold {with_cold} of {total}:\n{folded}"
    );
    drop(burner);
    std::fs::remove_file(script).unwrap();
}

#[test]
fn a_python_3_11_program_is_profiled_with_its_python_functions() {
    // The fixtures' interpreter: CPython 3.11, as on CI.
    python_functions_are_named(&inferscope_tests::venv_python(), "3.11", "fixtures");
}

#[test]
fn a_python_3_11_program_of_a_non_pie_interpreter_is_profiled_with_its_python_functions() {
    // Debian's python3.11 is a non-PIE executable with the interpreter linked
    // in: _PyRuntime at a fixed address, unlike the fixtures' (pyenv's, PIE
    // with libpython3.11.so). Present where Debian's python3 is installed.
    let debian = Path::new("/usr/bin/python3.11");
    if debian.exists() {
        python_functions_are_named(debian, "3.11", "debian");
    } else {
        eprintln!("no /usr/bin/python3.11 on this machine: not tested here");
    }
}

/// The machine's CPython 3.`minor` (pyenv's, else Debian's): no package
/// source the project may use ships 3.10, 3.12 or 3.13 for Debian 12. `None`,
/// said, where there is none.
fn machine_python(minor: u32) -> Option<std::path::PathBuf> {
    let home = std::env::var("HOME").unwrap_or_default();
    let version = format!("3.{minor}");
    let found = std::fs::read_dir(format!("{home}/.pyenv/versions"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{version}."))
        })
        .map(|e| e.path().join(format!("bin/python{version}")))
        .chain([std::path::PathBuf::from(format!("/usr/bin/python{version}"))])
        .find(|p| p.exists());
    if found.is_none() {
        eprintln!("no CPython {version} on this machine (pyenv or /usr/bin): not tested here");
    }
    found
}

#[test]
fn a_python_3_10_program_is_profiled_with_its_python_functions() {
    if let Some(python) = machine_python(10) {
        python_functions_are_named(&python, "3.10", "3.10");
    }
}

#[test]
fn a_python_3_12_program_is_profiled_with_its_python_functions() {
    if let Some(python) = machine_python(12) {
        python_functions_are_named(&python, "3.12", "3.12");
    }
}

#[test]
fn a_python_3_13_program_is_profiled_with_its_python_functions() {
    if let Some(python) = machine_python(13) {
        python_functions_are_named(&python, "3.13", "3.13");
    }
}

/// Profiles `workload`'s GPU calls, 1 in `every` recording its stack, and
/// returns its launches' and its waits' folded stacks.
fn gpu_call_profiles(workload: &ReadyChild, every: &str) -> (String, String) {
    let pid = workload.pid();
    let out = std::env::temp_dir().join(format!("{pid}-calls.folded"));
    run_profile(pid, &["--gpu-call-stacks", every, "--duration", "3s"], &out);
    let read = |kind: &str| {
        let path = out.with_file_name(format!("{pid}-calls.{kind}.folded"));
        let folded = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        std::fs::remove_file(path).unwrap();
        folded
    };
    let calls = (read("gpu-launches"), read("gpu-sync-wait"));
    std::fs::remove_file(out).unwrap();
    calls
}

/// Checks that a GPU call profile's total splits between two call paths as
/// `first` (a range) says for the first, the rest for the second; every stack
/// must end in the runtime `function` (the runtime's driver calls underneath
/// are the runtime's). Frames may come between a path and the function (an
/// interpreter and libffi with frame pointers show their own).
fn assert_split(folded: &str, root: &str, function: &str, paths: [&str; 2], first: std::ops::Range<f64>) {
    let (mut under, mut total) = ([0u64; 2], 0);
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        let count: u64 = count.parse().unwrap();
        assert!(stack.starts_with(root) && stack.ends_with(function), "{line}");
        total += count;
        for (path, n) in paths.iter().zip(&mut under) {
            if stack.contains(path) {
                *n += count;
            }
        }
    }
    assert!(total > 0, "nothing sampled:\n{folded}");
    let [a, b] = under.map(|n| n as f64 / total as f64);
    let second = 1.0 - first.end..1.0 - first.start;
    assert!(
        first.contains(&a) && second.contains(&b),
        "{function}: {a:.2} under {}, {b:.2} under {}:\n{folded}",
        paths[0],
        paths[1]
    );
}

#[test]
fn gpu_launches_and_waits_are_profiled_with_the_python_code_that_made_them() {
    // The fixtures' interpreter: CPython 3.11.
    gpu_calls_are_named_by_their_python_code(&inferscope_tests::venv_python());
}

#[test]
fn gpu_launches_and_waits_of_python_3_10_and_3_13_are_profiled_with_their_python_code() {
    // The layouts unlike 3.11's: a frame object (3.10), a frame the thread
    // state points to (3.13).
    for minor in [10, 13] {
        if let Some(python) = machine_python(minor) {
            gpu_calls_are_named_by_their_python_code(&python);
        }
    }
}

/// Profiles tests/python/gpu_launcher.py's launches and waits under `python`.
fn gpu_calls_are_named_by_their_python_code(python: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/gpu_launcher.py");
    let mut command = Command::new(python);
    command
        .arg(&script)
        .arg(inferscope_tests::stub_library("libcudart.so.12"));
    let workload = ReadyChild::start(command);
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", workload.pid())).unwrap();
    let root = format!("{} ({});", comm.trim_end(), workload.pid());
    let (launches, waits) = gpu_call_profiles(&workload, "4");
    drop(workload);
    let at = |function: &str, line: u32| format!("{function} (gpu_launcher.py:{line})");
    let launch = at("launch", 26);
    // 1 in 4 of tens of thousands of launches, and of about 2 700 waits of 1 ms:
    // far from these bounds.
    assert_split(
        &launches,
        &root,
        "cudaLaunchKernel",
        [
            &format!("{};{launch}", at("prefill", 31)),
            &format!("{};{launch}", at("decode", 37)),
        ],
        0.65..0.85,
    );
    assert_split(
        &waits,
        &root,
        "cudaDeviceSynchronize",
        [&at("prefill", 31), &at("decode", 37)],
        0.6..0.9,
    );
}

#[test]
fn gpu_launches_and_waits_of_a_native_program_are_profiled_with_their_callers() {
    // tests/c/gpu_launcher.c, every call recording its stack. At a function's
    // first instruction the kernel's frame-pointer walk skips its caller:
    // `prefill` would be missing from above its synchronisations.
    let mut command = Command::new(inferscope_tests::test_bin("gpu_launcher"));
    command.arg(inferscope_tests::stub_library("libcudart.so.12"));
    let workload = ReadyChild::start(command);
    let root = format!("gpu_launcher ({});", workload.pid());
    let (launches, waits) = gpu_call_profiles(&workload, "1");
    drop(workload);
    assert_split(
        &launches,
        &root,
        "cudaLaunchKernel",
        [
            "main;prefill;launch;cudaLaunchKernel",
            "main;decode;launch;cudaLaunchKernel",
        ],
        0.7..0.8,
    );
    assert_split(
        &waits,
        &root,
        "cudaDeviceSynchronize",
        [
            "main;prefill;cudaDeviceSynchronize",
            "main;decode;cudaDeviceSynchronize",
        ],
        0.65..0.85,
    );
}

/// A pprof file's profile.
fn read_pprof(path: &Path) -> pprof::Profile {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()),
        &mut bytes,
    )
    .unwrap_or_else(|e| panic!("{} is not gzip: {e}", path.display()));
    prost::Message::decode(bytes.as_slice())
        .unwrap_or_else(|e| panic!("{} is not a pprof profile: {e}", path.display()))
}

/// Samples (the first value) per function name, over every stack holding it.
fn samples_by_function(p: &pprof::Profile) -> BTreeMap<String, i64> {
    let name = |location: u64| -> &str {
        let loc = &p.location[location as usize - 1];
        let function = &p.function[loc.line[0].function_id as usize - 1];
        &p.string_table[function.name as usize]
    };
    let mut out = BTreeMap::new();
    for s in &p.sample {
        let mut names: Vec<&str> = s.location_id.iter().map(|&l| name(l)).collect();
        names.dedup();
        for n in names {
            *out.entry(n.to_string()).or_default() += s.value[0];
        }
    }
    out
}

#[test]
fn pprof_files_once_and_continuously_carry_the_samples_and_their_cpu_time() {
    let burner = cpu_burner();
    let pid = burner.pid();
    let dir = std::env::temp_dir().join(format!("pprof-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let once = dir.join("once.pb.gz");
    run_profile(pid, &["--frequency", "499", "--duration", "2s"], &once);
    let pid_arg = pid.to_string();
    let p = read_pprof(&once);
    let strings = |v: &pprof::ValueType| {
        (
            p.string_table[v.r#type as usize].clone(),
            p.string_table[v.unit as usize].clone(),
        )
    };
    assert_eq!(
        p.sample_type.iter().map(strings).collect::<Vec<_>>(),
        [
            ("samples".into(), "count".into()),
            ("cpu".into(), "nanoseconds".into())
        ]
    );
    assert_eq!(p.period, 1_000_000_000 / 499);
    assert!(p.sample.iter().all(|s| s.value[1] == s.value[0] * p.period));
    let by_function = samples_by_function(&p);
    let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    let hot = by_function.get("hot_path").copied().unwrap_or(0);
    assert!(
        total >= 100 && (0.6..0.9).contains(&(hot as f64 / total as f64)),
        "hot_path {hot} of {total}"
    );

    // Continuously: a file per second, the newest two kept.
    let periods = dir.join("periods");
    let mut agent = Agent::start_command(
        "profile",
        &[],
        &[
            "--pid",
            &pid_arg,
            "--frequency",
            "499",
            "--every",
            "1s",
            "--keep",
            "2",
            "-o",
            periods.to_str().unwrap(),
        ],
    );
    agent.wait_for_log_lines("inferscope info: wrote", 3);
    agent.interrupt();
    let mut files: Vec<_> = std::fs::read_dir(&periods)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    // The newest may be the short remainder written at the stop (it must still
    // decode); the other is a whole period.
    read_pprof(&files[1]);
    for f in &files[..1] {
        let p = read_pprof(f);
        assert!(
            samples_by_function(&p).get("hot_path").is_some_and(|&n| n > 0),
            "{}",
            f.display()
        );
    }
    // Each period holds only its own samples: the kernel's tables are emptied.
    let samples: i64 = read_pprof(&files[0]).sample.iter().map(|s| s.value[0]).sum();
    assert!(
        samples <= 499 * 3,
        "{samples} samples in a period of about a second"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A series as the Pyroscope receiver decoded it: is it `kind` of `pid`?
fn is_series(series: &Value, pid: u32, kind: &str) -> bool {
    let labels = &series["labels"];
    labels["process_pid"].as_str().and_then(|p| p.parse().ok()) == Some(pid) && labels["__name__"] == kind
}

/// Its stacks, frames joined by `;` (root first), with their first values.
fn stacks_of(series: &Value) -> Vec<(String, i64)> {
    series["profile"]["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (joined_frames(s), s["values"][0].as_i64().unwrap()))
        .collect()
}

/// A decoded stack's frames joined by `;`, root first.
fn joined_frames(stack: &Value) -> String {
    let frames: Vec<&str> = stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    frames.join(";")
}

/// Whether a stack of `series` contains `path` (frames joined by `;`).
fn has_path(series: &Value, path: &str) -> bool {
    stacks_of(series)
        .iter()
        .any(|(stack, n)| *n > 0 && stack.contains(path))
}

/// A native launcher in a pod's container and a Python one on the host, and
/// the cluster that names the pod: the workloads continuous profiling is
/// tested on.
struct TwoWorkloads {
    native: ReadyChild,
    python: ReadyChild,
    _cgroup: ContainerCgroup,
    cluster: FakeCluster,
}

impl TwoWorkloads {
    fn start() -> Self {
        let stub = inferscope_tests::stub_library("libcudart.so.12");
        let mut command = Command::new(inferscope_tests::test_bin("gpu_launcher"));
        command.arg(&stub);
        let native = ReadyChild::start(command);
        let cgroup = ContainerCgroup::enter(native.pid());
        let mut command = Command::new(inferscope_tests::venv_python());
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/gpu_launcher.py"))
            .arg(&stub);
        let python = ReadyChild::start(command);
        Self {
            native,
            python,
            _cgroup: cgroup,
            cluster: FakeCluster::start(),
        }
    }

    /// `run --profile` of both, a period a second, 1 in 4 GPU calls' stacks, then `extra`.
    fn run_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--output",
            "none",
            "--profile",
            "--profile-every",
            "1s",
            "--gpu-call-stacks",
            "4",
        ]
        .map(String::from)
        .to_vec();
        for pid in [self.native.pid(), self.python.pid()] {
            args.extend(["--pid".to_string(), pid.to_string()]);
        }
        args.extend(self.cluster.agent_args());
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    /// Whether `found(pid, kind, path, in_pod)` holds of each stack both must
    /// have shipped: their launches, waits and CPU time (the store's name for
    /// it: `cpu`), with the frames that made them, the native one's in its pod.
    fn all_shipped(&self, cpu: &str, found: impl Fn(u32, &str, &str, bool) -> bool) -> bool {
        let (native, python) = (self.native.pid(), self.python.pid());
        found(native, "gpu_launches", NATIVE_LAUNCH, true)
            && found(
                native,
                "gpu_sync_wait",
                "main;prefill;cudaDeviceSynchronize",
                true,
            )
            && found(native, cpu, "main", true)
            && found(python, "gpu_launches", PYTHON_LAUNCH, false)
            && found(python, "gpu_sync_wait", "prefill (gpu_launcher.py:31)", false)
            && found(python, cpu, "(gpu_launcher.py:", false)
    }
}

/// The native launcher's launch path, and the Python one's (its frames).
const NATIVE_LAUNCH: &str = "main;prefill;launch;cudaLaunchKernel";
const PYTHON_LAUNCH: &str = "prefill (gpu_launcher.py:31);launch (gpu_launcher.py:26)";

#[test]
fn run_ships_profiles_to_pyroscope_labelled_as_the_metrics_name_each_workload() {
    // The receiver refuses the first push (a server still starting): the
    // agent tries it again, and nothing counts as dropped.
    let receiver = PyroscopeReceiver::start(1);
    let workloads = TwoWorkloads::start();
    let (native, python) = (&workloads.native, &workloads.python);
    let url = receiver.url();
    let metrics = format!("127.0.0.1:{}", free_port());
    let args = workloads.run_args(&["--pyroscope-url", &url, "--prometheus-listen", &metrics]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let native_pid = native.pid().to_string();
    let credentials = [
        ("PYROSCOPE_TENANT_ID", Path::new("team-a")),
        ("PYROSCOPE_BASIC_AUTH_USER", Path::new("123456")),
        ("PYROSCOPE_BASIC_AUTH_PASSWORD", Path::new("glc_secret")),
    ];
    let agent = Agent::start_command("run", &credentials, &args);
    let (native_id, python_id) = (native.pid(), python.pid());
    // Until each process's launches and waits arrived with the frames that
    // made them, the native one's under its pod.
    let in_pod = |s: &Value| s["labels"]["k8s_pod_name"] == "vllm-0";
    let series = receiver.series_until("launch and wait stacks of both workloads", |received| {
        workloads.all_shipped("process_cpu", |pid, kind, path, pod| {
            received
                .iter()
                .any(|s| is_series(s, pid, kind) && has_path(s, path) && (!pod || in_pod(s)))
        })
    });
    // The first push was refused, so what arrived came from later ones.
    assert!(series.iter().all(|s| s["push"].as_u64() > Some(1)));
    let dropped = scrape(&metrics);
    agent.interrupt();
    assert_eq!(
        sample(
            &dropped,
            "inferscope_export_dropped_batches_total",
            &["exporter=\"pyroscope\"", "signal=\"profiles\""]
        ),
        Some(0.0),
        "the refused push was not tried again:\n{dropped}"
    );
    for s in &series {
        assert_eq!(s["tenant"], "team-a");
        // base64("123456:glc_secret")
        assert_eq!(s["authorization"], "Basic MTIzNDU2OmdsY19zZWNyZXQ=");
    }
    let last = |pid, kind: &str| {
        series
            .iter()
            .rev()
            .find(|s| is_series(s, pid, kind) && (pid != native_id || in_pod(s)))
            .unwrap_or_else(|| panic!("no {kind} of {pid}"))
    };
    let labels = &last(native_id, "gpu_launches")["labels"];
    let expected = [
        ("service_name", "inference/vllm"),
        ("k8s_namespace_name", "inference"),
        ("k8s_pod_name", "vllm-0"),
        ("k8s_container_name", "engine"),
        ("k8s_statefulset_name", "vllm"),
        ("k8s_node_name", NODE),
        ("container_id", CONTAINER),
        ("process_executable_name", "gpu_launcher"),
        ("process_pid", native_pid.as_str()),
    ];
    for (name, value) in expected {
        assert_eq!(labels[name], value, "{name} in {labels}");
    }
    let labels = &last(python_id, "process_cpu")["labels"];
    let executable = labels["process_executable_name"].as_str().unwrap();
    assert!(executable.starts_with("python3"), "{labels}");
    assert_eq!(labels["service_name"], executable, "{labels}");
    assert_eq!(labels["k8s_node_name"], NODE, "{labels}");
    assert!(labels.get("k8s_pod_name").is_none(), "{labels}");
    // Each kind says what its values are, as Pyroscope's views read them.
    let types = |pid, kind| {
        let p = &last(pid, kind)["profile"];
        (p["sample_types"].clone(), p["period_type"].clone())
    };
    for pid in [native_id, python_id] {
        assert_eq!(
            types(pid, "process_cpu"),
            (
                serde_json::json!([["samples", "count"], ["cpu", "nanoseconds"]]),
                serde_json::json!(["cpu", "nanoseconds"])
            )
        );
        assert_eq!(
            types(pid, "gpu_launches").0,
            serde_json::json!([["gpu_launches", "count"]])
        );
        assert_eq!(
            types(pid, "gpu_sync_wait").0,
            serde_json::json!([["gpu_sync_wait", "nanoseconds"]])
        );
    }
    // Launches end in the runtime's function; three quarters under prefill.
    let launches = stacks_of(last(native_id, "gpu_launches"));
    assert!(
        launches.iter().all(|(s, _)| s.ends_with("cudaLaunchKernel")),
        "{launches:?}"
    );
}

/// An OTLP profile as the receiver decoded it: is it `sample_type` and does a
/// sample of `pid` (in the pod, when `in_pod`) contain `path`?
fn otlp_has(profile: &Value, pid: u32, sample_type: &str, path: &str, in_pod: bool) -> bool {
    profile["sample_type"][0] == sample_type
        && profile["samples"].as_array().unwrap().iter().any(|s| {
            let attributes = &s["attributes"];
            attributes["process.pid"].as_i64() == Some(i64::from(pid))
                && (!in_pod || attributes["k8s.pod.name"] == "vllm-0")
                && s["values"][0].as_i64() > Some(0)
                && joined_frames(s).contains(path)
        })
}

/// The attributes of the last sample of `pid` in a `sample_type` profile.
fn otlp_attributes<'a>(profiles: &'a [Value], pid: u32, sample_type: &str) -> &'a Value {
    profiles
        .iter()
        .rev()
        .filter(|p| p["sample_type"][0] == sample_type)
        .flat_map(|p| p["samples"].as_array().unwrap().iter().rev())
        .map(|s| &s["attributes"])
        .find(|a| a["process.pid"].as_i64() == Some(i64::from(pid)))
        .unwrap_or_else(|| panic!("no {sample_type} sample of {pid}"))
}

#[test]
fn run_ships_otlp_profiles_over_grpc_with_the_metrics_resource_and_each_samples_workload() {
    // The collector refuses the first request (still starting): it is sent again.
    let receiver = OtlpProfilesReceiver::start(1);
    let workloads = TwoWorkloads::start();
    let (native, python) = (workloads.native.pid(), workloads.python.pid());
    let endpoint = receiver.grpc_endpoint();
    let metrics = format!("127.0.0.1:{}", free_port());
    let args = workloads.run_args(&[
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--prometheus-listen",
        &metrics,
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Compressed as asked: the receiver's gRPC server takes gzip as it comes.
    let headers = [
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            Path::new("authorization=Bearer%20s3cret"),
        ),
        ("OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION", Path::new("gzip")),
    ];
    let agent = Agent::start_command("run", &headers, &args);
    let profiles = receiver.profiles_until("launch and wait stacks of both workloads", |received| {
        workloads.all_shipped("samples", |pid, kind, path, pod| {
            received.iter().any(|p| otlp_has(p, pid, kind, path, pod))
        })
    });
    let exposition = scrape(&metrics);
    agent.interrupt();
    assert_eq!(
        sample(
            &exposition,
            "inferscope_export_dropped_batches_total",
            &["exporter=\"otlp\"", "signal=\"profiles\""]
        ),
        Some(0.0),
        "the refused request was not sent again:\n{exposition}"
    );
    for profile in &profiles {
        assert_eq!(profile["violations"], serde_json::json!([]), "{profile}");
        // The first request was refused, so what arrived came from later ones.
        assert!(profile["request"].as_u64() > Some(1), "{profile}");
        assert_eq!(profile["transport"], "grpc");
        assert_eq!(profile["authorization"], "Bearer s3cret");
        // The agent's resource, as its metrics carry it.
        let resource = &profile["resource"];
        assert_eq!(resource["service.name"], "inferscope", "{resource}");
        assert_eq!(resource["k8s.node.name"], NODE, "{resource}");
        assert!(resource["host.name"].is_string(), "{resource}");
        assert_eq!(profile["scope"], "inferscope");
    }
    // Each sample names its workload as the metrics name it.
    let attributes = otlp_attributes(&profiles, native, "gpu_launches");
    let expected = [
        ("k8s.namespace.name", "inference"),
        ("k8s.pod.name", "vllm-0"),
        ("k8s.container.name", "engine"),
        ("k8s.statefulset.name", "vllm"),
        ("container.id", CONTAINER),
        ("process.executable.name", "gpu_launcher"),
    ];
    for (name, value) in expected {
        assert_eq!(attributes[name], value, "{name} in {attributes}");
    }
    assert_eq!(attributes["process.pid"].as_i64(), Some(i64::from(native)));
    let attributes = otlp_attributes(&profiles, python, "samples");
    assert!(
        attributes["process.executable.name"]
            .as_str()
            .unwrap()
            .starts_with("python3"),
        "{attributes}"
    );
    assert!(attributes.get("k8s.pod.name").is_none(), "{attributes}");
    // Each kind says what its values are.
    let types = |sample_type: &str| {
        let p = profiles
            .iter()
            .find(|p| p["sample_type"][0] == sample_type)
            .unwrap();
        (p["sample_type"].clone(), p["period_type"].clone())
    };
    let pair = |a: &str, b: &str| serde_json::json!([a, b]);
    assert_eq!(
        types("samples"),
        (pair("samples", "count"), pair("cpu", "nanoseconds"))
    );
    assert_eq!(types("gpu_launches").0, pair("gpu_launches", "count"));
    assert_eq!(types("gpu_sync_wait").0, pair("gpu_sync_wait", "nanoseconds"));
}

#[test]
fn run_ships_otlp_profiles_over_http_where_the_environment_names_the_collector() {
    let receiver = OtlpProfilesReceiver::start(0);
    let burner = cpu_burner();
    let pid = burner.pid().to_string();
    let endpoint = receiver.http_endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", Path::new(&endpoint)),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", Path::new("gzip")),
    ];
    let agent = Agent::start_command(
        "run",
        &env,
        &[
            "--output",
            "none",
            "--profile",
            "--profile-every",
            "500ms",
            "--pid",
            &pid,
        ],
    );
    let profiles = receiver.profiles_until("the burner's CPU stacks", |received| {
        received
            .iter()
            .any(|p| otlp_has(p, burner.pid(), "samples", "main;hot_path;spin", false))
    });
    agent.interrupt();
    let profile = profiles.last().unwrap();
    assert_eq!(profile["transport"], "http");
    assert_eq!(profile["content_encoding"], "gzip");
    assert_eq!(profile["violations"], serde_json::json!([]), "{profile}");
    assert_eq!(profile["resource"]["service.name"], "inferscope");
}

#[test]
fn profiles_a_receiver_never_takes_are_counted_as_dropped_and_profiling_goes_on() {
    let burner = cpu_burner();
    let metrics = format!("127.0.0.1:{}", free_port());
    let pid = burner.pid().to_string();
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let mut agent = Agent::start_command(
        "run",
        &[],
        &[
            "--output",
            "none",
            "--profile",
            "--profile-every",
            "200ms",
            "--pyroscope-url",
            &nobody,
            "--prometheus-listen",
            &metrics,
            "--pid",
            &pid,
        ],
    );
    // Periods come faster than failing pushes go (three tries each): the
    // queue fills, and every period past it is counted at once.
    let name = "inferscope_export_dropped_batches_total";
    let labels = ["exporter=\"pyroscope\"", "signal=\"profiles\""];
    wait_until("dropped profile batches to be counted", || {
        sample(&scrape(&metrics), name, &labels).is_some_and(|n| n >= 2.0)
    });
    agent.wait_for_log("Pyroscope profile export failed, will keep trying");
    agent.interrupt();
}
