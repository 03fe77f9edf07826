//! The production [`Planner`]: builds each tick's [`PlanInput`] with a caller-supplied function
//! (the lead wires it to the cluster view, the ledger and the queue), runs the pure
//! `core::rotation::plan`, and keeps the [`RotationHistory`] from what was actually done.
//!
//! Invariants: the history records exactly the actions that took effect (or, in dry run, would
//! have: the quantum then applies to "would rotate out" too, so a dry run reports the
//! rotations a live loop would make instead of the same victims every tick); a workload found
//! `Gone` is forgotten; the history is pruned past the longest quantum so it stays bounded.
//! Must not: talk to the API server or read the clock (`now` comes from the loop).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::{ActionReport, Direction, Outcome, Plan, Planner};
use crate::core::rotation::{self as core_rotation, PlanInput, RotationHistory, StopNotice};
use crate::core::WorkloadId;

/// Plans with `core::rotation::plan` over the input `input(now)` returns.
pub struct CorePlanner<F> {
    input: F,
    history: RotationHistory,
    /// How long the history remembers a workload (the longest quantum).
    retain_seconds: f64,
    /// The last input's `now` and transfers, kept for `record`.
    last: Option<(f64, Plan)>,
    /// The last input's rotated-out workloads with their tenants.
    rotated_out: Vec<(WorkloadId, String)>,
    /// Stops this replica announced (or, in dry run, would have), until the object's
    /// annotation is read back: bridges the watch's lag, and is all a dry run has.
    announced: BTreeMap<WorkloadId, StopNotice>,
}

impl<F> std::fmt::Debug for CorePlanner<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorePlanner")
            .field("history", &self.history.len())
            .finish_non_exhaustive()
    }
}

impl<F> CorePlanner<F>
where
    F: FnMut(Timestamp) -> PlanInput + Send,
{
    /// A planner over `input`, remembering workloads for `retain` (use the config's
    /// `quantum.maxSeconds`: no quantum is longer, so older entries can no longer matter).
    pub fn new(input: F, retain: Duration) -> Self {
        Self {
            input,
            history: RotationHistory::new(),
            retain_seconds: retain.as_secs_f64(),
            last: None,
            rotated_out: Vec::new(),
            announced: BTreeMap::new(),
        }
    }

    /// What the planner remembers between ticks.
    pub fn history(&self) -> &RotationHistory {
        &self.history
    }
}

impl<F> CorePlanner<F> {
    /// Gives running workloads the stops announced here that their objects do not show yet,
    /// and forgets those of workloads no longer running.
    fn recall_notices(&mut self, input: &mut PlanInput) {
        if self.announced.is_empty() {
            return;
        }
        let running: BTreeMap<WorkloadId, usize> = (input.running.iter().enumerate())
            .map(|(i, w)| (w.id.clone(), i))
            .collect();
        self.announced.retain(|id, _| running.contains_key(id));
        for (id, notice) in &self.announced {
            if let Some(w) = running.get(id).and_then(|&i| input.running.get_mut(i)) {
                if w.stop.is_none() {
                    w.stop = Some(notice.clone());
                }
            }
        }
    }

    /// Records an action that took effect (or would have, in dry run).
    fn note(&mut self, report: &ActionReport, done: &mut Plan) {
        let id = &report.action.workload;
        match (report.direction, &report.warning) {
            (Direction::Warn, Some(w)) => {
                let notice = StopNotice {
                    stop_at: w.stop_at,
                    claim: w.claim.clone(),
                };
                self.announced.insert(id.clone(), notice);
                done.warnings.push(w.clone());
            }
            (Direction::Warn, None) => {}
            (Direction::Cancel, _) => {
                self.announced.remove(id);
            }
            (Direction::RotateOut, _) => {
                self.announced.remove(id);
                done.rotate_out.push(report.action.clone());
            }
            (Direction::Resume, _) => done.resume.push(report.action.clone()),
        }
    }
}

impl<F> Planner for CorePlanner<F>
where
    F: FnMut(Timestamp) -> PlanInput + Send,
{
    fn plan(&mut self, now: Timestamp) -> Plan {
        let mut input = (self.input)(now);
        self.recall_notices(&mut input);
        self.rotated_out = input
            .rotated_out
            .iter()
            .map(|r| (r.workload.id.clone(), r.workload.tenant.clone()))
            .collect();
        let plan = core_rotation::plan(&input, &self.history);
        self.last = Some((input.now, plan.clone()));
        plan
    }

    fn record(&mut self, _now: Timestamp, reports: &[ActionReport]) {
        let Some((now, planned)) = self.last.take() else {
            return;
        };
        let mut done = Plan {
            transfers: planned.transfers,
            ..Plan::default()
        };
        for report in reports {
            match &report.result {
                Ok(Outcome::Gone) => {
                    self.history.forget(&report.action.workload);
                    self.announced.remove(&report.action.workload);
                }
                Ok(Outcome::Done | Outcome::WouldAct) => self.note(report, &mut done),
                Ok(Outcome::AlreadyDone) if report.direction != Direction::Resume => {
                    self.announced.remove(&report.action.workload);
                }
                Ok(_) | Err(_) => {}
            }
        }
        // Pairs of a tick whose rotations failed are kept: they only forbid trading back.
        self.history.record(&done, now);
        self.history.prune(now - self.retain_seconds);
    }

    fn rotated_out(&self) -> Option<Vec<(WorkloadId, String)>> {
        Some(self.rotated_out.clone())
    }
}
