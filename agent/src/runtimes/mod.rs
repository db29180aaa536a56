//! The GPU runtimes inferscope probes. Each is one file holding its
//! [`RuntimeSpec`]: its library, the exported functions to probe and what
//! their arguments mean, and the family its figures are exported under.
//!
//! The kernel side has one generic program; everything function-specific lives
//! in these tables and travels to it as an attach cookie.

mod cuda;
mod cudart;
mod hip;
mod nccl;

use inferscope_shared::{Cookie, CopyDir, GpuOp};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

/// What inferscope knows of one runtime.
pub struct RuntimeSpec {
    /// Its name in reports (as in JSON).
    pub name: &'static str,
    /// Its shared library's file name before `.so` (`libcudart` for `libcudart.so.12`).
    pub library: &'static str,
    /// Whose names its processes' figures are exported under; `None`: those of
    /// the compute runtime beside it (a collectives library).
    pub family: Option<Family>,
    /// The probed functions; the first is one only this runtime defines.
    pub probes: &'static [ProbeSpec],
}

/// Whose names a process's GPU figures take when exported: CUDA's (the names
/// OpenTelemetry eBPF Instrumentation uses) or HIP's (ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Cuda,
    Hip,
}

impl Family {
    /// The family of a process mapping `runtimes`: CUDA's where any runtime is
    /// CUDA's (or none names one, as NCCL alone), else HIP's where one is.
    pub fn of(runtimes: &[Runtime]) -> Self {
        let families: Vec<Family> = runtimes.iter().filter_map(|r| r.family()).collect();
        if !families.contains(&Family::Cuda) && families.contains(&Family::Hip) {
            Family::Hip
        } else {
            Family::Cuda
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Runtime {
    /// CUDA runtime API (`libcudart`), shared or linked statically into an executable.
    Cudart,
    /// CUDA driver API (`libcuda`).
    Cuda,
    /// AMD ROCm HIP (`libamdhip64`).
    Hip,
    /// NVIDIA collective communications (`libnccl`).
    Nccl,
}

impl Runtime {
    pub const ALL: [Runtime; 4] = [Runtime::Cudart, Runtime::Cuda, Runtime::Hip, Runtime::Nccl];

    /// Everything known of it: a new runtime does not compile until its file says it.
    fn spec(self) -> &'static RuntimeSpec {
        match self {
            Runtime::Cudart => &cudart::SPEC,
            Runtime::Cuda => &cuda::SPEC,
            Runtime::Hip => &hip::SPEC,
            Runtime::Nccl => &nccl::SPEC,
        }
    }

    /// The runtime a shared library file name belongs to (`libcudart.so.12` ->
    /// Cudart), also under the name a wheel's repair tool gives the copy it
    /// bundles (`libcudart-9335f6a2.so.12`, as in PyTorch's `torch/lib`).
    pub fn of_library(file_name: &str) -> Option<Runtime> {
        let stem = file_name.split(".so").next()?;
        if !file_name[stem.len()..].starts_with(".so") {
            return None;
        }
        let stem = match stem.rsplit_once('-') {
            Some((name, hash)) if hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => name,
            _ => stem,
        };
        Runtime::ALL.into_iter().find(|rt| rt.library() == stem)
    }

    /// The name used in reports (as in JSON).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Its shared library's file name before `.so`.
    pub fn library(self) -> &'static str {
        self.spec().library
    }

    pub fn family(self) -> Option<Family> {
        self.spec().family
    }

    pub fn probes(self) -> &'static [ProbeSpec] {
        self.spec().probes
    }

    /// A symbol that only this runtime defines: how a statically linked copy is recognised.
    pub fn marker_symbol(self) -> &'static str {
        self.probes()[0].symbol
    }
}

impl Serialize for Runtime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Runtime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        Runtime::ALL
            .into_iter()
            .find(|rt| rt.name() == name)
            .ok_or_else(|| {
                let known = Runtime::ALL.map(Runtime::name).join(", ");
                D::Error::custom(format!("unknown runtime `{name}`, expected one of {known}"))
            })
    }
}

/// One probed function.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    pub symbol: &'static str,
    pub cookie: Cookie,
}

impl ProbeSpec {
    pub fn needs_return_probe(&self) -> bool {
        self.cookie.return_probe
    }
}

// Constructors that keep the tables to one readable line per function.

/// The one place that decides which functions get a return probe: only calls
/// whose result (allocation: the pointer) or duration (synchronisation) matters
/// pay for it. The kernel side reads the choice from the cookie.
const fn spec(symbol: &'static str, mut cookie: Cookie) -> ProbeSpec {
    cookie.return_probe = matches!(cookie.op, GpuOp::Alloc | GpuOp::Sync);
    ProbeSpec { symbol, cookie }
}

