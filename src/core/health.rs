//! GPU and node health grading from one telemetry sample.
//!
//! Pure: no I/O and no clock. Each rule yields a finding (a state and a reason); the worst
//! state wins and every reason is kept, so an operator sees all causes at once.
//! Severity order: `healthy < unknown < degraded < unhealthy` (a known problem outranks not
//! knowing). Unsupported readings never change the grade; failed reads of a reading a rule
//! needs make the GPU `unknown` at worst, never `healthy` by silence.
//!
//! The second half judges a node's stored telemetry at decision time ([`reading`], [`gate`]
//! and the score components): freshness is decided from the `now` the caller passes, so stale
//! data turns unknown without anyone rewriting it, and unknown never counts as healthy.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::{GpuNode, GpuPod};
use super::telemetry::{field, GpuCondition, GpuSample, NodeSample, NodeTelemetry, ThrottleReason};
use crate::config::{TelemetryConfig, UnknownTelemetryPolicy};

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

// === node telemetry at decision time ===

/// How far a reporter's clock may run ahead of the extender's before its sample is suspect and
/// counts as unknown. NTP keeps nodes within milliseconds; seconds of slack absorb jitter only.
pub const MAX_CLOCK_AHEAD_SECONDS: f64 = 5.0;

/// Health component of a node whose telemetry is unknown: below healthy (1), equal to
/// degraded, so unknown never outranks known-good.
pub const UNKNOWN_HEALTH_SCORE: f64 = 0.5;

/// What a decision needs to judge telemetry: the thresholds and the decision time.
#[derive(Clone, Copy, Debug)]
pub struct TelemetryRules<'c> {
    /// Staleness limit, temperature threshold and unknown policy.
    pub config: &'c TelemetryConfig,
    /// The decision time, unix seconds (core never reads a clock).
    pub now_unix_seconds: f64,
}

/// Why a node's telemetry counts as unknown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnknownCause<'a> {
    /// A reporter is known but no valid sample has arrived; the latest poll error, if any.
    NeverReported(Option<&'a str>),
    /// The newest valid sample is older than `telemetry.staleAfterSeconds`.
    Stale {
        /// Age of the sample at decision time.
        age_seconds: f64,
        /// The configured limit.
        limit_seconds: u64,
    },
    /// The sample is stamped in the future beyond [`MAX_CLOCK_AHEAD_SECONDS`].
    FromTheFuture {
        /// How far ahead.
        ahead_seconds: f64,
    },
    /// The agent reports NVML unavailable and no passthrough GPUs.
    NvmlUnavailable,
    /// NVML works but reports no GPU.
    NoGpus,
}

impl fmt::Display for UnknownCause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownCause::NeverReported(Some(err)) => write!(f, "no valid report yet: {err}"),
            UnknownCause::NeverReported(None) => f.write_str("no valid report yet"),
            UnknownCause::Stale {
                age_seconds,
                limit_seconds,
            } => write!(
                f,
                "last report {age_seconds:.0} s old, limit {limit_seconds} s"
            ),
            UnknownCause::FromTheFuture { ahead_seconds } => {
                write!(f, "report stamped {ahead_seconds:.0} s in the future")
            }
            UnknownCause::NvmlUnavailable => f.write_str("NVML unavailable on the node"),
            UnknownCause::NoGpus => f.write_str("NVML reports no GPU"),
        }
    }
}

/// A node's telemetry as a decision sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reading<'a> {
    /// No agent or exporter known: decide from the Node object alone, exactly as without
    /// telemetry (no gate, no penalty).
    Absent,
    /// A fresh report from a node whose GPUs are all bound to `vfio-pci` (NVML cannot see
    /// them): capacity comes from the Node object, with no penalty.
    Unobserved,
    /// A reporter is known, but its data is missing, stale, suspect or empty.
    Unknown(UnknownCause<'a>),
    /// Fresh per-GPU data.
    Fresh(&'a NodeTelemetry),
}

/// Judges `node`'s stored telemetry at `rules.now_unix_seconds`.
pub fn reading<'a>(node: &'a GpuNode, rules: &TelemetryRules<'_>) -> Reading<'a> {
    let Some(t) = node.telemetry.as_deref() else {
        return Reading::Absent;
    };
    let Some(age) = t.age_seconds(rules.now_unix_seconds) else {
        return Reading::Unknown(UnknownCause::NeverReported(t.last_error.as_deref()));
    };
    let limit = rules.config.stale_after_seconds;
    if age > limit as f64 || age.is_nan() {
        let cause = UnknownCause::Stale {
            age_seconds: age,
            limit_seconds: limit,
        };
        return Reading::Unknown(cause);
    }
    if -age > MAX_CLOCK_AHEAD_SECONDS {
        let cause = UnknownCause::FromTheFuture {
            ahead_seconds: -age,
        };
        return Reading::Unknown(cause);
    }
    match (
        t.gpus().is_empty(),
        t.passthrough_gpus > 0,
        t.nvml_available,
    ) {
        (false, _, _) => Reading::Fresh(t),
        (true, true, _) => Reading::Unobserved,
        (true, false, false) => Reading::Unknown(UnknownCause::NvmlUnavailable),
        (true, false, true) => Reading::Unknown(UnknownCause::NoGpus),
    }
}

/// The filter's telemetry verdict on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Telemetry raises no objection.
    Pass,
    /// Rejected for now: the healthy GPUs could cover the pod once running pods leave, so
    /// preemption may help (`FailedNodes`).
    Hold(String),
    /// Rejected for good: too few healthy GPUs, or unknown telemetry under the `reject`
    /// policy (`FailedAndUnresolvableNodes`).
    Reject(String),
}

