//! Semantic validation of a parsed [`RotaConfig`]: every rule, all problems at once.
//!
//! [`RotaConfig::validate`] is the only way to obtain a [`ValidConfig`]. It never stops at the
//! first problem: each check appends a [`ConfigProblem`] naming the field by its YAML path
//! (`tenants[1].weight`), so an operator fixes a file in one pass. Legal but suspicious settings
//! are reported separately by [`ValidConfig::warnings`] and never block startup.

use std::fmt;

use super::names;
use super::{
    GroupConfig, QuantumConfig, RotaConfig, RotationConfig, ScoringConfig, TelemetryConfig,
    TenantConfig, UsageConfig, ValidConfig, WarningConfig, API_VERSION, KIND,
};

/// Hottest plausible GPU temperature limit; NVIDIA GPUs shut down well below it.
const MAX_TEMPERATURE_LIMIT_CELSIUS: f64 = 150.0;
/// Weight ratio from which one party will almost never get a turn.
const SUSPICIOUS_WEIGHT_RATIO: f64 = 1000.0;
/// Telemetry goes stale after fewer missed polls than this, so one slow poll marks nodes unknown.
const MIN_POLLS_BEFORE_STALE: u64 = 3;

/// One validation failure: the field's YAML path and why its value is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Path of the offending field, as written in the file (`usage.halfLifeSeconds`,
    /// `tenants[2].group`); `""` for the document itself.
    pub path: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Every problem [`RotaConfig::validate`] found, in field order. Never empty when returned as
/// an error. Displays as one problem per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl ConfigErrors {
    /// The problems, in field order.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.0
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The problems as `path: reason` joined by `sep`, for one-line log messages.
    pub fn join(&self, sep: &str) -> String {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        lines.join(sep)
    }

    /// True when there is no problem (never the case for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems while the checks run.
#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn check(&mut self, path: impl Into<String>, result: Result<(), String>) {
        if let Err(reason) = result {
            self.push(path, reason);
        }
    }

    fn positive(&mut self, path: impl Into<String>, value: f64) {
        if !(value.is_finite() && value > 0.0) {
            self.push(
                path,
                format!("must be a finite number above 0, got {value}"),
            );
        }
    }

    fn non_negative(&mut self, path: impl Into<String>, value: f64) {
        if !(value.is_finite() && value >= 0.0) {
            self.push(
                path,
                format!("must be a finite number of at least 0, got {value}"),
            );
        }
    }

    fn at_least_one(&mut self, path: impl Into<String>, value: u64) {
        if value < 1 {
            self.push(path, "must be at least 1");
        }
    }

    /// Flags every repeat of an earlier entry, naming the first occurrence.
    fn unique<'a>(&mut self, list: &str, items: impl Iterator<Item = (&'a str, String)>) {
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for (i, (key, path)) in items.enumerate() {
            match seen.iter().find(|(k, _)| *k == key) {
                Some((_, first)) => self.push(path, format!("duplicate of {list}[{first}]")),
                None => seen.push((key, i)),
            }
        }
    }
}

impl RotaConfig {
    /// Checks every field and returns the config ready for use, or every problem found.
    ///
    /// Rules beyond syntax: names follow Kubernetes syntax (resource names, the label key,
    /// tenant names as label values), weights are finite and positive, lists have no
    /// duplicates, every tenant's `group` exists, quanta are ordered, and the rotation and
    /// telemetry timings are consistent. See the configuration reference in the README.
    pub fn validate(self) -> Result<ValidConfig, ConfigErrors> {
        let mut p = Problems::default();
        self.check_identity(&mut p);
        self.check_resources(&mut p);
        self.check_tenancy(&mut p);
        check_usage(&self.usage, &mut p);
        check_quantum(&self.quantum, &mut p);
        check_rotation(&self.rotation, &mut p);
        check_telemetry(&self.telemetry, &mut p);
        check_scoring(&self.scoring, &mut p);
        if p.0.is_empty() {
            Ok(ValidConfig(self))
        } else {
            Err(ConfigErrors(p.0))
        }
    }

