//! The simulated cluster: GPU nodes grouped in pools (one per GPU model), and gang placement.
//!
//! Invariants: a node's free count is always between 0 and its capacity; every node is in
//! exactly one bucket, the one for its free count, so finding the best-fitting node is a scan
//! over at most `max GPUs per node` buckets, never over nodes; a gang is placed inside one pool
//! (one GPU model) on as few nodes as possible and always on exactly the GPUs it asks for.
//! The best-fit choice is the node with the fewest free GPUs that still fits the gang, which is
//! the node [`crate::core::placement::packing`] scores highest (checked by a test against the
//! production scorer through [`SimCluster::snapshot`]). This module must not know about jobs,
//! tenants or time.

use crate::core::{ClusterSnapshot, GpuNode};

/// Resource name used when the simulated cluster is exported as a [`ClusterSnapshot`].
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// A group of identical nodes.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGroup {
    /// Number of nodes.
    pub count: u32,
    /// GPUs per node (≥ 1).
    pub gpus_per_node: u32,
    /// GPU model; gangs never span models. Default `gpu`.
    #[serde(default = "default_model")]
    pub model: String,
}

fn default_model() -> String {
    "gpu".into()
}

/// The cluster to simulate: node groups.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// Node groups, in order (node names follow it).
    pub node_groups: Vec<NodeGroup>,
}

impl ClusterSpec {
    /// `gpus` GPUs on nodes of `per_node` GPUs (the last node smaller if it does not divide).
    pub fn homogeneous(gpus: u32, per_node: u32) -> Self {
        let per_node = per_node.max(1);
        let mut node_groups = vec![NodeGroup {
            count: gpus / per_node,
            gpus_per_node: per_node,
            model: default_model(),
        }];
        if gpus % per_node != 0 {
            node_groups.push(NodeGroup {
                count: 1,
                gpus_per_node: gpus % per_node,
                model: default_model(),
            });
        }
        node_groups.retain(|g| g.count > 0);
        ClusterSpec { node_groups }
    }

    /// Total GPUs (C).
    pub fn capacity(&self) -> u64 {
        self.node_groups
            .iter()
            .map(|g| g.count as u64 * g.gpus_per_node as u64)
            .sum()
    }
}

/// Where a gang runs: `(node index, GPUs on that node)` pairs.
pub type Placement = Vec<(u32, u32)>;

#[derive(Clone, Debug)]
struct Node {
    pool: usize,
    capacity: u32,
    free: u32,
    /// Position inside `pools[pool].buckets[free]`.
    slot: usize,
}

#[derive(Clone, Debug)]
struct Pool {
    model: String,
    free: u64,
    capacity: u64,
    /// `buckets[f]` = nodes of this pool with exactly `f` free GPUs.
    buckets: Vec<Vec<u32>>,
}

/// Nodes with free-GPU buckets, per GPU model.
#[derive(Clone, Debug)]
pub struct SimCluster {
    nodes: Vec<Node>,
    pools: Vec<Pool>,
    capacity: u64,
    free: u64,
}

impl SimCluster {
    /// An empty (all free) cluster from its spec.
    pub fn new(spec: &ClusterSpec) -> Self {
        let mut c = SimCluster {
            nodes: Vec::new(),
            pools: Vec::new(),
            capacity: 0,
            free: 0,
        };
        for g in spec.node_groups.iter().filter(|g| g.gpus_per_node > 0) {
            let pool = match c.pools.iter().position(|p| p.model == g.model) {
                Some(p) => p,
                None => {
                    c.pools.push(Pool {
                        model: g.model.clone(),
                        free: 0,
                        capacity: 0,
                        buckets: Vec::new(),
                    });
                    c.pools.len() - 1
                }
            };
            for _ in 0..g.count {
                let id = c.nodes.len() as u32;
                c.nodes.push(Node {
                    pool,
                    capacity: g.gpus_per_node,
                    free: 0,
                    slot: 0,
                });
                c.bucket_insert(id);
                c.set_free(id, g.gpus_per_node);
                c.pools[pool].capacity += u64::from(g.gpus_per_node);
            }
        }
        c.capacity = c.free;
        c
    }

    /// Total GPUs.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Free GPUs over all pools.
    pub fn free(&self) -> u64 {
        self.free
    }

