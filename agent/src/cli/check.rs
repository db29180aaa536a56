//! `inferscope check`: what this host supports, found by trying it, and whether
//! the agent can run here (exit status 1 with one sentence when it cannot).

use std::{path::Path, process::ExitCode};

use anyhow::{Result, anyhow};
use aya::Btf;

use inferscope_shared::NET_CAPTURE_MAX;

use crate::{
    discover::{
        Discovery,
        installed::{self, LoaderEnv, Root},
    },
    model::DeviceView,
    probes::{
        self, GpuProbes, NetProbes, ProcessProbes, ProfileProbes, compat,
        host::{self, AttachType, CAPABILITIES, Capabilities},
    },
    profile::DEFAULT_GPU_CALL_STACK_EVERY,
    sources::{NvmlSource, RocmSmiSource},
};

struct Findings {
    fatal: Option<String>,
}

impl Findings {
    fn line(&self, ok: bool, what: &str, detail: impl std::fmt::Display) {
        println!("{:<4} {what:<26} {detail}", if ok { "ok" } else { "no" });
    }

    fn fatal(&mut self, reason: String) {
        self.fatal.get_or_insert(reason);
    }
}

pub fn check() -> Result<ExitCode> {
    let mut f = Findings { fatal: None };
    f.line(true, "kernel", host::machine_description());

    let release = host::kernel_release();
    let floor = compat::oldest_supported_kernel();
    let old = compat::parse_release(&release).is_some_and(|v| v < floor);
    f.line(
        !old,
        "kernel version",
        format!("{release} (oldest supported: {}.{})", floor.0, floor.1),
    );
    if old {
        f.fatal(format!(
            "kernel {release} is older than {}.{}, the oldest the agent supports",
            floor.0, floor.1
        ));
    }

    let effective = Capabilities::effective()?;
    for c in &CAPABILITIES {
        let ok = effective.has(c);
        let detail = match (ok, c.without) {
            (true, _) => c.used_for.to_string(),
            (false, None) => format!("missing: the agent cannot {}", c.used_for),
            (false, Some(cost)) => format!("missing: {cost}"),
        };
        f.line(ok, c.name, detail);
    }
    let required_missing = effective.missing_required();
    if !required_missing.is_empty() {
        f.fatal(format!(
            "inferscope needs root or the capabilities it lacks: {}",
            required_missing.join(", ")
        ));
    }

    let btf = Btf::from_sys_fs();
    f.line(
        btf.is_ok(),
        "BTF",
        if btf.is_ok() {
            "/sys/kernel/btf/vmlinux".to_string()
        } else {
            "missing: kernel built without CONFIG_DEBUG_INFO_BTF".to_string()
        },
    );
    if btf.is_err() {
        f.fatal(
            "the kernel has no BTF (/sys/kernel/btf/vmlinux), which the agent's CO-RE programs need".into(),
        );
    }

    let tracefs = if effective.can_mount() || Path::new(host::TRACEFS).join("events").exists() {
        host::ensure_tracefs()
    } else {
        Err(anyhow!(
            "not mounted, and mounting needs CAP_SYS_ADMIN (run does not need it)"
        ))
    };
    f.line(
        tracefs.is_ok(),
        "tracefs",
        match &tracefs {
            Ok(how) => how.clone(),
            Err(e) => format!("{e:#}"),
        },
    );

    if required_missing.is_empty() {
        probes::raise_memlock_limit();
        for AttachType { name, result, needed } in host::attach_types(btf.as_ref().ok()) {
            f.line(
                result.is_ok(),
                name,
                match &result {
                    Ok(note) => note.clone(),
                    Err(e) => format!("unavailable: {e:#}"),
                },
            );
            if needed && let Err(e) = result {
                f.fatal(format!(
                    "{name} programs cannot be attached here ({e:#}), and the agent needs them"
                ));
            }
        }
    }

    if required_missing.is_empty()
        && let Ok(btf) = &btf
    {
        agent_programs(btf, &mut f);
    }

    let (libraries, processes) = gpu_runtimes();
    f.line(
        !libraries.is_empty() || !processes.is_empty(),
        "GPU runtimes on disk",
        if libraries.is_empty() {
            "none found where runtimes are installed".to_string()
        } else {
            libraries.join(", ")
        },
    );
    f.line(
        !processes.is_empty(),
        "GPU runtimes in use",
        if processes.is_empty() {
            "no running process maps one".to_string()
        } else {
            processes.join(", ")
        },
    );
    // Opened and read as `run` does, not looked for.
    let nvml = NvmlSource::try_open(None).map(|mut n| n.sample().devices);
    f.line(
        nvml.as_ref().is_ok_and(|d| !d.is_empty()),
        "NVML",
        match &nvml {
            Ok(devices) => device_list(devices),
            Err(e) => format!("no NVIDIA device figures: {e}"),
        },
    );
    let rocm_smi = RocmSmiSource::try_open(None).map(|mut r| r.devices());
    f.line(
        rocm_smi.as_ref().is_ok_and(|d| !d.is_empty()),
        "ROCm SMI",
        match &rocm_smi {
            Ok(devices) => device_list(devices),
            Err(e) => format!("no AMD device figures: {e}"),
        },
    );

    match f.fatal {
        Some(reason) => {
            eprintln!("inferscope cannot run here: {reason}.");
            Ok(ExitCode::FAILURE)
        }
        None => {
            println!("inferscope can run here.");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The sampling rate `check` attaches the profiler with (it samples nothing).
const PROFILE_CHECK_HZ: u64 = 1;

/// Loads the agent's own objects as `run` does (not stand-ins), and prints the
/// program table (`compat`) with what this kernel runs of it.
fn agent_programs(btf: &Btf, f: &mut Findings) {
    let process = ProcessProbes::load(btf);
    let gpu = GpuProbes::load(btf, 0);
    // Recording stacks at GPU calls (`profile`) is more for the verifier.
    let gpu_stacks = GpuProbes::load(btf, DEFAULT_GPU_CALL_STACK_EVERY);
    let net = NetProbes::load(btf, NET_CAPTURE_MAX as u32);
    // Sampling every CPU with nothing to sample: the program runs and returns at once.
    let profile = ProfileProbes::start(PROFILE_CHECK_HZ);
    let in_use: Vec<&str> = match &net {
        Ok(n) => n.socket_hook().programs().collect(),
        Err(_) => Vec::new(),
    };
    // Optional within an object that loaded.
    let not_loaded: Vec<&str> = match &process {
        Ok(p) if !p.knows_mapped_files() => vec![compat::MAPPED_FILES.name],
        _ => Vec::new(),
    };
    let objects: [(&str, &str, Result<String>, bool); 5] = [
        (
            "process.bpf.o",
            "process lifecycle",
            process.map(|_| "loaded and attached".into()),
            true,
        ),
        (
            "gpu_calls.bpf.o",
            "GPU runtime calls",
            gpu.map(|_| "loaded".into()),
            true,
        ),
        (
            "net_capture.bpf.o",
            "request metrics",
            net.map(|n| format!("loaded; socket capture through {}", n.socket_hook())),
            false,
        ),
        (
            "profile.bpf.o",
            "CPU profiles",
            profile.map(|_| "loaded and attached on every CPU".into()),
            false,
        ),
        (
            "gpu_calls.bpf.o (stacks)",
            "profiles of GPU launches and synchronisations",
            gpu_stacks.map(|_| "loaded".into()),
            false,
        ),
    ];
    for (object, what, result, required) in objects {
        match &result {
            Ok(detail) => f.line(true, object, format!("{what}: {detail}")),
            Err(e) if required => {
                f.line(false, object, format!("{what}: {e:#}"));
                f.fatal(format!("{object} does not load here ({e:#})"));
            }
            Err(e) => f.line(false, object, format!("{what}: run goes on without them: {e:#}")),
        }
        for p in compat::PROGRAMS.iter().filter(|p| p.object == object) {
            // Socket capture has alternatives: only the kernel's own are in use.
            let used = !compat::has_alternatives(p) || in_use.contains(&p.name);
            let loaded = result.is_ok() && !not_loaded.contains(&p.name);
            let status = match (loaded, used) {
                (true, true) => "ok",
                (true, false) => "--",
                (false, _) => "no",
            };
            let version = |(major, minor): (u32, u32)| format!("{major}.{minor}");
            let uses: Vec<String> = p
                .uses
                .iter()
                .map(|u| format!("{} {}", u.name(), version(u.since())))
                .collect();
            let until = match p.role {
                compat::Role::FallbackFor {
                    until: Some(last), ..
                } => format!(", until {}", version(last)),
                _ => String::new(),
            };
            let without = match (loaded, p.role) {
                (false, compat::Role::Optional { without }) => format!("; without it: {without}"),
                _ => String::new(),
            };
            println!(
                "{status:<4}   {:<26} {} (needs {}{until}: {}){without}",
                p.name,
                p.hook,
                version(p.since()),
                uses.join(", ")
            );
        }
    }
}

/// GPU runtime libraries installed where the agent looks for them before
/// any process loads them (as `run` does, from this process's view), and
/// processes that map one.
fn gpu_runtimes() -> (Vec<String>, Vec<String>) {
    let proc_root = Path::new("/proc");
    let own = std::process::id();
    let libraries = match Root::of_process(proc_root, own) {
        Ok(root) => installed::runtime_files(&root, &LoaderEnv::of_process(proc_root, own))
            .into_iter()
            .map(|f| f.path.display().to_string())
            .collect(),
        Err(e) => vec![format!("(cannot open the root directory: {e})")],
    };
    let mut discovery = Discovery::new("/proc");
    let mut processes = Vec::new();
    for pid in discovery.pids().unwrap_or_default() {
        if let Ok(libs) = discovery.libraries(pid)
            && !libs.runtimes.is_empty()
        {
            let names: Vec<_> = libs.runtimes.iter().map(|r| r.runtime.name()).collect();
            processes.push(format!("{pid} ({})", names.join(",")));
        }
    }
    (libraries, processes)
}

/// `2 GPUs: 0 NVIDIA H100 80GB HBM3, 1 ...`.
fn device_list(devices: &[DeviceView]) -> String {
    let names: Vec<_> = devices
        .iter()
        .map(|d| format!("{} {}", d.index, d.name))
        .collect();
    format!("{} GPU(s): {}", devices.len(), names.join(", "))
}
