//! What this host lets the agent do, found by trying rather than by version:
//! its capabilities, tracefs, and which attach types work. `run` asks before
//! it loads anything; `check` prints all of it.

use std::{ffi::CString, fs, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf,
    maps::Array,
    programs::{
        BtfTracePoint, FEntry, KProbe, PerfEvent, Program, RawTracePoint, TracePoint, UProbe,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};

static FEATURE_PROBE_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../ebpf-programs/obj/feature_probe.bpf.o");

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// `CAP_SYS_ADMIN`, also what mounting tracefs needs.
const CAP_SYS_ADMIN: u32 = 21;

/// A capability the agent uses: what for, and what is lost without it.
pub struct Capability {
    bit: u32,
    pub name: &'static str,
    pub used_for: &'static str,
    /// `None`: the agent does not start without it.
    pub without: Option<&'static str>,
}

/// The capabilities the agent uses, and no others: a non-root agent with these
/// (a DaemonSet's `capabilities.add`) does everything `run` does. Measured with
/// an unprivileged uid under `setpriv` (tests/tests/cli.rs), here and in the
/// kernel matrix.
pub const CAPABILITIES: [Capability; 5] = [
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

/// The capabilities this process has, as the kernel says (`CapEff`).
#[derive(Clone, Copy, Debug)]
pub struct Capabilities(u64);

impl Capabilities {
    pub fn effective() -> Result<Self> {
        let status = fs::read_to_string("/proc/self/status")?;
        Self::from_status(&status).ok_or_else(|| anyhow!("no CapEff in /proc/self/status"))
    }

    /// From the text of `/proc/PID/status`.
    fn from_status(status: &str) -> Option<Self> {
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .map(Self)
    }

    pub fn has(self, c: &Capability) -> bool {
        self.0 & (1 << c.bit) != 0
    }

    /// The capabilities the agent cannot start without that this set lacks.
    pub fn missing_required(self) -> Vec<&'static str> {
        CAPABILITIES
            .iter()
            .filter(|c| c.without.is_none() && !self.has(c))
            .map(|c| c.name)
            .collect()
    }

    /// Whether tracefs can be mounted (`CAP_SYS_ADMIN`).
    pub fn can_mount(self) -> bool {
        self.0 & (1 << CAP_SYS_ADMIN) != 0
    }
}

/// Fails with one sentence naming the missing required capabilities, and warns
/// once per missing optional one, saying what it costs.
pub fn require_privileges() -> Result<()> {
    let effective = Capabilities::effective()?;
    let required = effective.missing_required();
    if !required.is_empty() {
        bail!(
            "root or at least the capabilities CAP_BPF and CAP_PERFMON are needed; this process lacks {}",
            required.join(", ")
        );
    }
    for c in CAPABILITIES.iter().filter(|c| !effective.has(c)) {
        if let Some(cost) = c.without {
            log::warn!("without {}: {cost}", c.name);
        }
    }
    Ok(())
}

/// `uname`: system name, release, machine.
fn uname() -> [String; 3] {
    // SAFETY: uname fills the zeroed struct we own.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::uname(&mut u) } != 0 {
        return ["unknown".into(), "unknown".into(), "unknown".into()];
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    [field(&u.sysname), field(&u.release), field(&u.machine)]
}

/// `Linux 6.18.44 x86_64`.
pub fn machine_description() -> String {
    uname().join(" ")
}

pub fn kernel_release() -> String {
    let [_, release, _] = uname();
    release
}

/// Mounts tracefs where a fresh host or container lacks it (classic tracepoints need it).
pub fn ensure_tracefs() -> Result<String> {
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

/// Whether one kind of eBPF program attaches here.
pub struct AttachType {
    pub name: &'static str,
    /// What attaching did, or why it failed.
    pub result: Result<String>,
    /// The agent does not run without it.
    pub needed: bool,
}

/// Loads and attaches one trivial program per attach type.
pub fn attach_types(btf: Option<&Btf>) -> Vec<AttachType> {
    let mut ebpf = match Ebpf::load(FEATURE_PROBE_OBJ) {
        Ok(e) => e,
        Err(e) => {
            return vec![AttachType {
                name: "eBPF",
                result: Err(anyhow!(e).context("loading a trivial object")),
                needed: true,
            }];
        }
    };
    let no_btf = || anyhow!("needs kernel BTF");
    let mut out = Vec::new();
    let mut attempt = |name, needed, f: &mut dyn FnMut(&mut Ebpf) -> Result<String>| {
        out.push(AttachType {
            name,
            result: f(&mut ebpf),
            needed,
        })
    };

    // Located through our own memory map, not a symbol table: release builds may be stripped.
    let target = own_function_offset(inferscope_check_uprobe_target as *const () as u64);
    let attach_own = |e: &mut Ebpf, program: &str| -> Result<()> {
        let (exe, offset) = target.as_ref().map_err(|e| anyhow!("{e:#}"))?;
        let p: &mut UProbe = self::program(e, program)?.try_into()?;
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
        let hits: Array<_, u64> = Array::try_from(
            e.map("uprobe_hits")
                .ok_or_else(|| anyhow!("uprobe_hits missing from the feature probe object"))?,
        )?;
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
        let p: &mut BtfTracePoint = program(e, "probe_tp_btf")?.try_into()?;
        p.load("sched_process_exec", btf.ok_or_else(no_btf)?)?;
        p.attach()?;
        Ok("attached (process lifecycle)".into())
    });
    attempt("raw_tp", false, &mut |e| {
        let p: &mut RawTracePoint = program(e, "probe_raw_tp")?.try_into()?;
        p.load()?;
        p.attach("sched_process_exec")?;
        Ok("attached".into())
    });
    attempt("tracepoint", false, &mut |e| {
        let p: &mut TracePoint = program(e, "probe_tracepoint")?.try_into()?;
        p.load()?;
        p.attach("sched", "sched_process_exec")?;
        Ok("attached".into())
    });
    attempt("perf_event sampling", false, &mut |e| {
        let p: &mut PerfEvent = program(e, "probe_perf_event")?.try_into()?;
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
        let p: &mut KProbe = program(e, "probe_kprobe")?.try_into()?;
        p.load()?;
        p.attach("vfs_read", 0)?;
        Ok("attached".into())
    });
    attempt("fentry", false, &mut |e| {
        let p: &mut FEntry = program(e, "probe_fentry")?.try_into()?;
        p.load("vfs_read", btf.ok_or_else(no_btf)?)?;
        p.attach()?;
        Ok("attached".into())
    });
    out
}

/// A program of the feature probe object.
fn program<'a>(e: &'a mut Ebpf, name: &str) -> Result<&'a mut Program> {
    e.program_mut(name)
        .ok_or_else(|| anyhow!("{name} missing from the feature probe object"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_read_from_the_status_text_and_the_missing_required_named() {
        let status = "Name:\tinferscope\nCapInh:\t0000000000000000\nCapEff:\t000000c000000000\n";
        let bpf_and_perfmon = Capabilities::from_status(status).unwrap();
        assert!(bpf_and_perfmon.missing_required().is_empty());
        assert!(!bpf_and_perfmon.can_mount());
        let none = Capabilities::from_status("CapEff:\t0000000000000000\n").unwrap();
        assert_eq!(none.missing_required(), ["CAP_BPF", "CAP_PERFMON"]);
        let root = Capabilities::from_status("CapEff:\t000001ffffffffff\n").unwrap();
        assert!(CAPABILITIES.iter().all(|c| root.has(c)) && root.can_mount());
        assert!(Capabilities::from_status("Name: x\n").is_none());
    }

    #[test]
    fn this_process_finds_its_own_code_in_its_executable() {
        let (exe, offset) = own_function_offset(inferscope_check_uprobe_target as *const () as u64).unwrap();
        assert_eq!(exe, std::env::current_exe().unwrap());
        assert!(offset > 0);
    }
}
