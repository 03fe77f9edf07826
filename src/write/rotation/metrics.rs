//! Prometheus metrics of the rotation loop, registered on the registry the process owns.
//!
//! Label values come from bounded sets only: tenant, workload kind (`job`, `vm`, `pod`), the
//! planner's `reason_code` and [`Error::code`](super::Error::code); never object names.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The rotation loop's counters and gauges.
#[derive(Clone, Debug)]
pub struct RotationMetrics {
    rotations: IntCounterVec,
    warnings: IntCounterVec,
    cancellations: IntCounterVec,
    failures: IntCounterVec,
    rotated_out: IntGaugeVec,
    planner: Histogram,
    leader: IntGauge,
    dry_run: IntGauge,
}

impl RotationMetrics {
    /// Creates and registers `rota_rotations_total{tenant,kind,reason}`,
    /// `rota_rotation_failures_total{kind,reason}`, `rota_rotated_out_workloads{tenant}`,
    /// `rota_planner_duration_seconds`, `rota_leader`, `rota_rotation_dry_run`,
    /// `rota_rotation_warnings_total{tenant,kind}` and
    /// `rota_rotation_cancellations_total{tenant,kind,reason}`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let rotations = IntCounterVec::new(
            Opts::new(
                "rota_rotations_total",
                "Rotations out and resumes carried out (or, in dry run, that would have been), \
                 by tenant, workload kind and planner reason.",
            ),
            &["tenant", "kind", "reason"],
        )?;
        let warnings = IntCounterVec::new(
            Opts::new(
                "rota_rotation_warnings_total",
                "Stops announced ahead to their owners (rotation.warning; in dry run, that \
                 would have been), by tenant and workload kind.",
            ),
            &["tenant", "kind"],
        )?;
        let cancellations = IntCounterVec::new(
            Opts::new(
                "rota_rotation_cancellations_total",
                "Announced stops called off because they were no longer needed, by tenant, \
                 workload kind and reason.",
            ),
            &["tenant", "kind", "reason"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "rota_rotation_failures_total",
                "Rotation actions that failed, by workload kind and error code.",
            ),
            &["kind", "reason"],
        )?;
        let rotated_out = IntGaugeVec::new(
            Opts::new(
                "rota_rotated_out_workloads",
                "Workloads rota has rotated out and not yet resumed, by tenant.",
            ),
            &["tenant"],
        )?;
        // From 100 µs (a small cluster) to 2.5 s; the plan should stay under 50 ms at 10k nodes.
        let buckets = vec![
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5,
        ];
        let planner = Histogram::with_opts(
            HistogramOpts::new(
                "rota_planner_duration_seconds",
                "Time to build and compute one rotation plan.",
            )
            .buckets(buckets),
        )?;
        let leader = IntGauge::new(
            "rota_leader",
            "1 while this replica holds the leader Lease and runs the rotation loop, else 0.",
        )?;
        let dry_run = IntGauge::new(
            "rota_rotation_dry_run",
            "1 when the rotation loop only plans and reports (rotation.dryRun), else 0.",
        )?;
        registry.register(Box::new(rotations.clone()))?;
        registry.register(Box::new(warnings.clone()))?;
        registry.register(Box::new(cancellations.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(rotated_out.clone()))?;
        registry.register(Box::new(planner.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(dry_run.clone()))?;
        Ok(Self {
            rotations,
            warnings,
            cancellations,
            failures,
            rotated_out,
            planner,
            leader,
            dry_run,
        })
    }

    /// Counts one rotation out or resume (`reason` is the planner's `reason_code`).
    pub fn observe_rotation(&self, tenant: &str, kind: &str, reason: &str) {
        self.rotations
            .with_label_values(&[tenant, kind, reason])
            .inc();
    }

    /// Counts one stop announced ahead.
    pub fn observe_warning(&self, tenant: &str, kind: &str) {
        self.warnings.with_label_values(&[tenant, kind]).inc();
    }

    /// Counts one announced stop called off (`reason` is the planner's `reason_code`).
    pub fn observe_cancellation(&self, tenant: &str, kind: &str, reason: &str) {
        self.cancellations
            .with_label_values(&[tenant, kind, reason])
            .inc();
    }

    /// Counts one failed action (`code` is the error's [`code`](super::Error::code)).
    pub fn observe_failure(&self, kind: &str, code: &str) {
        self.failures.with_label_values(&[kind, code]).inc();
    }

    /// Sets the number of workloads of `tenant` currently rotated out.
    pub fn set_rotated_out(&self, tenant: &str, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.rotated_out.with_label_values(&[tenant]).set(count);
    }

    /// Records how long one plan took.
    pub fn observe_planner(&self, seconds: f64) {
        self.planner.observe(seconds);
    }

    /// Publishes whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Publishes whether the loop runs in dry run.
    pub fn set_dry_run(&self, dry_run: bool) {
        self.dry_run.set(i64::from(dry_run));
    }
}
