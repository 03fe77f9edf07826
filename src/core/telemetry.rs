//! The versioned JSON snapshot the agent serves at `/v1/telemetry` and the extender polls.
//!
//! Invariants: every reading a device may not support is an `Option`; `None` means "not
//! available", and the field's camelCase name is then listed in `unsupported` (the device or
//! driver lacks it) or in `errors` (the read failed, with the reason), so a consumer can always
//! tell "unsupported" from "broken". Ratios are 0..1, sizes bytes, power watts, clocks MHz.
//! This module holds plain serde types only: no I/O, no clock, no grading logic.
//!
//! It also holds [`NodeTelemetry`], the compact per-node summary the extender keeps on each
//! [`crate::core::GpuNode`] (built from a sample by the collector, read by filter/prioritize).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::health::{Health, HealthState};

/// `apiVersion` of the snapshot document.
pub const API_VERSION: &str = "rota.io/v1alpha1";
/// `kind` of the snapshot document.
pub const KIND: &str = "GpuTelemetry";

/// One node's GPU telemetry at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSample {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// The Kubernetes node this agent runs on. Stamped by the agent, not by the source.
    #[serde(default)]
    pub node_name: String,
    /// When the sample was taken, unix seconds. Stamped by the agent (sources leave 0).
    #[serde(default)]
    pub sampled_at_unix_seconds: f64,
    /// Whether NVML initialised. `false` on nodes without the NVIDIA driver, including nodes
    /// whose GPUs are all bound to `vfio-pci` for VM passthrough.
    pub nvml_available: bool,
    /// Why NVML is unavailable, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvml_error: Option<String>,
    /// NVIDIA driver version, e.g. `550.54.15`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// CUDA version the driver supports, e.g. `12.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_driver_version: Option<String>,
    /// GPUs bound to `vfio-pci` (invisible to NVML).
    #[serde(default)]
    pub vfio_devices: Vec<VfioDevice>,
    /// GPUs NVML sees, in index order.
    #[serde(default)]
    pub gpus: Vec<GpuSample>,
    /// Node-level read failures, by item (`deviceCount`, `vfioDevices`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, String>,
    /// Node grade: the worst of its GPUs; `unknown` when NVML is unavailable. Filled by the
    /// agent after sampling.
    #[serde(default)]
    pub health: Health,
}

impl NodeSample {
    /// An empty sample with the version fields set and NVML marked available.
    pub fn new() -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            node_name: String::new(),
            sampled_at_unix_seconds: 0.0,
            nvml_available: true,
            nvml_error: None,
            driver_version: None,
            cuda_driver_version: None,
            vfio_devices: Vec::new(),
            gpus: Vec::new(),
            errors: BTreeMap::new(),
            health: Health::default(),
        }
    }

    /// A sample that says NVML could not be used, and why.
    pub fn nvml_unavailable(reason: impl Into<String>) -> Self {
        Self {
            nvml_available: false,
            nvml_error: Some(reason.into()),
            ..Self::new()
        }
    }
}

impl Default for NodeSample {
    fn default() -> Self {
        Self::new()
    }
}

/// A PCI function bound to the `vfio-pci` driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VfioDevice {
    /// PCI address, `dddd:bb:dd.f`.
    pub pci_address: String,
    /// Vendor id as sysfs writes it, e.g. `0x10de`.
    pub vendor_id: String,
    /// Device id as sysfs writes it, e.g. `0x2236`.
    pub device_id: String,
}

/// Why a GPU's clocks are being held down (NVML's clock throttle reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ThrottleReason {
    /// Nothing is running.
    GpuIdle,
    /// Application clocks setting.
    ApplicationsClocksSetting,
    /// Software power cap.
    SwPowerCap,
    /// Hardware slowdown (thermal or power brake; see the specific reasons).
    HwSlowdown,
    /// Sync boost.
    SyncBoost,
    /// Software thermal slowdown.
    SwThermalSlowdown,
    /// Hardware thermal slowdown.
    HwThermalSlowdown,
    /// Hardware power brake (external power brake assertion).
    HwPowerBrakeSlowdown,
    /// Display clock setting.
    DisplayClockSetting,
}

