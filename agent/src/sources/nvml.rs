//! The NVML source: every NVIDIA GPU's figures, the processes on each with
//! their memory and SM share, and critical XID errors, through NVIDIA's
//! management library loaded at run time (`nvml-wrapper`).
//!
//! A machine without NVML, or a call that fails, costs one line in the log;
//! the agent carries on with what it can read. XID errors arrive on an event
//! set that a thread of its own waits on, so waiting never holds up a snapshot.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    time::SystemTime,
};

use nvml_wrapper::{
    Device, GpmSample, Nvml,
    bitmasks::event::EventTypes,
    enum_wrappers::device::{Clock, EccCounter, MemoryError, PcieUtilCounter, TemperatureSensor},
    enums::{device::UsedGpuMemory, event::XidError, gpm::GpmMetricId},
    error::NvmlError,
    gpm::gpm_metrics_get,
    struct_wrappers::device::ProcessUtilizationSample,
};

use super::{Readings, Source};
use crate::model::{
    Counted, DeviceProcess, DeviceView, GpmView, GpuEvent, GpuEventKind, GpuUsage, MigInstance, Vendor,
};

/// NVML's clock event ("throttle") reason bits, `nvmlClocksEventReason*`.
const CLOCK_EVENT_REASONS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

/// GPM metrics read, in the order of [`GpmView`]'s fields.
const GPM_METRICS: [GpmMetricId; 4] = [
    GpmMetricId::SmUtil,
    GpmMetricId::SmOccupancy,
    GpmMetricId::AnyTensorUtil,
    GpmMetricId::DramBwUtil,
];

/// The PID namespace every host process starts in (`PROC_PID_INIT_INO`).
const HOST_PID_NAMESPACE_INODE: u64 = 0xEFFF_FFFC;

/// One read of every device, and the events since the last one.
#[derive(Debug, Default)]
pub struct NvmlReading {
    /// Counted figures carry their totals; the join sets the deltas.
    pub devices: Vec<DeviceView>,
    pub events: Vec<GpuEvent>,
}

pub struct NvmlSource {
    nvml: &'static Nvml,
    /// Newest per-process utilisation sample read, per device (µs, NVML's clock),
    /// so that each read covers the samples since the last.
    last_sample_us: HashMap<u32, u64>,
    events: Receiver<GpuEvent>,
    stop: Arc<AtomicBool>,
    /// (device, what) pairs whose failure was logged already.
    warned: HashSet<(u32, &'static str)>,
    /// Whether each device has GPM, asked once.
    gpm_supported: HashMap<u32, bool>,
    /// The last GPM sample per device: metrics compare it with the next.
    gpm_samples: HashMap<u32, GpmSample<'static>>,
}

impl NvmlSource {
    /// Loads NVML from `library`, or the system's `libnvidia-ml.so.1`; `None`,
    /// with one line in the log, where it cannot. A host without the library
    /// (no NVIDIA driver) is said at `info`; a library that fails, at `warn`.
    pub fn open(library: Option<&Path>) -> Option<Self> {
        Self::try_open(library)
            .inspect_err(|e| match e {
                NvmlError::LibloadingError(_) if library.is_none() => {
                    log::info!("no NVIDIA management library (libnvidia-ml.so.1): no NVIDIA device figures")
                }
                e => log::warn!("NVML unavailable, no NVIDIA device figures: {e}"),
            })
            .ok()
    }

    pub fn try_open(library: Option<&Path>) -> Result<Self, NvmlError> {
        let path = library.map_or(OsStr::new("libnvidia-ml.so.1"), Path::as_os_str);
        // The library stays loaded for the agent's life; the XID thread borrows it.
        let nvml: &'static Nvml = Box::leak(Box::new(Nvml::builder().lib_path(path).init()?));
        if !in_host_pid_namespace() {
            log::warn!(
                "not in the host PID namespace: NVML names processes by host PID, so its per-process \
                 memory and utilisation cannot be joined with the processes the agent sees \
                 (run with hostPID: true)"
            );
        }
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name("nvml-events".into())
            .spawn(move || watch_xids(nvml, tx, &thread_stop))
            .map_err(|_| NvmlError::Unknown)?;
        Ok(Self {
            nvml,
            last_sample_us: HashMap::new(),
            events,
            stop,
            warned: HashSet::new(),
            gpm_supported: HashMap::new(),
            gpm_samples: HashMap::new(),
        })
    }

    /// Every device's figures now, and the events since the last call.
    pub fn sample(&mut self) -> NvmlReading {
        let count = match self.nvml.device_count() {
            Ok(n) => n,
            Err(e) => {
                self.warn(u32::MAX, "device count", &e);
                0
            }
        };
        let devices = (0..count)
            .filter_map(|index| match self.nvml.device_by_index(index) {
                Ok(device) => self.device(index, &device),
                Err(e) => {
                    self.warn(index, "device handle", &e);
                    None
                }
            })
            .collect();
        NvmlReading {
            devices,
            events: self.events.try_iter().collect(),
        }
    }

