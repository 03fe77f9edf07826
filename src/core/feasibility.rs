//! Feasibility: whether a workload's pods fit GPUs free now, fit once others release, or can
//! never fit, judged on a histogram of nodes by free (or allocatable) GPUs.
//!
//! A workload's [`Demand`] is its gang, `gpus` in total, as pods of `per_pod` GPUs each (the
//! last one smaller when `per_pod` does not divide `gpus`); every pod needs all its GPUs on one
//! node. `per_pod == gpus` is one pod; `per_pod == 1` is a gang that splits freely (the
//! simulator's jobs). A [`Pool`] is a multiset of nodes by GPU count; the gate keeps one for
//! what is free now and one for what nodes hold when empty, so the same arithmetic answers
//! "fits now" and "can ever fit".
//!
//! Costs: [`Pool::fits`] O(d) for d distinct node sizes (a handful), [`Pool::take`]
//! O(pods · log d). Counts saturate: a node reporting 10²⁰ GPUs never wraps a sum.
//!
//! Must not: know about tenants, queues, Kubernetes or time.

use std::collections::BTreeMap;
use std::fmt;

/// What one workload needs placed: a gang of pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// GPUs of all its pods together.
    pub gpus: u64,
    /// GPUs of one pod (≥ 1, ≤ `gpus`).
    pub per_pod: u64,
}

impl Demand {
    /// A gang of `gpus` GPUs in pods of `per_pod` (clamped into `1..=gpus`).
    pub fn new(gpus: u64, per_pod: u64) -> Self {
        Self {
            gpus,
            per_pod: per_pod.clamp(1, gpus.max(1)),
        }
    }

    /// Full pods and the size of the last, smaller pod (0 when none).
    fn pods(self) -> (u64, u64) {
        (self.gpus / self.per_pod, self.gpus % self.per_pod)
    }
}

/// Why a workload can never fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeverFit {
    /// No node of the resource exists that it may use.
    NoNodes,
    /// One pod needs more GPUs than any node it may use has.
    PodTooLarge {
        /// GPUs one pod asks for.
        per_pod: u64,
        /// The most GPUs one such node has.
        largest_node: u64,
    },
    /// The whole gang needs more than the nodes it may use hold together.
    GangTooLarge {
        /// GPUs the gang asks for.
        gpus: u64,
        /// The most GPUs of its pod size those nodes hold, all empty.
        capacity: u64,
    },
}

impl NeverFit {
    /// A short stable label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            NeverFit::NoNodes => "no_nodes",
            NeverFit::PodTooLarge { .. } => "pod_too_large",
            NeverFit::GangTooLarge { .. } => "gang_too_large",
        }
    }
}

impl fmt::Display for NeverFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NeverFit::NoNodes => write!(f, "no ready node offers this GPU resource"),
            NeverFit::PodTooLarge {
                per_pod,
                largest_node,
            } => write!(
                f,
                "one pod asks for {per_pod} GPUs but the largest node it may use has {largest_node}"
            ),
            NeverFit::GangTooLarge { gpus, capacity } => write!(
                f,
                "the workload asks for {gpus} GPUs but the nodes it may use hold at most {capacity} in pods of its size"
            ),
        }
    }
}

/// Where a workload stands against a supply of GPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fit {
    /// The free GPUs hold it now.
    Now,
    /// It fits once others release GPUs.
    Later,
    /// It can never fit, and why.
    Never(NeverFit),
}

