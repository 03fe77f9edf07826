//! The victim indexes of one resource's pool for one tick, built on first use: most ticks
//! end with nothing to do, and a tick whose claims all fit the free GPUs (or whose tenants are
//! all within the margin) never needs them.
//!
//! ```text
//!   list (eligible at the start of the tick, input order = victim id)
//!     ├─▶ by_gpus: per tenant, sorted (GPUs, rank, victim)          built with the list
//!     ├─▶ by_room[tenant]: (free + GPUs on node, rank, victim, node) ┐ built by the first
//!     ├─▶ on_node[node]:   victims there                             ├ one-node claim that
//!     └─▶ probe:           (static reclaimable GPUs, node), most first┘ needs a search
//! ```
//!
//! Invariants: a victim's id is its position in `list`, which keeps the input order (ids break
//! ties, so the order is part of the plan); a taken victim stays in `by_gpus` (one flat
//! vector, no shifting) but every read of it skips taken victims *before* any scan bound
//! counts them, so reads see what removing it would leave; a taken victim is not in
//! `by_room`; `by_room` keys use the node's current free count; `probe` uses the free counts
//! and victims as they were at the start of the tick, whenever it is built. So building lazily
//! gives exactly the indexes an eager build kept up to date would hold.
//! Must not: decide eligibility (the pool does) or outlive its tick.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use super::RunningWorkload;

/// Attained service as a sort key, most first (the bits of a non-negative finite f64 sort like
/// the number).
pub(super) type Rank = Reverse<u64>;

/// The smallest rank (sorts before every other).
pub(super) const FIRST: Rank = Reverse(u64::MAX);

/// The rank of a workload that attained `attained` GPU-seconds (non-finite or negative is 0).
pub(super) fn rank_of(attained: f64) -> Rank {
    let x = if attained.is_finite() && attained > 0.0 {
        attained
    } else {
        0.0
    };
    Reverse(x.to_bits())
}

/// One eligible victim.
pub(super) struct Victim<'a> {
    /// The running workload.
    pub(super) w: &'a RunningWorkload,
    /// Its tenant's index in the pool.
    pub(super) tenant: usize,
    /// GPUs it holds in all.
    pub(super) gpus: u64,
    /// Its attained service as a sort key.
    pub(super) rank: Rank,
    /// Already chosen this tick.
    pub(super) taken: bool,
    /// Its `(node, GPUs)` entries: `Victims::nodes[start..end]`.
    span: (u32, u32),
}

/// The eligible victims and their indexes (module docs).
#[derive(Default)]
pub(super) struct Victims<'a> {
    /// Every eligible victim, taken or not; the index is the victim id.
    pub(super) list: Vec<Victim<'a>>,
    /// `(node, GPUs)` of all victims, one entry per node and victim (flat, one allocation).
    nodes: Vec<(usize, u64)>,
    /// `(GPUs, rank, victim)`, sorted per tenant: tenant `t` owns `starts[t]..starts[t + 1]`.
    by_gpus: Vec<(u64, Rank, u32)>,
    starts: Vec<usize>,
    /// Tenants with at least one victim at the start of the tick, ascending.
    pub(super) tenants: Vec<usize>,
    /// Whether `list`, `by_gpus` and `tenants` are built.
    pub(super) listed: bool,
    /// Whether the one-node indexes are built.
    placed: bool,
    by_room: Vec<BTreeSet<(u64, Rank, u32, usize)>>,
    on_node: FxHashMap<usize, Vec<u32>>,
    probe: Vec<(u64, usize)>,
}

impl<'a> Victims<'a> {
    /// Adds an eligible victim (duplicate node entries are merged).
    pub(super) fn push(
        &mut self,
        w: &'a RunningWorkload,
        tenant: usize,
        gpus: u64,
        nodes: impl Iterator<Item = (usize, u64)>,
    ) {
        let start = self.nodes.len();
        for (n, g) in nodes {
            match self.nodes[start..].iter_mut().find(|e| e.0 == n) {
                Some(e) => e.1 = e.1.saturating_add(g),
                None => self.nodes.push((n, g)),
            }
        }
        self.list.push(Victim {
            w,
            tenant,
            gpus,
            rank: rank_of(w.attained_gpu_seconds),
            taken: false,
            span: (start as u32, self.nodes.len() as u32),
        });
    }

    /// Room for `n` more victims.
    pub(super) fn reserve(&mut self, n: usize) {
        self.list.reserve(n);
        self.nodes.reserve(n);
    }

    /// Builds `by_gpus` and `tenants` over `tenants` tenants, once every victim is pushed.
    pub(super) fn index(&mut self, tenants: usize) {
        // A counting sort by tenant, then a sort of each tenant's run.
        let mut starts = vec![0usize; tenants + 1];
        for v in &self.list {
            starts[v.tenant + 1] += 1;
        }
        for t in 0..tenants {
            starts[t + 1] += starts[t];
        }
        let mut next = starts.clone();
        self.by_gpus = vec![(0, FIRST, 0); self.list.len()];
        for (i, v) in self.list.iter().enumerate() {
            self.by_gpus[next[v.tenant]] = (v.gpus, v.rank, i as u32);
            next[v.tenant] += 1;
        }
        for t in 0..tenants {
            // Keys are unique (the id is in them), so an unstable sort is deterministic.
            self.by_gpus[starts[t]..starts[t + 1]].sort_unstable();
        }
        self.tenants = (0..tenants)
            .filter(|&t| starts[t] < starts[t + 1])
            .collect();
        self.starts = starts;
        self.listed = true;
    }