    fn check_identity(&self, p: &mut Problems) {
        if self.api_version != API_VERSION {
            let got = &self.api_version;
            p.push(
                "apiVersion",
                format!("must be {API_VERSION:?}, got {got:?}"),
            );
        }
        if self.kind != KIND {
            p.push("kind", format!("must be {KIND:?}, got {:?}", self.kind));
        }
    }

    fn check_resources(&self, p: &mut Problems) {
        if self.gpu_resources.is_empty() {
            p.push("gpuResources", "must list at least one resource name");
        }
        for (i, name) in self.gpu_resources.iter().enumerate() {
            p.check(
                format!("gpuResources[{i}]"),
                names::extended_resource_name(name),
            );
        }
        let entries = self.gpu_resources.iter().enumerate();
        p.unique(
            "gpuResources",
            entries.map(|(i, n)| (n.as_str(), format!("gpuResources[{i}]"))),
        );
        p.check("tenantLabel", names::qualified_name(&self.tenant_label));
    }

    fn check_tenancy(&self, p: &mut Problems) {
        p.positive("defaultTenantWeight", self.default_tenant_weight);
        check_groups(&self.groups, p);
        check_tenants(&self.tenants, &self.groups, p);
    }
}

fn check_groups(groups: &[GroupConfig], p: &mut Problems) {
    for (i, group) in groups.iter().enumerate() {
        if group.name.is_empty() {
            p.push(format!("groups[{i}].name"), "must not be empty");
        }
        p.positive(format!("groups[{i}].weight"), group.weight);
    }
    let entries = groups.iter().enumerate();
    p.unique(
        "groups",
        entries.map(|(i, g)| (g.name.as_str(), format!("groups[{i}].name"))),
    );
}

fn check_tenants(tenants: &[TenantConfig], groups: &[GroupConfig], p: &mut Problems) {
    for (i, tenant) in tenants.iter().enumerate() {
        // A tenant is matched against a label value or a namespace, so any other spelling
        // could never match a pod.
        p.check(
            format!("tenants[{i}].name"),
            names::label_name(&tenant.name),
        );
        p.positive(format!("tenants[{i}].weight"), tenant.weight);
        if let Some(group) = &tenant.group {
            check_tenant_group(i, group, groups, p);
        }
    }
    let entries = tenants.iter().enumerate();
    p.unique(
        "tenants",
        entries.map(|(i, t)| (t.name.as_str(), format!("tenants[{i}].name"))),
    );
}

fn check_tenant_group(i: usize, group: &str, groups: &[GroupConfig], p: &mut Problems) {
    let path = format!("tenants[{i}].group");
    if group.is_empty() {
        p.push(
            path,
            "must not be empty; omit the key to put the tenant in the implicit default group",
        );
    } else if !groups.iter().any(|g| g.name == group) {
        let known: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let known = if known.is_empty() {
            "no groups are defined".to_string()
        } else {
            format!("defined groups: {}", known.join(", "))
        };
        p.push(path, format!("unknown group {group:?} ({known})"));
    }
}

fn check_usage(usage: &UsageConfig, p: &mut Problems) {
    p.positive("usage.halfLifeSeconds", usage.half_life_seconds);
    for (product, weight) in &usage.device_weights {
        let path = format!("usage.deviceWeights.{product}");
        // Keys are compared with the `nvidia.com/gpu.product` node label value.
        if let Err(reason) = names::label_name(product) {
            p.push(
                &path,
                format!("{reason}; it could never match a node label"),
            );
        }
        p.positive(path, *weight);
    }
    p.positive("usage.defaultDeviceWeight", usage.default_device_weight);
}

fn check_quantum(q: &QuantumConfig, p: &mut Problems) {
    let kinds = [
        ("quantum.jobSeconds", q.job_seconds),
        ("quantum.virtualMachineSeconds", q.virtual_machine_seconds),
        ("quantum.podSeconds", q.pod_seconds),
    ];
    for (path, value) in kinds {
        p.at_least_one(path, value);
    }
    p.at_least_one("quantum.minSeconds", q.min_seconds);
    p.at_least_one("quantum.maxSeconds", q.max_seconds);
    if q.min_seconds > q.max_seconds {
        let max = q.max_seconds;
        p.push(
            "quantum.minSeconds",
            format!("must not exceed quantum.maxSeconds ({max})"),
        );
        // The per-kind range checks below would only repeat this problem.
        return;
    }
    for (path, value) in kinds {
        if value != 0 && !(q.min_seconds..=q.max_seconds).contains(&value) {
            let (min, max) = (q.min_seconds, q.max_seconds);
            p.push(
                path,
                format!(
                    "{value} is outside quantum.minSeconds..=quantum.maxSeconds ({min}..={max})"
                ),
            );
        }
    }
}

