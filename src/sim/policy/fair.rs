//! `fair`: instantaneous weighted fair share without preemption. Whenever GPUs are free, the
//! tenant with the lowest standing `held / entitled` (entitlement = water-filling of C over
//! tenants with demand, computed by the engine) that has a pending job fitting the free GPUs
//! starts its first such job (priority then arrival); ties go to the earlier job. Running jobs
//! are never suspended, so a tenant above its share only shrinks as its jobs complete.

use super::{rank, ClassQueue, Rank};
use crate::core::fairshare::Standing;
use crate::sim::engine::{JobId, Policy, Sim};

/// The instantaneous fair-share policy.
#[derive(Debug)]
pub struct Fair {
    queues: Vec<ClassQueue>,
}

impl Fair {
    /// A fair-share policy for `tenants` tenants.
    pub fn new(tenants: usize) -> Self {
        Self {
            queues: vec![ClassQueue::default(); tenants],
        }
    }
}

impl Policy for Fair {
    fn name(&self) -> &str {
        "fair"
    }

    fn on_arrival(&mut self, sim: &Sim<'_>, job: JobId) {
        let spec = sim.spec(job);
        self.queues[spec.tenant].insert(spec.gpus, rank(spec.priority, job));
    }

    fn schedule(&mut self, sim: &mut Sim<'_>) {
        loop {
            let fit = sim.largest_fit();
            if fit == 0 {
                break;
            }
            let mut best: Option<(Standing, Rank, u32, usize)> = None;
            for (t, q) in self
                .queues
                .iter()
                .enumerate()
                .filter(|(_, q)| !q.is_empty())
            {
                let Some((r, g)) = q.first_fitting(fit) else {
                    continue;
                };
                let state = &sim.tenants()[t];
                let standing = Standing::of(state.held as f64, state.entitled);
                if best.is_none_or(|(s, br, _, _)| (standing, r) < (s, br)) {
                    best = Some((standing, r, g, t));
                }
            }
            let Some((_, r, gpus, t)) = best else { break };
            self.queues[t].remove(gpus, r);
            if !sim.start(r.1) {
                self.queues[t].insert(gpus, r);
                break;
            }
        }
    }
}
