//! rota's configuration file: a Kubernetes-style YAML document (`kind: RotaConfig`).
//!
//! Two phases: [`RotaConfig`] is what serde parses (unknown fields rejected, every field
//! defaulted), and [`ValidConfig`] is what the rest of the program accepts, produced only by
//! [`RotaConfig::validate`], which reports every problem at once with the field's path.
//! Policy knobs live here; process concerns (listen address, log filter) are CLI flags.
//!
//! ```text
//!   text ──parse──▶ serde_json::Value ──serde_path_to_error──▶ RotaConfig ──validate──▶ ValidConfig
//!        (load.rs: ConfigError::Syntax / ::Parse)          (validate.rs: ConfigErrors)   (access.rs)
//! ```
//!
//! This module never reads the environment, logs or exits; callers decide what an error means.

mod access;
mod load;
mod names;
mod validate;

pub use access::DEFAULT_GROUP_WEIGHT;
pub use load::{check_report, load, parse, parse_unvalidated, ConfigError};
pub use validate::{ConfigErrors, ConfigProblem};

use std::collections::BTreeMap;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// The `apiVersion` every config file must carry.
pub const API_VERSION: &str = "rota.io/v1alpha1";
/// The `kind` every config file must carry.
pub const KIND: &str = "RotaConfig";

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RotaConfig {
    /// Must be `rota.io/v1alpha1`.
    pub api_version: String,
    /// Must be `RotaConfig`.
    pub kind: String,
    /// Extended resources rota manages (the extender's `managedResources`). Default
    /// `[nvidia.com/gpu]`; add passthrough names such as `nvidia.com/GA102GL_A10` for VMs.
    pub gpu_resources: Vec<String>,
    /// Pod label naming the tenant to charge. Default `rota.io/tenant`; pods without it are
    /// charged to their namespace.
    pub tenant_label: String,
    /// Weight of tenants not listed in `tenants`. Default 1.
    pub default_tenant_weight: f64,
    /// Optional parent groups of tenants (a two-level tree). Default none. Tenants without a
    /// `group` form an implicit default group of weight 1 that competes with these.
    pub groups: Vec<GroupConfig>,
    /// Tenants with their weights. Default none (every tenant gets `defaultTenantWeight`).
    pub tenants: Vec<TenantConfig>,
    /// How GPU usage is charged and forgotten.
    pub usage: UsageConfig,
    /// Minimum run time before a workload may be rotated out.
    pub quantum: QuantumConfig,
    /// The rotation loop.
    pub rotation: RotationConfig,
    /// GPU telemetry thresholds and health grading.
    pub telemetry: TelemetryConfig,
    /// Weights of the node score returned by `prioritize`.
    pub scoring: ScoringConfig,
    /// The fair-share filter gate.
    pub gate: GateConfig,
    /// The fair-share queue.
    pub queue: QueueConfig,
}

/// The fair-share queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Order of one tenant's own waiting workloads: `las` (least attained service first, the
    /// default: short work finishes early) or `fifo` (arrival order).
    pub within_tenant: crate::core::queue::WithinTenant,
}

/// A parent group of tenants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupConfig {
    /// Group name.
    pub name: String,
    /// Share of the group among groups. Default 1.
    #[serde(default = "one")]
    pub weight: f64,
}

/// One tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant name: the value of the tenant label, or a namespace.
    pub name: String,
    /// Share of the tenant among its siblings. Default 1.
    #[serde(default = "one")]
    pub weight: f64,
    /// Name of the parent group, if any (must be listed in `groups`). Without it the tenant is
    /// in the implicit default group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// How GPU usage is charged to tenants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Half-life of decayed usage. Default 3600 (1 hour: six Job quanta, one VM quantum), so
    /// usage evens out the lag of rotation while entitlements follow the weighted share now.
    pub half_life_seconds: f64,
    /// Charge per GPU-second by GPU product (matched exactly against `nvidia.com/gpu.product`):
    /// an H100-hour is not a T4-hour. Default empty.
    pub device_weights: BTreeMap<String, f64>,
    /// Charge per GPU-second for products not in `deviceWeights`. Default 1.
    pub default_device_weight: f64,
}