const fn launch(symbol: &'static str) -> ProbeSpec {
    spec(symbol, Cookie::new(GpuOp::KernelLaunch))
}

const fn graph_launch(symbol: &'static str) -> ProbeSpec {
    spec(symbol, Cookie::new(GpuOp::GraphLaunch))
}

/// A copy of `size_arg` bytes whose direction is `dir` (or read from `kind_arg`).
const fn copy(symbol: &'static str, size_arg: u8, dir: CopyDir, kind_arg: u8) -> ProbeSpec {
    let mut c = Cookie::new(GpuOp::Memcpy);
    c.size_arg = size_arg;
    c.dir = dir;
    c.aux_arg = kind_arg;
    spec(symbol, c)
}

const fn memset(symbol: &'static str, size_arg: u8) -> ProbeSpec {
    let mut c = Cookie::new(GpuOp::Memset);
    c.size_arg = size_arg;
    spec(symbol, c)
}

/// An allocation of `size_arg` bytes whose pointer is written through `out_arg`.
const fn alloc(symbol: &'static str, out_arg: u8, size_arg: u8) -> ProbeSpec {
    let mut c = Cookie::new(GpuOp::Alloc);
    c.size_arg = size_arg;
    c.aux_arg = out_arg;
    spec(symbol, c)
}

/// A free of the pointer in the first argument.
const fn free(symbol: &'static str) -> ProbeSpec {
    spec(symbol, Cookie::new(GpuOp::Free))
}

const fn sync(symbol: &'static str) -> ProbeSpec {
    spec(symbol, Cookie::new(GpuOp::Sync))
}

/// Marks a spec as CUDA driver API, so that calls made by the CUDA runtime are not counted twice.
const fn driver(mut p: ProbeSpec) -> ProbeSpec {
    p.cookie.driver = true;
    p
}

#[cfg(test)]
mod tests {
    use inferscope_shared::CALL_ARGS_MAX;

    use super::*;

    #[test]
    fn a_process_is_exported_under_its_compute_runtimes_family() {
        use Runtime::*;
        assert_eq!(Family::of(&[Hip]), Family::Hip);
        assert_eq!(Family::of(&[Hip, Cudart]), Family::Cuda);
        assert_eq!(Family::of(&[Nccl, Hip]), Family::Hip);
        assert_eq!(Family::of(&[Nccl]), Family::Cuda);
        assert_eq!(Family::of(&[]), Family::Cuda);
    }

    #[test]
    fn libraries_are_recognised_by_file_name() {
        assert_eq!(Runtime::of_library("libcudart.so.12"), Some(Runtime::Cudart));
        assert_eq!(Runtime::of_library("libcudart.so.12.9.79"), Some(Runtime::Cudart));
        assert_eq!(Runtime::of_library("libcuda.so.1"), Some(Runtime::Cuda));
        assert_eq!(Runtime::of_library("libcuda.so"), Some(Runtime::Cuda));
        assert_eq!(Runtime::of_library("libamdhip64.so.5"), Some(Runtime::Hip));
        assert_eq!(Runtime::of_library("libnccl.so.2"), Some(Runtime::Nccl));
        assert_eq!(Runtime::of_library("libcudnn.so.9"), None);
        assert_eq!(Runtime::of_library("libcuda_stub.so"), None);
        assert_eq!(Runtime::of_library("libcudart_static.a"), None);
        assert_eq!(
            Runtime::of_library("libcudart-9335f6a2.so.12"),
            Some(Runtime::Cudart)
        );
        assert_eq!(Runtime::of_library("libnccl-6e4b9d3c.so.2"), Some(Runtime::Nccl));
        assert_eq!(Runtime::of_library("libcudart-12.so"), None);
    }

    #[test]
    fn every_table_names_each_symbol_once_and_uses_arguments_the_kernel_side_reads() {
        for rt in Runtime::ALL {
            let mut seen = std::collections::HashSet::new();
            for p in rt.probes() {
                assert!(seen.insert(p.symbol), "{} listed twice", p.symbol);
                let args = [p.cookie.size_arg, p.cookie.aux_arg];
                assert!(args.iter().all(|&a| a <= CALL_ARGS_MAX), "{}", p.symbol);
                assert_eq!(p.cookie.driver, rt == Runtime::Cuda, "{}", p.symbol);
            }
        }
    }
}
