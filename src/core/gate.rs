//! The fair-share gate in front of placement, and the head-room score that keeps space for the
//! head of the queue. The extender's filter and the simulator call the same [`walk`].
//!
//! **Feasibility.** Every waiting workload is in one of three classes against a [`Supply`]:
//! it [fits now](Fit::Now) in the free GPUs; it [fits later](Fit::Later), once others release
//! (each pod fits some node when that node is empty, and the gang fits the capacity of the
//! nodes it may use); or it [never fits](Fit::Never). A workload that never fits is never
//! ahead of anyone and never reserves GPUs.
//!
//! **Reservation with backfill** ([`walk`]). The queue is walked in order, handing out the free
//! GPUs: each workload that fits now is admitted and its GPUs taken. The first that fits only
//! later holds the *reservation*: the nodes where it will fit soonest (those with the most free
//! GPUs) are kept for it, so the GPUs released there are its first and it cannot starve behind
//! a stream of smaller work. Workloads behind it that fit the other nodes' free GPUs are still
//! admitted (*backfill*), and their pods are kept off the reserved nodes, so backfill never
//! delays the holder and nothing it could not use idles. A workload that never fits reserves
//! nothing and delays no one.
//!
//! A GPU pod whose workload is queued passes only when the walk admits its workload. Otherwise
//! every candidate node is rejected, unresolvably, with one shared reason that names no node
//! (kube-scheduler aggregates it):
//!
//! ```text
//!   rota: waiting for fair share: position 3 of 7 for nvidia.com/gpu; tenant physics holds 12
//!   GPUs, entitled to 8; 2 GPUs free, 14 needed by it and the workloads ahead
//! ```
//!
//! Pods that want no GPU, pods whose workload the view does not know (no API server, or the
//! watch has not delivered it yet) and pods of a workload with nothing queued are not gated:
//! rota must not block what it cannot judge. Admission is per workload, so a gang's pods pass
//! together; the caller records it with [`Workloads::admit`](super::workloads::Workloads::admit).
//!
//! **Head room** (documented rule). Let H head the queue of the pod's primary resource r, with
//! per-pod request g and m = ⌈H's GPUs / g⌉ pods left to place. The nodes where one of H's pods
//! fits are the ready, schedulable nodes with `free(r) ≥ g`. When there are at most m of them
//! (H needs every one), a node among them scores 0 on the `headRoom` component if placing the
//! scored pod would leave `free(r) − request < g`, and every other node scores 1. When nothing is
//! at stake (empty queue, the pod belongs to H, or such nodes are plentiful or absent) the
//! component is left out, so scores are exactly those without it.
//!
//! Must not: mutate the queue (the caller admits under a write lock), or read a clock.

use std::fmt::Write as _;
use std::hash::Hash;
use std::ops::ControlFlow;
use std::sync::Arc;

use super::cluster::ClusterSnapshot;
use super::feasibility::{Demand, Fit, NeverFit, Pool};
use super::model::{GpuNode, GpuPod, WorkloadId};
use super::placement::FilterOutcome;
use super::queue::{FairQueue, QueueEntry};
use super::workloads::counts_capacity;

/// The GPUs a gate walk hands out, and what each waiting workload needs of them.
pub trait Supply<K> {
    /// Where `entry` stands against the GPUs left.
    fn fit(&self, entry: &QueueEntry<K>) -> Fit;
    /// Hands `entry` its GPUs (it was admitted): they are no longer free.
    fn take(&mut self, entry: &QueueEntry<K>);
    /// Sets aside for the reservation holder `entry` the GPUs where it fits soonest: they are
    /// no one else's until it starts.
    fn reserve(&mut self, entry: &QueueEntry<K>);
}

/// What the walk decided for one queued workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Admitted: the free GPUs hold it. `backfill` when a workload ahead holds the
    /// reservation (it uses GPUs outside the reservation).
    Admit {
        /// Admitted behind the reservation holder.
        backfill: bool,
    },
    /// It fits only once others release GPUs, and is the first such: it holds the reservation.
    Reserve,
    /// It fits only later, behind the reservation holder.
    Wait,
    /// It can never fit: skipped, ahead of no one.
    Never(NeverFit),
}

