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

use crate::{discover::Discovery, probes};

static FEATURE_PROBE_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../ebpf-programs/obj/feature_probe.bpf.o");

const TRACEFS: &str = "/sys/kernel/tracing";

/// Capabilities the agent uses, with what for.
const CAPABILITIES: [(u32, &str, &str); 4] = [
    (39, "CAP_BPF", "load eBPF programs and maps"),
    (38, "CAP_PERFMON", "attach uprobes and tracepoints"),
    (19, "CAP_SYS_PTRACE", "read other processes' memory maps"),
    (
        21,
        "CAP_SYS_ADMIN",
        "open libraries through /proc/PID/map_files and mount tracefs",
    ),
];

/// Fails with one sentence naming the missing capabilities.
pub fn require_privileges() -> Result<()> {
    let missing = missing_capabilities()?;
    if !missing.is_empty() {
        bail!(
            "inferscope needs root or the capabilities {}; this process lacks {}",
            CAPABILITIES.map(|c| c.1).join(", "),
            missing.join(", ")
        );
    }
    Ok(())
}

fn missing_capabilities() -> Result<Vec<&'static str>> {
    let status = fs::read_to_string("/proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| anyhow!("no CapEff in /proc/self/status"))?;
    Ok(CAPABILITIES
        .iter()
        .filter(|c| effective & (1 << c.0) == 0)
        .map(|c| c.1)
        .collect())
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
    let uname = rustix_uname();
    f.line(true, "kernel", &uname);

    let missing = missing_capabilities()?;
    f.line(
        missing.is_empty(),
        "capabilities",
        if missing.is_empty() {
            "all needed".to_string()
        } else {
            format!("missing {}", missing.join(", "))
        },
    );
    if !missing.is_empty() {
        f.fatal(format!(
            "inferscope needs root or the capabilities it lacks: {}",
            missing.join(", ")
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

    let tracefs = ensure_tracefs();
    f.line(
        tracefs.is_ok(),
        "tracefs",
        match &tracefs {
            Ok(how) => how.clone(),
            Err(e) => format!("{e:#}"),
        },
    );

    if missing.is_empty() {
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
    let nvml = find_library("libnvidia-ml.so.1");
    f.line(
        nvml.is_some(),
        "NVML",
        nvml.unwrap_or_else(|| "libnvidia-ml.so.1 not found (no NVIDIA driver)".into()),
    );
    // Debian ships only the versioned name, ROCm's own packages the plain one too.
    let rocm_smi = find_library("librocm_smi64.so.1").or_else(|| find_library("librocm_smi64.so"));
    f.line(
        rocm_smi.is_some(),
        "ROCm SMI",
        rocm_smi.unwrap_or_else(|| "librocm_smi64.so.1 not found".into()),
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

fn rustix_uname() -> String {
    // SAFETY: uname fills the zeroed struct we own.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} {}",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    )
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