/// Longest warning the config may set: a day (GPUs promised to a waiting tenant stay busy
/// meanwhile).
const MAX_WARNING_SECONDS: u64 = 86_400;

fn check_warning(w: &WarningConfig, p: &mut Problems) {
    if w.max_seconds > MAX_WARNING_SECONDS {
        p.push(
            "rotation.warning.maxSeconds",
            format!(
                "{} is more than a day ({MAX_WARNING_SECONDS})",
                w.max_seconds
            ),
        );
    }
    let kinds = [
        ("rotation.warning.jobSeconds", w.job_seconds),
        (
            "rotation.warning.virtualMachineSeconds",
            w.virtual_machine_seconds,
        ),
        ("rotation.warning.podSeconds", w.pod_seconds),
    ];
    for (path, value) in kinds {
        if value > w.max_seconds {
            let max = w.max_seconds;
            p.push(
                path,
                format!("{value} exceeds rotation.warning.maxSeconds ({max})"),
            );
        }
    }
}

fn check_rotation(r: &RotationConfig, p: &mut Problems) {
    p.at_least_one("rotation.intervalSeconds", r.interval_seconds);
    p.non_negative("rotation.marginGpus", r.margin_gpus);
    p.at_least_one("rotation.maxPerTick", r.max_per_tick.into());
    p.at_least_one(
        "rotation.maxPerTenantPerTick",
        r.max_per_tenant_per_tick.into(),
    );
    check_warning(&r.warning, p);
    if r.max_per_tenant_per_tick > r.max_per_tick {
        let max = r.max_per_tick;
        p.push(
            "rotation.maxPerTenantPerTick",
            format!("must not exceed rotation.maxPerTick ({max})"),
        );
    }
    for (i, class) in r.protected_priority_classes.iter().enumerate() {
        p.check(
            format!("rotation.protectedPriorityClasses[{i}]"),
            names::dns1123_subdomain(class),
        );
    }
    let entries = r.protected_priority_classes.iter().enumerate();
    p.unique(
        "rotation.protectedPriorityClasses",
        entries.map(|(i, c)| {
            let path = format!("rotation.protectedPriorityClasses[{i}]");
            (c.as_str(), path)
        }),
    );
}

fn check_telemetry(t: &TelemetryConfig, p: &mut Problems) {
    p.at_least_one("telemetry.pollIntervalSeconds", t.poll_interval_seconds);
    if t.stale_after_seconds <= t.poll_interval_seconds {
        let poll = t.poll_interval_seconds;
        p.push(
            "telemetry.staleAfterSeconds",
            format!("must be greater than telemetry.pollIntervalSeconds ({poll})"),
        );
    }
    let temp = t.max_temperature_celsius;
    if !(temp.is_finite() && temp > 0.0 && temp < MAX_TEMPERATURE_LIMIT_CELSIUS) {
        p.push(
            "telemetry.maxTemperatureCelsius",
            format!("must be above 0 and below {MAX_TEMPERATURE_LIMIT_CELSIUS}, got {temp}"),
        );
    }
    for (i, xid) in t.unhealthy_xids.iter().enumerate() {
        if *xid == 0 {
            p.push(
                format!("telemetry.unhealthyXids[{i}]"),
                "XID codes start at 1",
            );
        }
    }
    let xids: Vec<String> = t.unhealthy_xids.iter().map(u32::to_string).collect();
    let entries = xids.iter().enumerate();
    p.unique(
        "telemetry.unhealthyXids",
        entries.map(|(i, x)| (x.as_str(), format!("telemetry.unhealthyXids[{i}]"))),
    );
    check_collector(t, p);
}