/// Walks `resource`'s queue in order, handing out `supply` (module docs), and tells `visit`
/// each step and the supply left after it; `visit` breaks to stop. O(m log T) plus the
/// supply's work for the m entries visited.
pub fn walk<'q, K, S>(
    queue: &'q FairQueue<K>,
    resource: &str,
    supply: &mut S,
    mut visit: impl FnMut(&'q QueueEntry<K>, Step, &S) -> ControlFlow<()>,
) where
    K: Clone + Eq + Hash + Ord,
    S: Supply<K>,
{
    let mut reserved = false;
    for entry in queue.in_order(resource) {
        let step = match supply.fit(entry) {
            Fit::Now => {
                supply.take(entry);
                Step::Admit { backfill: reserved }
            }
            Fit::Later if !reserved => {
                reserved = true;
                supply.reserve(entry);
                Step::Reserve
            }
            Fit::Later => Step::Wait,
            Fit::Never(why) => Step::Never(why),
        };
        if visit(entry, step, supply).is_break() {
            return;
        }
    }
}

/// One workload's turn, from a [`walk`] up to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    /// What the walk decided for it.
    pub step: Step,
    /// 1-based position among the workloads that can fit (never-fit ones are no one's
    /// obstacle); 0 for a workload that never fits.
    pub position: usize,
    /// Workloads that can fit ahead of it.
    pub ahead: usize,
    /// GPUs they and it need together.
    pub needed: u64,
    /// The reservation holder ahead of it, if any, with its GPUs.
    pub holder: Option<(String, u64)>,
}

/// The turn of `key` in its resource's queue, or `None` when it is not queued.
pub fn turn_of<K, S>(queue: &FairQueue<K>, key: &K, supply: &mut S) -> Option<Turn>
where
    K: Clone + Eq + Hash + Ord + std::fmt::Display,
    S: Supply<K>,
{
    let entry = queue.get(key)?;
    let mut turn = None;
    let (mut ahead, mut needed, mut holder) = (0usize, 0u64, None);
    walk(queue, &entry.resource, supply, |e, step, _| {
        if &e.key == key {
            let position = if matches!(step, Step::Never(_)) {
                0
            } else {
                ahead + 1
            };
            turn = Some(Turn {
                step,
                position,
                ahead,
                needed: needed.saturating_add(e.gpus),
                holder: holder.take(),
            });
            return ControlFlow::Break(());
        }
        match step {
            Step::Never(_) => {}
            Step::Reserve => {
                holder = Some((e.key.to_string(), e.gpus));
                ahead += 1;
                needed = needed.saturating_add(e.gpus);
            }
            _ => {
                ahead += 1;
                needed = needed.saturating_add(e.gpus);
            }
        }
        ControlFlow::Continue(())
    });
    turn
}

/// Why a workload was let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmitReason {
    /// Its turn: the free GPUs hold it and everything ahead that fits now.
    InTurn,
}

/// The gate's answer for one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateVerdict {
    /// Not subject to the gate (see the module docs); placement decides alone.
    NotGated,
    /// Its workload was admitted before: pass.
    Admitted,
    /// Its workload may be admitted now: the caller admits it, then places the pod.
    Admit(AdmitReason),
    /// Its workload may be admitted now as backfill: the caller admits it, then places the
    /// pod on any node but the reserved ones.
    Backfill {
        /// Nodes kept for the reservation holder.
        reserved_nodes: Vec<String>,
        /// The holder, for the reason given on those nodes.
        holder: String,
    },
    /// Not its turn: reject every node with this reason.
    Hold(Arc<str>),
    /// It can never fit: reject every node with this reason; it holds no one up.
    Unplaceable(NeverFit, Arc<str>),
}

/// The GPUs of one resource as the extender's gate hands them out: free GPUs per ready,
/// schedulable node net of the reservations of admitted workloads still binding, and the
/// nodes' allocatable GPUs for "can it ever fit".
#[derive(Clone, Debug)]
pub struct ClusterSupply<'c> {
    cluster: &'c ClusterSnapshot,
    resource: &'c str,
    free: Pool,
    capacity: Pool,
    reserved: Vec<String>,
}

