//! Where data comes from. A source owns its eBPF objects (or library handles)
//! and turns what they produce into readings for the join; it never formats
//! output and never knows about other sources.

mod gpu_processes;
mod kube;
mod nvml;
mod rocm_smi;
mod servers;

pub use gpu_processes::GpuProcesses;
pub use kube::{KubeConfig, KubePods, node_name as kube_node_name};
pub use nvml::{NvmlReading, NvmlSource};
pub use rocm_smi::RocmSmiSource;
pub use servers::Servers;
