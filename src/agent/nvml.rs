//! [`NvmlSource`]: reads the GPUs through NVML (nvml-wrapper, which dlopens
//! `libnvidia-ml.so.1` at run time).
//!
//! Invariants: a missing driver or library is a sample that says so (`nvmlAvailable: false`
//! with the reason), logged once at start; `NotSupported` marks the field unsupported;
//! `GpuLost` marks the GPU lost. Every call is blocking FFI, so this type is only used from a
//! blocking thread. It must not grade health or keep history beyond NVML's event sets.
//!
//! NVML is initialised once and deliberately leaked (`&'static Nvml`): the XID event sets
//! borrow it for the life of the process, and the agent never shuts NVML down before exit.

use std::path::PathBuf;

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_REMAPPED_FAILURE, NVML_FI_DEV_REMAPPED_PENDING,
};
use nvml_wrapper::{Device, EventSet, Nvml};

use super::snapshot::{field, GpuSample, NodeSample, ThrottleReason};
use super::source::{discover_vfio, GpuSource};

/// Most events drained from one device's set per sample, so a storm cannot stall sampling.
const MAX_EVENTS_PER_SAMPLE: usize = 256;

/// Samples GPUs through NVML, plus `vfio-pci` GPUs from sysfs.
pub struct NvmlSource {
    sysfs_root: PathBuf,
    state: State,
}

enum State {
    /// `Nvml::init` failed; the reason is repeated in every sample.
    Unavailable(String),
    Ready {
        nvml: &'static Nvml,
        /// One XID event set per device index; `None` where XID events are unsupported.
        xid_events: Vec<Option<EventSet<'static>>>,
    },
}

impl NvmlSource {
    /// Initialises NVML and registers for critical XID events on every GPU that supports
    /// them. Never fails: when NVML cannot start, logs one warning and every sample reports
    /// `nvmlAvailable: false`. `sysfs_root` is normally `/sys`.
    pub fn new(sysfs_root: impl Into<PathBuf>) -> Self {
        let state = match Nvml::init() {
            Ok(nvml) => {
                let nvml: &'static Nvml = Box::leak(Box::new(nvml));
                let xid_events = register_xid_events(nvml);
                tracing::info!(gpus = xid_events.len(), "NVML initialised.");
                State::Ready { nvml, xid_events }
            }
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    "NVML is unavailable; the agent keeps serving and reports it in every sample."
                );
                State::Unavailable(err.to_string())
            }
        };
        Self {
            sysfs_root: sysfs_root.into(),
            state,
        }
    }

    /// Whether NVML initialised.
    pub fn nvml_available(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }
}

impl GpuSource for NvmlSource {
    fn sample(&mut self) -> NodeSample {
        let mut sample = match &mut self.state {
            State::Unavailable(reason) => NodeSample::nvml_unavailable(reason.clone()),
            State::Ready { nvml, xid_events } => sample_nvml(nvml, xid_events),
        };
        match discover_vfio(&self.sysfs_root) {
            Ok(devices) => sample.vfio_devices = devices,
            Err(err) => {
                sample.errors.insert("vfioDevices".into(), err.to_string());
            }
        }
        sample
    }
}

fn register_xid_events(nvml: &'static Nvml) -> Vec<Option<EventSet<'static>>> {
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .map(|index| {
            let device = nvml.device_by_index(index).ok()?;
            let supported = device.supported_event_types().ok()?;
            if !supported.contains(EventTypes::CRITICAL_XID_ERROR) {
                return None;
            }
            let set = nvml.create_event_set().ok()?;
            match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                Ok(set) => Some(set),
                Err(err) => {
                    tracing::warn!(gpu = index, error = %err.error, "XID events unavailable.");
                    None
                }
            }
        })
        .collect()
}

fn sample_nvml(nvml: &Nvml, xid_events: &[Option<EventSet<'static>>]) -> NodeSample {
    let mut sample = NodeSample::new();
    sample.driver_version = note(&mut sample, "driverVersion", nvml.sys_driver_version());
    sample.cuda_driver_version = note(
        &mut sample,
        "cudaDriverVersion",
        nvml.sys_cuda_driver_version(),
    )
    .map(|v| {
        let major = nvml_wrapper::cuda_driver_version_major(v);
        format!("{major}.{}", nvml_wrapper::cuda_driver_version_minor(v))
    });
    let Some(count) = note(&mut sample, "deviceCount", nvml.device_count()) else {
        return sample;
    };
    for index in 0..count {
        let events = xid_events.get(index as usize).and_then(Option::as_ref);
        sample.gpus.push(read_gpu(nvml, index, events));
    }
    sample
}

fn note<T>(sample: &mut NodeSample, name: &str, result: Result<T, NvmlError>) -> Option<T> {
    result
        .map_err(|err| sample.errors.insert(name.into(), err.to_string()))
        .ok()
}

/// Records a per-field result on the GPU and returns the value when there is one.
fn put<T>(gpu: &mut GpuSample, name: &str, result: Result<T, NvmlError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(NvmlError::NotSupported) => {
            gpu.unsupported.push(name.into());
            None
        }
        Err(err) => {
            gpu.lost |= matches!(err, NvmlError::GpuLost);
            gpu.errors.insert(name.into(), err.to_string());
            None
        }
    }
}

