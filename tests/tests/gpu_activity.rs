//! Per-process GPU activity, end to end: the real agent binary, real eBPF, real
//! processes calling real (or stand-in) GPU runtime libraries. Each test
//! compares the agent's figures with the workload's own exact tally.

use std::collections::HashSet;

use inferscope_tests::{
    Agent, Calls, Churn, Workload, comparable, links_of_program, pids_in_kernel_maps, real_library,
    receivers::wait_until, stub_library,
};
use serde_json::json;

const ROUNDS: u32 = 50;
const BYTES: u64 = 4096;

/// Starts the workload, waits until the agent tracks it, runs it, and compares.
fn counted_exactly(agent: &mut Agent, workload: Workload) -> serde_json::Value {
    agent.wait_until_tracked(workload.pid());
    counted_at_once(agent, workload)
}

/// Runs the workload without waiting for the agent, and compares.
fn counted_at_once(agent: &mut Agent, mut workload: Workload) -> serde_json::Value {
    let pid = workload.pid();
    let tally = workload.run_calls();
    workload.exit();
    let seen = agent.activity_until_exit(pid);
    assert_eq!(
        comparable(&seen),
        tally,
        "agent (left) vs the workload's tally (right) for pid {pid}"
    );
    seen
}

#[test]
fn real_cuda_runtime_calls_are_counted_exactly() {
    let mut agent = Agent::start(&[]);
    let lib = real_library("libcudart.so.12");
    let seen = counted_exactly(&mut agent, Workload::start("cudart", &lib, ROUNDS, BYTES));
    // Without a GPU every call fails fast; what matters is that each was seen.
    assert_eq!(seen["kernel_launches"], json!(3 * ROUNDS));
    // Eight copies with the kind fourth or fifth, two (the array copies) with it sixth.
    assert_eq!(seen["memcpy_calls"], json!(10 * ROUNDS));
}

#[test]
fn real_hip_calls_are_counted_exactly() {
    let mut agent = Agent::start(&[]);
    let lib = real_library("libamdhip64.so.5");
    let seen = counted_exactly(&mut agent, Workload::start("hip", &lib, ROUNDS, BYTES));
    assert_eq!(seen["kernel_launches"], json!(2 * ROUNDS));
}

#[test]
fn runtime_calls_through_the_driver_are_counted_once_and_direct_driver_calls_too() {
    let mut agent = Agent::start(&[]);
    let lib = stub_library("libcudart.so.12");
    let seen = counted_exactly(&mut agent, Workload::start("cudart+cuda", &lib, ROUNDS, BYTES));
    // Stand-ins succeed: every second allocation stays live, none is an error.
    assert_eq!(seen["errors"], json!(0));
    assert_eq!(seen["live_bytes"], json!((2 * ROUNDS as u64 / 2) * BYTES));
    // The stand-in driver blocks 1 ms per synchronisation: a floor, not a timing.
    let syncs = seen["sync_calls"].as_u64().unwrap() as f64;
    assert!(seen["sync_seconds"].as_f64().unwrap() >= syncs * 0.001, "{seen}");
}

#[test]
fn nccl_bytes_are_element_count_times_datatype_size() {
    let mut agent = Agent::start(&[]);
    let lib = stub_library("libnccl.so.2");
    let seen = counted_exactly(&mut agent, Workload::start("nccl", &lib, ROUNDS, BYTES));
    assert_eq!(
        seen["nccl"]["all_reduce"]["bytes"],
        json!(ROUNDS as u64 * (BYTES / 8) * 4)
    );
}

#[test]
fn a_library_dlopened_after_start_is_found_when_the_loader_reports_it() {
    let mut agent = Agent::start(&[]);
    let lib = stub_library("libcudart.so.12");
    let mut w = Workload::start_with(&[], "cudart", &lib, ROUNDS, BYTES, Calls::LoadLate);
    let pid = w.pid();
    // Running but without a GPU runtime: not tracked yet.
    let report = agent.next_report("a report before dlopen");
    assert!(
        inferscope_tests::process(&report, pid).is_none(),
        "tracked before it loaded a runtime"
    );
    w.say("open");
    w.expect("ready");
    counted_exactly(&mut agent, w);
}