fn check_collector(t: &TelemetryConfig, p: &mut Problems) {
    if t.agent_selector.trim().is_empty() {
        p.push("telemetry.agentSelector", "must not be empty");
    } else {
        p.check("telemetry.agentSelector", label_selector(&t.agent_selector));
    }
    if !t.dcgm_exporter_selector.is_empty() {
        p.check(
            "telemetry.dcgmExporterSelector",
            label_selector(&t.dcgm_exporter_selector),
        );
    }
    p.at_least_one("telemetry.agentPort", u64::from(t.agent_port));
    p.at_least_one(
        "telemetry.dcgmExporterPort",
        u64::from(t.dcgm_exporter_port),
    );
    p.at_least_one("telemetry.pollTimeoutSeconds", t.poll_timeout_seconds);
}

/// Checks an equality-based label selector: comma-separated `key=value`, `key==value`,
/// `key!=value`, `key` or `!key` terms (what the collector passes to the API server).
fn label_selector(selector: &str) -> Result<(), String> {
    for term in selector.split(',').map(str::trim) {
        let bad = |why: String| Err(format!("term {term:?}: {why}"));
        if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
            return bad(
                "only equality terms (key=value, key!=value, key, !key) are supported".into(),
            );
        }
        let (key, value) = match term.split_once("!=").or_else(|| term.split_once("==")) {
            Some(pair) => (pair.0, Some(pair.1)),
            None => match term.split_once('=') {
                Some(pair) => (pair.0, Some(pair.1)),
                None => (term.strip_prefix('!').unwrap_or(term), None),
            },
        };
        if let Err(why) = names::qualified_name(key.trim()) {
            return bad(why);
        }
        if let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) {
            if let Err(why) = names::label_name(value) {
                return bad(why);
            }
        }
    }
    Ok(())
}

fn check_scoring(s: &ScoringConfig, p: &mut Problems) {
    let weights = scoring_weights(s);
    for (path, value) in weights {
        p.non_negative(path, value);
    }
    if weights.iter().all(|(_, w)| *w == 0.0) {
        p.push("scoring", "at least one weight must be above 0");
    }
}

fn scoring_weights(s: &ScoringConfig) -> [(&'static str, f64); 5] {
    [
        ("scoring.packing", s.packing),
        ("scoring.health", s.health),
        ("scoring.thermal", s.thermal),
        ("scoring.utilisation", s.utilisation),
        ("scoring.headRoom", s.head_room),
    ]
}

// === warnings ===

impl ValidConfig {
    /// Settings that are legal but probably not what the operator meant, one `path: reason`
    /// line each. Never blocks startup; `rota config check` prints them.
    ///
    /// Dry run with rotation enabled is the default adoption path, so it is not a warning.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        self.warn_weight_spread(&mut w);
        self.warn_groups(&mut w);
        self.warn_timings(&mut w);
        w
    }

    fn warn_weight_spread(&self, w: &mut Vec<String>) {
        let tenants = self
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("tenants[{i}].weight"), t.weight))
            .chain([(
                "defaultTenantWeight".to_string(),
                self.default_tenant_weight,
            )]);
        if let Some(line) = spread_warning(tenants.collect()) {
            w.push(format!(
                "{line}; the lighter tenant will almost never get a turn"
            ));
        }
        let groups = self.groups.iter().enumerate();
        let groups = groups.map(|(i, g)| (format!("groups[{i}].weight"), g.weight));
        if let Some(line) = spread_warning(groups.collect()) {
            w.push(format!(
                "{line}; the lighter group will almost never get a turn"
            ));
        }
    }

    fn warn_groups(&self, w: &mut Vec<String>) {
        for (i, group) in self.groups.iter().enumerate() {
            let name = &group.name;
            if !self
                .tenants
                .iter()
                .any(|t| t.group.as_deref() == Some(name))
            {
                w.push(format!(
                    "groups[{i}]: group {name:?} has no tenants, so its share is never used"
                ));
            }
            if let Some(j) = self.tenants.iter().position(|t| &t.name == name) {
                w.push(format!(
                    "groups[{i}].name: {name:?} is also the name of tenants[{j}], which makes \
                     metrics and explanations ambiguous"
                ));
            }
        }
    }

    fn warn_timings(&self, w: &mut Vec<String>) {
        let t = &self.telemetry;
        if t.poll_timeout_seconds > t.poll_interval_seconds {
            w.push(format!(
                "telemetry.pollTimeoutSeconds: {} is longer than the poll interval ({} s); \
                 polls are cut off at the interval",
                t.poll_timeout_seconds, t.poll_interval_seconds
            ));
        }
        if t.stale_after_seconds < MIN_POLLS_BEFORE_STALE * t.poll_interval_seconds {
            w.push(format!(
                "telemetry.staleAfterSeconds: {} is less than {MIN_POLLS_BEFORE_STALE} poll \
                 intervals ({} s), so one slow poll marks a node's telemetry unknown",
                t.stale_after_seconds, t.poll_interval_seconds
            ));
        }
        let q = &self.quantum;
        let longest = q
            .job_seconds
            .max(q.virtual_machine_seconds)
            .max(q.pod_seconds);
        // Whole numbers of seconds: the cast only matters for absurd values, where the
        // comparison stays right.
        if self.usage.half_life_seconds < longest as f64 {
            w.push(format!(
                "usage.halfLifeSeconds: {} is shorter than the longest quantum ({longest} s), \
                 so past usage is forgotten before a turn ends",
                self.usage.half_life_seconds
            ));
        }
    }
}