/// Minimum quanta, per workload kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct QuantumConfig {
    /// Jobs. Default 600 (10 min).
    pub job_seconds: u64,
    /// KubeVirt VirtualMachines. Default 3600 (60 min): a VM restart costs its user more.
    pub virtual_machine_seconds: u64,
    /// Bare pods. Default 600.
    pub pod_seconds: u64,
    /// Lowest quantum a workload may ask for by annotation. Default 300.
    pub min_seconds: u64,
    /// Highest quantum a workload may ask for by annotation. Default 86400.
    pub max_seconds: u64,
}

/// The rotation loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Run the loop at all. Default true.
    pub enabled: bool,
    /// Plan, log and count, but do not act. Default true, so adoption is safe.
    pub dry_run: bool,
    /// Seconds between ticks. Default 30.
    pub interval_seconds: u64,
    /// A waiting tenant must be below its entitlement by more than this many GPUs before
    /// anything is rotated (hysteresis). Default 0.5: entitlements rounded to whole GPUs.
    pub margin_gpus: f64,
    /// At most this many rotations per tick. Default 4.
    pub max_per_tick: u32,
    /// At most this many rotations per tenant per tick. Default 1.
    pub max_per_tenant_per_tick: u32,
    /// PriorityClass names whose workloads are never rotated out. Default none.
    pub protected_priority_classes: Vec<String>,
    /// Notice given before a workload is stopped.
    pub warning: WarningConfig,
}

/// How long before a stop its owner is told (`RotationScheduled` Event, `rota.io/stop-at`).
/// During the warning the victim keeps running and its GPUs stay promised to the waiting
/// workload; the stop is cancelled if that workload no longer needs them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WarningConfig {
    /// KubeVirt VirtualMachines. Default 300 (5 min): someone may be working inside.
    pub virtual_machine_seconds: u64,
    /// Jobs. Default 0: a batch Job is suspended at once (it resumes where it can).
    pub job_seconds: u64,
    /// Bare pods. Default 0.
    pub pod_seconds: u64,
    /// Longest warning a workload may ask for with `rota.io/stop-warning-seconds` (its GPUs
    /// idle for the waiting tenant meanwhile). Default 3600.
    pub max_seconds: u64,
}

/// What to do with a node whose GPU telemetry is missing or stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UnknownTelemetryPolicy {
    /// Let the node pass the filter, but score it lower (default).
    Allow,
    /// Reject the node.
    Reject,
}

/// GPU telemetry thresholds and health grading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Seconds between polls of the node agents. Default 5.
    pub poll_interval_seconds: u64,
    /// Telemetry older than this counts as unknown, never as healthy. Default 30.
    pub stale_after_seconds: u64,
    /// A GPU above this temperature is degraded. Default 85.
    pub max_temperature_celsius: f64,
    /// XID error codes that make a GPU unhealthy (needs a reset or is lost).
    /// Default 48, 62, 63, 64, 74, 79, 92, 94, 95.
    pub unhealthy_xids: Vec<u32>,
    /// What to do with nodes whose telemetry is unknown. Default `allow`.
    pub unknown_policy: UnknownTelemetryPolicy,
    /// Label selector (equality terms only) finding the agent pods, one per GPU node.
    /// Default `app.kubernetes.io/name=rota-agent`, the label of the shipped DaemonSet.
    pub agent_selector: String,
    /// Port the agents serve `/v1/telemetry` on. Default 9402 (`rota agent --listen`).
    pub agent_port: u16,
    /// Seconds one poll of one agent may take before it counts as failed. Default 2, well
    /// inside the poll interval, so one dead agent never delays a round.
    pub poll_timeout_seconds: u64,
    /// Label selector of NVIDIA dcgm-exporter pods to poll on nodes without an agent. Default
    /// empty: dcgm-exporter is not polled (the GPU Operator labels it `app=nvidia-dcgm-exporter`).
    pub dcgm_exporter_selector: String,
    /// Port dcgm-exporter serves `/metrics` on. Default 9400, dcgm-exporter's own default.
    pub dcgm_exporter_port: u16,
}

