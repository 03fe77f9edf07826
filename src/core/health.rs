//! GPU and node health grading from one telemetry sample.
//!
//! Pure: no I/O and no clock. Each rule yields a finding (a state and a reason); the worst
//! state wins and every reason is kept, so an operator sees all causes at once.
//! Severity order: `healthy < unknown < degraded < unhealthy` (a known problem outranks not
//! knowing). Unsupported readings never change the grade; failed reads of a reading a rule
//! needs make the GPU `unknown` at worst, never `healthy` by silence.

use serde::{Deserialize, Serialize};

use super::telemetry::{field, GpuSample, NodeSample, ThrottleReason};
use crate::config::TelemetryConfig;

/// A health state, ordered by severity (`Ord` follows declaration order).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum HealthState {
    /// No problem found.
    Healthy,
    /// Not enough information to grade (NVML missing, readings failed, not graded yet).
    #[default]
    Unknown,
    /// Usable, but throttled, hot or waiting for a memory repair at the next reset.
    Degraded,
    /// Must not receive new work: ECC errors, a fatal XID, or the GPU is lost.
    Unhealthy,
}

impl HealthState {
    /// The value exported as `rota_gpu_health`: 0 healthy, 1 degraded, 2 unhealthy, 3 unknown.
    pub fn metric_value(self) -> f64 {
        match self {
            HealthState::Healthy => 0.0,
            HealthState::Degraded => 1.0,
            HealthState::Unhealthy => 2.0,
            HealthState::Unknown => 3.0,
        }
    }
}

/// A grade with every reason that contributed to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    /// The worst state found.
    pub state: HealthState,
    /// Human-readable causes, in rule order; empty when healthy.
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl Health {
    /// A healthy grade with no reasons.
    pub fn healthy() -> Self {
        Self {
            state: HealthState::Healthy,
            reasons: Vec::new(),
        }
    }

    /// Adds a finding: keeps the worse state and appends the reason.
    pub fn add(&mut self, state: HealthState, reason: impl Into<String>) {
        self.state = self.state.max(state);
        self.reasons.push(reason.into());
    }
}

/// Grades one GPU against the thresholds.
pub fn grade(gpu: &GpuSample, thresholds: &TelemetryConfig) -> Health {
    let mut health = Health::healthy();
    unhealthy_rules(gpu, thresholds, &mut health);
    degraded_rules(gpu, thresholds, &mut health);
    unknown_rules(gpu, &mut health);
    health
}

/// Grades every GPU of the sample, then the node (see [`grade_node`]).
pub fn grade_sample(sample: &mut NodeSample, thresholds: &TelemetryConfig) {
    for gpu in &mut sample.gpus {
        gpu.health = grade(gpu, thresholds);
    }
    sample.health = grade_node(sample);
}

/// The node grade from already graded GPUs: the worst of them, each reason prefixed with its
/// GPU index; `unknown` when NVML is unavailable or sees no GPU.
pub fn grade_node(sample: &NodeSample) -> Health {
    if !sample.nvml_available {
        let why = sample.nvml_error.as_deref().unwrap_or("no reason given");
        return Health {
            state: HealthState::Unknown,
            reasons: vec![format!("NVML unavailable: {why}")],
        };
    }
    if sample.gpus.is_empty() {
        return Health {
            state: HealthState::Unknown,
            reasons: vec!["NVML reports no GPUs".into()],
        };
    }
    let mut node = Health::healthy();
    for gpu in &sample.gpus {
        node.state = node.state.max(gpu.health.state);
        let reasons = gpu.health.reasons.iter();
        node.reasons
            .extend(reasons.map(|r| format!("GPU {}: {r}", gpu.index)));
    }
    node
}

fn unhealthy_rules(gpu: &GpuSample, thresholds: &TelemetryConfig, health: &mut Health) {
    if gpu.lost {
        health.add(HealthState::Unhealthy, "GPU lost: fell off the bus");
    }
    if let Some(count) = gpu.ecc_uncorrected_volatile.filter(|&n| n > 0) {
        health.add(
            HealthState::Unhealthy,
            format!("{count} uncorrected volatile ECC error(s)"),
        );
    }
    let recent = gpu.xid_errors.iter().flatten();
    let mut fatal: Vec<u32> = recent
        .chain(&gpu.xid_errors_seen)
        .copied()
        .filter(|code| thresholds.unhealthy_xids.contains(code))
        .collect();
    fatal.sort_unstable();
    fatal.dedup();
    for code in fatal {
        health.add(HealthState::Unhealthy, format!("XID {code}"));
    }
}