    /// A device's figures; `None` when it cannot even say who it is.
    fn device(&mut self, index: u32, d: &Device<'static>) -> Option<DeviceView> {
        let uuid = self.get(index, "uuid", d.uuid())?;
        let name = self.get(index, "name", d.name())?;
        let utilization = self.get(index, "utilization", d.utilization_rates());
        let mig_enabled = self.get(index, "MIG mode", d.mig_mode()).map(|m| m.current == 1);
        let memory = self.get(index, "memory", d.memory_info());
        let ecc = |this: &mut Self, what, kind| {
            this.get(index, what, d.total_ecc_errors(kind, EccCounter::Volatile))
                .map(Counted::first)
        };
        Some(DeviceView {
            pci_bus_id: self.get(index, "pci info", d.pci_info()).map(|p| p.bus_id),
            utilization_percent: utilization.as_ref().map(|u| u.gpu),
            memory_utilization_percent: utilization.map(|u| u.memory),
            memory_used_bytes: memory.as_ref().map(|m| m.used),
            memory_total_bytes: memory.map(|m| m.total),
            temperature_celsius: self.get(index, "temperature", d.temperature(TemperatureSensor::Gpu)),
            power_watts: self.get(index, "power", d.power_usage()).map(milli),
            power_limit_watts: self
                .get(index, "power limit", d.enforced_power_limit())
                .map(milli),
            energy_joules: self
                .get(index, "energy", d.total_energy_consumption())
                .map(|mj| Counted::first(mj as f64 / 1e3)),
            sm_clock_mhz: self.get(index, "SM clock", d.clock_info(Clock::SM)),
            memory_clock_mhz: self.get(index, "memory clock", d.clock_info(Clock::Memory)),
            pcie_tx_bytes_per_second: self
                .get(index, "PCIe throughput", d.pcie_throughput(PcieUtilCounter::Send))
                .map(kib),
            pcie_rx_bytes_per_second: self
                .get(
                    index,
                    "PCIe throughput",
                    d.pcie_throughput(PcieUtilCounter::Receive),
                )
                .map(kib),
            clock_event_reasons: self
                .get(index, "clock event reasons", d.current_throttle_reasons())
                .map(|r| reason_names(r.bits())),
            ecc_enabled: self
                .get(index, "ECC mode", d.is_ecc_enabled())
                .map(|m| m.currently_enabled),
            ecc_corrected_errors: ecc(self, "ECC errors", MemoryError::Corrected),
            ecc_uncorrected_errors: ecc(self, "ECC errors", MemoryError::Uncorrected),
            mig_enabled,
            mig_instances: if mig_enabled == Some(true) {
                self.mig_instances(index, d)
            } else {
                Vec::new()
            },
            gpm: self.gpm(index, d),
            processes: self.processes(index, d),
            ..DeviceView::new(Vendor::Nvidia, index, uuid, name)
        })
    }

    /// The MIG instances made on a device in MIG mode (empty slots are NOT_FOUND).
    fn mig_instances(&mut self, index: u32, d: &Device<'static>) -> Vec<MigInstance> {
        let Some(slots) = self.get(index, "MIG device count", d.mig_device_count()) else {
            return Vec::new();
        };
        (0..slots)
            .filter_map(|slot| {
                let mig = d.mig_device_by_index(slot).ok()?;
                let memory = mig.memory_info().ok();
                Some(MigInstance {
                    index: slot,
                    uuid: mig.uuid().ok()?,
                    memory_used_bytes: memory.as_ref().map(|m| m.used),
                    memory_total_bytes: memory.map(|m| m.total),
                })
            })
            .collect()
    }

    /// GPM metrics since the last read; `None` without GPM, and at the first read.
    fn gpm(&mut self, index: u32, d: &Device<'static>) -> Option<GpmView> {
        let supported = *self
            .gpm_supported
            .entry(index)
            .or_insert_with(|| d.gpm_support().unwrap_or(false));
        if !supported {
            return None;
        }
        let sample = self.get(index, "GPM sample", d.gpm_sample())?;
        let previous = self.gpm_samples.insert(index, sample)?;
        let results = gpm_metrics_get(self.nvml, &previous, &self.gpm_samples[&index], &GPM_METRICS);
        let results = self.get(index, "GPM metrics", results)?;
        let value = |i: usize| results.get(i).and_then(|r| r.as_ref().ok()).map(|m| m.value);
        Some(GpmView {
            sm_active_percent: value(0),
            sm_occupancy_percent: value(1),
            tensor_active_percent: value(2),
            dram_bandwidth_percent: value(3),
        })
    }

