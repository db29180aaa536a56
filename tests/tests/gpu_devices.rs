//! GPU device figures through NVML and ROCm SMI, joined with the processes the
//! agent watches. Both vendors' libraries need a GPU; these tests load
//! stand-ins (tests/c/fake_nvml.c, fake_rocm_smi.c) that implement the same
//! entry points with known values, so every joined value is known exactly.
//! The real ROCm SMI, which this machine has without an AMD GPU, must cost
//! one line and nothing else.

use std::{fs, io::Write as _, net::TcpStream, path::Path};

use inferscope::model::{
    Counted, GpmView, GpuEventKind, GpuUsage, MigInstance, ProcessGpu, ServerRef, Snapshot, Vendor,
};
use inferscope_tests::{
    Agent, STEP, TestServer, Workload, chat_request, read_chunked_response, stub_library,
};

const GIB: u64 = 1 << 30;

/// A script for the stand-in: an H100 running `on_first` (37 % SM), a GPU that is
/// lost, and an L4 where `on_third` has memory but no utilisation samples.
fn script(dir: &Path, on_first: u32, on_third: u32) -> std::path::PathBuf {
    let path = dir.join(format!("nvml-script-{on_first}"));
    fs::write(
        &path,
        format!(
            "device GPU-11111111-2222-3333-4444-555555555555 NVIDIA_H100_80GB_HBM3 00000000:18:00.0 \
             87 41 {used} {total} 64 312500 700000 5000000 1980 2619 1048576 524288 5 2 0\n\
             failing\n\
             device GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee NVIDIA_L4 00000000:3b:00.0 \
             0 0 {small} {small_total} 35 16000 72000 20000 210 6250 0 0 1 0 0\n\
             process 0 {on_first} {first_mem} 37 12\n\
             process 2 {on_third} {third_mem} -1 -1\n\
             xid 0 79\n\
             gpm 0 96.7 14.3 93.8 23.9\n\
             mig 2 2 {mig_used} {mig_total}\n",
            mig_used = 3 * GIB,
            mig_total = 10 * GIB,
            used = 20 * GIB,
            total = 80 * GIB,
            small = GIB,
            small_total = 24 * GIB,
            first_mem = 2 * GIB,
            third_mem = 512 << 20,
        ),
    )
    .unwrap();
    path
}

/// Reads snapshots until `done` holds for one, which it returns.
fn snapshot_where(agent: &mut Agent, what: &str, mut done: impl FnMut(&Snapshot) -> bool) -> Snapshot {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        assert!(std::time::Instant::now() < deadline, "no snapshot with {what}");
        let s = agent.next_snapshot(what);
        if done(&s) {
            return s;
        }
    }
}

fn launches(s: &Snapshot, pid: u32) -> Option<u64> {
    let p = s.processes.iter().find(|p| p.identity.pid == pid)?;
    Some(p.gpu.total.kernel_launches)
}