/// `Some(message)` when the largest weight is at least [`SUSPICIOUS_WEIGHT_RATIO`] times the
/// smallest.
fn spread_warning(weights: Vec<(String, f64)>) -> Option<String> {
    let min = weights.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
    let max = weights.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    (max.1 >= SUSPICIOUS_WEIGHT_RATIO * min.1).then(|| {
        format!(
            "{}: weight {} is {:.0} times {} ({})",
            max.0,
            max.1,
            max.1 / min.1,
            min.0,
            min.1
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_one_problem_per_line() {
        let errors = ConfigErrors(vec![
            ConfigProblem {
                path: "kind".into(),
                reason: "bad".into(),
            },
            ConfigProblem {
                path: String::new(),
                reason: "whole document".into(),
            },
        ]);
        assert_eq!(errors.to_string(), "kind: bad\nwhole document");
        assert_eq!(errors.len(), 2);
        assert_eq!(errors.join("; "), "kind: bad; whole document");
    }

    #[test]
    fn unique_names_the_first_occurrence() {
        let mut p = Problems::default();
        let items = ["a", "b", "a", "a"].map(|k| (k, format!("x.{k}")));
        p.unique("list", items.into_iter());
        let reasons: Vec<String> = p.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            ["x.a: duplicate of list[0]", "x.a: duplicate of list[0]"]
        );
    }

    #[test]
    fn spread_warning_needs_the_full_ratio() {
        let w = |a: f64, b: f64| spread_warning(vec![("lo".into(), a), ("hi".into(), b)]);
        assert_eq!(w(1.0, 999.0), None);
        let text = w(0.5, 500.0).expect("1000x spread warns");
        assert!(
            text.starts_with("hi: weight 500 is 1000 times lo (0.5)"),
            "{text}"
        );
        assert_eq!(spread_warning(Vec::new()), None);
    }

    #[test]
    fn collector_settings_are_checked() {
        for ok in [
            "app=rota-agent",
            "app.kubernetes.io/name==rota-agent,tier!=test",
            "gpu",
            "!cpu-only",
        ] {
            assert_eq!(label_selector(ok), Ok(()), "{ok}");
        }
        for bad in ["app in (a,b)", "=x", "a=b c", "a/b/c=d"] {
            assert!(label_selector(bad).is_err(), "{bad}");
        }
        let mut config = RotaConfig::default();
        config.telemetry.agent_selector = " ".into();
        config.telemetry.agent_port = 0;
        config.telemetry.poll_timeout_seconds = 0;
        config.telemetry.dcgm_exporter_selector = "app in (x)".into();
        let errors = config.validate().expect_err("invalid collector settings");
        let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "telemetry.agentSelector",
                "telemetry.dcgmExporterSelector",
                "telemetry.agentPort",
                "telemetry.pollTimeoutSeconds"
            ]
        );
        let mut slow = RotaConfig::default();
        slow.telemetry.poll_timeout_seconds = 6;
        let warnings = slow.validate().expect("valid").warnings();
        assert!(
            warnings[0].starts_with("telemetry.pollTimeoutSeconds: "),
            "{warnings:?}"
        );
    }
}
