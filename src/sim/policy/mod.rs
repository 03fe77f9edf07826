//! Scheduling policies the simulator compares, behind the engine's [`Policy`] trait.
//!
//! | name    | what it models |
//! |---------|----------------|
//! | `fifo`  | kube-scheduler alone: priority then arrival, with backfill |
//! | `quota` | static weighted quota: tenant t holds at most ⌊w_t·C⌋ GPUs; idle quota stays idle |
//! | `fair`  | instantaneous weighted fair share, no preemption |
//! | `las`   | Tiresias discretised 2D-LAS with preemption |
//! | `rota`  | the production queue, gate, usage-corrected entitlements and rotation planner |
//!
//! Every policy keeps its pending jobs in [`ClassQueue`]s (one ordered set per gang size), so
//! "the first job in order that fits in k free GPUs" costs O(gang sizes · log n), never a scan
//! of the queue. Policies must not rescan all jobs at a scheduling point.

mod fair;
mod fifo;
mod las;
mod quota;
mod rota;

use std::collections::BTreeSet;

pub use fair::Fair;
pub use fifo::Fifo;
pub use las::{Las, LasConfig, DEFAULT_THRESHOLDS};
pub use quota::Quota;
pub use rota::{Rota, RotaSettings, MAX_CLAIMS};

use super::engine::{JobId, Policy};
use super::trace::Trace;

/// The policies `rota simulate --policies` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyKind {
    /// kube-scheduler alone (priority, then arrival, with backfill).
    Fifo,
    /// Static weighted quota.
    Quota,
    /// Instantaneous weighted fair share without preemption.
    Fair,
    /// Tiresias-style discretised LAS with preemption.
    Las,
    /// rota's own policy: fair-share queue, gate and rotation planner.
    Rota,
}

impl PolicyKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Fifo => "fifo",
            PolicyKind::Quota => "quota",
            PolicyKind::Fair => "fair",
            PolicyKind::Las => "las",
            PolicyKind::Rota => "rota",
        }
    }
}

/// Why a policy cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy exists in the design but not in the code yet.
    #[error("policy `{0}` is not available yet: it needs the rotation planner (issue #5)")]
    Pending(&'static str),
}

impl PolicyError {
    /// Short stable name.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::Pending(_) => "pending",
        }
    }
}

/// Knobs of the policies that have any.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyConfig {
    /// LAS queue thresholds.
    pub las: LasConfig,
    /// The `rota` policy's settings (from `--config`, defaults otherwise).
    pub rota: RotaSettings,
}

/// A fresh policy of `kind` for `trace`.
pub fn build(
    kind: PolicyKind,
    trace: &Trace,
    config: &PolicyConfig,
) -> Result<Box<dyn Policy>, PolicyError> {
    let tenants = trace.tenants.len();
    Ok(match kind {
        PolicyKind::Fifo => Box::new(Fifo::default()),
        PolicyKind::Quota => Box::new(Quota::new(tenants)),
        PolicyKind::Fair => Box::new(Fair::new(tenants)),
        PolicyKind::Las => Box::new(Las::new(config.las.clone(), trace.jobs.len())),
        PolicyKind::Rota => Box::new(Rota::new(trace, config.rota.clone())),
    })
}

/// Order of a pending job: higher priority first, then earlier arrival (job ids follow arrival).
pub type Rank = (i64, JobId);

/// The rank of a job with `priority` and id `job`.
pub fn rank(priority: i32, job: JobId) -> Rank {
    (-(priority as i64), job)
}

/// Pending jobs split by gang size, each size an ordered set.
#[derive(Clone, Debug, Default)]
pub struct ClassQueue {
    sizes: Vec<u32>,
    sets: Vec<BTreeSet<Rank>>,
    len: usize,
}

impl ClassQueue {
    /// Adds a job of `gpus` GPUs.
    pub fn insert(&mut self, gpus: u32, rank: Rank) {
        let class = match self.sizes.binary_search(&gpus) {
            Ok(c) => c,
            Err(c) => {
                self.sizes.insert(c, gpus);
                self.sets.insert(c, BTreeSet::new());
                c
            }
        };
        if self.sets[class].insert(rank) {
            self.len += 1;
        }
    }

    /// Removes a job; returns whether it was there.
    pub fn remove(&mut self, gpus: u32, rank: Rank) -> bool {
        let Ok(class) = self.sizes.binary_search(&gpus) else {
            return false;
        };
        let removed = self.sets[class].remove(&rank);
        self.len -= usize::from(removed);
        removed
    }

    /// The first job in rank order whose gang is at most `limit` GPUs, with its size.
    pub fn first_fitting(&self, limit: u64) -> Option<(Rank, u32)> {
        self.sizes
            .iter()
            .zip(&self.sets)
            .take_while(|(&size, _)| size as u64 <= limit)
            .filter_map(|(&size, set)| set.first().map(|&r| (r, size)))
            .min()
    }

    /// Number of queued jobs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No job queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fitting_backfills_in_rank_order() {
        let mut q = ClassQueue::default();
        q.insert(8, rank(0, 1));
        q.insert(1, rank(0, 3));
        q.insert(2, rank(0, 2));
        q.insert(1, rank(5, 9));
        assert_eq!(q.len(), 4);
        assert_eq!(q.first_fitting(8), Some((rank(5, 9), 1)));
        assert!(q.remove(1, rank(5, 9)));
        assert_eq!(q.first_fitting(8), Some((rank(0, 1), 8)));
        assert_eq!(q.first_fitting(7), Some((rank(0, 2), 2)));
        assert_eq!(q.first_fitting(1), Some((rank(0, 3), 1)));
        assert_eq!(q.first_fitting(0), None);
        assert!(!q.remove(4, rank(0, 1)));
    }
}
