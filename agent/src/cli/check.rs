//! `inferscope check`: what this host supports, found by trying it, and whether
//! the agent can run here (exit status 1 with one sentence when it cannot).

use std::{ffi::CString, fs, path::Path, process::ExitCode};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf,
    maps::Array,
    programs::{
        BtfTracePoint, FEntry, KProbe, PerfEvent, RawTracePoint, TracePoint, UProbe,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};

use inferscope_shared::NET_CAPTURE_MAX;

use crate::{
    discover::Discovery,
    model::DeviceView,
    probes::{self, GpuProbes, NetProbes, ProcessProbes, ProfileProbes, SocketHook, compat},
    profile::DEFAULT_GPU_CALL_STACK_EVERY,
    sources::{NvmlSource, RocmSmiSource},
};

static FEATURE_PROBE_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../ebpf-programs/obj/feature_probe.bpf.o");

const TRACEFS: &str = "/sys/kernel/tracing";

/// `CAP_SYS_ADMIN`, also what mounting tracefs needs.
const CAP_SYS_ADMIN: u32 = 21;

/// A capability the agent uses: what for, and what is lost without it.
struct Capability {
    bit: u32,
    name: &'static str,
    used_for: &'static str,
    /// `None`: the agent does not start without it.
    without: Option<&'static str>,
}

/// The capabilities the agent uses, and no others: a non-root agent with these
/// (a DaemonSet's `capabilities.add`) does everything `run` does. Measured with
/// an unprivileged uid under `setpriv` (tests/tests/cli.rs), here and in the
/// kernel matrix.
const CAPABILITIES: [Capability; 5] = [
    Capability {
        bit: 39,
        name: "CAP_BPF",
        used_for: "load eBPF programs and create maps",
        without: None,
    },
    Capability {
        bit: 38,
        name: "CAP_PERFMON",
        used_for: "attach tracepoints and fexit programs; read process memory from eBPF",
        without: None,
    },
    Capability {
        bit: CAP_SYS_ADMIN,
        name: "CAP_SYS_ADMIN",
        used_for: "attach uprobes (kernels with the 2025 uprobe hardening, 6.16+ and stable updates), \
                   open libraries through /proc/PID/map_files, mount tracefs",
        without: Some(
            "where the kernel requires it for uprobes, no GPU runtime, dlopen or TLS probes; \
             libraries only visible inside containers are not probed",
        ),
    },
    Capability {
        bit: 19,
        name: "CAP_SYS_PTRACE",
        used_for: "read the memory maps, sockets and namespaces of other users' processes",
        without: Some("processes of other users are neither probed nor their ports captured"),
    },
    Capability {
        bit: 2,
        name: "CAP_DAC_READ_SEARCH",
        used_for: "enter /proc/PID/map_files of other users' processes (mode 0500)",
        without: Some("libraries of other users' processes are not probed"),
    },
];

/// Fails with one sentence naming the missing required capabilities, and warns
/// once per missing optional one, saying what it costs.
pub fn require_privileges() -> Result<()> {
    let effective = effective_capabilities()?;
    let required = missing_required(effective);
    if !required.is_empty() {
        bail!(
            "root or at least the capabilities CAP_BPF and CAP_PERFMON are needed; this process lacks {}",
            required.join(", ")
        );
    }
    for c in CAPABILITIES.iter().filter(|c| !has(effective, c)) {
        if let Some(cost) = c.without {
            log::warn!("without {}: {cost}", c.name);
        }
    }
    Ok(())
}

/// The capabilities the agent cannot start without that `effective` lacks.
fn missing_required(effective: u64) -> Vec<&'static str> {
    CAPABILITIES
        .iter()
        .filter(|c| c.without.is_none() && !has(effective, c))
        .map(|c| c.name)
        .collect()
}

fn effective_capabilities() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| anyhow!("no CapEff in /proc/self/status"))
}