impl<'c> ClusterSupply<'c> {
    /// The supply of `resource`. O(d + a) for d distinct node sizes and a admitted workloads.
    pub fn new(cluster: &'c ClusterSnapshot, resource: &'c str) -> Self {
        let state = cluster.workloads();
        let mut free = state.free_pool(resource);
        for admitted in state.queue().admitted() {
            let Some(w) = state.workload(&admitted.key) else {
                continue;
            };
            let left = w.reserved_gpus();
            if admitted.resource == resource && left > 0 {
                let demand = Demand::new(left, w.per_pod(resource));
                if !free.take(demand) {
                    free.take(Demand::new(left.min(free.total()), 1));
                }
            }
        }
        Self {
            cluster,
            resource,
            free,
            capacity: state.capacity_pool(resource),
            reserved: Vec::new(),
        }
    }

    /// GPUs free for admission.
    pub fn free_gpus(&self) -> u64 {
        self.free.total()
    }

    /// The nodes kept for the reservation holder, once the walk found one.
    pub fn reserved_nodes(&self) -> &[String] {
        &self.reserved
    }

    fn demand(&self, entry: &QueueEntry) -> Demand {
        self.cluster.workloads().demand(entry)
    }
}

impl Supply<WorkloadId> for ClusterSupply<'_> {
    fn fit(&self, entry: &QueueEntry) -> Fit {
        let demand = self.demand(entry);
        if let Err(why) = self.capacity.check(demand) {
            return Fit::Never(why);
        }
        if self.free.fits(demand) {
            Fit::Now
        } else {
            Fit::Later
        }
    }

    fn take(&mut self, entry: &QueueEntry) {
        let demand = self.demand(entry);
        self.free.take(demand);
    }

    /// Keeps for the holder the nodes that can hold one of its pods, most free GPUs first
    /// (ties: name), until they hold its GPUs or one node per pod: O(nodes log nodes), once
    /// per walk.
    fn reserve(&mut self, entry: &QueueEntry) {
        let demand = self.demand(entry);
        let r = self.resource;
        let mut nodes: Vec<&GpuNode> = (self.cluster.nodes())
            .filter(|n| counts_capacity(n))
            .filter(|n| n.allocatable.get(r).copied().unwrap_or(0) >= demand.per_pod)
            .filter(|n| n.free(r) > 0)
            .collect();
        nodes.sort_unstable_by(|a, b| b.free(r).cmp(&a.free(r)).then_with(|| a.name.cmp(&b.name)));
        let pods = demand.gpus.div_ceil(demand.per_pod);
        let mut kept = 0u64;
        for node in nodes {
            if kept >= demand.gpus || self.reserved.len() as u64 >= pods {
                break;
            }
            kept = kept.saturating_add(node.free(r));
            self.free.remove(node.free(r));
            self.reserved.push(node.name.clone());
        }
    }
}

/// Judges `pod` against the queue. `enabled` is `gate.enabled` from the config.
///
/// The walk starts from the free GPUs net of the reservations of admitted workloads that are
/// still binding, so the next workload cannot take a gang's GPUs between the binds of its pods.
pub fn check(cluster: &ClusterSnapshot, pod: &GpuPod, enabled: bool) -> GateVerdict {
    if !enabled || !pod.wants_gpus() {
        return GateVerdict::NotGated;
    }
    let state = cluster.workloads();
    if state.workload(&pod.workload).is_none() {
        return GateVerdict::NotGated;
    }
    let queue = state.queue();
    if queue.is_admitted(&pod.workload) {
        return GateVerdict::Admitted;
    }
    let Some(entry) = queue.get(&pod.workload) else {
        return GateVerdict::NotGated;
    };
    // Free GPUs net of reservations from the running totals: a burst of one-GPU pods is
    // admitted without building the supply (which walks the admitted workloads).
    let free = state.admissible(&entry.resource);
    debug_assert_eq!(
        free,
        ClusterSupply::new(cluster, &entry.resource).free_gpus()
    );
    if everything_fits(queue, &entry.resource, free) {
        return GateVerdict::Admit(AdmitReason::InTurn);
    }
    let mut supply = ClusterSupply::new(cluster, &entry.resource);
    let Some(turn) = turn_of(queue, &pod.workload, &mut supply) else {
        return GateVerdict::NotGated;
    };
    match turn.step {
        Step::Admit { backfill: false } => GateVerdict::Admit(AdmitReason::InTurn),
        Step::Admit { backfill: true } => GateVerdict::Backfill {
            reserved_nodes: supply.reserved_nodes().to_vec(),
            holder: turn.holder.map(|(w, _)| w).unwrap_or_default(),
        },
        Step::Never(why) => {
            let reason = unplaceable_reason(entry, &why);
            GateVerdict::Unplaceable(why, reason)
        }
        Step::Reserve | Step::Wait => {
            let total = queue.len_for(&entry.resource);
            GateVerdict::Hold(hold_reason(cluster, entry, &turn, total, free))
        }
    }
}

