//! The GPU runtimes inferscope probes: how to recognise their libraries and,
//! per runtime, which exported functions to probe and what their arguments mean.
//!
//! The kernel side has one generic program; everything function-specific lives
//! in these tables and travels to it as an attach cookie.

mod cuda;
mod hip;
mod nccl;

use inferscope_shared::{Cookie, CopyDir, GpuOp};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

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
        match stem {
            "libcudart" => Some(Runtime::Cudart),
            "libcuda" => Some(Runtime::Cuda),
            "libamdhip64" => Some(Runtime::Hip),
            "libnccl" => Some(Runtime::Nccl),
            _ => None,
        }
    }

    /// The name used in reports (as in JSON).
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Cudart => "cudart",
            Runtime::Cuda => "cuda",
            Runtime::Hip => "hip",
            Runtime::Nccl => "nccl",
        }
    }

    pub fn probes(self) -> &'static [ProbeSpec] {
        match self {
            Runtime::Cudart => cuda::RUNTIME,
            Runtime::Cuda => cuda::DRIVER,
            Runtime::Hip => hip::PROBES,
            Runtime::Nccl => nccl::PROBES,
        }
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
            .ok_or_else(|| D::Error::unknown_variant(&name, &["cudart", "cuda", "hip", "nccl"]))
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
    use super::*;

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
    fn every_table_names_each_symbol_once_and_uses_at_most_five_arguments() {
        for rt in Runtime::ALL {
            let mut seen = std::collections::HashSet::new();
            for p in rt.probes() {
                assert!(seen.insert(p.symbol), "{} listed twice", p.symbol);
                assert!(p.cookie.size_arg <= 5 && p.cookie.aux_arg <= 5, "{}", p.symbol);
                assert_eq!(p.cookie.driver, rt == Runtime::Cuda, "{}", p.symbol);
            }
        }
    }
}