fn has(effective: u64, c: &Capability) -> bool {
    effective & (1 << c.bit) != 0
}

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
    f.line(true, "kernel", machine_description());

    let release = kernel_release();
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

    let effective = effective_capabilities()?;
    for c in &CAPABILITIES {
        let ok = has(effective, c);
        let detail = match (ok, c.without) {
            (true, _) => c.used_for.to_string(),
            (false, None) => format!("missing: the agent cannot {}", c.used_for),
            (false, Some(cost)) => format!("missing: {cost}"),
        };
        f.line(ok, c.name, detail);
    }
    let required_missing = missing_required(effective);
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

    let tracefs = if effective & (1 << CAP_SYS_ADMIN) != 0 || Path::new(TRACEFS).join("events").exists() {
        ensure_tracefs()
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
        for (name, result, needed) in attach_types(btf.as_ref().ok()) {
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
            "none found in the usual library folders".to_string()
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
    let nvml = NvmlSource::try_open(None).map(|mut n| n.read().devices);
    f.line(
        nvml.as_ref().is_ok_and(|d| !d.is_empty()),
        "NVML",
        match &nvml {
            Ok(devices) => device_list(devices),
            Err(e) => format!("no NVIDIA device figures: {e}"),
        },
    );
    let rocm_smi = RocmSmiSource::try_open(None).map(|mut r| r.read());
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

/// `uname`: system name, release, machine.
fn uname() -> [String; 3] {
    // SAFETY: uname fills the zeroed struct we own.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return ["unknown".into(), "unknown".into(), "unknown".into()];
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    [field(&u.sysname), field(&u.release), field(&u.machine)]
}

fn machine_description() -> String {
    uname().join(" ")
}

fn kernel_release() -> String {
    let [_, release, _] = uname();
    release
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
        Ok(n) => n.socket_hook().programs().to_vec(),
        Err(_) => Vec::new(),
    };
    // Optional within an object that loaded.
    let not_loaded: Vec<&str> = match &process {
        Ok(p) if !p.knows_mapped_files() => vec!["mapped_files"],
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
            let used = !SocketHook::is_capture_program(p.name) || in_use.contains(&p.name);
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
                compat::Role::KernelForm { until: Some(last) } => format!(", until {}", version(last)),
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

/// Mounts tracefs where a fresh host or container lacks it (classic tracepoints need it).
fn ensure_tracefs() -> Result<String> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(format!("mounted at {TRACEFS}"));
    }
    let target = CString::new(TRACEFS)?;
    let fstype = CString::new("tracefs")?;
    // SAFETY: all pointers are valid C strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("mounting tracefs at {TRACEFS}"));
    }
    Ok(format!("mounted at {TRACEFS} by inferscope"))
}

/// Marks a function the uprobe check attaches to in this very binary.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn inferscope_check_uprobe_target(x: u64) -> u64 {
    std::hint::black_box(x) + 1
}

