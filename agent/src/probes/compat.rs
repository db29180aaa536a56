//! Which eBPF program needs what of the kernel: the support statement in code.
//!
//! Each program of the agent's objects is listed with its hook, the kernel
//! features it uses and what the agent loses without it. The oldest kernel the
//! agent supports follows from the required programs (attach cookies on uprobes,
//! 5.15); optional ones degrade with one sentence. The loaders attach the
//! kernel hooks from this table, falling back as it says ([`attach`]);
//! `inferscope check` prints it against the running kernel, and a test keeps
//! it equal to the objects.

use std::fmt;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FExit},
};

/// A kernel feature a program uses, with the release that brought it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `tp_btf` programs: tracepoints with typed arguments (BTF).
    TpBtf,
    /// `fexit` programs (BPF trampolines).
    Fexit,
    /// uprobes and uretprobes through perf events.
    Uprobe,
    /// BPF ring buffer maps.
    RingBuf,
    /// Per-thread storage freed with the thread (`BPF_MAP_TYPE_TASK_STORAGE`).
    TaskStorage,
    /// `bpf_get_attach_cookie` on uprobes: one program serves every probed function.
    AttachCookie,
    /// `bpf_task_pt_regs`: the registers the current syscall was entered with.
    TaskPtRegs,
    /// `bpf_get_socket_cookie` from tracing programs.
    SocketCookie,
    /// Per-socket storage (`BPF_MAP_TYPE_SK_STORAGE`) from tracing programs.
    SocketStorage,
    /// The `sock_send_length` / `sock_recv_length` tracepoints.
    SockLengthTracepoints,
    /// `tcp_recvmsg` without its `nonblock` argument.
    TcpRecvmsgWithoutNonblock,
    /// Perf-event programs sampling on a clock, with kernel-walked stacks (`bpf_get_stackid`).
    PerfEventSampling,
    /// BPF iterators over each task's memory mappings (`iter/task_vma`).
    TaskVmaIter,
}

impl Feature {
    /// The mainline release that introduced it.
    pub fn since(self) -> (u32, u32) {
        match self {
            Self::PerfEventSampling => (4, 9),
            Self::Uprobe => (4, 17),
            Self::TpBtf | Self::Fexit => (5, 5),
            Self::RingBuf => (5, 8),
            Self::TaskStorage | Self::SocketStorage => (5, 11),
            Self::TaskVmaIter => (5, 12),
            Self::SocketCookie => (5, 12),
            Self::AttachCookie | Self::TaskPtRegs => (5, 15),
            Self::TcpRecvmsgWithoutNonblock => (5, 19),
            Self::SockLengthTracepoints => (6, 3),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::TpBtf => "tp_btf",
            Self::Fexit => "fexit",
            Self::Uprobe => "uprobe",
            Self::RingBuf => "ring buffer",
            Self::TaskStorage => "task storage",
            Self::AttachCookie => "attach cookie",
            Self::TaskPtRegs => "bpf_task_pt_regs",
            Self::SocketCookie => "socket cookie",
            Self::SocketStorage => "socket storage",
            Self::SockLengthTracepoints => "sock_*_length tracepoints",
            Self::TcpRecvmsgWithoutNonblock => "5-argument tcp_recvmsg",
            Self::PerfEventSampling => "perf-event sampling",
            Self::TaskVmaIter => "task_vma iterator",
        }
    }
}