/// Whether the walk would admit every queued workload of `resource` without looking: each
/// asks for one GPU (a one-GPU demand fits any pool with a free GPU) and together they need
/// no more than the `free` GPUs, so each fits now in turn, none reserves and none can never
/// fit. Makes a burst of one-GPU pods O(1) per request instead of a walk to the pod's place.
fn everything_fits(queue: &FairQueue<WorkloadId>, resource: &str, free: u64) -> bool {
    let (gpus, multi) = queue.demand_of(resource);
    multi == 0 && gpus <= free
}

/// The rejection reason of a workload that can never fit.
pub fn unplaceable_reason(entry: &QueueEntry, why: &NeverFit) -> Arc<str> {
    format!(
        "rota: can never fit: {why} ({}); it holds no one up. Lower its request, or add nodes that can hold it",
        entry.resource
    )
    .into()
}

/// The shared rejection reason (module docs).
fn hold_reason(
    cluster: &ClusterSnapshot,
    entry: &QueueEntry,
    turn: &Turn,
    total: usize,
    free: u64,
) -> Arc<str> {
    let state = cluster.workloads();
    let held = state.held(&entry.tenant, &entry.resource);
    let position = turn.position;
    let mut reason = format!(
        "rota: waiting for fair share: position {position} of {total} for {}; tenant {} holds {held} GPUs, ",
        entry.resource, entry.tenant
    );
    match state.entitled(&entry.tenant, &entry.resource) {
        Some(e) => {
            let _ = write!(reason, "entitled to {}", gpus(e));
        }
        None => reason.push_str("entitlement not computed yet"),
    }
    match (&turn.step, &turn.holder) {
        (Step::Reserve, _) => {
            let _ = write!(
                reason,
                "; {free} GPUs free, it needs {}: it holds the reservation, GPUs released from now on are its first",
                entry.gpus
            );
        }
        (_, Some((holder, gpus))) => {
            let _ = write!(
                reason,
                "; {free} GPUs free, {} needed by it and the workloads ahead; {holder} holds the reservation for {gpus}",
                turn.needed
            );
        }
        _ => {
            let _ = write!(
                reason,
                "; {free} GPUs free, {} needed by it and the workloads ahead",
                turn.needed
            );
        }
    }
    reason.into()
}

/// A filter answer that rejects every candidate, unresolvably, with one shared reason.
pub fn reject_all<'n>(candidates: &[&'n str], reason: Arc<str>) -> FilterOutcome<'n> {
    FilterOutcome {
        passed: Vec::new(),
        unresolvable: candidates.iter().map(|&n| (n, reason.clone())).collect(),
        failed: Vec::new(),
    }
}

/// Moves the passed nodes among `reserved` to the failed ones with `reason` (a node kept for
/// the reservation holder; it may pass for other pods, so it is resolvable).
pub fn reject_nodes<'n>(
    mut outcome: FilterOutcome<'n>,
    reserved: &[String],
    reason: Arc<str>,
) -> FilterOutcome<'n> {
    let (kept, passed): (Vec<&'n str>, Vec<&'n str>) =
        (outcome.passed.iter()).partition(|n| reserved.iter().any(|r| r == *n));
    outcome.passed = passed;
    outcome
        .failed
        .extend(kept.into_iter().map(|n| (n, reason.clone())));
    outcome
}

/// `8` for whole numbers, `7.5` otherwise: entitlements are fractional, GPUs are not.
pub fn gpus(x: f64) -> String {
    if (x - x.round()).abs() < 0.05 {
        format!("{:.0}", x.round())
    } else {
        format!("{x:.1}")
    }
}

/// The primary resource of a pod: the one it requests most of (ties: the smaller name).
pub fn primary_resource(pod: &GpuPod) -> Option<(&str, u64)> {
    pod.requests
        .iter()
        .filter(|(_, &n)| n > 0)
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(r, &n)| (r.as_str(), n))
}