/// One GPU's readings. Every `Option` is `None` when unsupported or unreadable; see the
/// module docs for how the two are told apart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuSample {
    /// NVML device index.
    pub index: u32,
    /// GPU UUID (`GPU-…`); empty when unreadable.
    #[serde(default)]
    pub uuid: String,
    /// Product name, e.g. `NVIDIA A10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// PCI bus id, e.g. `00000000:65:00.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    /// Framebuffer memory in total, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    /// Framebuffer memory in use, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// Fraction of the last sample period a kernel ran, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_gpu_ratio: Option<f64>,
    /// Fraction of the last sample period memory was read or written, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_memory_ratio: Option<f64>,
    /// Core temperature, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<f64>,
    /// Power draw, watts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_draw_watts: Option<f64>,
    /// Enforced power limit, watts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_limit_watts: Option<f64>,
    /// Current SM clock, MHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm_clock_mhz: Option<u32>,
    /// Active clock throttle reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_reasons: Option<Vec<ThrottleReason>>,
    /// Uncorrected ECC errors since the driver loaded (volatile counter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_uncorrected_volatile: Option<u64>,
    /// Pages waiting to be retired at the next driver reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_page_retirement: Option<bool>,
    /// Rows waiting to be remapped at the next GPU reset (Ampere and newer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_row_remap: Option<bool>,
    /// XID error codes reported since the previous sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid_errors: Option<Vec<u32>>,
    /// Distinct XID codes seen since the agent started. Filled by the agent, so a GPU that
    /// needs a reset stays graded unhealthy after the sample that reported the XID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xid_errors_seen: Vec<u32>,
    /// XID errors counted since the agent started. Filled by the agent.
    #[serde(default)]
    pub xid_errors_total: u64,
    /// Compute processes running on the GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_processes: Option<u32>,
    /// Whether MIG mode is currently enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig_enabled: Option<bool>,
    /// The GPU fell off the bus (NVML `GpuLost`).
    #[serde(default)]
    pub lost: bool,
    /// Names of fields the device or driver does not support.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<String>,
    /// Fields whose read failed, with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, String>,
    /// This GPU's grade. Filled by the agent after sampling.
    #[serde(default)]
    pub health: Health,
}

/// Field names used in `unsupported` and `errors`, shared by sources and the grader.
pub mod field {
    /// [`super::GpuSample::name`].
    pub const NAME: &str = "name";
    /// [`super::GpuSample::uuid`].
    pub const UUID: &str = "uuid";
    /// [`super::GpuSample::pci_bus_id`].
    pub const PCI_BUS_ID: &str = "pciBusId";
    /// Both memory fields.
    pub const MEMORY: &str = "memory";
    /// Both utilisation fields.
    pub const UTILIZATION: &str = "utilization";
    /// [`super::GpuSample::temperature_celsius`].
    pub const TEMPERATURE: &str = "temperatureCelsius";
    /// [`super::GpuSample::power_draw_watts`].
    pub const POWER_DRAW: &str = "powerDrawWatts";
    /// [`super::GpuSample::power_limit_watts`].
    pub const POWER_LIMIT: &str = "powerLimitWatts";
    /// [`super::GpuSample::sm_clock_mhz`].
    pub const SM_CLOCK: &str = "smClockMhz";
    /// [`super::GpuSample::throttle_reasons`].
    pub const THROTTLE_REASONS: &str = "throttleReasons";
    /// [`super::GpuSample::ecc_uncorrected_volatile`].
    pub const ECC_UNCORRECTED: &str = "eccUncorrectedVolatile";
    /// [`super::GpuSample::pending_page_retirement`].
    pub const PENDING_PAGE_RETIREMENT: &str = "pendingPageRetirement";
    /// [`super::GpuSample::pending_row_remap`].
    pub const PENDING_ROW_REMAP: &str = "pendingRowRemap";
    /// [`super::GpuSample::xid_errors`].
    pub const XID_ERRORS: &str = "xidErrors";
    /// [`super::GpuSample::compute_processes`].
    pub const COMPUTE_PROCESSES: &str = "computeProcesses";
    /// [`super::GpuSample::mig_enabled`].
    pub const MIG_ENABLED: &str = "migEnabled";
}