#[test]
fn two_processes_sharing_one_library_file_are_counted_apart() {
    let mut agent = Agent::start(&[]);
    let lib = real_library("libcudart.so.12");
    let mut a = Workload::start("cudart", &lib, 10, BYTES);
    let mut b = Workload::start("cudart", &lib, 30, BYTES);
    agent.wait_until_tracked(a.pid());
    agent.wait_until_tracked(b.pid());
    let (tally_a, tally_b) = (a.run_calls(), b.run_calls());
    let (pid_a, pid_b) = (a.pid(), b.pid());
    a.exit();
    b.exit();
    let seen = agent.activities_until_exit(&[pid_a, pid_b]);
    assert_eq!(comparable(&seen[0]), tally_a, "first process");
    assert_eq!(comparable(&seen[1]), tally_b, "second process");
}

#[test]
fn an_exited_process_is_reported_once_more_then_released() {
    let mut agent = Agent::start(&[]);
    let lib = stub_library("libcudart.so.12");
    let w = Workload::start("cudart", &lib, 5, BYTES);
    let pid = w.pid();
    counted_exactly(&mut agent, w);
    let after = agent.next_report("the report after the exit");
    assert!(
        inferscope_tests::process(&after, pid).is_none(),
        "pid {pid} still reported after its exit"
    );
}

/// Probing a library takes time (on a GPU machine 3 s for the CUDA driver,
/// while its process created a context): a process that loads a library the
/// previous user just left finds it still probed, and is counted from its
/// first call without waiting for the agent.
#[test]
fn a_process_loading_a_library_its_last_user_just_left_is_counted_from_its_first_call() {
    let mut agent = Agent::start(&[]);
    let lib = real_library("libcudart.so.12");
    counted_exactly(&mut agent, Workload::start("cudart", &lib, 5, BYTES));
    counted_at_once(&mut agent, Workload::start("cudart", &lib, ROUNDS, BYTES));
}

/// No probe stays on a library nobody maps once the linger is over: gone from
/// the kernel, not only from the agent's books.
#[test]
fn a_library_nobody_maps_loses_its_probes_after_the_linger() {
    let mut agent = Agent::start(&["--probe-linger", "100ms"]);
    // Runtimes installed where loaders look keep theirs (on this host, Debian's HIP).
    let installed = links_of_program(agent.pid(), "gpu_call");
    let lib = stub_library("libcudart.so.12");
    let mut w = Workload::start("cudart", &lib, 5, BYTES);
    let pid = w.pid();
    agent.wait_until_tracked(pid);
    assert!(
        links_of_program(agent.pid(), "gpu_call") > installed,
        "no GPU probe attached"
    );
    w.run_calls();
    w.exit();
    agent.activity_until_exit(pid);
    agent.wait_for_log("probes detached");
    wait_until("the agent's GPU probes to leave the kernel", || {
        links_of_program(agent.pid(), "gpu_call") == installed
    });
}

/// A library visible only inside another mount namespace (as in a container) is
/// reached through /proc/PID/map_files, not by its path.
/// Children forked from a process that maps the runtime run no loader and no
/// exec before their calls: the agent learns of them from the counters alone,
/// often after they are gone. Each must be reported under the name it gave
/// itself with every call, whether it exited, exec'd a program without a GPU
/// runtime, or died with a thread inside a call; and no kernel entry may
/// outlive it.
#[test]
fn every_short_lived_process_is_reported_by_name_with_every_call() {
    const CHILDREN: u32 = 300;
    let mut agent = Agent::start(&[]);
    let mut churn = Churn::start(&stub_library("libcudart.so.12"), CHILDREN);
    agent.wait_until_tracked(churn.pid());
    let children = churn.run();
    let pids: Vec<u32> = children
        .iter()
        .map(|c| c["pid"].as_u64().unwrap() as u32)
        .collect();
    let reported = agent.processes_until_exit(&pids);
    for (child, seen) in children.iter().zip(&reported) {
        assert!(
            seen.names.iter().any(|n| n == child["name"].as_str().unwrap()),
            "{child}: reported only as {:?}",
            seen.names
        );
        let total = &seen.last["gpu"]["total"];
        for field in ["kernel_launches", "memcpy_calls", "sync_calls"] {
            assert_eq!(total[field], child[field], "{child}: {field} of {total}");
        }
        assert_eq!(total["memcpy_bytes"]["htod"], child["htod"], "{child}: {total}");
    }
    churn.exit();
    let pids: HashSet<u32> = pids.into_iter().collect();
    wait_until("no kernel map to hold an entry of a child", || {
        pids_in_kernel_maps(&pids).is_empty()
    });
}

