//! What inferscope's probe costs a `cudaLaunchKernel` call, against the same
//! call under a bare uprobe that does nothing and under no probe at all, and
//! which part of the probe's work costs what.
//!
//! The probed function is a stand-in `cudaLaunchKernel` in this executable
//! that returns at once: without a GPU the real `libcudart.so.12` spends about
//! 4 µs per call retrying its initialisation, which would bury the probe's cost.
//! The agent finds and probes it as it does a runtime linked statically.

use std::{ffi::c_void, os::unix::fs::MetadataExt as _, path::Path, time::Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use inferscope::{
    discover::{ProbeTarget, RuntimeLibrary, maps::FileId, symbols},
    probes::{GpuProbes, raise_memlock_limit},
    runtimes::Runtime,
};

use crate::{median, newest_program};

static BASELINE_OBJ: &[u8] = aya::include_bytes_aligned!("../../ebpf-programs/obj/bench_baseline.bpf.o");

const CALLS: u32 = 1_000_000;
/// Calls per program when reading the kernel's run-time statistics.
const STATS_CALLS: u32 = 200_000;
/// gpu_calls.bpf.c's entry program, as the kernel names it.
pub(crate) const ENTRY_PROGRAM: &str = inferscope::probes::compat::GPU_CALL.name;
const ROUNDS: usize = 7;
pub(crate) const SYMBOL: &str = "cudaLaunchKernel";

/// The pieces of the launch probe's work (programs of bench_baseline.bpf.c),
/// each measured alone on top of the trap.
const PARTS: [(&str, &str); 4] = [
    ("part_cookie_and_args", "attach cookie + argument registers"),
    ("part_counter", "per-process counter (per-CPU hash)"),
    ("part_thread_state", "thread state (task storage)"),
    ("part_stack_read", "return address read from the user stack"),
];

#[repr(C)]
#[derive(Clone, Copy)]
struct Dim3 {
    x: u32,
    y: u32,
    z: u32,
}

// The stand-in: no work, and the first instructions of the real runtime's
// cudaLaunchKernel (`endbr64; push`), which the kernel emulates at the trap
// instead of single-stepping a copy: an instruction it must single-step (as
// rustc's prologue for an empty function) costs a second trap and buries the
// probe's own cost. x86-64, as the runtime it stands in for.
std::arch::global_asm!(
    ".globl cudaLaunchKernel",
    ".type cudaLaunchKernel, @function",
    "cudaLaunchKernel:",
    "endbr64",
    "push rbp",
    "mov rbp, rsp",
    "xor eax, eax",
    "pop rbp",
    "ret",
    ".size cudaLaunchKernel, .-cudaLaunchKernel",
);

unsafe extern "C" {
    fn cudaLaunchKernel(
        func: *const c_void,
        grid: Dim3,
        block: Dim3,
        args: *mut *mut c_void,
        shared_mem: usize,
        stream: *mut c_void,
    ) -> i32;
}

pub fn run() -> Result<()> {
    let exe = std::env::current_exe()?;
    let offset = *symbols::function_offsets(&exe, [SYMBOL])?
        .get(SYMBOL)
        .ok_or_else(|| anyhow!("no {SYMBOL} symbol in {}", exe.display()))?;
    raise_memlock_limit();
    let btf = aya::Btf::from_sys_fs()?;

    let mut none = Vec::new();
    let mut bare = Vec::new();
    let mut parts = vec![Vec::new(); PARTS.len()];
    // The agent's probe on the stand-in as a runtime library of its own, and as
    // a runtime linked into a program (a stack read per call: see gpu_calls.bpf.c).
    let mut agent = [Vec::new(), Vec::new()];
    let mut counted = [0; 2];
    // Interleaved rounds, so that drift (frequency, other load) hits all alike.
    for _ in 0..ROUNDS {
        none.push(time_calls(CALLS));
        {
            let _probe = Reference::attach("bare_uprobe", &exe, offset)?;
            bare.push(time_calls(CALLS));
        }
        for ((program, _), times) in PARTS.iter().zip(&mut parts) {
            let _probe = Reference::attach(program, &exe, offset)?;
            times.push(time_calls(CALLS));
        }
        for (statically_linked, (times, counted)) in
            [false, true].into_iter().zip(agent.iter_mut().zip(&mut counted))
        {
            let mut probes = GpuProbes::load(&btf, 0)?;
            let probed = probes.attach(&as_cuda_runtime(&exe, statically_linked)?)?;
            if probed != 1 {
                bail!("the agent probed {probed} functions of the stand-in, not 1");
            }
            times.push(time_calls(CALLS));
            *counted = probes
                .stats()?
                .get(&std::process::id())
                .map_or(0, |s| s.kernel_launches);
        }
    }
    if counted != [u64::from(CALLS); 2] {
        bail!("the agent's probe counted {counted:?} of {CALLS} launches in the last round");
    }
    let (none, bare) = (median(none), median(bare));
    let [agent, agent_linked_in] = agent.map(median);
    println!("cudaLaunchKernel stand-in (returns at once), {CALLS} calls x {ROUNDS} rounds (median):");
    println!("  no probe          {none:>8.1} ns/call");
    println!(
        "  bare uprobe       {bare:>8.1} ns/call   (the trap: {:.1} ns)",
        bare - none
    );
    println!("  inferscope probe  {agent:>8.1} ns/call   (a runtime library of its own, as libcudart.so)");
    println!(
        "  inferscope / bare uprobe = {:.3}x   (target <= 1.2x)",
        agent / bare
    );
    println!(
        "  inferscope's own work    = {:.1} ns/call above the bare uprobe",
        agent - bare
    );
    println!(
        "  inferscope probe  {agent_linked_in:>8.1} ns/call   (a runtime linked into the program: {:.3}x, {:.1} ns of own work)",
        agent_linked_in / bare,
        agent_linked_in - bare
    );
    println!("  each part alone, above the bare uprobe (they overlap: not additive):");
    for ((_, what), times) in PARTS.iter().zip(parts) {
        println!("    {:>6.1} ns  {what}", median(times) - bare);
    }
    in_kernel(&exe, offset, &btf)
}

/// The programs' own run time as the kernel's BPF statistics count it: what
/// each costs inside the trap, whatever the trap itself costs on this machine
/// (it varies tenfold between hosts; the wall-clock ratio moves with it).
fn in_kernel(exe: &Path, offset: u64, btf: &aya::Btf) -> Result<()> {
    let _stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?;
    println!(
        "  run time inside the kernel per call (BPF statistics, {STATS_CALLS} calls; includes their own clock reads):"
    );
    let reference = |program: &str| -> Result<f64> {
        let probe = Reference::attach(program, exe, offset)?;
        time_calls(STATS_CALLS);
        probe.ns_per_run(program)
    };
    let empty = reference("bare_uprobe")?;
    println!("    {empty:>6.1} ns  an empty program");
    for (program, what) in PARTS {
        println!("    {:>6.1} ns  {what}", reference(program)?);
    }
    for (statically_linked, what) in [
        (false, "inferscope's launch probe, runtime library of its own"),
        (true, "inferscope's launch probe, runtime linked into the program"),
    ] {
        let mut probes = GpuProbes::load(btf, 0)?;
        probes.attach(&as_cuda_runtime(exe, statically_linked)?)?;
        time_calls(STATS_CALLS);
        println!(
            "    {:>6.1} ns  {what}",
            ns_per_run(&newest_program(ENTRY_PROGRAM)?)
        );
    }
    Ok(())
}

pub(crate) fn ns_per_run(info: &aya::programs::ProgramInfo) -> f64 {
    info.run_time().as_nanos() as f64 / info.run_count().max(1) as f64
}

pub(crate) fn time_calls(calls: u32) -> f64 {
    let grid = Dim3 { x: 1, y: 1, z: 1 };
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: the stand-in reads no argument and returns 0.
        std::hint::black_box(unsafe {
            cudaLaunchKernel(
                std::ptr::null(),
                grid,
                grid,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            )
        });
    }
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

/// The file as a CUDA runtime: its own library (all of its code runtime
/// code), or linked statically into a program.
pub(crate) fn as_cuda_runtime(exe: &Path, statically_linked: bool) -> Result<RuntimeLibrary> {
    let meta = std::fs::metadata(exe).with_context(|| exe.display().to_string())?;
    Ok(RuntimeLibrary {
        runtime: Runtime::Cudart,
        target: ProbeTarget {
            file: FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            // Only the agent's rescan matches mappings by address.
            mapped_at: 0,
            open_path: exe.to_path_buf(),
            path: exe.to_path_buf(),
        },
        statically_linked,
    })
}

/// One program of bench_baseline.bpf.o on the stand-in; detached when dropped.
struct Reference {
    ebpf: Ebpf,
}

impl Reference {
    fn attach(program: &str, exe: &Path, offset: u64) -> Result<Self> {
        // Task storage has no typed map in aya: only the kernel side touches it.
        let mut ebpf = EbpfLoader::new().allow_unsupported_maps().load(BASELINE_OBJ)?;
        let p: &mut UProbe = ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("no {program} in bench_baseline.bpf.o"))?
            .try_into()?;
        p.load().with_context(|| format!("verifying {program}"))?;
        p.attach(
            UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(offset),
                cookie: Some(3),
            },
            exe,
            UProbeScope::AllProcesses,
        )
        .with_context(|| format!("attaching {program}"))?;
        Ok(Self { ebpf })
    }

    fn ns_per_run(&self, program: &str) -> Result<f64> {
        let program = self
            .ebpf
            .program(program)
            .ok_or_else(|| anyhow!("no {program} in bench_baseline.bpf.o"))?;
        Ok(ns_per_run(&program.info()?))
    }
}