    /// The largest gang that can be placed now (the most free GPUs in one pool).
    pub fn largest_fit(&self) -> u64 {
        self.pools.iter().map(|p| p.free).max().unwrap_or(0)
    }

    /// Each pool's free GPUs and capacity (gangs never span pools), in pool order.
    pub fn pools(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.pools.iter().map(|p| (p.free, p.capacity))
    }

    /// The largest gang that could ever be placed (the largest pool's capacity).
    pub fn largest_pool(&self) -> u64 {
        self.pools().map(|(_, c)| c).max().unwrap_or(0)
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Places a gang of `gpus` GPUs, or returns `None` (and changes nothing) when no pool has
    /// that many free. Among pools that fit, the one with the fewest free GPUs is used (best
    /// fit); inside it, one node when any node fits (the fullest such node), else the emptiest
    /// nodes first and the best-fitting node for the remainder, which minimises the node count.
    pub fn place(&mut self, gpus: u32) -> Option<Placement> {
        let want = gpus as u64;
        let pool = (0..self.pools.len())
            .filter(|&p| self.pools[p].free >= want)
            .min_by_key(|&p| (self.pools[p].free, p))?;
        let mut left = gpus;
        let mut out = Placement::new();
        while left > 0 {
            let node = self
                .best_fit(pool, left)
                .or_else(|| self.emptiest(pool))
                .filter(|&n| self.nodes[n as usize].free > 0)?;
            let take = left.min(self.nodes[node as usize].free);
            let free = self.nodes[node as usize].free - take;
            self.set_free(node, free);
            out.push((node, take));
            left -= take;
        }
        Some(out)
    }

    /// Gives a placement's GPUs back.
    pub fn release(&mut self, placement: &Placement) {
        for &(node, gpus) in placement {
            let n = &self.nodes[node as usize];
            let free = (n.free + gpus).min(n.capacity);
            self.set_free(node, free);
        }
    }

    /// The cluster as the production core sees it: one [`GpuNode`] per node (`sim-<i>`, product
    /// = model) with `used` set. For validation and for policies that call the core; O(nodes).
    pub fn snapshot(&self) -> ClusterSnapshot {
        let mut snap = ClusterSnapshot::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let node = GpuNode {
                name: node_name(i as u32),
                ready: true,
                allocatable: [(GPU_RESOURCE.to_string(), n.capacity as u64)].into(),
                product: Some(self.pools[n.pool].model.clone()),
                ..GpuNode::default()
            };
            snap.upsert_node(node);
        }
        snap
    }

    /// Free GPUs on node `i` (0 for an unknown index).
    pub fn node_free(&self, i: u32) -> u32 {
        self.nodes.get(i as usize).map_or(0, |n| n.free)
    }

    /// Capacity of node `i` (0 for an unknown index).
    pub fn node_capacity(&self, i: u32) -> u32 {
        self.nodes.get(i as usize).map_or(0, |n| n.capacity)
    }

    /// The node with the fewest free GPUs ≥ `want` in `pool`.
    fn best_fit(&self, pool: usize, want: u32) -> Option<u32> {
        let buckets = &self.pools[pool].buckets;
        (want as usize..buckets.len()).find_map(|f| buckets[f].last().copied())
    }

    /// A node with the most free GPUs in `pool`.
    fn emptiest(&self, pool: usize) -> Option<u32> {
        let buckets = &self.pools[pool].buckets;
        (1..buckets.len())
            .rev()
            .find_map(|f| buckets[f].last().copied())
    }

    /// Moves node `id` to the bucket for `free` and keeps the totals in step.
    fn set_free(&mut self, id: u32, free: u32) {
        let old = self.nodes[id as usize].free;
        self.bucket_remove(id);
        let pool = self.nodes[id as usize].pool;
        self.nodes[id as usize].free = free;
        self.bucket_insert(id);
        let p = &mut self.pools[pool];
        p.free = p.free + free as u64 - old as u64;
        self.free = self.free + free as u64 - old as u64;
    }

    fn bucket_insert(&mut self, id: u32) {
        let n = &self.nodes[id as usize];
        let (pool, free) = (n.pool, n.free as usize);
        let buckets = &mut self.pools[pool].buckets;
        if buckets.len() <= free {
            buckets.resize(free + 1, Vec::new());
        }
        buckets[free].push(id);
        self.nodes[id as usize].slot = buckets[free].len() - 1;
    }

