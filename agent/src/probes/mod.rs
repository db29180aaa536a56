//! Loads the committed eBPF objects with aya, attaches them, and reads what
//! they produce: per-process GPU counters and process lifecycle events.

pub mod compat;
mod detach;
mod gpu;
mod gpu_stacks;
pub mod host;
mod iter;
mod net;
mod process;
mod profile;
mod stacks;

pub use gpu::{AttachedAt, GpuProbes};
pub use gpu_stacks::{CallStackSample, GpuCall, GpuCallStacks};
pub use net::{NetProbes, SocketHook};
pub use process::{ProcessProbes, decode_event};
pub use profile::{ProfileProbes, StackSample};
pub use stacks::{PythonProc, STACK_LOSSES};

use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::UProbe,
};
use inferscope_shared::DropReason;

/// The objects `cargo xtask ebpf` builds, embedded so that the binary is all one needs.
static GPU_CALLS_OBJ: &[u8] = aya::include_bytes_aligned!("../../../ebpf-programs/obj/gpu_calls.bpf.o");
static NET_CAPTURE_OBJ: &[u8] = aya::include_bytes_aligned!("../../../ebpf-programs/obj/net_capture.bpf.o");
static PROCESS_OBJ: &[u8] = aya::include_bytes_aligned!("../../../ebpf-programs/obj/process.bpf.o");
static PROFILE_OBJ: &[u8] = aya::include_bytes_aligned!("../../../ebpf-programs/obj/profile.bpf.o");

/// Cumulative counts of what the kernel side could not record, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops([u64; DropReason::ALL.len()]);

impl Drops {
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    pub fn add(&mut self, reason: DropReason, n: u64) {
        self.0[reason as usize] += n;
    }

    /// Every reason with its count, zeros too.
    pub fn by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.into_iter().map(|r| (r, self.get(r)))
    }
}

impl std::ops::AddAssign for Drops {
    fn add_assign(&mut self, other: Self) {
        for (r, n) in other.by_reason() {
            self.add(r, n);
        }
    }
}

/// One object's drops, summed over CPUs.
fn read_drops(ebpf: &Ebpf) -> Result<Drops> {
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("drops").ok_or_else(|| anyhow!("drops missing"))?)?;
    let mut out = Drops::default();
    for reason in DropReason::ALL {
        if let Ok(values) = map.get(&(reason as u32), 0) {
            out.add(reason, values.iter().sum());
        }
    }
    Ok(out)
}

/// A uprobe program of a loaded object, by name.
fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    Ok(ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("{name} missing"))?
        .try_into()?)
}

/// Takes an object's ring buffer out of it, for the caller to poll; once.
fn take_ring_buf(ebpf: &mut Ebpf, name: &str) -> Result<RingBuf<MapData>> {
    let map = ebpf.take_map(name).ok_or_else(|| anyhow!("{name} missing"))?;
    Ok(RingBuf::try_from(map)?)
}

/// aya refuses to load when RLIMIT_MEMLOCK is low on kernels that still charge
/// BPF memory to it (< 5.11). Raise it where allowed; where it is not (memcg
/// accounting, as here), the kernel does not need it.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "RLIMIT_MEMLOCK not raised ({}); fine on kernels >= 5.11",
            std::io::Error::last_os_error()
        );
    }
}
