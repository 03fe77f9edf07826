//! Read-only accessors the policy uses on a [`ValidConfig`]: weights by name, quanta by kind,
//! timings as `Duration`s.
//!
//! They rely on validation (weights positive, quantum bounds ordered) and never fail: a name
//! the config does not list gets the documented default. Lookups scan the lists, which hold
//! tens of entries in practice.

use std::time::Duration;

use crate::core::WorkloadKind;

use super::{QuantumConfig, TenantConfig, ValidConfig, WarningConfig};

/// Weight of the implicit default group: tenants that name no group (listed or not) share it,
/// and it competes with the named groups as if it were one of weight 1.
pub const DEFAULT_GROUP_WEIGHT: f64 = 1.0;

impl QuantumConfig {
    /// The quantum of a workload of this kind, seconds.
    pub fn seconds_for(&self, kind: WorkloadKind) -> u64 {
        match kind {
            WorkloadKind::Job => self.job_seconds,
            WorkloadKind::VirtualMachine => self.virtual_machine_seconds,
            WorkloadKind::Pod => self.pod_seconds,
        }
    }
}

impl WarningConfig {
    /// The notice a workload of this kind gets before a stop, seconds.
    pub fn seconds_for(&self, kind: WorkloadKind) -> u64 {
        match kind {
            WorkloadKind::Job => self.job_seconds,
            WorkloadKind::VirtualMachine => self.virtual_machine_seconds,
            WorkloadKind::Pod => self.pod_seconds,
        }
    }
}

impl ValidConfig {
    /// The listed tenant called `name`, if any.
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// Weight of tenant `name`; `defaultTenantWeight` for tenants not listed.
    pub fn tenant_weight(&self, name: &str) -> f64 {
        self.tenant(name)
            .map_or(self.default_tenant_weight, |t| t.weight)
    }

    /// Group of tenant `name`; `None` means the implicit default group (also for tenants not
    /// listed).
    pub fn tenant_group(&self, name: &str) -> Option<&str> {
        self.tenant(name).and_then(|t| t.group.as_deref())
    }

    /// Weight of a group; `None` (the implicit default group) and unknown names get
    /// [`DEFAULT_GROUP_WEIGHT`].
    pub fn group_weight(&self, group: Option<&str>) -> f64 {
        group
            .and_then(|name| self.groups.iter().find(|g| g.name == name))
            .map_or(DEFAULT_GROUP_WEIGHT, |g| g.weight)
    }

    /// Charge per GPU-second for a GPU product (the `nvidia.com/gpu.product` label value, matched
    /// exactly); `defaultDeviceWeight` when the product is unknown or not listed.
    pub fn device_weight(&self, product: Option<&str>) -> f64 {
        product
            .and_then(|p| self.usage.device_weights.get(p))
            .copied()
            .unwrap_or(self.usage.default_device_weight)
    }

    /// Default minimum run time of a workload of this kind.
    pub fn quantum_for(&self, kind: WorkloadKind) -> Duration {
        Duration::from_secs(self.quantum.seconds_for(kind))
    }

    /// A quantum a workload asked for by annotation, clamped to
    /// `quantum.minSeconds..=quantum.maxSeconds`.
    pub fn clamp_quantum(&self, requested: Duration) -> Duration {
        let min = Duration::from_secs(self.quantum.min_seconds);
        let max = Duration::from_secs(self.quantum.max_seconds);
        requested.clamp(min, max)
    }

    /// Notice before a workload of this kind is stopped, in seconds: what it asked for with
    /// `rota.io/stop-warning-seconds` (at most `rotation.warning.maxSeconds`), else the
    /// kind's default.
    pub fn warning_for(&self, kind: WorkloadKind, asked: Option<u64>) -> u64 {
        let w = &self.rotation.warning;
        asked.map_or(w.seconds_for(kind), |a| a.min(w.max_seconds))
    }

    /// Half-life of decayed usage (saturates at `Duration::MAX` for absurd values).
    pub fn half_life(&self) -> Duration {
        Duration::try_from_secs_f64(self.usage.half_life_seconds).unwrap_or(Duration::MAX)
    }

    /// Time between rotation ticks.
    pub fn rotation_interval(&self) -> Duration {
        Duration::from_secs(self.rotation.interval_seconds)
    }

