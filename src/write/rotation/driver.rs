//! The rotation loop: every tick, while this replica leads, ask the planner for a plan, carry
//! it out through the actuators, hand the results back to the planner, and publish metrics.
//!
//! ```text
//!   interval tick ─▶ leader? ─no─▶ wait
//!                      │yes
//!                      ▼
//!   planner.plan(now) ─▶ rotate_out actions ─▶ resume actions ─▶ planner.record(reports)
//!                          (bounded concurrency; the leader flag is checked before each
//!                           action; each has a timeout)
//! ```
//!
//! Invariants: no actuator is called unless the leader flag reads `true` at that moment (a
//! replica that loses the Lease stops before its next action, well within one tick); an error
//! never ends the loop (retryable failures are simply planned again on a later tick); the loop
//! sleeps only through `tokio::time`, so tests run it under paused time.
//! Must not: decide what to rotate (the [`Planner`] does) or talk to the API server itself.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::{timeout, Instant, MissedTickBehavior};

use super::{Action, Actuator, Direction, Error, Outcome, Plan, Result, RotationMetrics, Warning};
use crate::clock::Clock;
use crate::config::ValidConfig;
use crate::core::{WorkloadId, WorkloadKind};

/// Default number of actions carried out at once: the default `rotation.maxPerTick`.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default time one action may take (a GET, a PATCH and an Event), well inside a tick.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How the loop runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopSettings {
    /// Time between ticks (`rotation.intervalSeconds`, default 30 s).
    pub interval: Duration,
    /// Plan, log, count and emit `Would…` Events without writing (`rotation.dryRun`, default
    /// true so that adopting rota is safe).
    pub dry_run: bool,
    /// Actions carried out at once (at least 1). Default [`DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
    /// Time one action may take before it counts as a retryable `timeout` failure. Default
    /// [`DEFAULT_ACTION_TIMEOUT`].
    pub action_timeout: Duration,
}

impl LoopSettings {
    /// The interval and dry-run flag of the config, with the default concurrency and timeout.
    pub fn from_config(config: &ValidConfig) -> Self {
        Self {
            interval: config.rotation_interval(),
            dry_run: config.rotation.dry_run,
            concurrency: DEFAULT_CONCURRENCY,
            action_timeout: DEFAULT_ACTION_TIMEOUT,
        }
    }
}

/// What one action came to.
#[derive(Debug)]
pub struct ActionReport {
    /// Rotate out or resume.
    pub direction: Direction,
    /// The planner's action.
    pub action: Action,
    /// The actuator's answer.
    pub result: Result<Outcome>,
    /// The announced stop, for a [`Direction::Warn`] action.
    pub warning: Option<Warning>,
}

/// Plans each tick and learns what happened. The production planner builds its input from the
/// cluster view and calls `core::rotation::plan`; tests pass a closure (`FnMut(now) -> Plan`,
/// whose `record` does nothing).
pub trait Planner: Send {
    /// The plan for this tick.
    fn plan(&mut self, now: Timestamp) -> Plan;
    /// The reports of the actions carried out this tick (actions skipped because leadership
    /// was lost are absent).
    fn record(&mut self, _now: Timestamp, _reports: &[ActionReport]) {}
    /// The workloads rotated out (with their tenants) as of the last plan's input, when the
    /// planner knows them; the loop then counts from this set instead of its own memory, so
    /// the gauge is right after a restart. Default `None`.
    fn rotated_out(&self) -> Option<Vec<(WorkloadId, String)>> {
        None
    }
}

impl<F> Planner for F
where
    F: FnMut(Timestamp) -> Plan + Send,
{
    fn plan(&mut self, now: Timestamp) -> Plan {
        self(now)
    }
}

/// What one tick did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickSummary {
    /// Actions carried out (whatever their outcome).
    pub attempted: usize,
    /// Actions that failed.
    pub failed: usize,
    /// Actions not started because this replica stopped leading.
    pub skipped: usize,
}

/// The leader-only rotation loop.
pub struct RotationLoop<P> {
    planner: P,
    actuator: Arc<dyn Actuator>,
    leader: watch::Receiver<bool>,
    metrics: RotationMetrics,
    settings: LoopSettings,
    clock: Clock,
    /// Workloads rota holds rotated out, with their tenant (for the gauge).
    rotated_out: BTreeMap<WorkloadId, String>,
    /// Every tenant the gauge has shown, so a tenant back to zero reads 0, not stale.
    tenants: BTreeSet<String>,
}

