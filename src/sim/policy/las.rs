//! `las`: Tiresias-style discretised two-dimensional least-attained-service (NSDI'19).
//!
//! A job's attained service is GPU-seconds received (GPUs × time run, work later lost to a
//! restart included, as Tiresias counts it). Thresholds T_1 < T_2 < … split jobs into queues:
//! queue k holds jobs with T_k ≤ attained < T_{k+1} (queue 0 from 0). Lower queues go first;
//! within a queue, priority then arrival (FIFO). At a scheduling point the best pending job that
//! fits either the free GPUs, or the free GPUs plus those of running jobs in strictly higher
//! queues, starts, suspending those jobs (the latest-arrived of the highest queue first) when
//! needed; repeat. A running job moves down a queue exactly when it crosses a threshold (an
//! engine timer), which may let waiting jobs preempt it. No starvation guard (Tiresias's
//! optional promotion after a long wait is not modelled).

use std::collections::BTreeSet;

use super::{rank, ClassQueue, Rank};
use crate::sim::engine::{JobId, Policy, Sim};

/// Default thresholds in GPU-seconds, from `docs/simulation-validation.md` (3,250 / 7,200 /
/// 18,000), giving four queues.
pub const DEFAULT_THRESHOLDS: [f64; 3] = [3_250.0, 7_200.0, 18_000.0];

/// LAS knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct LasConfig {
    /// Queue thresholds in attained GPU-seconds, ascending. Default [`DEFAULT_THRESHOLDS`].
    pub thresholds_gpu_seconds: Vec<f64>,
}

impl Default for LasConfig {
    fn default() -> Self {
        Self {
            thresholds_gpu_seconds: DEFAULT_THRESHOLDS.to_vec(),
        }
    }
}

/// The LAS policy.
#[derive(Debug)]
pub struct Las {
    thresholds: Vec<f64>,
    pending: Vec<ClassQueue>,
    running: Vec<BTreeSet<Rank>>,
    running_gpus: Vec<u64>,
    level: Vec<u8>,
}

impl Las {
    /// A LAS policy for a trace of `jobs` jobs. Thresholds are sorted; bad values dropped.
    pub fn new(config: LasConfig, jobs: usize) -> Self {
        let mut thresholds: Vec<f64> = config
            .thresholds_gpu_seconds
            .into_iter()
            .filter(|t| t.is_finite() && *t > 0.0)
            .collect();
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        let levels = thresholds.len().min(254) + 1;
        thresholds.truncate(levels - 1);
        Self {
            thresholds,
            pending: vec![ClassQueue::default(); levels],
            running: vec![BTreeSet::new(); levels],
            running_gpus: vec![0; levels],
            level: vec![0; jobs],
        }
    }

    fn level_of(&self, attained: f64) -> usize {
        // A hair of tolerance so that a timer firing exactly at the threshold demotes.
        self.thresholds
            .iter()
            .take_while(|&&t| attained + 1e-6 >= t)
            .count()
    }

    /// The best pending job that can start, possibly by preemption: (level, rank, gpus).
    fn candidate(&self, sim: &Sim<'_>) -> Option<(usize, Rank, u32)> {
        let (fit, free) = (sim.largest_fit(), sim.free());
        let mut below: u64 = self.running_gpus.iter().sum();
        for (q, queue) in self.pending.iter().enumerate() {
            below -= self.running_gpus[q];
            let bound = fit.max(free + below);
            if let Some((r, g)) = queue.first_fitting(bound) {
                return Some((q, r, g));
            }
        }
        None
    }

    fn launch(&mut self, sim: &mut Sim<'_>, job: JobId, q: usize) -> bool {
        if !sim.start(job) {
            return false;
        }
        let gpus = sim.spec(job).gpus;
        self.running[q].insert(rank(sim.spec(job).priority, job));
        self.running_gpus[q] += gpus as u64;
        self.level[job as usize] = q as u8;
        self.arm(sim, job, q);
        true
    }

    /// Sets the timer for the job's next demotion, if any.
    fn arm(&self, sim: &mut Sim<'_>, job: JobId, q: usize) {
        if let Some(&next) = self.thresholds.get(q) {
            let gpus = sim.spec(job).gpus as f64;
            let at = sim.now() + (next - sim.attained(job)).max(0.0) / gpus;
            sim.set_timer(job, at);
        }
    }

    fn forget_running(&mut self, sim: &Sim<'_>, job: JobId) -> usize {
        let q = self.level[job as usize] as usize;
        if self.running[q].remove(&rank(sim.spec(job).priority, job)) {
            self.running_gpus[q] -= sim.spec(job).gpus as u64;
        }
        q
    }

    /// Suspends running jobs of queues above `q`, lowest priority first, until `gpus` fit.
    fn make_room(&mut self, sim: &mut Sim<'_>, q: usize, gpus: u32) -> bool {
        while sim.largest_fit() < gpus as u64 {
            let Some(victim_level) = (q + 1..self.running.len())
                .rev()
                .find(|&l| !self.running[l].is_empty())
            else {
                return false;
            };
            let Some(&victim) = self.running[victim_level].last() else {
                return false;
            };
            self.forget_running(sim, victim.1);
            sim.suspend(victim.1);
            let g = sim.spec(victim.1).gpus;
            self.pending[victim_level].insert(g, victim);
        }
        true
    }
}

impl Policy for Las {
    fn name(&self) -> &str {
        "las"
    }

    fn on_arrival(&mut self, sim: &Sim<'_>, job: JobId) {
        let spec = sim.spec(job);
        self.level[job as usize] = 0;
        self.pending[0].insert(spec.gpus, rank(spec.priority, job));
    }

    fn on_finish(&mut self, sim: &Sim<'_>, job: JobId) {
        self.forget_running(sim, job);
    }

    fn on_timer(&mut self, sim: &mut Sim<'_>, job: JobId) {
        let q = self.forget_running(sim, job);
        let new = self.level_of(sim.attained(job)).max(q);
        self.running[new].insert(rank(sim.spec(job).priority, job));
        self.running_gpus[new] += sim.spec(job).gpus as u64;
        self.level[job as usize] = new as u8;
        self.arm(sim, job, new);
    }

    fn schedule(&mut self, sim: &mut Sim<'_>) {
        while let Some((q, r, gpus)) = self.candidate(sim) {
            self.pending[q].remove(gpus, r);
            if !self.make_room(sim, q, gpus) || !self.launch(sim, r.1, q) {
                self.pending[q].insert(gpus, r);
                break;
            }
        }
    }
}