/// What the head of the queue needs kept free, for scoring one pod (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadRoom {
    resource: String,
    /// GPUs one of the head's pods needs on one node.
    per_pod: u64,
    /// The scored pod's request of `resource`.
    request: u64,
}

impl HeadRoom {
    /// The head room at stake for scoring `pod`, or `None` when nothing is (the component is
    /// then left out). O(d) for d distinct free-GPU counts, independent of the cluster's size.
    pub fn for_pod(cluster: &ClusterSnapshot, pod: &GpuPod) -> Option<Self> {
        let (resource, request) = primary_resource(pod)?;
        let state = cluster.workloads();
        let head = state.queue().head(resource)?;
        if head.key == pod.workload {
            return None;
        }
        let per_pod = state
            .workload(&head.key)
            .map_or(head.gpus, |w| w.per_pod(resource))
            .max(1);
        let pods_left = head.gpus.div_ceil(per_pod).max(1);
        // Read from the free-GPU histogram the watch events keep, not a pass over the nodes.
        let fitting = state.nodes_with_free(resource, per_pod);
        if fitting == 0 || fitting > pods_left {
            return None;
        }
        Some(Self {
            resource: resource.to_owned(),
            per_pod,
            request,
        })
    }

    /// The resource the head of the queue waits for.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The `headRoom` component of `node`: 0 when placing the pod there would take a node the
    /// head needs, else 1.
    pub fn score(&self, node: &GpuNode) -> f64 {
        self.score_free(node.free(&self.resource), counts_capacity(node))
    }

    /// [`score`](Self::score) from the node's free GPUs of [`resource`](Self::resource) and
    /// whether it counts as capacity (ready and schedulable).
    pub fn score_free(&self, free: u64, counts_capacity: bool) -> f64 {
        let protected = counts_capacity && free >= self.per_pod;
        if protected && free.saturating_sub(self.request) < self.per_pod {
            0.0
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing;

    /// The walk's own step for `pod`.
    fn walked(c: &ClusterSnapshot, pod: &GpuPod) -> Step {
        let queue = c.workloads().queue();
        let entry = queue.get(&pod.workload).expect("queued");
        let mut supply = ClusterSupply::new(c, &entry.resource);
        turn_of(queue, &pod.workload, &mut supply)
            .expect("a turn")
            .step
    }

    #[test]
    fn one_gpu_queues_that_fit_are_admitted_as_the_walk_admits_them() {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(testing::node("n1", 4));
        for i in 0..4 {
            c.upsert_pod(testing::pod(&format!("p{i}"), None, 1));
        }
        let (resource, free) = ("nvidia.com/gpu", 4);
        assert!(everything_fits(c.workloads().queue(), resource, free));
        for i in 0..4 {
            let pod = c.pod(&format!("p{i}")).expect("stored").clone();
            assert_eq!(
                check(&c, &pod, true),
                GateVerdict::Admit(AdmitReason::InTurn)
            );
            assert_eq!(walked(&c, &pod), Step::Admit { backfill: false });
        }
        // One more than the free GPUs, or a two-GPU workload: the walk decides.
        c.upsert_pod(testing::pod("p4", None, 1));
        assert!(!everything_fits(c.workloads().queue(), resource, free));
        c.remove_pod("p4");
        c.upsert_pod(testing::pod("two", None, 2));
        assert!(!everything_fits(c.workloads().queue(), resource, 8));
        c.remove_pod("two");
        assert!(everything_fits(c.workloads().queue(), resource, free));
    }

    #[test]
    fn gpus_are_printed_whole_when_whole() {
        assert_eq!(gpus(8.0), "8");
        assert_eq!(gpus(7.98), "8");
        assert_eq!(gpus(7.5), "7.5");
        assert_eq!(gpus(0.0), "0");
    }

    #[test]
    fn primary_resource_is_the_largest_request() {
        let pod = GpuPod {
            requests: [
                ("b".to_string(), 2),
                ("a".to_string(), 2),
                ("c".to_string(), 1),
            ]
            .into(),
            ..GpuPod::default()
        };
        assert_eq!(primary_resource(&pod), Some(("a", 2)));
        assert_eq!(primary_resource(&GpuPod::default()), None);
    }
}