/// Where a node's telemetry summary came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TelemetrySource {
    /// rota's own node agent (`/v1/telemetry`).
    Agent,
    /// NVIDIA dcgm-exporter (Prometheus text at `/metrics`).
    DcgmExporter,
}

impl TelemetrySource {
    /// Lower-case name for logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TelemetrySource::Agent => "agent",
            TelemetrySource::DcgmExporter => "dcgm-exporter",
        }
    }
}

/// One GPU as the scheduler sees it: the graded state and the readings scoring uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuCondition {
    /// Device index on the node.
    pub index: u32,
    /// GPU UUID (`GPU-…`); empty when unknown.
    pub uuid: String,
    /// The grade.
    pub state: HealthState,
    /// Why, when not healthy.
    pub reasons: Vec<String>,
    /// Core temperature, °C.
    pub temperature_celsius: Option<f64>,
    /// Fraction of time a kernel ran, 0..1.
    pub utilization_gpu_ratio: Option<f64>,
    /// Framebuffer memory in use, bytes.
    pub memory_used_bytes: Option<u64>,
    /// Framebuffer memory in total, bytes.
    pub memory_total_bytes: Option<u64>,
}

impl GpuCondition {
    /// The summary of one graded GPU sample.
    pub fn from_sample(gpu: &GpuSample) -> Self {
        Self {
            index: gpu.index,
            uuid: gpu.uuid.clone(),
            state: gpu.health.state,
            reasons: gpu.health.reasons.clone(),
            temperature_celsius: gpu.temperature_celsius,
            utilization_gpu_ratio: gpu.utilization_gpu_ratio,
            memory_used_bytes: gpu.memory_used_bytes,
            memory_total_bytes: gpu.memory_total_bytes,
        }
    }

    /// Free framebuffer as a fraction of the total, when both are known.
    pub fn memory_free_ratio(&self) -> Option<f64> {
        let total = self.memory_total_bytes.filter(|&t| t > 0)?;
        let used = self.memory_used_bytes?.min(total);
        Some((total - used) as f64 / total as f64)
    }
}

/// A node's telemetry as the extender keeps it: the newest valid summary, when and from where
/// it came, and why the latest poll failed, if it did.
///
/// Freshness is not stored: it is decided at decision time from `now` (see
/// [`crate::core::health::reading`]), so data that stops arriving turns unknown on its own.
/// The per-GPU list is private and summarised once at construction ([`GpuSummary`]), so
/// filter and prioritize read a few numbers per node instead of walking every GPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTelemetry {
    /// Who reported it.
    pub source: TelemetrySource,
    /// When the newest valid sample was taken (unix seconds, the reporter's clock); `None`
    /// when no valid sample ever arrived (the node's telemetry is then unknown).
    pub sampled_at_unix_seconds: Option<f64>,
    /// When the collector received that sample (unix seconds, the extender's clock).
    pub received_at_unix_seconds: Option<f64>,
    /// Whether NVML worked on the node.
    pub nvml_available: bool,
    /// GPUs bound to `vfio-pci` (passthrough; NVML cannot see them).
    pub passthrough_gpus: u32,
    /// Why the latest poll failed, when it did (the data is then from an earlier poll).
    pub last_error: Option<String>,
    gpus: Vec<GpuCondition>,
    #[serde(skip)]
    summary: GpuSummary,
}

/// What decisions read from a node's GPU list, computed once per report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GpuSummary {
    /// GPUs graded unhealthy.
    pub unhealthy: u32,
    /// Mean over GPUs of healthy 1, degraded 0.5, unknown 0.5, unhealthy 0; `None` without GPUs.
    pub health_score: Option<f64>,
    /// Temperature of the hottest GPU that reports one.
    pub hottest_celsius: Option<f64>,
    /// Mean over GPUs of `(idle ratio + free memory ratio) / 2`, each half where measured.
    pub idle_score: Option<f64>,
}