/// Weights of the prioritize score components (each component is 0..1; the weighted mean is
/// scaled to 0..10).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Best fit on free GPUs, so whole nodes stay free for gangs. Default 1.
    pub packing: f64,
    /// GPU health (degraded GPUs score lower). Default 1.
    pub health: f64,
    /// Thermal headroom. Default 0.5.
    pub thermal: f64,
    /// Measured idle capacity on shared (time-sliced or MPS) GPUs. Default 0.5.
    pub utilisation: f64,
    /// Keeping room for the head of the fair-share queue. Default 1.
    pub head_room: f64,
    /// How the prioritize answer is written. Default `sparse`.
    pub answer: ScoreAnswer,
}

/// The form of the prioritize answer (`scoring.answer`).
///
/// kube-scheduler adds `score × weight × 10` to each host in the answer and nothing to a host
/// left out (`prioritizeNodes` in `pkg/scheduler/schedule_one.go`), so lowering every score by
/// the same amount changes no node's rank: `sparse` subtracts the lowest score among the
/// candidates and leaves out the hosts that reach 0. Most hosts in a burst are alike (empty,
/// or equally full), so most of the answer goes. `full` lists every candidate with its
/// absolute score (for people who read the scores in the scheduler's logs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreAnswer {
    /// Scores relative to the lowest candidate; hosts at 0 left out.
    #[default]
    Sparse,
    /// Every candidate with its absolute score.
    Full,
}

/// The fair-share filter gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GateConfig {
    /// Hold pods whose turn has not come. Default true.
    pub enabled: bool,
}

fn one() -> f64 {
    1.0
}

impl Default for RotaConfig {
    fn default() -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            gpu_resources: vec!["nvidia.com/gpu".into()],
            tenant_label: crate::names::TENANT_LABEL.into(),
            default_tenant_weight: 1.0,
            groups: Vec::new(),
            tenants: Vec::new(),
            usage: UsageConfig::default(),
            quantum: QuantumConfig::default(),
            rotation: RotationConfig::default(),
            telemetry: TelemetryConfig::default(),
            scoring: ScoringConfig::default(),
            gate: GateConfig::default(),
            queue: QueueConfig::default(),
        }
    }
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            half_life_seconds: 3600.0,
            device_weights: BTreeMap::new(),
            default_device_weight: 1.0,
        }
    }
}

impl Default for QuantumConfig {
    fn default() -> Self {
        Self {
            job_seconds: 600,
            virtual_machine_seconds: 3600,
            pod_seconds: 600,
            min_seconds: 300,
            max_seconds: 86_400,
        }
    }
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dry_run: true,
            interval_seconds: 30,
            margin_gpus: 0.5,
            max_per_tick: 4,
            max_per_tenant_per_tick: 1,
            protected_priority_classes: Vec::new(),
            warning: WarningConfig::default(),
        }
    }
}

impl Default for WarningConfig {
    fn default() -> Self {
        Self {
            virtual_machine_seconds: 300,
            job_seconds: 0,
            pod_seconds: 0,
            max_seconds: 3600,
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            poll_interval_seconds: 5,
            stale_after_seconds: 30,
            max_temperature_celsius: 85.0,
            unhealthy_xids: vec![48, 62, 63, 64, 74, 79, 92, 94, 95],
            unknown_policy: UnknownTelemetryPolicy::Allow,
            agent_selector: "app.kubernetes.io/name=rota-agent".into(),
            agent_port: 9402,
            poll_timeout_seconds: 2,
            dcgm_exporter_selector: String::new(),
            dcgm_exporter_port: 9400,
        }
    }
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            packing: 1.0,
            health: 1.0,
            thermal: 0.5,
            utilisation: 0.5,
            head_room: 1.0,
            answer: ScoreAnswer::default(),
        }
    }
}

impl Default for GateConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// A configuration that passed [`RotaConfig::validate`]. The only config type the rest of the
/// program accepts.
///
/// `ValidConfig::default()` is the default [`RotaConfig`], which always validates (a test
/// checks it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ValidConfig(RotaConfig);

impl Deref for ValidConfig {
    type Target = RotaConfig;
    fn deref(&self) -> &RotaConfig {
        &self.0
    }
}