    /// NVML's processes on a device, with their share of the device since the last read.
    fn processes(&mut self, index: u32, d: &Device<'static>) -> Vec<DeviceProcess> {
        let Some(running) = self.get(index, "processes", d.running_compute_processes()) else {
            return Vec::new();
        };
        let since = self.last_sample_us.get(&index).copied();
        // No sample since `since` is NOT_FOUND: no activity, not an error.
        let samples = match d.process_utilization_stats(since) {
            Ok(samples) => Some(samples),
            Err(NvmlError::NotFound) => Some(Vec::new()),
            Err(e) => {
                self.warn(index, "process utilisation", &e);
                None
            }
        };
        let mut latest = HashMap::new();
        for s in samples.iter().flatten() {
            let entry = latest.entry(s.pid).or_insert(s);
            if s.timestamp >= entry.timestamp {
                *entry = s;
            }
        }
        if let Some(newest) = latest.values().map(|s| s.timestamp).max() {
            self.last_sample_us.insert(index, newest);
        }
        running
            .into_iter()
            .map(|p| {
                let sample = latest.get(&p.pid);
                let share =
                    |f: fn(&&ProcessUtilizationSample) -> u32| samples.as_ref().map(|_| sample.map_or(0, f));
                DeviceProcess {
                    pid: p.pid,
                    usage: GpuUsage {
                        memory_used_bytes: match p.used_gpu_memory {
                            UsedGpuMemory::Used(b) => Some(b),
                            UsedGpuMemory::Unavailable => None,
                        },
                        sm_utilization_percent: share(|s| s.sm_util),
                        memory_utilization_percent: share(|s| s.mem_util),
                    },
                }
            })
            .collect()
    }

    /// The value, or `None` with one log line per device and figure (none for "not supported").
    fn get<T>(&mut self, index: u32, what: &'static str, result: Result<T, NvmlError>) -> Option<T> {
        result.map_err(|e| self.warn(index, what, &e)).ok()
    }

    fn warn(&mut self, index: u32, what: &'static str, e: &NvmlError) {
        if !self.warned.insert((index, what)) {
            return;
        }
        match e {
            NvmlError::NotSupported | NvmlError::FunctionNotFound => {
                log::info!("NVML device {index}: {what} not supported")
            }
            e => log::warn!("NVML device {index}: cannot read {what}: {e}"),
        }
    }
}

impl Drop for NvmlSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits for critical XID errors on every device that can report them.
fn watch_xids(nvml: &'static Nvml, events: Sender<GpuEvent>, stop: &AtomicBool) {
    let Ok(mut set) = nvml.create_event_set() else {
        log::info!("NVML events unavailable: XID errors will not be reported");
        return;
    };
    let mut registered = 0;
    for index in 0..nvml.device_count().unwrap_or(0) {
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        if !device
            .supported_event_types()
            .is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR))
        {
            continue;
        }
        set = match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(set) => {
                registered += 1;
                set
            }
            Err(e) => {
                log::warn!(
                    "NVML device {index}: XID errors will not be reported: {}",
                    e.error
                );
                match nvml.create_event_set() {
                    Ok(set) => set,
                    Err(_) => return,
                }
            }
        };
    }
    if registered == 0 {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match set.wait(500) {
            Ok(event) => {
                let Some(XidError::Value(xid)) = event.event_data else {
                    continue;
                };
                let gpu_event = GpuEvent {
                    time: SystemTime::now(),
                    uuid: event.device.uuid().unwrap_or_default(),
                    index: event.device.index().unwrap_or(u32::MAX),
                    kind: GpuEventKind::Xid { xid },
                };
                log::warn!("GPU {} reported XID {xid}", gpu_event.index);
                if events.send(gpu_event).is_err() {
                    return;
                }
            }
            Err(NvmlError::Timeout) => {}
            Err(e) => {
                log::warn!("NVML event wait failed, XID errors no longer reported: {e}");
                return;
            }
        }
    }
}

fn milli(v: u32) -> f64 {
    f64::from(v) / 1e3
}

/// NVML gives PCIe throughput in KiB/s.
fn kib(v: u32) -> u64 {
    u64::from(v) * 1024
}

fn reason_names(bits: u64) -> Vec<String> {
    CLOCK_EVENT_REASONS
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| name.to_string())
        .collect()
}

fn in_host_pid_namespace() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == HOST_PID_NAMESPACE_INODE)
}

impl Source for NvmlSource {
    fn read(&mut self, _now_ns: u64, readings: &mut Readings) -> anyhow::Result<()> {
        let NvmlReading { devices, events } = self.sample();
        readings.devices.extend(devices);
        readings.gpu_events.extend(events);
        Ok(())
    }
}