/// Nodes by GPU count: `count[g]` nodes with `g` GPUs (free, or allocatable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    nodes: BTreeMap<u64, u64>,
    total: u64,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A pool of nodes with these GPU counts.
    pub fn of(counts: impl IntoIterator<Item = u64>) -> Self {
        let mut pool = Self::new();
        for g in counts {
            pool.add(g);
        }
        pool
    }

    /// Adds a node with `gpus` GPUs (nodes with none are not kept).
    pub fn add(&mut self, gpus: u64) {
        if gpus > 0 {
            let n = self.nodes.entry(gpus).or_insert(0);
            *n = n.saturating_add(1);
            self.total = self.total.saturating_add(gpus);
        }
    }

    /// Removes a node with `gpus` GPUs; false when there is none.
    pub fn remove(&mut self, gpus: u64) -> bool {
        if gpus == 0 {
            return true;
        }
        let Some(n) = self.nodes.get_mut(&gpus) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.nodes.remove(&gpus);
        }
        self.total = self.total.saturating_sub(gpus);
        true
    }

    /// GPUs over all nodes (saturating).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The most GPUs on one node.
    pub fn largest(&self) -> u64 {
        self.nodes.keys().next_back().copied().unwrap_or(0)
    }

    /// Nodes with at least `gpus` GPUs (at least one): O(d) for d distinct node sizes.
    pub fn nodes_with_at_least(&self, gpus: u64) -> u64 {
        (self.nodes.range(gpus.max(1)..))
            .map(|(_, &n)| n)
            .fold(0, u64::saturating_add)
    }

    /// Whether the pool has no GPU.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Whether `demand` can be placed on these nodes as they are.
    pub fn fits(&self, demand: Demand) -> bool {
        self.check(demand).is_ok()
    }

    /// `Ok` when `demand` fits these nodes, else why not (read as "never" when the pool holds
    /// the nodes empty).
    pub fn check(&self, demand: Demand) -> Result<(), NeverFit> {
        if demand.gpus == 0 {
            return Ok(());
        }
        if self.nodes.is_empty() {
            return Err(NeverFit::NoNodes);
        }
        let (full, rest) = demand.pods();
        let g = demand.per_pod;
        if self.largest() < g.min(demand.gpus) {
            return Err(NeverFit::PodTooLarge {
                per_pod: g,
                largest_node: self.largest(),
            });
        }
        if g == 1 {
            return match self.total >= demand.gpus {
                true => Ok(()),
                false => Err(self.gang_too_large(demand)),
            };
        }
        let slots = self.slots(g);
        let enough = slots >= full.saturating_add(u64::from(rest > 0))
            || (slots == full && self.nodes.keys().any(|&free| free % g >= rest));
        match enough {
            true => Ok(()),
            false => Err(self.gang_too_large(demand)),
        }
    }

    /// Takes `demand`'s GPUs from the nodes, best fit first (the fullest node that holds a
    /// pod; a gang that splits freely fills the emptiest nodes, then the best fit). False, and
    /// nothing taken, when it does not fit.
    pub fn take(&mut self, demand: Demand) -> bool {
        if !self.fits(demand) {
            return false;
        }
        if demand.per_pod == 1 {
            let mut left = demand.gpus;
            while left > 0 {
                let node = self.best_fit(left).unwrap_or_else(|| self.largest());
                let taken = node.min(left);
                self.shrink(node, taken);
                left -= taken;
            }
            return true;
        }
        let (full, rest) = demand.pods();
        for size in
            std::iter::repeat_n(demand.per_pod, full as usize).chain((rest > 0).then_some(rest))
        {
            match self.best_fit(size) {
                Some(node) => self.shrink(node, size),
                None => return false,
            }
        }
        true
    }

    fn gang_too_large(&self, demand: Demand) -> NeverFit {
        let g = demand.per_pod;
        NeverFit::GangTooLarge {
            gpus: demand.gpus,
            capacity: if g == 1 {
                self.total
            } else {
                self.slots(g).saturating_mul(g)
            },
        }
    }

    /// Pods of `g` GPUs the nodes hold together.
    fn slots(&self, g: u64) -> u64 {
        self.nodes
            .range(g..)
            .map(|(&free, &n)| (free / g).saturating_mul(n))
            .fold(0, u64::saturating_add)
    }

    /// The node with the fewest GPUs that still has `want`.
    fn best_fit(&self, want: u64) -> Option<u64> {
        self.nodes.range(want..).next().map(|(&g, _)| g)
    }

    fn shrink(&mut self, node: u64, by: u64) {
        if self.remove(node) {
            self.add(node - by.min(node));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pod_larger_than_every_node_never_fits() {
        let empty = Pool::of([4, 4]);
        assert_eq!(
            empty.check(Demand::new(5, 5)),
            Err(NeverFit::PodTooLarge {
                per_pod: 5,
                largest_node: 4
            })
        );
        // Five one-GPU pods do fit two nodes of four.
        assert!(empty.fits(Demand::new(5, 1)));
        assert!(empty.fits(Demand::new(5, 4)));
    }

    #[test]
    fn gangs_count_whole_pods_per_node() {
        let nodes = Pool::of([3, 3, 3]);
        // Pods of two: one per node, three pods, six GPUs; a fourth pod has no node.
        assert!(nodes.fits(Demand::new(6, 2)));
        assert_eq!(
            nodes.check(Demand::new(8, 2)),
            Err(NeverFit::GangTooLarge {
                gpus: 8,
                capacity: 6
            })
        );
        // A last, smaller pod uses what is left on a node.
        assert!(nodes.fits(Demand::new(7, 2)));
    }

    #[test]
    fn nodes_are_counted_by_size() {
        let pool = Pool::of([1, 4, 4, 8, 0]);
        assert_eq!(pool.nodes_with_at_least(0), 4);
        assert_eq!(pool.nodes_with_at_least(2), 3);
        assert_eq!(pool.nodes_with_at_least(8), 1);
        assert_eq!(pool.nodes_with_at_least(9), 0);
    }

    #[test]
    fn take_places_best_fit_and_saturates() {
        let mut free = Pool::of([1, 4, 8]);
        assert!(free.take(Demand::new(4, 4)));
        assert_eq!(free, Pool::of([1, 8]));
        assert!(free.take(Demand::new(9, 1)));
        assert!(free.is_empty());
        assert!(!free.take(Demand::new(1, 1)));
        let huge = Pool::of([u64::MAX / 2, u64::MAX / 2, 7]);
        assert_eq!(huge.total(), u64::MAX);
    }
}