/// What the agent does without a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The agent does not start without it.
    Required,
    /// Loaded where the kernel has what it needs; otherwise the named loss.
    Optional { without: &'static str },
    /// Used instead of the named program where that one cannot load: the
    /// first of its fallbacks (in table order) that loads here. `until`: the
    /// last release whose kernel has this form of the hook.
    FallbackFor {
        of: &'static str,
        until: Option<(u32, u32)>,
    },
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A tracepoint with typed arguments, attached at load.
    TpBtf(&'static str),
    /// The return of a kernel function, attached at load.
    Fexit(&'static str),
    /// Attached while running, to what discovery finds (as described).
    Found(&'static str),
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TpBtf(tracepoint) => write!(f, "tp_btf/{tracepoint}"),
            Self::Fexit(function) => write!(f, "fexit/{function}"),
            Self::Found(what) => f.write_str(what),
        }
    }
}

#[derive(Debug)]
pub struct Program {
    pub object: &'static str,
    pub name: &'static str,
    pub hook: Hook,
    pub uses: &'static [Feature],
    pub role: Role,
}

impl Program {
    /// The oldest kernel with everything this program uses.
    pub fn since(&self) -> (u32, u32) {
        self.uses.iter().map(|f| f.since()).max().unwrap_or((0, 0))
    }
}

const WITHOUT_REQUESTS: &str = "no request metrics";
const WITHOUT_TLS: &str = "no request metrics for TLS servers";
const WITHOUT_PROFILES: &str = "no CPU profiles (inferscope profile)";
const WITHOUT_FILES_UNDERNEATH: &str =
    "replicas of one image mapping a runtime through overlayfs are counted once per replica";

/// The programs of the agent's objects, each by name for its loader.
#[rustfmt::skip]
mod programs {
    use super::{Feature::*, Hook, Program, Role, WITHOUT_FILES_UNDERNEATH, WITHOUT_PROFILES, WITHOUT_REQUESTS, WITHOUT_TLS};

    pub const ON_EXEC: Program = Program { object: "process.bpf.o", name: "on_exec", hook: Hook::TpBtf("sched_process_exec"), uses: &[TpBtf, RingBuf], role: Role::Required };
    pub const ON_EXIT: Program = Program { object: "process.bpf.o", name: "on_exit", hook: Hook::TpBtf("sched_process_exit"), uses: &[TpBtf, RingBuf], role: Role::Required };
    pub const ON_LOADER_DEBUG_STATE: Program = Program { object: "process.bpf.o", name: "on_loader_debug_state", hook: Hook::Found("uprobe/_dl_debug_state"), uses: &[Uprobe, RingBuf], role: Role::Required };
    pub const MAPPED_FILES: Program = Program { object: "process.bpf.o", name: "mapped_files", hook: Hook::Found("iter/task_vma (one process from 6.1)"), uses: &[TaskVmaIter], role: Role::Optional { without: WITHOUT_FILES_UNDERNEATH } };
    pub const GPU_CALL: Program = Program { object: "gpu_calls.bpf.o", name: "gpu_call", hook: Hook::Found("uprobe on GPU runtime functions"), uses: &[Uprobe, AttachCookie, TaskStorage], role: Role::Required };
    pub const GPU_CALL_RETURN: Program = Program { object: "gpu_calls.bpf.o", name: "gpu_call_return", hook: Hook::Found("uretprobe on allocation and sync"), uses: &[Uprobe, AttachCookie, TaskStorage], role: Role::Required };
    pub const ON_SOCK_SEND: Program = Program { object: "net_capture.bpf.o", name: "on_sock_send", hook: Hook::TpBtf("sock_send_length"), uses: &[SockLengthTracepoints, TpBtf, TaskPtRegs, SocketCookie, SocketStorage, RingBuf, TaskStorage], role: Role::Optional { without: WITHOUT_REQUESTS } };
    pub const ON_SOCK_RECV: Program = Program { object: "net_capture.bpf.o", name: "on_sock_recv", hook: Hook::TpBtf("sock_recv_length"), uses: &[SockLengthTracepoints, TpBtf, TaskPtRegs, SocketCookie, SocketStorage, RingBuf, TaskStorage], role: Role::Optional { without: WITHOUT_REQUESTS } };
    pub const ON_TCP_SENDMSG: Program = Program { object: "net_capture.bpf.o", name: "on_tcp_sendmsg", hook: Hook::Fexit("tcp_sendmsg"), uses: &[Fexit, TaskPtRegs, SocketCookie, SocketStorage, RingBuf, TaskStorage], role: Role::FallbackFor { of: ON_SOCK_SEND.name, until: None } };
    pub const ON_TCP_RECVMSG_NONBLOCK: Program = Program { object: "net_capture.bpf.o", name: "on_tcp_recvmsg_nonblock", hook: Hook::Fexit("tcp_recvmsg"), uses: &[Fexit, TaskPtRegs, SocketCookie, SocketStorage, RingBuf, TaskStorage], role: Role::FallbackFor { of: ON_SOCK_RECV.name, until: Some((5, 18)) } };
    pub const ON_TCP_RECVMSG: Program = Program { object: "net_capture.bpf.o", name: "on_tcp_recvmsg", hook: Hook::Fexit("tcp_recvmsg"), uses: &[Fexit, TcpRecvmsgWithoutNonblock, TaskPtRegs, SocketCookie, SocketStorage, RingBuf, TaskStorage], role: Role::FallbackFor { of: ON_SOCK_RECV.name, until: None } };
    pub const ON_SOCK_STATE: Program = Program { object: "net_capture.bpf.o", name: "on_sock_state", hook: Hook::TpBtf("inet_sock_set_state"), uses: &[TpBtf, SocketCookie, SocketStorage, RingBuf], role: Role::Optional { without: WITHOUT_REQUESTS } };
    pub const SSL_READ_ENTER: Program = Program { object: "net_capture.bpf.o", name: "ssl_read_enter", hook: Hook::Found("uprobe/SSL_read"), uses: &[Uprobe, TaskStorage], role: Role::Optional { without: WITHOUT_TLS } };
    pub const SSL_READ_EX_ENTER: Program = Program { object: "net_capture.bpf.o", name: "ssl_read_ex_enter", hook: Hook::Found("uprobe/SSL_read_ex"), uses: &[Uprobe, TaskStorage], role: Role::Optional { without: WITHOUT_TLS } };
    pub const SSL_WRITE_ENTER: Program = Program { object: "net_capture.bpf.o", name: "ssl_write_enter", hook: Hook::Found("uprobe/SSL_write"), uses: &[Uprobe, TaskStorage], role: Role::Optional { without: WITHOUT_TLS } };
    pub const SSL_WRITE_EX_ENTER: Program = Program { object: "net_capture.bpf.o", name: "ssl_write_ex_enter", hook: Hook::Found("uprobe/SSL_write_ex"), uses: &[Uprobe, TaskStorage], role: Role::Optional { without: WITHOUT_TLS } };
    pub const SSL_SET_BIO: Program = Program { object: "net_capture.bpf.o", name: "ssl_set_bio", hook: Hook::Found("uprobe/SSL_set_bio"), uses: &[Uprobe], role: Role::Optional { without: WITHOUT_TLS } };
    pub const BIO_WRITE: Program = Program { object: "net_capture.bpf.o", name: "bio_write", hook: Hook::Found("uprobe/BIO_write (libcrypto)"), uses: &[Uprobe, TaskStorage], role: Role::Optional { without: WITHOUT_TLS } };
    pub const ON_CPU_SAMPLE: Program = Program { object: "profile.bpf.o", name: "on_cpu_sample", hook: Hook::Found("perf event, software CPU clock, every CPU"), uses: &[PerfEventSampling], role: Role::Optional { without: WITHOUT_PROFILES } };
    pub const SSL_RETURN: Program = Program { object: "net_capture.bpf.o", name: "ssl_return", hook: Hook::Found("uretprobe/SSL_*"), uses: &[Uprobe, RingBuf, TaskStorage], role: Role::Optional { without: WITHOUT_TLS } };
}

pub use programs::*;

/// Every program of the agent's objects (`check`'s own feature probes aside), in the order `check` lists them.
pub const PROGRAMS: [&Program; 20] = [
    &ON_EXEC,
    &ON_EXIT,
    &ON_LOADER_DEBUG_STATE,
    &MAPPED_FILES,
    &GPU_CALL,
    &GPU_CALL_RETURN,
    &ON_SOCK_SEND,
    &ON_SOCK_RECV,
    &ON_TCP_SENDMSG,
    &ON_TCP_RECVMSG_NONBLOCK,
    &ON_TCP_RECVMSG,
    &ON_SOCK_STATE,
    &SSL_READ_ENTER,
    &SSL_READ_EX_ENTER,
    &SSL_WRITE_ENTER,
    &SSL_WRITE_EX_ENTER,
    &SSL_SET_BIO,
    &BIO_WRITE,
    &ON_CPU_SAMPLE,
    &SSL_RETURN,
];

/// The programs of `object` attached to the kernel at load (not fallbacks:
/// those are tried by [`attach`] in their place).
pub fn kernel_hooks(object: &str) -> impl Iterator<Item = &'static Program> {
    PROGRAMS.iter().copied().filter(move |p| {
        p.object == object
            && matches!(p.hook, Hook::TpBtf(_) | Hook::Fexit(_))
            && !matches!(p.role, Role::FallbackFor { .. })
    })
}