fn read_gpu(nvml: &Nvml, index: u32, events: Option<&EventSet<'static>>) -> GpuSample {
    let mut gpu = GpuSample {
        index,
        ..GpuSample::default()
    };
    let Some(device) = put(&mut gpu, "device", nvml.device_by_index(index)) else {
        return gpu;
    };
    read_identity(&device, &mut gpu);
    read_gauges(&device, &mut gpu);
    read_errors(&device, &mut gpu);
    gpu.xid_errors = match events {
        Some(set) => Some(drain_xids(set, &mut gpu)),
        None => {
            gpu.unsupported.push(field::XID_ERRORS.into());
            None
        }
    };
    gpu
}

fn read_identity(device: &Device<'_>, gpu: &mut GpuSample) {
    gpu.uuid = put(gpu, field::UUID, device.uuid()).unwrap_or_default();
    gpu.name = put(gpu, field::NAME, device.name());
    gpu.pci_bus_id = put(gpu, field::PCI_BUS_ID, device.pci_info()).map(|p| p.bus_id);
    gpu.mig_enabled = put(gpu, field::MIG_ENABLED, device.mig_mode()).map(|m| m.current == 1);
}

fn read_gauges(device: &Device<'_>, gpu: &mut GpuSample) {
    if let Some(memory) = put(gpu, field::MEMORY, device.memory_info()) {
        gpu.memory_total_bytes = Some(memory.total);
        // NVML's v2 `used` leaves out the driver's reservation (480 MiB on an H100, seen on
        // hardware), which no pod can allocate either: count what is not free as used.
        gpu.memory_used_bytes = Some(memory.total.saturating_sub(memory.free));
    }
    if let Some(util) = put(gpu, field::UTILIZATION, device.utilization_rates()) {
        gpu.utilization_gpu_ratio = Some(f64::from(util.gpu) / 100.0);
        gpu.utilization_memory_ratio = Some(f64::from(util.memory) / 100.0);
    }
    let temperature = device.temperature(TemperatureSensor::Gpu);
    gpu.temperature_celsius = put(gpu, field::TEMPERATURE, temperature).map(f64::from);
    let milliwatts = |mw: u32| f64::from(mw) / 1000.0;
    gpu.power_draw_watts = put(gpu, field::POWER_DRAW, device.power_usage()).map(milliwatts);
    let limit = device.enforced_power_limit();
    gpu.power_limit_watts = put(gpu, field::POWER_LIMIT, limit).map(milliwatts);
    gpu.sm_clock_mhz = put(gpu, field::SM_CLOCK, device.clock_info(Clock::SM));
    let processes = device.running_compute_processes_count();
    gpu.compute_processes = put(gpu, field::COMPUTE_PROCESSES, processes);
    let reasons = device.current_throttle_reasons();
    gpu.throttle_reasons = put(gpu, field::THROTTLE_REASONS, reasons).map(throttle_names);
}

fn read_errors(device: &Device<'_>, gpu: &mut GpuSample) {
    let ecc = device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile);
    gpu.ecc_uncorrected_volatile = put(gpu, field::ECC_UNCORRECTED, ecc);
    let pending = device.are_pages_pending_retired();
    gpu.pending_page_retirement = put(gpu, field::PENDING_PAGE_RETIREMENT, pending);
    gpu.pending_row_remap = put(gpu, field::PENDING_ROW_REMAP, pending_row_remap(device));
}

/// Whether a row remap waits for a GPU reset, through NVML's field values (nvml-wrapper 0.13
/// has no safe binding for `nvmlDeviceGetRemappedRows`). A failed remap counts as pending:
/// either way the GPU needs draining and a reset.
fn pending_row_remap(device: &Device<'_>) -> Result<bool, NvmlError> {
    let ids = [
        FieldId(NVML_FI_DEV_REMAPPED_PENDING),
        FieldId(NVML_FI_DEV_REMAPPED_FAILURE),
    ];
    let mut any = false;
    for sample in device.field_values_for(&ids)? {
        any |= match sample?.value? {
            SampleValue::U32(v) => v != 0,
            SampleValue::U64(v) => v != 0,
            SampleValue::I64(v) => v != 0,
            SampleValue::F64(v) => v != 0.0,
        };
    }
    Ok(any)
}