impl<P: Planner> RotationLoop<P> {
    /// A loop that plans with `planner`, acts through `actuator` only while `leader` reads
    /// `true` ([`LeaderElector::subscribe`](crate::write::leader::LeaderElector::subscribe)),
    /// and reads `now` from `clock`.
    pub fn new(
        planner: P,
        actuator: Arc<dyn Actuator>,
        leader: watch::Receiver<bool>,
        metrics: RotationMetrics,
        settings: LoopSettings,
        clock: Clock,
    ) -> Self {
        metrics.set_dry_run(settings.dry_run);
        Self {
            planner,
            actuator,
            leader,
            metrics,
            settings,
            clock,
            rotated_out: BTreeMap::new(),
            tenants: BTreeSet::new(),
        }
    }

    /// Counts `workloads` (with their tenants) as rotated out, e.g. those found suspended with
    /// rota's annotation at start-up, so the gauge is right after a restart.
    pub fn seed_rotated_out(&mut self, workloads: impl IntoIterator<Item = (WorkloadId, String)>) {
        self.rotated_out.extend(workloads);
        self.publish_rotated_out();
    }

    /// Ticks every interval until `shutdown` completes; acts only on ticks where it leads.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut elector_alive = true;
        self.metrics.set_leader(leading(&self.leader));
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                changed = self.leader.changed(), if elector_alive => {
                    elector_alive = changed.is_ok();
                    self.leadership_changed();
                }
                _ = ticker.tick() => {
                    if leading(&self.leader) {
                        self.tick().await;
                    }
                }
            }
        }
        self.metrics.set_leader(false);
    }

    fn leadership_changed(&mut self) {
        let now_leading = leading(&self.leader);
        self.metrics.set_leader(now_leading);
        if now_leading {
            tracing::info!("Leading: the rotation loop acts from the next tick.");
        } else {
            tracing::info!("Not leading: the rotation loop stopped acting.");
        }
    }

    /// One tick: plan, act, record, publish. Public so that callers and tests can drive it.
    pub async fn tick(&mut self) -> TickSummary {
        let now = (self.clock)();
        let started = Instant::now();
        let plan = self.planner.plan(now);
        self.metrics
            .observe_planner(started.elapsed().as_secs_f64());
        if let Some(known) = self.planner.rotated_out() {
            self.rotated_out = known.into_iter().collect();
        }
        let planned = plan.rotate_out.len()
            + plan.resume.len()
            + plan.warnings.len()
            + plan.cancellations.len();
        let plain = |actions: Vec<Action>| actions.into_iter().map(|a| (a, None)).collect();
        let warnings = (plan.warnings.into_iter())
            .map(|w| (w.action.clone(), Some(w)))
            .collect();
        // Called-off stops first: their owners should not wait on a stale notice.
        let mut reports = execute(
            self.executor(),
            Direction::Cancel,
            plain(plan.cancellations),
        )
        .await;
        reports.extend(
            execute(
                self.executor(),
                Direction::RotateOut,
                plain(plan.rotate_out),
            )
            .await,
        );
        reports.extend(execute(self.executor(), Direction::Warn, warnings).await);
        reports.extend(execute(self.executor(), Direction::Resume, plain(plan.resume)).await);
        let summary = TickSummary {
            attempted: reports.len(),
            failed: reports.iter().filter(|r| r.result.is_err()).count(),
            skipped: planned - reports.len(),
        };
        for report in &reports {
            self.observe(report);
        }
        self.publish_rotated_out();
        self.planner.record(now, &reports);
        if summary.skipped > 0 {
            tracing::warn!(
                skipped = summary.skipped,
                "Stopped acting mid-tick: this replica no longer leads."
            );
        }
        summary
    }

    /// What [`execute`] needs, owned, so the loop's future never holds `&self` (the planner
    /// need not be `Sync`).
    fn executor(&self) -> Executor {
        Executor {
            actuator: self.actuator.clone(),
            leader: self.leader.clone(),
            dry_run: self.settings.dry_run,
            limit: self.settings.action_timeout,
            concurrency: self.settings.concurrency.max(1),
        }
    }

    /// Logs one report, counts it, and updates the rotated-out set.
    fn observe(&mut self, report: &ActionReport) {
        let ActionReport {
            direction,
            action,
            result,
            warning,
        } = report;
        let kind = action.workload.kind.as_str();
        let workload = action.workload.to_string();
        match result {
            Ok(outcome @ (Outcome::Done | Outcome::WouldAct)) if *direction == Direction::Warn => {
                self.metrics.observe_warning(&action.tenant, kind);
                tracing::info!(
                    workload = %workload,
                    tenant = %action.tenant,
                    gpus = action.gpus,
                    stop_at = warning.as_ref().map_or(0.0, |w| w.stop_at),
                    claim = %warning.as_ref().map(|w| w.claim.to_string()).unwrap_or_default(),
                    reason = %action.reason,
                    dry_run = matches!(outcome, Outcome::WouldAct),
                    "Stop announced."
                );
            }
            Ok(outcome @ (Outcome::Done | Outcome::WouldAct))
                if *direction == Direction::Cancel =>
            {
                (self.metrics).observe_cancellation(&action.tenant, kind, action.reason_code);
                tracing::info!(
                    workload = %workload,
                    tenant = %action.tenant,
                    reason = %action.reason,
                    dry_run = matches!(outcome, Outcome::WouldAct),
                    "Announced stop cancelled."
                );
            }
            Ok(outcome @ (Outcome::Done | Outcome::WouldAct)) => {
                self.metrics
                    .observe_rotation(&action.tenant, kind, action.reason_code);
                tracing::info!(
                    direction = direction.as_str(),
                    workload = %workload,
                    tenant = %action.tenant,
                    gpus = action.gpus,
                    reason = %action.reason,
                    dry_run = matches!(outcome, Outcome::WouldAct),
                    "Rotation action carried out."
                );
            }
            Ok(outcome) => tracing::info!(
                direction = direction.as_str(),
                workload = %workload,
                outcome = outcome.code(),
                detail = ?outcome,
                "Rotation action needed no write."
            ),
            Err(err) => {
                self.metrics.observe_failure(kind, err.code());
                tracing::warn!(
                    direction = direction.as_str(),
                    workload = %workload,
                    code = err.code(),
                    retryable = err.is_retryable(),
                    error = %err,
                    "Rotation action failed."
                );
            }
        }
        self.track(*direction, action, result);
    }

    /// Keeps the set of workloads rota holds rotated out (bare pods are gone once evicted).
    fn track(&mut self, direction: Direction, action: &Action, result: &Result<Outcome>) {
        let Ok(outcome) = result else { return };
        if matches!(direction, Direction::Warn | Direction::Cancel) {
            return;
        }
        let held = match (direction, outcome) {
            (Direction::RotateOut, Outcome::Done | Outcome::AlreadyDone) => {
                action.workload.kind != WorkloadKind::Pod
            }
            (Direction::RotateOut, Outcome::WouldAct) => return,
            (Direction::Resume, Outcome::WouldAct) => return,
            _ => false,
        };
        if held {
            self.rotated_out
                .insert(action.workload.clone(), action.tenant.clone());
        } else {
            self.rotated_out.remove(&action.workload);
        }
    }

    fn publish_rotated_out(&mut self) {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for tenant in self.rotated_out.values() {
            *counts.entry(tenant.as_str()).or_default() += 1;
        }
        for tenant in counts.keys() {
            if !self.tenants.contains(*tenant) {
                self.tenants.insert((*tenant).to_owned());
            }
        }
        for tenant in &self.tenants {
            let count = counts.get(tenant.as_str()).copied().unwrap_or(0);
            self.metrics.set_rotated_out(tenant, count);
        }
    }
}

