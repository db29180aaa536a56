//! What recording where GPU calls come from (`profile --gpu-call-stacks N`)
//! costs a launch, beside the launch probe's own cost:
//! - on the clock: the stand-in `cudaLaunchKernel` (see gpu_launch.rs) called
//!   from 64 frames deep, probed without stacks, with 1 in N recording its
//!   stack, and with every call recording one, in interleaved rounds;
//! - inside the kernel (BPF statistics): the probe's run time without and with
//!   a stack per call, there and in a CPython process launching through ctypes
//!   (a native stack through the interpreter, and the Python frames read too).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};
use inferscope::{
    probes::{GpuCallStacks, GpuProbes, raise_memlock_limit},
    profile::{DEFAULT_GPU_CALL_STACK_EVERY, python},
};

use crate::{
    gpu_launch::{ENTRY_PROGRAM, as_cuda_runtime, ns_per_run},
    median, newest_program,
};

const CALLS: u32 = 200_000;
const ROUNDS: usize = 7;
/// Frames (each with its frame pointer) between the launching loop and the bench's own code.
const DEPTH: u64 = 64;
/// Launches the CPython process makes per measurement (each one a few µs: the
/// real runtime fails without a GPU).
const PYTHON_CALLS: u32 = 20_000;

// `deep(depth, calls)`: `depth` nested frames, then `calls` calls of the
// stand-in, as a deep call path into a runtime launches. Assembly, so that
// every frame has its frame pointer (the kernel walks user stacks by them).
std::arch::global_asm!(
    ".globl inferscope_bench_deep",
    "inferscope_bench_deep:",
    "push rbp",
    "mov rbp, rsp",
    "test rdi, rdi",
    "jz 2f",
    "dec rdi",
    "call inferscope_bench_deep",
    "pop rbp",
    "ret",
    "2:",
    "push rbx",
    "push r12",
    "mov rbx, rsi",
    "3:",
    "call cudaLaunchKernel",
    "dec rbx",
    "jnz 3b",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
);

unsafe extern "C" {
    fn inferscope_bench_deep(depth: u64, calls: u64);
}

/// The launch probe on `exe` (the stand-in), recording 1 in `every` of this
/// process's calls' stacks.
fn probes_on(btf: &aya::Btf, every: u32, exe: &Path) -> Result<(GpuProbes, Option<GpuCallStacks>)> {
    let mut probes = GpuProbes::load(btf, every)?;
    let mut stacks = probes.take_call_stacks();
    if let Some(stacks) = &mut stacks {
        stacks.sample(std::process::id())?;
    }
    probes.attach(&as_cuda_runtime(exe, false)?)?;
    Ok((probes, stacks))
}