    /// The victim with id `id`.
    pub(super) fn get(&self, id: u32) -> &Victim<'a> {
        &self.list[id as usize]
    }

    /// The `(node, GPUs)` entries of victim `id`.
    pub(super) fn nodes_of(&self, id: u32) -> &[(usize, u64)] {
        let (start, end) = self.list[id as usize].span;
        &self.nodes[start as usize..end as usize]
    }

    /// GPUs victim `id` holds on `node`.
    pub(super) fn on(&self, id: u32, node: usize) -> u64 {
        crate::core::quantity::saturating_sum(
            (self.nodes_of(id).iter())
                .filter(|&&(n, _)| n == node)
                .map(|&(_, g)| g),
        )
    }

    /// Tenant `t`'s run of `by_gpus`, taken victims included.
    fn run(&self, t: usize) -> &[(u64, Rank, u32)] {
        &self.by_gpus[self.starts[t]..self.starts[t + 1]]
    }

    /// Skips taken victims.
    fn untaken<'s>(
        &'s self,
        entries: &'s [(u64, Rank, u32)],
    ) -> impl DoubleEndedIterator<Item = &'s (u64, Rank, u32)> + 's {
        entries.iter().filter(|e| !self.list[e.2 as usize].taken)
    }

    /// Tenant `t`'s untaken victims of at least `gpus` GPUs, smallest then most attained first.
    pub(super) fn at_least(
        &self,
        t: usize,
        gpus: u64,
    ) -> impl DoubleEndedIterator<Item = &(u64, Rank, u32)> + '_ {
        let run = self.run(t);
        self.untaken(&run[run.partition_point(|e| e.0 < gpus)..])
    }

    /// Tenant `t`'s untaken victims of fewer than `gpus` GPUs, in index order.
    pub(super) fn below(
        &self,
        t: usize,
        gpus: u64,
    ) -> impl DoubleEndedIterator<Item = &(u64, Rank, u32)> + '_ {
        let run = self.run(t);
        self.untaken(&run[..run.partition_point(|e| e.0 < gpus)])
    }

    /// Tenant `t`'s untaken victims of exactly `gpus` GPUs, most attained first.
    pub(super) fn exactly(
        &self,
        t: usize,
        gpus: u64,
    ) -> impl DoubleEndedIterator<Item = &(u64, Rank, u32)> + '_ {
        let run = self.run(t);
        let from = run.partition_point(|e| e.0 < gpus);
        let to = run.partition_point(|e| e.0 <= gpus);
        self.untaken(&run[from..to])
    }

    /// Whether the one-node indexes are built.
    pub(super) fn placed(&self) -> bool {
        self.placed
    }

    /// Builds the one-node indexes: `by_room` from the current free counts (`free`), `probe`
    /// from those at the start of the tick (`initial`; nodes past its end had none free).
    pub(super) fn place(&mut self, free: &[u64], initial: &[u64]) {
        self.by_room = vec![BTreeSet::new(); self.starts.len().saturating_sub(1)];
        let mut reclaimable: FxHashMap<usize, u64> = FxHashMap::default();
        for (i, v) in self.list.iter().enumerate() {
            let id = i as u32;
            let (start, end) = v.span;
            for &(n, g) in &self.nodes[start as usize..end as usize] {
                if !v.taken {
                    (self.by_room[v.tenant]).insert((free[n].saturating_add(g), v.rank, id, n));
                }
                self.on_node.entry(n).or_default().push(id);
                let slot = reclaimable
                    .entry(n)
                    .or_insert_with(|| initial.get(n).copied().unwrap_or(0));
                *slot = u64::saturating_add(*slot, g);
            }
        }
        self.probe = reclaimable.into_iter().map(|(n, g)| (g, n)).collect();
        self.probe
            .sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        self.placed = true;
    }

    /// Tenant `t`'s untaken victims by room on their node (one-node indexes only).
    pub(super) fn by_room(&self, t: usize) -> &BTreeSet<(u64, Rank, u32, usize)> {
        &self.by_room[t]
    }

    /// Victims on `node` (one-node indexes only), taken ones included.
    pub(super) fn on_node(&self, node: usize) -> Option<&Vec<u32>> {
        self.on_node.get(&node)
    }

    /// `(static reclaimable GPUs, node)` of nodes with victims, most first (one-node indexes).
    pub(super) fn probe(&self) -> &[(u64, usize)] {
        &self.probe
    }

    /// Re-keys `by_room` for the untaken victims on `node`, whose free count went from `old`
    /// to `new` (nothing to do before the one-node indexes are built).
    pub(super) fn rekey(&mut self, node: usize, old: u64, new: u64) {
        let Some(ids) = self.on_node.get(&node) else {
            return;
        };
        for &id in ids {
            let v = &self.list[id as usize];
            if v.taken {
                continue;
            }
            let (start, end) = v.span;
            let g: u64 = crate::core::quantity::saturating_sum(
                (self.nodes[start as usize..end as usize].iter())
                    .filter(|&&(n, _)| n == node)
                    .map(|&(_, g)| g),
            );
            let index = &mut self.by_room[v.tenant];
            index.remove(&(old.saturating_add(g), v.rank, id, node));
            index.insert((new.saturating_add(g), v.rank, id, node));
        }
    }

    /// Marks victim `id` taken and drops it from `by_room` (`free`: current free counts).
    pub(super) fn take(&mut self, id: u32, free: &[u64]) {
        let v = &mut self.list[id as usize];
        v.taken = true;
        let (t, rank, (start, end)) = (v.tenant, v.rank, v.span);
        if self.placed {
            for &(n, g) in &self.nodes[start as usize..end as usize] {
                self.by_room[t].remove(&(free[n] + g, rank, id, n));
            }
        }
    }
}