/// The programs that stand in for `program` where it cannot load, in the table's order.
fn fallbacks_of(program: &Program) -> impl Iterator<Item = &'static Program> + '_ {
    PROGRAMS
        .iter()
        .copied()
        .filter(|p| matches!(p.role, Role::FallbackFor { of, .. } if of == program.name))
}

/// Whether `program` is one of several alternatives, only one of which a kernel uses.
pub fn has_alternatives(program: &Program) -> bool {
    matches!(program.role, Role::FallbackFor { .. }) || fallbacks_of(program).next().is_some()
}

/// Loads and attaches `program` or, where this kernel refuses it, the first of
/// its fallbacks that it takes; returns the one attached.
pub fn attach(ebpf: &mut Ebpf, btf: &Btf, program: &'static Program) -> Result<&'static Program> {
    let mut refused = Vec::new();
    for candidate in std::iter::once(program).chain(fallbacks_of(program)) {
        match attach_one(ebpf, btf, candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) => refused.push(format!("{e:#}")),
        }
    }
    bail!("{}", refused.join("; "))
}

fn attach_one(ebpf: &mut Ebpf, btf: &Btf, program: &Program) -> Result<()> {
    let name = program.name;
    let loaded = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("{name} missing from {}", program.object))?;
    match program.hook {
        Hook::TpBtf(tracepoint) => {
            let p: &mut BtfTracePoint = loaded.try_into()?;
            p.load(tracepoint, btf)
                .with_context(|| format!("verifying {name}"))?;
            p.attach()
                .with_context(|| format!("attaching {}", program.hook))?;
        }
        Hook::Fexit(function) => {
            let p: &mut FExit = loaded.try_into()?;
            p.load(function, btf)
                .with_context(|| format!("verifying {name}"))?;
            p.attach()
                .with_context(|| format!("attaching {}", program.hook))?;
        }
        Hook::Found(_) => bail!("{name} is attached while running, not at load"),
    }
    Ok(())
}