    fn bucket_remove(&mut self, id: u32) {
        let n = &self.nodes[id as usize];
        let (pool, free, slot) = (n.pool, n.free as usize, n.slot);
        let Some(bucket) = self.pools[pool].buckets.get_mut(free) else {
            return;
        };
        if bucket.get(slot) != Some(&id) {
            return;
        }
        bucket.swap_remove(slot);
        if let Some(&moved) = bucket.get(slot) {
            self.nodes[moved as usize].slot = slot;
        }
    }
}

/// Name of simulated node `i` in snapshots and reports.
pub fn node_name(i: u32) -> String {
    format!("sim-{i}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(p: &Placement) -> u32 {
        p.iter().map(|&(_, g)| g).sum()
    }

    #[test]
    fn gangs_get_exactly_their_gpus_on_the_fewest_nodes() {
        let mut c = SimCluster::new(&ClusterSpec::homogeneous(32, 8));
        let a = c.place(3).unwrap();
        assert_eq!(a.len(), 1);
        // Best fit: the 2-GPU job goes to the node with 5 free, not to an empty node.
        let b = c.place(2).unwrap();
        assert_eq!(b[0].0, a[0].0);
        let g = c.place(16).unwrap();
        assert_eq!((total(&g), g.len()), (16, 2));
        assert_eq!(c.free(), 32 - 21);
        // 11 free: 3 on one node and 8 on another; a 10-GPU gang spans two nodes.
        let h = c.place(10).unwrap();
        assert_eq!((total(&h), h.len()), (10, 2));
        assert!(c.place(2).is_none());
        assert_eq!(c.free(), 1);
        c.release(&g);
        c.release(&h);
        assert_eq!(c.free(), 27);
        assert_eq!(c.largest_fit(), 27);
    }

    #[test]
    fn gangs_never_span_models() {
        let spec = ClusterSpec {
            node_groups: vec![
                NodeGroup {
                    count: 1,
                    gpus_per_node: 4,
                    model: "a".into(),
                },
                NodeGroup {
                    count: 1,
                    gpus_per_node: 4,
                    model: "b".into(),
                },
            ],
        };
        let mut c = SimCluster::new(&spec);
        assert_eq!(c.capacity(), 8);
        assert!(c.place(5).is_none());
        assert_eq!(c.free(), 8);
        assert!(c.place(4).is_some());
        assert_eq!(c.largest_fit(), 4);
    }

    #[test]
    fn best_fit_matches_the_production_packing_score() {
        use crate::core::model::{GpuPod, PlacementRules, WorkloadId, WorkloadKind};
        use crate::core::placement::packing;
        let mut c = SimCluster::new(&ClusterSpec::homogeneous(40, 8));
        for g in [5, 2, 7, 3] {
            c.place(g);
        }
        let mut snap = c.snapshot();
        for i in 0..c.node_count() as u32 {
            let used = c.node_capacity(i) - c.node_free(i);
            if used > 0 {
                snap.upsert_pod(GpuPod {
                    uid: format!("u{i}"),
                    namespace: "sim".into(),
                    name: format!("u{i}"),
                    tenant: "sim".into(),
                    workload: WorkloadId {
                        kind: WorkloadKind::Pod,
                        namespace: "sim".into(),
                        name: format!("u{i}"),
                    },
                    requests: [(GPU_RESOURCE.to_string(), used as u64)].into(),
                    node_name: Some(node_name(i)),
                    active: true,
                    priority: 0,
                    placement: PlacementRules::default(),
                    ..GpuPod::default()
                });
            }
        }
        for want in 1..=8u32 {
            let pod = GpuPod {
                requests: [(GPU_RESOURCE.to_string(), want as u64)].into(),
                node_name: None,
                ..snap.pods().next().unwrap().clone()
            };
            let best = snap.nodes().map(|n| packing(n, &pod)).fold(0.0, f64::max);
            let mut trial = c.clone();
            let placed = trial.place(want).unwrap();
            if best > 0.0 {
                let chosen = snap.node(&node_name(placed[0].0)).unwrap();
                assert_eq!(placed.len(), 1);
                assert_eq!(packing(chosen, &pod), best, "gang of {want}");
            }
        }
    }
}
