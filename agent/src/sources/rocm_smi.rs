//! The ROCm SMI source: AMD GPUs' utilisation, VRAM, temperature, power and
//! energy through AMD's `librocm_smi64`, loaded at run time. Without the
//! library, or without a device, the agent says so in one line and carries on.

use std::{
    ffi::{CStr, c_char},
    path::Path,
};

use libloading::{Library, Symbol};

use super::{Readings, Source};
use crate::model::{Counted, DeviceView, Vendor};

/// `rsmi_status_t` success.
const RSMI_STATUS_SUCCESS: u32 = 0;
/// `RSMI_MEM_TYPE_VRAM`.
const RSMI_MEM_TYPE_VRAM: u32 = 0;
/// `RSMI_TEMP_TYPE_EDGE` and `RSMI_TEMP_CURRENT`.
const RSMI_TEMP_TYPE_EDGE: u32 = 0;
const RSMI_TEMP_CURRENT: u32 = 0;

type Status = u32;

/// Present when the amdgpu kernel driver is loaded.
const AMDGPU_DRIVER: &str = "/sys/module/amdgpu";

/// The entry points used, resolved once. Each is looked up by name in the
/// loaded library; a missing one leaves its figure absent.
struct Api {
    busy_percent: Option<unsafe extern "C" fn(u32, *mut u32) -> Status>,
    memory_usage: Option<unsafe extern "C" fn(u32, u32, *mut u64) -> Status>,
    memory_total: Option<unsafe extern "C" fn(u32, u32, *mut u64) -> Status>,
    temperature: Option<unsafe extern "C" fn(u32, u32, u32, *mut i64) -> Status>,
    power_average: Option<unsafe extern "C" fn(u32, u32, *mut u64) -> Status>,
    energy_count: Option<unsafe extern "C" fn(u32, *mut u64, *mut f32, *mut u64) -> Status>,
    name: Option<unsafe extern "C" fn(u32, *mut c_char, usize) -> Status>,
    unique_id: Option<unsafe extern "C" fn(u32, *mut u64) -> Status>,
    pci_id: Option<unsafe extern "C" fn(u32, *mut u64) -> Status>,
}

pub struct RocmSmiSource {
    api: Api,
    devices: u32,
    /// Keeps the functions in `api` mapped.
    _library: Library,
}

/// Why ROCm SMI gives no figures.
#[derive(Debug, thiserror::Error)]
pub enum RocmSmiError {
    #[error("no amdgpu driver loaded")]
    NoDriver,
    #[error("cannot load the library: {0}")]
    Library(#[from] libloading::Error),
    #[error("no AMD GPU driver or device ({0})")]
    Init(String),
    #[error("no AMD GPU")]
    NoDevice,
}

impl RocmSmiSource {
    /// Loads ROCm SMI from `library`, or the system's `librocm_smi64.so.1`;
    /// `None`, with one line in the log, where there is no library or no device
    /// (`info` when nothing was asked for, `warn` for a library named on the command line).
    pub fn open(library: Option<&Path>) -> Option<Self> {
        Self::try_open(library)
            .inspect_err(|e| match (e, library) {
                (RocmSmiError::Library(_) | RocmSmiError::NoDriver, None) => {
                    log::info!(
                        "no AMD GPU (no amdgpu driver, or no librocm_smi64.so.1): no AMD device figures"
                    )
                }
                (e, None) => log::info!("ROCm SMI found {e}: no AMD device figures"),
                (e, Some(path)) => log::warn!("ROCm SMI ({}): {e}", path.display()),
            })
            .ok()
    }

    /// Without a library named, only where the amdgpu driver is loaded: ROCm
    /// SMI's initialisation elsewhere fails after printing to stderr.
    pub fn try_open(library: Option<&Path>) -> Result<Self, RocmSmiError> {
        if library.is_none() && !Path::new(AMDGPU_DRIVER).exists() {
            return Err(RocmSmiError::NoDriver);
        }
        let path = library.unwrap_or(Path::new("librocm_smi64.so.1"));
        // SAFETY: loading runs the library's initialisers; ROCm SMI's have no preconditions.
        let lib = unsafe { Library::new(path.as_os_str()) }?;
        // SAFETY: the signatures are those of rocm_smi.h.
        let init: Symbol<unsafe extern "C" fn(u64) -> Status> = unsafe { lib.get(b"rsmi_init\0") }?;
        let count: Symbol<unsafe extern "C" fn(*mut u32) -> Status> =
            // SAFETY: as above.
            unsafe { lib.get(b"rsmi_num_monitor_devices\0") }?;
        // SAFETY: rsmi_init takes flags by value; the count is written to a u32 we own.
        let status = unsafe { init(0) };
        if status != RSMI_STATUS_SUCCESS {
            return Err(RocmSmiError::Init(status_string(&lib, status)));
        }
        let mut devices = 0;
        // SAFETY: the count is written to a u32 we own.
        if unsafe { count(&mut devices) } != RSMI_STATUS_SUCCESS || devices == 0 {
            return Err(RocmSmiError::NoDevice);
        }
        // SAFETY: each signature is that of its rocm_smi.h declaration.
        let api = unsafe {
            Api {
                busy_percent: symbol(&lib, b"rsmi_dev_busy_percent_get\0"),
                memory_usage: symbol(&lib, b"rsmi_dev_memory_usage_get\0"),
                memory_total: symbol(&lib, b"rsmi_dev_memory_total_get\0"),
                temperature: symbol(&lib, b"rsmi_dev_temp_metric_get\0"),
                power_average: symbol(&lib, b"rsmi_dev_power_ave_get\0"),
                energy_count: symbol(&lib, b"rsmi_dev_energy_count_get\0"),
                name: symbol(&lib, b"rsmi_dev_name_get\0"),
                unique_id: symbol(&lib, b"rsmi_dev_unique_id_get\0"),
                pci_id: symbol(&lib, b"rsmi_dev_pci_id_get\0"),
            }
        };
        log::info!("ROCm SMI: {devices} AMD GPU(s)");
        Ok(Self {
            api,
            devices,
            _library: lib,
        })
    }

