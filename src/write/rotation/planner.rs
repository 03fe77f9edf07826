//! The production [`Planner`]: builds each tick's [`PlanInput`] with a caller-supplied function
//! (the lead wires it to the cluster view, the ledger and the queue), runs the pure
//! `core::rotation::plan`, and keeps the [`RotationHistory`] from what was actually done.
//!
//! Invariants: the history records exactly the actions that took effect (or, in dry run, would
//! have: the quantum then applies to "would rotate out" too, so a dry run reports the
//! rotations a live loop would make instead of the same victims every tick); a workload found
//! `Gone` is forgotten; the history is pruned past the longest quantum so it stays bounded.
//! Must not: talk to the API server or read the clock (`now` comes from the loop).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::{ActionReport, Direction, Outcome, Plan, Planner};
use crate::core::rotation::{self as core_rotation, PlanInput, RotationHistory};
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
        }
    }

    /// What the planner remembers between ticks.
    pub fn history(&self) -> &RotationHistory {
        &self.history
    }
}

impl<F> Planner for CorePlanner<F>
where
    F: FnMut(Timestamp) -> PlanInput + Send,
{
    fn plan(&mut self, now: Timestamp) -> Plan {
        let input = (self.input)(now);
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
                Ok(Outcome::Gone) => self.history.forget(&report.action.workload),
                Ok(Outcome::Done | Outcome::WouldAct) => {
                    let list = match report.direction {
                        Direction::RotateOut => &mut done.rotate_out,
                        Direction::Resume => &mut done.resume,
                    };
                    list.push(report.action.clone());
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