fn degraded_rules(gpu: &GpuSample, thresholds: &TelemetryConfig, health: &mut Health) {
    for reason in gpu.throttle_reasons.iter().flatten() {
        let what = match reason {
            ThrottleReason::HwThermalSlowdown => "hardware thermal slowdown",
            ThrottleReason::SwThermalSlowdown => "software thermal slowdown",
            ThrottleReason::HwPowerBrakeSlowdown => "hardware power brake slowdown",
            _ => continue,
        };
        health.add(HealthState::Degraded, format!("throttled: {what}"));
    }
    let max = thresholds.max_temperature_celsius;
    if let Some(t) = gpu.temperature_celsius.filter(|&t| t > max) {
        health.add(
            HealthState::Degraded,
            format!("temperature {t} °C above {max} °C"),
        );
    }
    if gpu.pending_page_retirement == Some(true) {
        health.add(HealthState::Degraded, "pages pending retirement");
    }
    if gpu.pending_row_remap == Some(true) {
        health.add(HealthState::Degraded, "rows pending remapping");
    }
}

/// Readings the rules above depend on; a failed read of one leaves the grade uncertain.
const GRADED_FIELDS: [&str; 6] = [
    field::ECC_UNCORRECTED,
    field::XID_ERRORS,
    field::THROTTLE_REASONS,
    field::TEMPERATURE,
    field::PENDING_PAGE_RETIREMENT,
    field::PENDING_ROW_REMAP,
];

