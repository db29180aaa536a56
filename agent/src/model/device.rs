//! GPUs as the vendor's management library reports them (NVML; ROCm SMI), and
//! each process's share of them.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Counted, time};

/// Who made the device and which library reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    /// Read through NVML (`libnvidia-ml.so.1`).
    Nvidia,
    /// Read through ROCm SMI (`librocm_smi64.so`).
    Amd,
}

/// One GPU at the interval's end. A figure the library could not give is absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    pub vendor: Vendor,
    /// The library's device index.
    pub index: u32,
    /// Stable identity (`GPU-...` for NVIDIA), the join key with processes.
    pub uuid: String,
    pub name: String,
    pub pci_bus_id: Option<String>,
    /// Share of the last sample period in which a kernel ran (NVML "GPU utilisation").
    pub utilization_percent: Option<u32>,
    /// Share of the last sample period in which device memory was read or written.
    pub memory_utilization_percent: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_celsius: Option<u32>,
    pub power_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    /// Energy since the driver loaded, and in the interval.
    pub energy_joules: Option<Counted<f64>>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    pub pcie_tx_bytes_per_second: Option<u64>,
    pub pcie_rx_bytes_per_second: Option<u64>,
    /// Why clocks are held down right now (`sw_power_cap`, `hw_thermal_slowdown`, ...).
    pub clock_event_reasons: Option<Vec<String>>,
    pub ecc_enabled: Option<bool>,
    /// Volatile ECC error counts (since the driver loaded), and in the interval.
    pub ecc_corrected_errors: Option<Counted<u64>>,
    pub ecc_uncorrected_errors: Option<Counted<u64>>,
    pub mig_enabled: Option<bool>,
    /// Its MIG instances, when MIG mode is on.
    #[serde(default)]
    pub mig_instances: Vec<MigInstance>,
    /// GPU Performance Monitoring over the interval (NVIDIA Hopper and newer).
    #[serde(default)]
    pub gpm: Option<GpmView>,
    /// Critical XID errors seen since the agent started, and in the interval.
    pub xid_errors: Counted<u64>,
    /// Output tokens per second of the servers whose processes use this GPU, in the interval.
    #[serde(default)]
    pub output_tokens_per_second: Option<f64>,
    /// The interval's energy over those tokens.
    #[serde(default)]
    pub energy_per_output_token_joules: Option<f64>,
    /// Processes with a context on it, from the library's own list.
    pub processes: Vec<DeviceProcess>,
}

impl DeviceView {
    /// A device with nothing read yet: sources fill what their library gives,
    /// the join what it derives.
    pub fn new(vendor: Vendor, index: u32, uuid: String, name: String) -> Self {
        Self {
            vendor,
            index,
            uuid,
            name,
            pci_bus_id: None,
            utilization_percent: None,
            memory_utilization_percent: None,
            memory_used_bytes: None,
            memory_total_bytes: None,
            temperature_celsius: None,
            power_watts: None,
            power_limit_watts: None,
            energy_joules: None,
            sm_clock_mhz: None,
            memory_clock_mhz: None,
            pcie_tx_bytes_per_second: None,
            pcie_rx_bytes_per_second: None,
            clock_event_reasons: None,
            ecc_enabled: None,
            ecc_corrected_errors: None,
            ecc_uncorrected_errors: None,
            mig_enabled: None,
            mig_instances: Vec::new(),
            gpm: None,
            xid_errors: Counted::default(),
            output_tokens_per_second: None,
            energy_per_output_token_joules: None,
            processes: Vec::new(),
        }
    }
}

/// One Multi-Instance GPU partition of a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigInstance {
    /// Its slot on the parent device.
    pub index: u32,
    /// `MIG-...`: what CUDA_VISIBLE_DEVICES and NVML's process lists name.
    pub uuid: String,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
}

/// What the SMs did over the interval, from two GPM samples. Unlike
/// `utilization_percent` ("a kernel ran"), these say how much of the GPU
/// worked (an H100's figures under a matmul: docs/output.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpmView {
    /// Share of time SMs had at least one warp (`NVML_GPM_METRIC_SM_UTIL`).
    pub sm_active_percent: Option<f64>,
    /// Resident warps over the maximum (`NVML_GPM_METRIC_SM_OCCUPANCY`).
    pub sm_occupancy_percent: Option<f64>,
    /// Share of time any tensor pipe was active (`NVML_GPM_METRIC_ANY_TENSOR_UTIL`).
    pub tensor_active_percent: Option<f64>,
    /// DRAM bandwidth used over the peak (`NVML_GPM_METRIC_DRAM_BW_UTIL`).
    pub dram_bandwidth_percent: Option<f64>,
}

/// A process on one GPU, as the management library sees it (host pids).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceProcess {
    pub pid: u32,
    #[serde(flatten)]
    pub usage: GpuUsage,
}

/// A process's use of one GPU, as listed under the process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessGpu {
    pub uuid: String,
    pub index: u32,
    #[serde(flatten)]
    pub usage: GpuUsage,
}

/// What one process holds and uses of one GPU.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuUsage {
    pub memory_used_bytes: Option<u64>,
    /// Its share of SM time since the last snapshot; 0 when the library had no
    /// sample for it (no activity), absent when the library cannot tell.
    pub sm_utilization_percent: Option<u32>,
    pub memory_utilization_percent: Option<u32>,
}

/// Something a GPU reported that happened at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuEvent {
    #[serde(with = "time::rfc3339")]
    pub time: SystemTime,
    pub uuid: String,
    pub index: u32,
    #[serde(flatten)]
    pub kind: GpuEventKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum GpuEventKind {
    /// A critical XID error (NVIDIA's driver error codes: 79 fallen off the bus, 48 double-bit ECC, ...).
    Xid { xid: u64 },
}