#[test]
fn devices_processes_and_xid_errors_from_nvml_are_joined_with_runtime_activity() {
    let lib = stub_library("libcudart.so.12");
    let mut first = Workload::start("cudart", &lib, 10, 4096);
    let mut third = Workload::start("cudart", &lib, 10, 4096);
    let dir = std::env::temp_dir();
    let script = script(&dir, first.pid(), third.pid());
    let fake = stub_library("libnvidia-ml.so.1");
    let mut agent = Agent::start_with_env(
        &[("FAKE_NVML_SCRIPT", &script)],
        &["--nvml-library", fake.to_str().unwrap()],
    );
    // Every snapshot's events are kept: the XID arrives once, in whichever interval.
    let mut events = Vec::new();
    snapshot_where(&mut agent, "the workload tracked", |s| {
        events.extend(s.gpu_events.iter().cloned());
        launches(s, first.pid()).is_some()
    });
    let tally = first.run_calls();

    // The lost GPU costs one line and nothing else: both others are listed.
    let s = snapshot_where(&mut agent, "both devices, the XID, the workload's calls", |s| {
        events.extend(s.gpu_events.iter().cloned());
        s.devices.len() == 2
            && s.devices[0].xid_errors.total == 1
            && launches(s, first.pid()) == tally["kernel_launches"].as_u64()
    });
    agent.wait_for_log("NVML device 1: cannot read uuid");
    assert_eq!(
        events
            .iter()
            .map(|e| (e.index, e.uuid.as_str(), e.kind.clone()))
            .collect::<Vec<_>>(),
        [(
            0,
            "GPU-11111111-2222-3333-4444-555555555555",
            GpuEventKind::Xid { xid: 79 }
        )]
    );
    let h100 = &s.devices[0];
    assert_eq!(
        (h100.vendor, h100.index, h100.uuid.as_str(), h100.name.as_str()),
        (
            Vendor::Nvidia,
            0,
            "GPU-11111111-2222-3333-4444-555555555555",
            "NVIDIA_H100_80GB_HBM3"
        )
    );
    assert_eq!(h100.pci_bus_id.as_deref(), Some("00000000:18:00.0"));
    assert_eq!(
        (h100.utilization_percent, h100.memory_utilization_percent),
        (Some(87), Some(41))
    );
    assert_eq!(
        (h100.memory_used_bytes, h100.memory_total_bytes),
        (Some(20 * GIB), Some(80 * GIB))
    );
    assert_eq!(
        (h100.temperature_celsius, h100.power_watts, h100.power_limit_watts),
        (Some(64), Some(312.5), Some(700.0))
    );
    assert_eq!(
        (h100.sm_clock_mhz, h100.memory_clock_mhz),
        (Some(1980), Some(2619))
    );
    assert_eq!(
        (h100.pcie_tx_bytes_per_second, h100.pcie_rx_bytes_per_second),
        (Some(1 << 30), Some(1 << 29))
    );
    assert_eq!(
        h100.clock_event_reasons.as_deref(),
        Some(&["gpu_idle".to_string(), "sw_power_cap".to_string()][..])
    );
    assert_eq!((h100.ecc_enabled, h100.mig_enabled), (Some(true), Some(false)));
    assert_eq!(
        (
            h100.ecc_corrected_errors.clone().map(|c| c.total),
            h100.ecc_uncorrected_errors.clone().map(|c| c.total)
        ),
        (Some(2), Some(0))
    );
    // The stand-in's energy counter grows by exactly 1 J per read: one read per interval.
    let energy = h100.energy_joules.clone().unwrap();
    assert!(energy.total > 5000.0, "{energy:?}");
    let later = agent.next_snapshot("the next snapshot");
    assert_eq!(
        later.devices[0].energy_joules.as_ref().map(|e| e.delta),
        Some(1.0)
    );
    assert_eq!(later.devices[0].xid_errors, Counted { total: 1, delta: 0 });
    // GPM on the H100 only (an L4 has none), between this read and the last.
    assert_eq!(
        later.devices[0].gpm,
        Some(GpmView {
            sm_active_percent: Some(96.7),
            sm_occupancy_percent: Some(14.3),
            tensor_active_percent: Some(93.8),
            dram_bandwidth_percent: Some(23.9),
        })
    );
    assert_eq!(later.devices[1].gpm, None);
    // The L4 in MIG mode, with its two instances (five empty slots are not instances).
    let l4 = &later.devices[1];
    assert_eq!(l4.mig_enabled, Some(true));
    assert_eq!(
        l4.mig_instances,
        [0, 1].map(|i| MigInstance {
            index: i,
            uuid: format!("MIG-2{i}-4d2c-5b3a-8e9f-0a1b2c3d4e5f"),
            memory_used_bytes: Some(3 * GIB),
            memory_total_bytes: Some(10 * GIB),
        })
    );

    // Per process: NVML's memory and SM share joined with the runtime activity.
    let view = later
        .processes
        .iter()
        .find(|p| p.identity.pid == first.pid())
        .expect("the workload in the snapshot");
    assert_eq!(
        view.gpus,
        [ProcessGpu {
            uuid: "GPU-11111111-2222-3333-4444-555555555555".into(),
            index: 0,
            usage: GpuUsage {
                memory_used_bytes: Some(2 * GIB),
                sm_utilization_percent: Some(37),
                memory_utilization_percent: Some(12),
            },
        }]
    );
    // No utilisation samples (NOT_FOUND) means no activity, not an unknown.
    let other = later
        .processes
        .iter()
        .find(|p| p.identity.pid == third.pid())
        .expect("the second workload in the snapshot");
    assert_eq!(
        other
            .gpus
            .iter()
            .map(|g| (g.index, g.usage.memory_used_bytes, g.usage.sm_utilization_percent))
            .collect::<Vec<_>>(),
        [(2, Some(512 << 20), Some(0))]
    );
    first.exit();
    third.run_calls();
    third.exit();
}

#[test]
fn amd_gpu_figures_come_from_rocm_smi() {
    let fake = stub_library("librocm_smi64.so.1");
    let mut agent = Agent::start(&["--rocm-smi-library", fake.to_str().unwrap()]);
    agent.wait_for_log("ROCm SMI: 1 AMD GPU(s)");
    let first = snapshot_where(&mut agent, "the AMD GPU", |s| !s.devices.is_empty());
    let next = agent.next_snapshot("the next snapshot");
    let amd: Vec<_> = [&first, &next]
        .iter()
        .map(|s| {
            let [d] = s.devices.as_slice() else {
                panic!("one device expected: {:?}", s.devices)
            };
            d.clone()
        })
        .collect();
    let d = &amd[1];
    assert_eq!(
        (d.vendor, d.index, d.uuid.as_str(), d.name.as_str()),
        (Vendor::Amd, 0, "4f5c2a1b3d6e7f80", "AMD Instinct MI300X")
    );
    assert_eq!(d.pci_bus_id.as_deref(), Some("0000:83:00.0"));
    assert_eq!(
        (d.utilization_percent, d.memory_used_bytes, d.memory_total_bytes),
        (Some(63), Some(96 * GIB), Some(192 * GIB))
    );
    assert_eq!((d.temperature_celsius, d.power_watts), (Some(58), Some(550.0)));
    // 1 J per read, one read per snapshot.
    let energy = d.energy_joules.clone().unwrap();
    assert_eq!(energy.delta, 1.0);
    assert_eq!(energy.total, amd[0].energy_joules.clone().unwrap().total + 1.0);
}