type Probe = (&'static str, Result<String>, bool);

/// Loads and attaches one trivial program per attach type. The bool: the agent needs it.
fn attach_types(btf: Option<&Btf>) -> Vec<Probe> {
    let mut ebpf = match Ebpf::load(FEATURE_PROBE_OBJ) {
        Ok(e) => e,
        Err(e) => return vec![("eBPF", Err(anyhow!(e).context("loading a trivial object")), true)],
    };
    let no_btf = || anyhow!("needs kernel BTF");
    let mut out: Vec<Probe> = Vec::new();
    let mut attempt =
        |name, needed, f: &mut dyn FnMut(&mut Ebpf) -> Result<String>| out.push((name, f(&mut ebpf), needed));

    // Located through our own memory map, not a symbol table: release builds may be stripped.
    let target = own_function_offset(inferscope_check_uprobe_target as *const () as u64);
    let attach_own = |e: &mut Ebpf, program: &str| -> Result<()> {
        let (exe, offset) = target.as_ref().map_err(|e| anyhow!("{e:#}"))?;
        let p: &mut UProbe = e.program_mut(program).unwrap().try_into()?;
        p.load()?;
        p.attach(
            UProbeAttachLocation::AbsoluteOffset(*offset),
            exe,
            UProbeScope::CallingProcess,
        )?;
        Ok(())
    };
    attempt("uprobe", true, &mut |e| {
        attach_own(e, "probe_uprobe")?;
        inferscope_check_uprobe_target(1);
        let hits: Array<_, u64> = Array::try_from(e.map("uprobe_hits").unwrap())?;
        match hits.get(&0, 0)? {
            0 => bail!("attached, but did not fire"),
            _ => Ok("attached and fired".into()),
        }
    });
    attempt("uretprobe", true, &mut |e| {
        attach_own(e, "probe_uretprobe")?;
        Ok("attached".into())
    });
    attempt("tp_btf", true, &mut |e| {
        let p: &mut BtfTracePoint = e.program_mut("probe_tp_btf").unwrap().try_into()?;
        p.load("sched_process_exec", btf.ok_or_else(no_btf)?)?;
        p.attach()?;
        Ok("attached (process lifecycle)".into())
    });
    attempt("raw_tp", false, &mut |e| {
        let p: &mut RawTracePoint = e.program_mut("probe_raw_tp").unwrap().try_into()?;
        p.load()?;
        p.attach("sched_process_exec")?;
        Ok("attached".into())
    });
    attempt("tracepoint", false, &mut |e| {
        let p: &mut TracePoint = e.program_mut("probe_tracepoint").unwrap().try_into()?;
        p.load()?;
        p.attach("sched", "sched_process_exec")?;
        Ok("attached".into())
    });
    attempt("perf_event sampling", false, &mut |e| {
        let p: &mut PerfEvent = e.program_mut("probe_perf_event").unwrap().try_into()?;
        p.load()?;
        p.attach(
            PerfEventConfig::Software(SoftwareEvent::CpuClock),
            PerfEventScope::AllProcessesOneCpu { cpu: 0 },
            SamplePolicy::Frequency(49),
            false,
        )?;
        Ok("attached (software CPU clock)".into())
    });
    attempt("kprobe", false, &mut |e| {
        let p: &mut KProbe = e.program_mut("probe_kprobe").unwrap().try_into()?;
        p.load()?;
        p.attach("vfs_read", 0)?;
        Ok("attached".into())
    });
    attempt("fentry", false, &mut |e| {
        let p: &mut FEntry = e.program_mut("probe_fentry").unwrap().try_into()?;
        p.load("vfs_read", btf.ok_or_else(no_btf)?)?;
        p.attach()?;
        Ok("attached".into())
    });
    out
}

/// The file and file offset of code at `address` in this process.
fn own_function_offset(address: u64) -> Result<(std::path::PathBuf, u64)> {
    let maps = crate::discover::maps::parse(&fs::read_to_string("/proc/self/maps")?);
    let m = maps
        .iter()
        .find(|m| m.executable && (m.start..m.end).contains(&address))
        .ok_or_else(|| anyhow!("address {address:#x} is in no file mapping of this process"))?;
    Ok((m.path.clone(), address - m.start + m.offset))
}

/// GPU runtime libraries in the usual folders, and processes that map one.
fn gpu_runtimes() -> (Vec<String>, Vec<String>) {
    let names = [
        "libcudart.so.12",
        "libcudart.so",
        "libcuda.so.1",
        "libamdhip64.so",
        "libamdhip64.so.5",
        "libamdhip64.so.6",
        "libnccl.so.2",
    ];
    let libraries = names.iter().filter_map(|n| find_library(n)).collect();
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

fn find_library(name: &str) -> Option<String> {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/cuda/lib64",
        "/opt/rocm/lib",
        "/usr/local/nvidia/lib64",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.exists())
    .map(|p| p.display().to_string())
}
