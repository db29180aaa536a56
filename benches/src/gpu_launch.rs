//! What inferscope's probe costs a real `cudaLaunchKernel` call, against the
//! same call under a bare uprobe that does nothing and under no probe at all.
//!
//! The library is the real `libcudart.so.12` (PyPI wheel). Without a GPU the
//! call fails fast (~10 ns), so the figures isolate the probe's own cost.

use std::{
    ffi::{CString, c_void},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};
use inferscope::{
    discover::{ProbeTarget, RuntimeLibrary, maps::FileId, symbols},
    probes::{GpuProbes, raise_memlock_limit},
    runtimes::Runtime,
};

static BASELINE_OBJ: &[u8] = aya::include_bytes_aligned!("../../ebpf-programs/obj/bench_baseline.bpf.o");

const CALLS: u32 = 500_000;
const ROUNDS: usize = 7;

use crate::median;

#[repr(C)]
#[derive(Clone, Copy)]
struct Dim3 {
    x: u32,
    y: u32,
    z: u32,
}

type LaunchKernel =
    unsafe extern "C" fn(*const c_void, Dim3, Dim3, *mut *mut c_void, usize, *mut c_void) -> i32;

pub fn run() -> Result<()> {
    let fixtures = std::env::var_os("INFERSCOPE_FIXTURES").context("run through `cargo xtask bench`")?;
    let lib = PathBuf::from(fixtures).join("nvidia/cuda_runtime/lib/libcudart.so.12");
    let launch = load_launch_kernel(&lib)?;
    raise_memlock_limit();

    let mut none = Vec::new();
    let mut bare = Vec::new();
    let mut agent = Vec::new();
    let mut counted = 0;
    let btf = aya::Btf::from_sys_fs()?;
    // Interleaved rounds, so that drift (frequency, other load) hits all three alike.
    for _ in 0..ROUNDS {
        none.push(time_calls(launch));
        {
            let _probe = BareProbe::attach(&lib)?;
            bare.push(time_calls(launch));
        }
        {
            let mut probes = GpuProbes::load(&btf)?;
            probes.attach(&runtime_library(&lib)?)?;
            agent.push(time_calls(launch));
            counted = probes
                .stats()?
                .get(&std::process::id())
                .map_or(0, |s| s.kernel_launches);
        }
    }
    if counted != u64::from(CALLS) {
        bail!("the agent's probe counted {counted} of {CALLS} launches in the last round");
    }
    let (none, bare, agent) = (median(none), median(bare), median(agent));
    println!("cudaLaunchKernel, real libcudart.so.12, {CALLS} calls x {ROUNDS} rounds (median):");
    println!("  no probe          {none:>8.1} ns/call");
    println!("  bare uprobe       {bare:>8.1} ns/call");
    println!("  inferscope probe  {agent:>8.1} ns/call   (counted {counted} of {CALLS})");
    println!(
        "  inferscope / bare uprobe = {:.3}x   (target <= 1.2x)",
        agent / bare
    );
    println!("  inferscope / no probe    = {:.1}x", agent / none);
    println!(
        "  inferscope's own work    = {:.1} ns/call above the bare uprobe",
        agent - bare
    );
    Ok(())
}

fn load_launch_kernel(lib: &std::path::Path) -> Result<LaunchKernel> {
    let path = CString::new(lib.as_os_str().as_encoded_bytes())?;
    // SAFETY: dlopen/dlsym with valid C strings; the handle is kept for the whole run.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
        if handle.is_null() {
            bail!("dlopen {} failed", lib.display());
        }
        let sym = libc::dlsym(handle, c"cudaLaunchKernel".as_ptr());
        if sym.is_null() {
            bail!("no cudaLaunchKernel in {}", lib.display());
        }
        Ok(std::mem::transmute::<*mut c_void, LaunchKernel>(sym))
    }
}

fn time_calls(launch: LaunchKernel) -> f64 {
    let grid = Dim3 { x: 1, y: 1, z: 1 };
    let start = Instant::now();
    for _ in 0..CALLS {
        // SAFETY: the real signature; without a device it returns an error at once.
        std::hint::black_box(unsafe {
            launch(
                std::ptr::null(),
                grid,
                grid,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            )
        });
    }
    start.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

fn runtime_library(lib: &std::path::Path) -> Result<RuntimeLibrary> {
    let meta = std::fs::metadata(lib)?;
    Ok(RuntimeLibrary {
        runtime: Runtime::Cudart,
        target: ProbeTarget {
            file: FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            open_path: lib.to_path_buf(),
            path: lib.to_path_buf(),
        },
        statically_linked: false,
    })
}

/// The do-nothing uprobe on the same function; detached when dropped.
struct BareProbe {
    _ebpf: Ebpf,
}

impl BareProbe {
    fn attach(lib: &std::path::Path) -> Result<Self> {
        let offset = *symbols::function_offsets(lib, ["cudaLaunchKernel"])?
            .get("cudaLaunchKernel")
            .ok_or_else(|| anyhow!("no cudaLaunchKernel"))?;
        let mut ebpf = Ebpf::load(BASELINE_OBJ)?;
        let p: &mut UProbe = ebpf.program_mut("bare_uprobe").unwrap().try_into()?;
        p.load()?;
        p.attach(
            UProbeAttachLocation::AbsoluteOffset(offset),
            lib,
            UProbeScope::AllProcesses,
        )?;
        Ok(Self { _ebpf: ebpf })
    }
}