/// Drains the XID events queued since the last sample (0 ms waits until `Timeout`).
fn drain_xids(set: &EventSet<'static>, gpu: &mut GpuSample) -> Vec<u32> {
    let mut codes = Vec::new();
    for _ in 0..MAX_EVENTS_PER_SAMPLE {
        match set.wait(0) {
            Ok(event) if event.event_type.contains(EventTypes::CRITICAL_XID_ERROR) => {
                codes.push(match event.event_data {
                    Some(XidError::Value(code)) => u32::try_from(code).unwrap_or(u32::MAX),
                    // An XID NVML could not decode: 0 keeps the count without a code.
                    Some(XidError::Unknown) | None => 0,
                });
            }
            Ok(_) => {}
            Err(NvmlError::Timeout) => break,
            Err(err) => {
                gpu.lost |= matches!(err, NvmlError::GpuLost);
                gpu.errors.insert(field::XID_ERRORS.into(), err.to_string());
                break;
            }
        }
    }
    codes
}

fn throttle_names(bits: ThrottleReasons) -> Vec<ThrottleReason> {
    let table = [
        (ThrottleReasons::GPU_IDLE, ThrottleReason::GpuIdle),
        (
            ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
            ThrottleReason::ApplicationsClocksSetting,
        ),
        (ThrottleReasons::SW_POWER_CAP, ThrottleReason::SwPowerCap),
        (ThrottleReasons::HW_SLOWDOWN, ThrottleReason::HwSlowdown),
        (ThrottleReasons::SYNC_BOOST, ThrottleReason::SyncBoost),
        (
            ThrottleReasons::SW_THERMAL_SLOWDOWN,
            ThrottleReason::SwThermalSlowdown,
        ),
        (
            ThrottleReasons::HW_THERMAL_SLOWDOWN,
            ThrottleReason::HwThermalSlowdown,
        ),
        (
            ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
            ThrottleReason::HwPowerBrakeSlowdown,
        ),
        (
            ThrottleReasons::DISPLAY_CLOCK_SETTING,
            ThrottleReason::DisplayClockSetting,
        ),
    ];
    table
        .into_iter()
        .filter(|(bit, _)| bits.contains(*bit))
        .map(|(_, name)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without the driver (this build machine) NVML must fail cleanly; on a GPU
    /// machine it must see GPUs with identities. Either way nothing panics.
    #[test]
    fn sampling_reports_nvml_state_without_panicking() {
        let root = std::env::temp_dir().join("rota-nvml-test-no-sysfs");
        let mut source = NvmlSource::new(&root);
        let sample = source.sample();
        assert_eq!(sample.nvml_available, source.nvml_available());
        if sample.nvml_available {
            assert!(sample.nvml_error.is_none());
            for gpu in &sample.gpus {
                assert!(!gpu.uuid.is_empty() || gpu.errors.contains_key(field::UUID));
            }
        } else {
            let reason = sample.nvml_error.as_deref().unwrap_or_default();
            assert!(!reason.is_empty(), "NVML unavailable without a reason");
            assert!(sample.gpus.is_empty());
        }
        // No sysfs tree: vfio-pci is simply not loaded.
        assert!(sample.vfio_devices.is_empty());
        assert!(!sample.errors.contains_key("vfioDevices"));
        // A second sample repeats the same state.
        assert_eq!(source.sample().nvml_available, sample.nvml_available);
    }

    #[test]
    fn throttle_bits_map_to_names() {
        let bits = ThrottleReasons::HW_THERMAL_SLOWDOWN | ThrottleReasons::GPU_IDLE;
        assert_eq!(
            throttle_names(bits),
            vec![ThrottleReason::GpuIdle, ThrottleReason::HwThermalSlowdown]
        );
        assert!(throttle_names(ThrottleReasons::NONE).is_empty());
    }

    #[test]
    fn not_supported_is_unsupported_and_gpu_lost_is_recorded() {
        let mut gpu = GpuSample::default();
        assert_eq!(
            put::<u32>(&mut gpu, "a", Err(NvmlError::NotSupported)),
            None
        );
        assert_eq!(gpu.unsupported, vec!["a".to_string()]);
        assert!(gpu.errors.is_empty() && !gpu.lost);
        assert_eq!(put::<u32>(&mut gpu, "b", Err(NvmlError::GpuLost)), None);
        assert!(gpu.lost);
        assert!(gpu.errors.contains_key("b"));
        assert_eq!(put(&mut gpu, "c", Ok(7u32)), Some(7));
    }
}