/// The oldest kernel the agent starts on: what its required programs need.
pub fn oldest_supported_kernel() -> (u32, u32) {
    PROGRAMS
        .iter()
        .filter(|p| p.role == Role::Required)
        .map(|p| p.since())
        .max()
        .unwrap_or((0, 0))
}

/// `major.minor` of a release string such as `6.1.0-56-cloud-amd64`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

    use super::*;

    fn programs_in(object: &[u8]) -> BTreeSet<String> {
        let file = object::File::parse(object).expect("an ELF object");
        file.symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.is_global())
            .filter(|s| {
                s.section_index()
                    .and_then(|i| file.section_by_index(i).ok())
                    .and_then(|sec| sec.name().ok().map(|n| n != ".text"))
                    .unwrap_or(false)
            })
            .map(|s| s.name().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn the_table_lists_exactly_the_programs_of_the_objects() {
        for (name, bytes) in [
            ("process.bpf.o", super::super::PROCESS_OBJ),
            ("gpu_calls.bpf.o", super::super::GPU_CALLS_OBJ),
            ("net_capture.bpf.o", super::super::NET_CAPTURE_OBJ),
            ("profile.bpf.o", super::super::PROFILE_OBJ),
        ] {
            let listed: BTreeSet<String> = PROGRAMS
                .iter()
                .filter(|p| p.object == name)
                .map(|p| p.name.to_string())
                .collect();
            assert_eq!(programs_in(bytes), listed, "{name}");
        }
    }

    #[test]
    fn attach_cookies_set_the_floor_at_5_15() {
        assert_eq!(oldest_supported_kernel(), (5, 15));
    }

    #[test]
    fn fallbacks_name_programs_of_the_table_attached_at_load() {
        for p in PROGRAMS {
            if let Role::FallbackFor { of, .. } = p.role {
                let primary = PROGRAMS.iter().find(|q| q.name == of);
                assert!(primary.is_some_and(|q| q.object == p.object), "{}", p.name);
                assert!(matches!(p.hook, Hook::TpBtf(_) | Hook::Fexit(_)), "{}", p.name);
            }
        }
        let net: Vec<&str> = kernel_hooks("net_capture.bpf.o").map(|p| p.name).collect();
        assert_eq!(net, ["on_sock_send", "on_sock_recv", "on_sock_state"]);
        let process: Vec<&str> = kernel_hooks("process.bpf.o").map(|p| p.name).collect();
        assert_eq!(process, ["on_exec", "on_exit"]);
    }

    #[test]
    fn releases_parse_to_major_and_minor() {
        assert_eq!(parse_release("6.1.0-56-cloud-amd64"), Some((6, 1)));
        assert_eq!(parse_release("6.12.117+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(parse_release("5.15.0"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
    }
}