#[test]
fn without_an_amd_gpu_the_real_rocm_smi_costs_one_line() {
    // Not even loaded where no amdgpu driver is: ROCm SMI would print its own errors.
    let mut agent = Agent::start(&[]);
    agent.wait_for_log("no AMD GPU (no amdgpu driver");
    // Named on the command line, it is initialised, fails, and the agent carries on.
    let real = Path::new("/usr/lib/librocm_smi64.so.1");
    assert!(
        real.exists(),
        "Debian's librocm-smi64-1 is missing (.ci/run installs it)"
    );
    let mut agent = Agent::start(&["--rocm-smi-library", real.to_str().unwrap()]);
    agent.wait_for_log("no AMD GPU driver or device");
    for _ in 0..3 {
        let s = agent.next_snapshot("snapshots without AMD devices");
        assert!(
            s.devices.iter().all(|d| d.vendor != Vendor::Amd),
            "{:?}",
            s.devices
        );
    }
}

/// A server that runs its model in-process: its requests, its GPU runtime
/// activity and NVML's figures for it meet in one process, and the GPU's
/// energy is divided by the tokens it served.
#[test]
fn a_server_on_a_gpu_gets_its_tokens_per_second_and_energy_per_token() {
    let lib = stub_library("libcudart.so.12");
    let server = TestServer::start_program_with(
        Path::new(env!("CARGO_BIN_EXE_sse_truth_server")),
        &["--gpu-library", lib.to_str().unwrap()],
    );
    let script = std::env::temp_dir().join(format!("nvml-script-server-{}", server.pid()));
    fs::write(
        &script,
        format!(
            "device GPU-99999999-2222-3333-4444-555555555555 NVIDIA_H100_80GB_HBM3 00000000:18:00.0 \
             55 20 {used} {total} 60 400000 700000 1000000 1980 2619 0 0 0 0 0\n\
             process 0 {pid} {used} 55 20\n",
            used = 4 * GIB,
            total = 80 * GIB,
            pid = server.pid(),
        ),
    )
    .unwrap();
    let fake = stub_library("libnvidia-ml.so.1");
    let mut agent = Agent::start_with_env(
        &[("FAKE_NVML_SCRIPT", &script)],
        &["--nvml-library", fake.to_str().unwrap()],
    );
    let pid = server.pid();
    snapshot_where(&mut agent, "the server as a GPU process", |s| {
        s.processes
            .iter()
            .any(|p| p.identity.pid == pid && !p.gpus.is_empty())
    });
    agent.wait_for_log(&format!("capturing requests to port {} (pid {pid})", server.port));
    let mut conn = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    conn.write_all(&chat_request("on-gpu", 8, 30, 5, false)).unwrap();
    read_chunked_response(&mut conn);
    let s = snapshot_where(&mut agent, "the request finished", |s| {
        s.servers
            .iter()
            .filter(|v| v.pid == pid)
            .any(|v| v.models.iter().any(|m| m.requests.delta.requests == 1))
    });
    let key = ServerRef {
        pid,
        port: server.port,
    };
    let process = s.processes.iter().find(|p| p.identity.pid == pid).unwrap();
    assert_eq!(process.serves, [key]);
    assert_eq!(process.gpus[0].usage.memory_used_bytes, Some(4 * GIB));
    // The stand-in's energy grows by exactly 1 J per read, one read per snapshot;
    // the interval's 8 tokens share it.
    let d = &s.devices[0];
    assert_eq!(d.energy_joules.as_ref().map(|e| e.delta), Some(1.0));
    assert_eq!(d.energy_per_output_token_joules, Some(0.125));
    let per_second = 8.0 / s.interval.as_secs_f64();
    assert!(
        d.output_tokens_per_second
            .is_some_and(|t| (t - per_second).abs() < 1e-9),
        "{:?} vs {per_second}",
        d.output_tokens_per_second
    );
    let model = &s.servers.iter().find(|v| v.pid == pid).unwrap().models[0];
    assert_eq!(
        (
            model.model.as_str(),
            model.energy_joules,
            model.energy_per_output_token_joules
        ),
        ("on-gpu", Some(1.0), Some(0.125))
    );
}
