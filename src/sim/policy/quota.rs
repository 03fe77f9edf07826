//! `quota`: static weighted quota. Tenant t may hold at most ⌊w_t·C⌋ GPUs (w normalised over
//! all tenants of the trace), whatever the others do: idle quota stays idle. Within that limit,
//! jobs start in priority-then-arrival order across tenants, with backfill. Never preempts.
//! A gang larger than its tenant's quota never starts (reported as unfinished).

use super::{rank, ClassQueue, Rank};
use crate::sim::engine::{JobId, Policy, Sim};

/// The static quota policy.
#[derive(Debug)]
pub struct Quota {
    queues: Vec<ClassQueue>,
}

impl Quota {
    /// A quota policy for `tenants` tenants.
    pub fn new(tenants: usize) -> Self {
        Self {
            queues: vec![ClassQueue::default(); tenants],
        }
    }
}

/// Tenant `t`'s quota in whole GPUs. The epsilon keeps 0.5 × 30 from rounding down to 14.
pub fn quota_of(sim: &Sim<'_>, t: usize) -> u64 {
    (sim.tenants()[t].weight * sim.capacity() as f64 + 1e-9).floor() as u64
}

impl Policy for Quota {
    fn name(&self) -> &str {
        "quota"
    }

    fn on_arrival(&mut self, sim: &Sim<'_>, job: JobId) {
        let spec = sim.spec(job);
        self.queues[spec.tenant].insert(spec.gpus, rank(spec.priority, job));
    }

    fn schedule(&mut self, sim: &mut Sim<'_>) {
        loop {
            let fit = sim.largest_fit();
            let mut best: Option<(Rank, u32, usize)> = None;
            for (t, q) in self
                .queues
                .iter()
                .enumerate()
                .filter(|(_, q)| !q.is_empty())
            {
                let room = quota_of(sim, t).saturating_sub(sim.tenants()[t].held);
                if let Some((r, g)) = q.first_fitting(fit.min(room)) {
                    if best.is_none_or(|(b, _, _)| r < b) {
                        best = Some((r, g, t));
                    }
                }
            }
            let Some((r, gpus, t)) = best else { break };
            self.queues[t].remove(gpus, r);
            if !sim.start(r.1) {
                self.queues[t].insert(gpus, r);
                break;
            }
        }
    }
}