/// Whether the node's usable GPUs (allocatable minus unhealthy; degraded still usable) can
/// take `pod`, and what to do with unknown telemetry.
pub fn gate(node: &GpuNode, pod: &GpuPod, rules: &TelemetryRules<'_>) -> Gate {
    match reading(node, rules) {
        Reading::Absent | Reading::Unobserved => Gate::Pass,
        Reading::Unknown(cause) => match rules.config.unknown_policy {
            UnknownTelemetryPolicy::Allow => Gate::Pass,
            UnknownTelemetryPolicy::Reject => Gate::Reject(format!(
                "rota: node GPU telemetry is unknown ({cause}) and telemetry.unknownPolicy is reject"
            )),
        },
        Reading::Fresh(t) => shortfall(node, pod, t),
    }
}

/// Allocatable `resource` slots left once unhealthy GPUs are taken out. Time-slicing or MPS
/// advertise several slots per GPU, so each unhealthy GPU removes `allocatable / gpus` slots;
/// the minimum keeps a GPU the device plugin already withdrew from being counted twice.
pub fn usable(node: &GpuNode, resource: &str, t: &NodeTelemetry) -> u64 {
    let allocatable = node.allocatable.get(resource).copied().unwrap_or(0);
    let physical = t.gpus().len() as u64;
    let unhealthy = u64::from(t.summary().unhealthy);
    if physical == 0 || unhealthy == 0 {
        return allocatable;
    }
    let per_gpu = (allocatable / physical).max(1);
    allocatable.min((physical - unhealthy) * per_gpu)
}

fn unhealthy_gpus(t: &NodeTelemetry) -> impl Iterator<Item = &GpuCondition> {
    t.gpus()
        .iter()
        .filter(|g| g.state == HealthState::Unhealthy)
}

/// The gate for fresh data: only unhealthy GPUs can make rota reject (plain lack of free GPUs
/// is kube-scheduler's own check).
fn shortfall(node: &GpuNode, pod: &GpuPod, t: &NodeTelemetry) -> Gate {
    if t.summary().unhealthy == 0 {
        return Gate::Pass;
    }
    for (resource, &wanted) in &pod.requests {
        if node.allocatable.get(resource).copied().unwrap_or(0) == 0 {
            continue;
        }
        let usable = usable(node, resource, t);
        let used = node.used.get(resource).copied().unwrap_or(0);
        let free = usable.saturating_sub(used);
        if free >= wanted {
            continue;
        }
        let reason = format!(
            "rota: node has {free} usable free {}, the pod needs {wanted}: {}",
            if free == 1 { "GPU" } else { "GPUs" },
            unhealthy_list(t)
        );
        return if usable >= wanted {
            Gate::Hold(reason)
        } else {
            Gate::Reject(reason)
        };
    }
    Gate::Pass
}

/// `GPU 3 (GPU-5d1c7a52…) unhealthy: XID 79; GPU 5 (…) unhealthy: …`.
fn unhealthy_list(t: &NodeTelemetry) -> String {
    let parts: Vec<String> = unhealthy_gpus(t)
        .map(|g| {
            let uuid: String = g.uuid.chars().take(12).collect();
            let more = if g.uuid.chars().count() > 12 {
                "…"
            } else {
                ""
            };
            let why = if g.reasons.is_empty() {
                "no reason given".to_string()
            } else {
                g.reasons.join(", ")
            };
            format!("GPU {} ({uuid}{more}) unhealthy: {why}", g.index)
        })
        .collect();
    parts.join("; ")
}

/// Health score component in 0..1: the mean over GPUs of healthy 1, degraded 0.5, unknown
/// 0.5, unhealthy 0; [`UNKNOWN_HEALTH_SCORE`] for unknown telemetry; `None` without telemetry.
pub fn health_score(reading: &Reading<'_>) -> Option<f64> {
    match reading {
        Reading::Absent | Reading::Unobserved => None,
        Reading::Unknown(_) => Some(UNKNOWN_HEALTH_SCORE),
        Reading::Fresh(t) => t.summary().health_score,
    }
}

/// Thermal headroom component in 0..1: `(max − hottest) / max` over the node's GPUs, with `max`
/// the degraded threshold; `None` without fresh temperatures.
pub fn thermal_score(reading: &Reading<'_>, max_celsius: f64) -> Option<f64> {
    let Reading::Fresh(t) = reading else {
        return None;
    };
    let hottest = t.summary().hottest_celsius?;
    (max_celsius > 0.0).then(|| ((max_celsius - hottest) / max_celsius).clamp(0.0, 1.0))
}

/// Measured idle capacity in 0..1 for GPUs shared by time-slicing or MPS (some requested
/// resource advertises more slots than the GPUs telemetry sees): the mean over GPUs of
/// `(idle ratio + free memory ratio) / 2`, each part only where measured. `None` for whole
/// GPUs or without measurements.
pub fn shared_idle_score(reading: &Reading<'_>, node: &GpuNode, pod: &GpuPod) -> Option<f64> {
    let Reading::Fresh(t) = reading else {
        return None;
    };
    let physical = t.gpus().len() as u64;
    let shared = pod
        .requests
        .keys()
        .any(|r| node.allocatable.get(r).is_some_and(|&a| a > physical));
    if !shared {
        return None;
    }
    t.summary().idle_score
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