fn unknown_rules(gpu: &GpuSample, health: &mut Health) {
    for name in GRADED_FIELDS {
        if let Some(error) = gpu.errors.get(name) {
            health.add(HealthState::Unknown, format!("{name} unreadable: {error}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu() -> GpuSample {
        GpuSample {
            index: 0,
            uuid: "GPU-0".into(),
            temperature_celsius: Some(60.0),
            ecc_uncorrected_volatile: Some(0),
            xid_errors: Some(Vec::new()),
            throttle_reasons: Some(Vec::new()),
            pending_page_retirement: Some(false),
            pending_row_remap: Some(false),
            ..GpuSample::default()
        }
    }

    fn cfg() -> TelemetryConfig {
        TelemetryConfig::default()
    }

    fn graded(g: &GpuSample) -> Health {
        grade(g, &cfg())
    }

    #[test]
    fn clean_gpu_is_healthy() {
        let h = graded(&gpu());
        assert_eq!(h.state, HealthState::Healthy);
        assert!(h.reasons.is_empty());
    }

    #[test]
    fn unsupported_readings_do_not_change_the_grade() {
        let g = GpuSample {
            index: 1,
            unsupported: vec![field::ECC_UNCORRECTED.into(), field::XID_ERRORS.into()],
            ..GpuSample::default()
        };
        assert_eq!(graded(&g).state, HealthState::Healthy);
    }

    #[test]
    fn uncorrected_ecc_is_unhealthy() {
        let g = GpuSample {
            ecc_uncorrected_volatile: Some(3),
            ..gpu()
        };
        let h = graded(&g);
        assert_eq!(h.state, HealthState::Unhealthy);
        assert!(h.reasons[0].contains("3 uncorrected"), "{:?}", h.reasons);
    }

    #[test]
    fn configured_xid_is_unhealthy_and_others_are_not() {
        let fatal = GpuSample {
            xid_errors: Some(vec![79]),
            ..gpu()
        };
        assert_eq!(graded(&fatal).state, HealthState::Unhealthy);
        assert_eq!(graded(&fatal).reasons, vec!["XID 79".to_string()]);
        // XID 13 (graphics engine exception) is an application fault, not in the list.
        let benign = GpuSample {
            xid_errors: Some(vec![13]),
            ..gpu()
        };
        assert_eq!(graded(&benign).state, HealthState::Healthy);
        let mut custom = cfg();
        custom.unhealthy_xids = vec![13];
        assert_eq!(grade(&benign, &custom).state, HealthState::Unhealthy);
    }

    #[test]
    fn xid_seen_earlier_keeps_the_gpu_unhealthy() {
        let g = GpuSample {
            xid_errors: Some(Vec::new()),
            xid_errors_seen: vec![48],
            ..gpu()
        };
        assert_eq!(graded(&g).state, HealthState::Unhealthy);
    }

    #[test]
    fn lost_gpu_is_unhealthy() {
        let g = GpuSample {
            lost: true,
            ..gpu()
        };
        let h = graded(&g);
        assert_eq!(h.state, HealthState::Unhealthy);
        assert!(h.reasons[0].contains("lost"));
    }

    #[test]
    fn thermal_and_power_brake_throttling_degrade() {
        for reason in [
            ThrottleReason::HwThermalSlowdown,
            ThrottleReason::SwThermalSlowdown,
            ThrottleReason::HwPowerBrakeSlowdown,
        ] {
            let g = GpuSample {
                throttle_reasons: Some(vec![reason]),
                ..gpu()
            };
            assert_eq!(graded(&g).state, HealthState::Degraded, "{reason:?}");
        }
        // Idle and power-cap throttling are normal operation.
        let g = GpuSample {
            throttle_reasons: Some(vec![ThrottleReason::GpuIdle, ThrottleReason::SwPowerCap]),
            ..gpu()
        };
        assert_eq!(graded(&g).state, HealthState::Healthy);
    }

    #[test]
    fn temperature_above_the_limit_degrades() {
        let at = GpuSample {
            temperature_celsius: Some(85.0),
            ..gpu()
        };
        assert_eq!(graded(&at).state, HealthState::Healthy);
        let above = GpuSample {
            temperature_celsius: Some(85.5),
            ..gpu()
        };
        assert_eq!(graded(&above).state, HealthState::Degraded);
    }

    #[test]
    fn pending_retirement_and_remap_degrade() {
        let pages = GpuSample {
            pending_page_retirement: Some(true),
            ..gpu()
        };
        assert_eq!(graded(&pages).state, HealthState::Degraded);
        let rows = GpuSample {
            pending_row_remap: Some(true),
            ..gpu()
        };
        assert_eq!(graded(&rows).state, HealthState::Degraded);
    }

    #[test]
    fn worst_state_wins_and_all_reasons_are_listed() {
        let g = GpuSample {
            temperature_celsius: Some(95.0),
            xid_errors: Some(vec![79]),
            pending_row_remap: Some(true),
            ..gpu()
        };
        let h = graded(&g);
        assert_eq!(h.state, HealthState::Unhealthy);
        assert_eq!(h.reasons.len(), 3, "{:?}", h.reasons);
    }

    #[test]
    fn failed_reads_make_the_grade_unknown_but_never_hide_a_problem() {
        let mut g = gpu();
        g.temperature_celsius = None;
        g.errors.insert(field::TEMPERATURE.into(), "Unknown".into());
        assert_eq!(graded(&g).state, HealthState::Unknown);
        g.pending_page_retirement = Some(true);
        let h = graded(&g);
        assert_eq!(h.state, HealthState::Degraded);
        assert_eq!(h.reasons.len(), 2);
    }

    #[test]
    fn node_is_unknown_without_nvml() {
        let mut s = NodeSample::nvml_unavailable("libnvidia-ml.so.1: cannot open");
        grade_sample(&mut s, &cfg());
        assert_eq!(s.health.state, HealthState::Unknown);
        assert!(s.health.reasons[0].contains("libnvidia-ml"));
    }

    #[test]
    fn node_takes_the_worst_gpu() {
        let mut s = NodeSample::new();
        let hot = GpuSample {
            index: 1,
            temperature_celsius: Some(99.0),
            ..gpu()
        };
        s.gpus = vec![gpu(), hot];
        grade_sample(&mut s, &cfg());
        assert_eq!(s.gpus[0].health.state, HealthState::Healthy);
        assert_eq!(s.health.state, HealthState::Degraded);
        assert!(s.health.reasons[0].starts_with("GPU 1: "));
        s.gpus.clear();
        grade_sample(&mut s, &cfg());
        assert_eq!(s.health.state, HealthState::Unknown);
    }

    #[test]
    fn metric_values_are_stable() {
        let values: Vec<f64> = [
            HealthState::Healthy,
            HealthState::Degraded,
            HealthState::Unhealthy,
            HealthState::Unknown,
        ]
        .map(HealthState::metric_value)
        .to_vec();
        assert_eq!(values, vec![0.0, 1.0, 2.0, 3.0]);
    }
}