#[test]
fn a_library_in_another_mount_namespace_is_probed() {
    let mut agent = Agent::start(&[]);
    let lib = real_library("libcudart.so.12");
    let private = "/mnt/inferscope-test-ns";
    std::fs::create_dir_all(private).unwrap();
    let script = format!(
        "mount -t tmpfs none {private} && cp {} {private}/ && exec \"$0\" \"$@\"",
        lib.display()
    );
    let unshare = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ];
    let inside = std::path::Path::new(private).join("libcudart.so.12");
    let w = Workload::start_with(&unshare, "cudart", &inside, ROUNDS, BYTES, Calls::WhenTold);
    assert!(
        !inside.exists(),
        "the tmpfs should be invisible outside the namespace"
    );
    counted_exactly(&mut agent, w);
}

/// A stand-in for a running container (`container`, tests/c): a mount
/// namespace set up before its first program, `cat`, which lives until dropped.
struct Container(std::process::Child);

impl Container {
    /// `mounts`: the launcher's `--tmpfs DIR` and `--bind SOURCE TARGET` arguments.
    fn start(mounts: &[&str]) -> Self {
        let child = std::process::Command::new(inferscope_tests::test_bin("container"))
            .args(mounts)
            .args(["--", "cat"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("starting the container stand-in");
        let pid = child.id();
        let container = Self(child);
        let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        wait_until("the container's program to run in its own namespace", || {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|ns| ns != own)
                && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "cat")
        });
        container
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// A workload started inside it that loads `library` and calls it at once;
    /// returns it with its tally.
    fn call_at_once(&self, library: &str, rounds: u32) -> (Workload, serde_json::Value) {
        let pid = self.pid().to_string();
        let enter = ["nsenter", "-t", &pid, "-m", "--"];
        let mut w = Workload::start_with(
            &enter,
            "cudart",
            std::path::Path::new(library),
            rounds,
            BYTES,
            Calls::AtOnce,
        );
        let tally = w.tally();
        (w, tally)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `runs` workloads in `container`, one after another, each loading
/// `library` and calling it at once: each must be counted exactly, and from
/// its start.
fn each_counted_from_its_first_call(agent: &mut Agent, container: &Container, library: &str, runs: u32) {
    for run in 0..runs {
        let (w, tally) = container.call_at_once(library, ROUNDS + run);
        let pid = w.pid();
        w.exit();
        let seen = agent.processes_until_exit(&[pid]).remove(0).last;
        assert_eq!(
            comparable(&seen["gpu"]["total"]),
            tally,
            "run {} of {runs} (pid {pid}): agent (left) vs the workload's tally (right)",
            run + 1
        );
        assert!(
            seen.get("counted_since").is_none(),
            "run {}: said to be counted only since some time: {seen}",
            run + 1
        );
    }
}

/// A process that loads its runtime and calls it straight away is counted
/// from its first call when the runtime is installed where Python packages
/// put it: the agent probed the file at start, before any process mapped it.
/// Probed only once a process maps it, such calls were lost (all of them
/// inside Debian 6.12 under QEMU). Here, NVIDIA's wheel in the conda
/// environment of a container that was running when the agent started.
#[test]
fn a_process_calling_its_runtime_right_after_loading_it_is_counted_from_its_first_call() {
    const RUNS: u32 = 20;
    let ns = Namespaces::new("at-once");
    let packages = ns.dir("site-packages");
    let lib_dir = ns.dir("site-packages/nvidia/cuda_runtime/lib");
    std::fs::copy(real_library("libcudart.so.12"), lib_dir.join("libcudart.so.12")).unwrap();
    let site = "/opt/conda/lib/python3.11/site-packages";
    let container = Container::start(&["--tmpfs", "/opt", "--bind", packages.to_str().unwrap(), site]);
    let mut agent = Agent::start(&[]);
    let library = format!("{site}/nvidia/cuda_runtime/lib/libcudart.so.12");
    each_counted_from_its_first_call(&mut agent, &container, &library, RUNS);
}

/// A container started after the agent: the runtime its image registers in
/// its `ld.so.cache` is probed when its first program starts, before any
/// process loads it, under the identity its processes' mappings will have.
#[test]
fn a_container_started_later_has_its_installed_runtime_probed_before_anything_loads_it() {
    let mut agent = Agent::start(&[]);
    let ns = Namespaces::new("new-container");
    let image = ns.dir("image");
    let lib_dir = ns.dir("image/opt/cuda/lib64");
    std::fs::copy(real_library("libcudart.so.12"), lib_dir.join("libcudart.so.12")).unwrap();
    std::fs::create_dir_all(image.join("etc")).unwrap();
    std::fs::write(image.join("etc/ld.so.conf"), "/opt/cuda/lib64\n").unwrap();
    // The image's cache, written as in its build, by glibc's ldconfig.
    let status = std::process::Command::new("/sbin/ldconfig")
        .args(["-X", "-r"])
        .arg(&image)
        .status()
        .expect("running ldconfig");
    assert!(status.success(), "ldconfig -r {} failed", image.display());
    let container = Container::start(&[
        "--tmpfs",
        "/opt",
        "--bind",
        lib_dir.to_str().unwrap(),
        "/opt/cuda/lib64",
        "--bind",
        image.join("etc/ld.so.cache").to_str().unwrap(),
        "/etc/ld.so.cache",
    ]);
    // Logged once every function is probed (the first probes are in the
    // kernel earlier, and a process started then would have calls uncounted).
    agent.wait_for_log(&format!(
        "cudart functions in /opt/cuda/lib64/libcudart.so.12, installed in the mount namespace of pid {}",
        container.pid()
    ));
    each_counted_from_its_first_call(&mut agent, &container, "/opt/cuda/lib64/libcudart.so.12", 3);
}

/// A runtime where nothing looks is probed once a process maps it: calls the
/// process made before may be missing, and its report says from when on
/// every call is counted.
#[test]
fn a_runtime_probed_only_once_loaded_has_its_process_say_since_when_it_is_counted() {
    let mut agent = Agent::start(&[]);
    let ns = Namespaces::new("unusual");
    let lib = ns.dir("vendor/lib").join("libcudart.so.12");
    std::fs::copy(real_library("libcudart.so.12"), &lib).unwrap();
    let before_start = std::time::SystemTime::now();
    let w = Workload::start("cudart", &lib, ROUNDS, BYTES);
    let tracked = agent.wait_until_tracked(w.pid());
    let view: inferscope::model::ProcessView =
        serde_json::from_value(tracked.clone()).unwrap_or_else(|e| panic!("{e}: {tracked}"));
    let since = view
        .counted_since
        .unwrap_or_else(|| panic!("no counted_since: {tracked}"));
    assert!(
        since >= before_start && since <= std::time::SystemTime::now(),
        "counted since {since:?}, the process started after {before_start:?}"
    );
    // Its calls from then on are all counted.
    counted_at_once(&mut agent, w);
}

/// Files for processes that each see a library in a mount namespace of their own.
struct Namespaces {
    dir: std::path::PathBuf,
}

impl Namespaces {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("inferscope-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    /// A directory of it, created.
    fn dir(&self, name: &str) -> std::path::PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The workload in a mount namespace of its own where `mount` runs first.
    fn start(&self, mount: &str, library: &std::path::Path, rounds: u32) -> Workload {
        let script = format!("{mount} && exec \"$0\" \"$@\"");
        let unshare = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ];
        Workload::start_with(&unshare, "cudart", library, rounds, BYTES, Calls::WhenTold)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs every workload once each is tracked, and checks each was counted exactly.
fn each_counted_exactly(agent: &mut Agent, mut workloads: Vec<Workload>) {
    for w in &workloads {
        agent.wait_until_tracked(w.pid());
    }
    let tallies: Vec<_> = workloads.iter_mut().map(Workload::run_calls).collect();
    let pids: Vec<u32> = workloads.iter().map(Workload::pid).collect();
    workloads.into_iter().for_each(Workload::exit);
    let seen = agent.activities_until_exit(&pids);
    for (i, (seen, tally)) in seen.iter().zip(&tallies).enumerate() {
        assert_eq!(
            comparable(seen),
            *tally,
            "process {i} of {} (pid {}): agent (left) vs its tally (right)",
            pids.len(),
            pids[i]
        );
    }
}

/// Replicas of one container image map one library through overlay mounts of
/// one lower layer: /proc shows each replica's file as an inode of its own,
/// while uprobes are set on the file underneath, which all of them share.
/// Probed once per replica, each call was counted once per replica.
#[test]
fn replicas_of_one_image_are_counted_once_each() {
    const REPLICAS: u32 = 8;
    let mut agent = Agent::start(&[]);
    let ns = Namespaces::new("replicas");
    let lower = ns.dir("lower");
    std::fs::copy(real_library("libcudart.so.12"), lower.join("libcudart.so.12")).unwrap();
    let image = ns.dir("image");
    let replicas = (0..REPLICAS)
        .map(|i| {
            let mount = format!(
                "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {}",
                lower.display(),
                ns.dir(&format!("upper-{i}")).display(),
                ns.dir(&format!("work-{i}")).display(),
                image.display()
            );
            ns.start(&mount, &image.join("libcudart.so.12"), ROUNDS + i)
        })
        .collect();
    each_counted_exactly(&mut agent, replicas);
}

/// One file bind-mounted into two mount namespaces is one inode: one probe.
#[test]
fn a_library_bind_mounted_into_two_namespaces_is_counted_once_in_each() {
    let mut agent = Agent::start(&[]);
    let ns = Namespaces::new("bind");
    let target = ns.dir("mnt").join("libcudart.so.12");
    std::fs::write(&target, b"").unwrap();
    let mount = format!(
        "mount -o bind {} {}",
        real_library("libcudart.so.12").display(),
        target.display()
    );
    let both = vec![
        ns.start(&mount, &target, ROUNDS),
        ns.start(&mount, &target, ROUNDS + 1),
    ];
    each_counted_exactly(&mut agent, both);
}

/// A library replaced on disk while a process maps it is a new file: the old
/// version's user and the new one's are each counted once, by their own probes.
#[test]
fn a_library_replaced_while_mapped_is_counted_once_per_version() {
    let mut agent = Agent::start(&[]);
    let ns = Namespaces::new("replaced");
    let lib = ns.dir("lib").join("libcudart.so.12");
    std::fs::copy(real_library("libcudart.so.12"), &lib).unwrap();
    let old = Workload::start("cudart", &lib, ROUNDS, BYTES);
    agent.wait_until_tracked(old.pid());
    // As a package upgrade does: a new file renamed over the old name.
    let next = lib.with_extension("new");
    std::fs::copy(real_library("libcudart.so.12"), &next).unwrap();
    std::fs::rename(&next, &lib).unwrap();
    let new = Workload::start("cudart", &lib, ROUNDS + 1, BYTES);
    each_counted_exactly(&mut agent, vec![old, new]);
}

#[test]
fn only_the_named_pid_is_reported_with_pid_filter() {
    let lib = stub_library("libcudart.so.12");
    let mut other = Workload::start("cudart", &lib, 1, BYTES);
    let w = Workload::start("cudart", &lib, 5, BYTES);
    let mut agent = Agent::start(&["--pid", &w.pid().to_string()]);
    let report = agent.next_report("a filtered report");
    assert!(
        inferscope_tests::process(&report, other.pid()).is_none(),
        "{report}"
    );
    counted_exactly(&mut agent, w);
    other.run_calls();
    other.exit();
}

#[test]
fn a_cuda_runtime_linked_statically_into_the_executable_is_found_by_its_symbols() {
    let mut agent = Agent::start(&[]);
    let workload = inferscope_tests::test_bin("gpu_workload_static");
    assert!(
        workload.exists(),
        "{} was not built: libcudart_static.a missing",
        workload.display()
    );
    let w = Workload::start_program(&workload, "cudart", std::path::Path::new("-"), ROUNDS, BYTES);
    let seen = counted_exactly(&mut agent, w);
    assert_eq!(seen["kernel_launches"], json!(3 * ROUNDS));
}
