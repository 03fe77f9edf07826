//! `fifo`: kube-scheduler alone. Pending jobs in priority-then-arrival order; at a scheduling
//! point the first job that fits the free GPUs starts, repeatedly (backfill: a later job starts
//! when it fits and an earlier one does not). Never preempts.

use super::{rank, ClassQueue};
use crate::sim::engine::{JobId, Policy, Sim};

/// The FIFO-with-backfill policy.
#[derive(Debug, Default)]
pub struct Fifo {
    queue: ClassQueue,
}

impl Policy for Fifo {
    fn name(&self) -> &str {
        "fifo"
    }

    fn on_arrival(&mut self, sim: &Sim<'_>, job: JobId) {
        let spec = sim.spec(job);
        self.queue.insert(spec.gpus, rank(spec.priority, job));
    }

    fn schedule(&mut self, sim: &mut Sim<'_>) {
        while let Some((r, gpus)) = self.queue.first_fitting(sim.largest_fit()) {
            self.queue.remove(gpus, r);
            if !sim.start(r.1) {
                // Cannot happen (it fitted); keep the job rather than lose it.
                self.queue.insert(gpus, r);
                break;
            }
        }
    }
}