impl GpuSummary {
    /// Summarises a GPU list.
    pub fn of(gpus: &[GpuCondition]) -> Self {
        let mut out = GpuSummary::default();
        let (mut health, mut idle, mut idle_count) = (0.0, 0.0, 0usize);
        for gpu in gpus {
            health += match gpu.state {
                HealthState::Healthy => 1.0,
                HealthState::Degraded | HealthState::Unknown => 0.5,
                HealthState::Unhealthy => 0.0,
            };
            out.unhealthy += u32::from(gpu.state == HealthState::Unhealthy);
            if let Some(c) = gpu.temperature_celsius.filter(|c| c.is_finite()) {
                out.hottest_celsius = Some(out.hottest_celsius.map_or(c, |h: f64| h.max(c)));
            }
            if let Some(value) = gpu.idle_score() {
                idle += value;
                idle_count += 1;
            }
        }
        if !gpus.is_empty() {
            out.health_score = Some(health / gpus.len() as f64);
        }
        if idle_count > 0 {
            out.idle_score = Some(idle / idle_count as f64);
        }
        out
    }
}

impl GpuCondition {
    /// `(idle ratio + free memory ratio) / 2`, or whichever half is measured.
    pub fn idle_score(&self) -> Option<f64> {
        let idle = self.utilization_gpu_ratio.map(|u| 1.0 - u.clamp(0.0, 1.0));
        match (idle, self.memory_free_ratio()) {
            (Some(a), Some(b)) => Some((a + b) / 2.0),
            (Some(a), None) | (None, Some(a)) => Some(a),
            (None, None) => None,
        }
    }
}

impl NodeTelemetry {
    /// A summary of fresh data sampled at `sampled_at_unix_seconds`.
    pub fn new(
        source: TelemetrySource,
        sampled_at_unix_seconds: f64,
        received_at_unix_seconds: f64,
        nvml_available: bool,
        gpus: Vec<GpuCondition>,
    ) -> Self {
        Self {
            source,
            sampled_at_unix_seconds: Some(sampled_at_unix_seconds),
            received_at_unix_seconds: Some(received_at_unix_seconds),
            nvml_available,
            passthrough_gpus: 0,
            last_error: None,
            summary: GpuSummary::of(&gpus),
            gpus,
        }
    }

    /// The summary of a graded sample received at `received_at_unix_seconds`.
    pub fn from_sample(
        sample: &NodeSample,
        source: TelemetrySource,
        received_at_unix_seconds: f64,
    ) -> Self {
        let gpus = sample.gpus.iter().map(GpuCondition::from_sample).collect();
        let mut t = Self::new(
            source,
            sample.sampled_at_unix_seconds,
            received_at_unix_seconds,
            sample.nvml_available,
            gpus,
        );
        t.passthrough_gpus = u32::try_from(sample.vfio_devices.len()).unwrap_or(u32::MAX);
        t
    }

    /// A node whose reporter is known but has never sent valid data.
    pub fn never_reported(source: TelemetrySource, error: impl Into<String>) -> Self {
        Self {
            source,
            sampled_at_unix_seconds: None,
            received_at_unix_seconds: None,
            nvml_available: false,
            passthrough_gpus: 0,
            last_error: Some(error.into()),
            gpus: Vec::new(),
            summary: GpuSummary::default(),
        }
    }

    /// This summary after a failed poll: the earlier data is kept (staleness decides when it
    /// stops counting) and the failure is recorded.
    pub fn with_error(&self, error: impl Into<String>) -> Self {
        Self {
            last_error: Some(error.into()),
            ..self.clone()
        }
    }

    /// The GPUs NVML sees, in index order.
    pub fn gpus(&self) -> &[GpuCondition] {
        &self.gpus
    }

    /// The precomputed summary of [`Self::gpus`].
    pub fn summary(&self) -> &GpuSummary {
        &self.summary
    }

    /// Seconds since the sample was taken, at `now`; `None` when there is no sample. Negative
    /// when the reporter's clock is ahead.
    pub fn age_seconds(&self, now_unix_seconds: f64) -> Option<f64> {
        self.sampled_at_unix_seconds.map(|at| now_unix_seconds - at)
    }
}