    /// Time between polls of the node agents.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.telemetry.poll_interval_seconds)
    }

    /// Age after which telemetry counts as unknown.
    pub fn stale_after(&self) -> Duration {
        Duration::from_secs(self.telemetry.stale_after_seconds)
    }

    /// True when `resource` is one of `gpuResources`.
    pub fn manages_resource(&self, resource: &str) -> bool {
        self.gpu_resources.iter().any(|r| r == resource)
    }

    /// True when workloads of this PriorityClass must never be rotated out.
    pub fn is_protected_priority_class(&self, class: Option<&str>) -> bool {
        class.is_some_and(|c| {
            self.rotation
                .protected_priority_classes
                .iter()
                .any(|p| p == c)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GroupConfig, RotaConfig};

    fn config() -> ValidConfig {
        let mut c = RotaConfig {
            groups: vec![GroupConfig {
                name: "research".into(),
                weight: 3.0,
            }],
            tenants: vec![
                TenantConfig {
                    name: "ml".into(),
                    weight: 2.0,
                    group: Some("research".into()),
                },
                TenantConfig {
                    name: "course".into(),
                    weight: 0.5,
                    group: None,
                },
            ],
            default_tenant_weight: 0.25,
            ..RotaConfig::default()
        };
        c.usage
            .device_weights
            .insert("NVIDIA-H100-80GB-HBM3".into(), 4.0);
        c.usage.default_device_weight = 1.5;
        c.rotation.protected_priority_classes = vec!["system-critical".into()];
        match c.validate() {
            Ok(v) => v,
            Err(e) => panic!("fixture must validate: {e}"),
        }
    }

    #[test]
    fn tenant_and_group_lookups_fall_back_to_defaults() {
        let c = config();
        assert_eq!(c.tenant_weight("ml"), 2.0);
        assert_eq!(c.tenant_weight("course"), 0.5);
        assert_eq!(c.tenant_weight("stranger"), 0.25);
        assert_eq!(c.tenant_group("ml"), Some("research"));
        assert_eq!(c.tenant_group("course"), None);
        assert_eq!(c.tenant_group("stranger"), None);
        assert_eq!(c.group_weight(Some("research")), 3.0);
        assert_eq!(c.group_weight(None), DEFAULT_GROUP_WEIGHT);
    }

    #[test]
    fn device_weight_matches_product_exactly() {
        let c = config();
        assert_eq!(c.device_weight(Some("NVIDIA-H100-80GB-HBM3")), 4.0);
        assert_eq!(c.device_weight(Some("nvidia-h100-80gb-hbm3")), 1.5);
        assert_eq!(c.device_weight(None), 1.5);
    }

    #[test]
    fn quanta_per_kind_and_clamped() {
        let c = config();
        let q = &c.quantum;
        assert_eq!(c.quantum_for(WorkloadKind::Job).as_secs(), q.job_seconds);
        let vm = c.quantum_for(WorkloadKind::VirtualMachine).as_secs();
        assert_eq!(vm, q.virtual_machine_seconds);
        assert_eq!(c.quantum_for(WorkloadKind::Pod).as_secs(), q.pod_seconds);
        assert_eq!(c.clamp_quantum(Duration::ZERO).as_secs(), q.min_seconds);
        assert_eq!(c.clamp_quantum(Duration::MAX).as_secs(), q.max_seconds);
        assert_eq!(c.clamp_quantum(Duration::from_secs(1000)).as_secs(), 1000);
    }

    #[test]
    fn timings_and_membership() {
        let c = config();
        assert_eq!(c.half_life().as_secs_f64(), c.usage.half_life_seconds);
        assert_eq!(c.rotation_interval().as_secs(), c.rotation.interval_seconds);
        assert_eq!(
            c.poll_interval().as_secs(),
            c.telemetry.poll_interval_seconds
        );
        assert_eq!(c.stale_after().as_secs(), c.telemetry.stale_after_seconds);
        assert!(c.manages_resource("nvidia.com/gpu"));
        assert!(!c.manages_resource("nvidia.com/mig-1g.5gb"));
        assert!(c.is_protected_priority_class(Some("system-critical")));
        assert!(!c.is_protected_priority_class(Some("batch")));
        assert!(!c.is_protected_priority_class(None));
    }
}