    /// Every device's figures now.
    pub fn devices(&mut self) -> Vec<DeviceView> {
        (0..self.devices).filter_map(|i| self.device(i)).collect()
    }

    /// One device; `None` when it cannot say who it is.
    fn device(&self, i: u32) -> Option<DeviceView> {
        let a = &self.api;
        let ok = |status: Status| status == RSMI_STATUS_SUCCESS;
        // Every call below: the index is below rsmi_num_monitor_devices, and
        // each out-pointer is a local of the type rocm_smi.h declares.
        let read_u64 = |f: Option<unsafe extern "C" fn(u32, *mut u64) -> Status>| {
            let (f, mut v) = (f?, 0);
            // SAFETY: see above.
            ok(unsafe { f(i, &mut v) }).then_some(v)
        };
        let vram = |f: Option<unsafe extern "C" fn(u32, u32, *mut u64) -> Status>| {
            let (f, mut v) = (f?, 0);
            // SAFETY: see above.
            ok(unsafe { f(i, RSMI_MEM_TYPE_VRAM, &mut v) }).then_some(v)
        };
        let id = read_u64(a.unique_id).or_else(|| read_u64(a.pci_id))?;
        let name = a.name.and_then(|f| {
            let mut buf = [0 as c_char; 128];
            // SAFETY: see above; the buffer's length is passed with it.
            ok(unsafe { f(i, buf.as_mut_ptr(), buf.len()) }).then(|| {
                // SAFETY: on success the library wrote a NUL-terminated name into the buffer.
                unsafe { CStr::from_ptr(buf.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
        });
        let busy = a.busy_percent.and_then(|f| {
            let mut v = 0;
            // SAFETY: see above.
            ok(unsafe { f(i, &mut v) }).then_some(v)
        });
        let temperature = a.temperature.and_then(|f| {
            let mut millicelsius = 0;
            // SAFETY: see above.
            ok(unsafe { f(i, RSMI_TEMP_TYPE_EDGE, RSMI_TEMP_CURRENT, &mut millicelsius) })
                .then_some((millicelsius / 1000).max(0) as u32)
        });
        let power = a.power_average.and_then(|f| {
            let mut microwatts = 0;
            // SAFETY: see above.
            ok(unsafe { f(i, 0, &mut microwatts) }).then_some(microwatts as f64 / 1e6)
        });
        let energy = a.energy_count.and_then(|f| {
            let (mut count, mut resolution_uj, mut timestamp) = (0u64, 0f32, 0u64);
            // SAFETY: see above.
            ok(unsafe { f(i, &mut count, &mut resolution_uj, &mut timestamp) })
                .then(|| Counted::first(count as f64 * f64::from(resolution_uj) / 1e6))
        });
        let pci = read_u64(a.pci_id).map(pci_bus_id);
        Some(DeviceView {
            pci_bus_id: pci,
            utilization_percent: busy,
            memory_used_bytes: vram(a.memory_usage),
            memory_total_bytes: vram(a.memory_total),
            temperature_celsius: temperature,
            power_watts: power,
            energy_joules: energy,
            ..DeviceView::new(Vendor::Amd, i, format!("{id:016x}"), name.unwrap_or_default())
        })
    }
}

/// # Safety
/// `T` must be the function type the symbol has in rocm_smi.h.
unsafe fn symbol<T: Copy>(lib: &Library, name: &[u8]) -> Option<T> {
    // SAFETY: the caller names the right type.
    unsafe { lib.get::<T>(name) }.ok().map(|s| *s)
}

/// ROCm SMI's words for a status.
fn status_string(lib: &Library, status: Status) -> String {
    // SAFETY: rsmi_status_string writes a pointer to a static string.
    let Ok(f) = (unsafe {
        lib.get::<unsafe extern "C" fn(Status, *mut *const c_char) -> Status>(b"rsmi_status_string\0")
    }) else {
        return format!("status {status}");
    };
    let mut text = std::ptr::null();
    // SAFETY: the status is passed by value; the text pointer is a local the library sets.
    if unsafe { f(status, &mut text) } != RSMI_STATUS_SUCCESS || text.is_null() {
        return format!("status {status}");
    }
    // SAFETY: a NUL-terminated static string from the library.
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

/// ROCm SMI's BDF id (domain << 32 | bus << 8 | device << 3 | function) as `0000:03:00.0`.
fn pci_bus_id(bdf: u64) -> String {
    format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        bdf >> 32,
        (bdf >> 8) & 0xff,
        (bdf >> 3) & 0x1f,
        bdf & 0x7
    )
}

impl Source for RocmSmiSource {
    fn read(&mut self, _now_ns: u64, readings: &mut Readings) -> anyhow::Result<()> {
        let devices = self.devices();
        readings.devices.extend(devices);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_ids_read_as_pci_bus_ids() {
        assert_eq!(
            pci_bus_id((0x1 << 32) | (0x83 << 8) | (0x1f << 3) | 0x5),
            "0001:83:1f.5"
        );
    }
}