/// The owned parts of the loop that carry out actions.
struct Executor {
    actuator: Arc<dyn Actuator>,
    leader: watch::Receiver<bool>,
    dry_run: bool,
    limit: Duration,
    concurrency: usize,
}

/// Carries out `actions` with bounded concurrency, in order; an action whose turn comes after
/// leadership is lost is not started.
async fn execute(
    exec: Executor,
    direction: Direction,
    actions: Vec<(Action, Option<Warning>)>,
) -> Vec<ActionReport> {
    let Executor {
        actuator,
        leader,
        dry_run,
        limit,
        concurrency,
    } = exec;
    let jobs = actions.into_iter().map(|(action, warning)| {
        let leader = leader.clone();
        let actuator = actuator.clone();
        async move {
            if !leading(&leader) {
                return None;
            }
            let call = match (direction, &warning) {
                (Direction::Warn, Some(w)) => actuator.warn(w, dry_run),
                (Direction::Cancel, _) => actuator.cancel(&action, dry_run),
                (Direction::Resume, _) => actuator.resume(&action, dry_run),
                _ => actuator.rotate_out(&action, dry_run),
            };
            let result = timeout(limit, call).await.unwrap_or_else(|_| {
                Err(Error::Timeout {
                    workload: action.workload.to_string(),
                    seconds: limit.as_secs_f64(),
                })
            });
            Some(ActionReport {
                direction,
                action,
                result,
                warning,
            })
        }
    });
    stream::iter(jobs)
        .buffered(concurrency)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// True while the elector says we lead and is still running (a dropped elector means no).
fn leading(leader: &watch::Receiver<bool>) -> bool {
    leader.has_changed().is_ok() && *leader.borrow()
}