fn time_deep_calls(calls: u32) -> f64 {
    let start = Instant::now();
    // SAFETY: the assembly keeps the ABI (callee-saved registers restored, the
    // stack aligned at each call) and the stand-in reads no argument.
    unsafe { inferscope_bench_deep(DEPTH, u64::from(calls)) };
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

pub fn run(fixtures: &Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    raise_memlock_limit();
    let btf = aya::Btf::from_sys_fs()?;
    let settings = [0, DEFAULT_GPU_CALL_STACK_EVERY, 1];
    let mut times = vec![Vec::new(); settings.len()];
    for _ in 0..ROUNDS {
        for (&every, times) in settings.iter().zip(&mut times) {
            let (probes, stacks) = probes_on(&btf, every, &exe)?;
            times.push(time_deep_calls(CALLS));
            let recorded = match stacks {
                Some(stacks) => stacks.samples()?.iter().map(|s| s.calls).sum(),
                None => 0,
            };
            drop(probes);
            if every == 1 && recorded != u64::from(CALLS) {
                bail!("{recorded} of {CALLS} launches recorded their stack");
            }
        }
    }
    let [none, sampled, all] = [0, 1, 2].map(|i| median(times[i].clone()));
    println!(
        "Stacks at GPU launches: the stand-in cudaLaunchKernel called {DEPTH} frames deep, {CALLS} calls x {ROUNDS} rounds (median):"
    );
    println!("  launch probe, no stacks              {none:>8.1} ns/call");
    println!(
        "  1 in {DEFAULT_GPU_CALL_STACK_EVERY} records its stack (default)    {sampled:>8.1} ns/call   {:+.1} ns, {:.3}x",
        sampled - none,
        sampled / none
    );
    println!(
        "  every call records its stack         {all:>8.1} ns/call   {:+.1} ns: one stack costs about that",
        all - none
    );
    let _stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?;
    println!("  run time of the probe inside the kernel per call (BPF statistics):");
    let mut runs = [0.0; 2];
    for (every, run) in [0, 1].into_iter().zip(&mut runs) {
        let _probes = probes_on(&btf, every, &exe)?;
        time_deep_calls(CALLS);
        *run = ns_per_run(&newest_program(ENTRY_PROGRAM)?);
    }
    print_in_kernel(&format!("stand-in, {DEPTH} frames deep"), runs);
    in_python(fixtures, &btf)
}

/// The probe's run time per call in a CPython process, without and with a
/// stack (native and Python) per call.
fn in_python(fixtures: &Path, btf: &aya::Btf) -> Result<()> {
    let cudart = fixtures.join("nvidia/cuda_runtime/lib/libcudart.so.12");
    // Launching 20 Python frames deep, so many launches per line read.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/gpu_launcher.py");
    let mut child = Command::new(fixtures.join("venv/bin/python"))
        .arg(&script)
        .arg(&cudart)
        .arg("--per-line")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the fixtures' python")?;
    let result = (|| -> Result<()> {
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let mut lines = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?).lines();
        let mut expect = |want: &str| -> Result<()> {
            match lines.next() {
                Some(Ok(line)) if line == want => Ok(()),
                other => bail!("the Python launcher said {other:?}, not {want}"),
            }
        };
        expect("ready")?;
        let python = python::detect(child.id())
            .ok_or_else(|| anyhow!("the fixtures' python is not a known CPython"))?;
        let (mut runs, mut python_frames) = ([0.0; 2], 0);
        for (every, run) in [0, 1].into_iter().zip(&mut runs) {
            let mut probes = GpuProbes::load(btf, every)?;
            probes.attach(&as_cuda_runtime(&cudart, false)?)?;
            let mut stacks = probes.take_call_stacks();
            if let Some(stacks) = &mut stacks {
                stacks.sample(child.id())?;
                stacks.sample_python(child.id(), python.proc)?;
            }
            writeln!(stdin, "{PYTHON_CALLS}")?;
            expect("done")?;
            *run = ns_per_run(&newest_program(ENTRY_PROGRAM)?);
            if let Some(stacks) = stacks {
                python_frames = stacks
                    .samples()?
                    .iter()
                    .map(|s| s.python.len())
                    .max()
                    .unwrap_or(0);
            }
        }
        print_in_kernel(
            &format!(
                "CPython 3.{} through ctypes ({python_frames} Python frames)",
                python.minor
            ),
            runs,
        );
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The probe's run time without stacks and with a stack per call, and what
/// the default sampling adds per call on average.
fn print_in_kernel(what: &str, [none, each]: [f64; 2]) {
    let stack = each - none;
    println!("    {what}:");
    println!("      {none:>7.1} ns  no stacks");
    println!("      {each:>7.1} ns  a stack per call: one stack {stack:.0} ns");
    println!(
        "      {:>7.1} ns  1 in {DEFAULT_GPU_CALL_STACK_EVERY} (the default), on average: {:+.1} ns",
        none + stack / f64::from(DEFAULT_GPU_CALL_STACK_EVERY),
        stack / f64::from(DEFAULT_GPU_CALL_STACK_EVERY)
    );
}
