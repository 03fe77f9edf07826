//! The fair-share queue of pending GPU workloads, and the gate that decides whose turn it is.
//!
//! One priority queue per GPU resource (`nvidia.com/gpu`, a passthrough name, …). A workload is
//! queued whole (a gang of pods with their total GPU demand), under the one resource it requests
//! (callers pick the resource of its largest request when it asks for several). Order, first
//! served first:
//!
//! 1. higher PriorityClass value;
//! 2. lower tenant [`Standing`] (`held / entitled`: further below entitlement first);
//! 3. earlier arrival;
//! 4. smaller key (so the order is total and deterministic).
//!
//! ```text
//!   entries: key ─▶ QueueEntry            tenants: name ─▶ (standing, {keys})
//!   queues:  resource ─▶ PriorityQueue<key, Priority>   (heap + index map)
//! ```
//!
//! Costs: push, remove, head, pop O(log n); a tenant's standing change re-prioritises its k
//! entries in O(k log n). `position`, `ahead_of` and [`admit`] scan the resource's queue, O(n):
//! fine for explain and the per-pod gate at the 10⁵ scale, and they never allocate per entry
//! except `ahead_of`.
//!
//! Must not: decide placement (the filter does), or read the clock (arrival is an argument).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash};

use priority_queue::PriorityQueue;
use rustc_hash::{FxHashMap, FxHashSet, FxHasher};

use super::fairshare::Standing;
use super::model::{GpuCounts, WorkloadId};

/// The default key: a workload's identity. The simulator may use a cheaper key (any
/// `Clone + Eq + Hash + Ord` type).
pub type WorkloadKey = WorkloadId;

/// One pending workload.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueEntry<K = WorkloadKey> {
    /// The workload.
    pub key: K,
    /// Tenant charged for it.
    pub tenant: String,
    /// The GPU resource it waits for.
    pub resource: String,
    /// GPUs of `resource` summed over all its pods (the gang size).
    pub gpus: u64,
    /// PriorityClass value of its pods (higher first).
    pub priority_class: i32,
    /// When it started waiting, in seconds.
    pub arrival: f64,
}

/// The heap priority of an entry. `Ord` is "served first is greater", as the heap pops the
/// greatest: see the module docs for the order.
#[derive(Clone, Debug)]
pub struct Priority<K = WorkloadKey> {
    /// PriorityClass value.
    pub priority_class: i32,
    /// The tenant's standing when last (re)prioritised.
    pub standing: Standing,
    /// Arrival time in seconds.
    pub arrival: f64,
    /// The key, for a deterministic total order.
    pub key: K,
    /// The entry's GPUs: no part of the order, carried so the gate's O(n) scan does no lookups.
    pub gpus: u64,
}

impl<K: Ord> Ord for Priority<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority_class
            .cmp(&other.priority_class)
            .then_with(|| other.standing.cmp(&self.standing))
            .then_with(|| other.arrival.total_cmp(&self.arrival))
            .then_with(|| other.key.cmp(&self.key))
    }
}
impl<K: Ord> PartialOrd for Priority<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> PartialEq for Priority<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord> Eq for Priority<K> {}

type Heap<K> = PriorityQueue<K, Priority<K>, BuildHasherDefault<FxHasher>>;

#[derive(Clone, Debug)]
struct TenantIndex<K> {
    standing: Standing,
    keys: FxHashSet<K>,
}

impl<K> Default for TenantIndex<K> {
    fn default() -> Self {
        Self {
            standing: Standing::default(),
            keys: FxHashSet::default(),
        }
    }
}

/// Pending GPU workloads in fair-share order, per resource, plus the set admitted by the gate
/// whose pods are not all bound yet.
#[derive(Clone, Debug)]
pub struct FairQueue<K = WorkloadKey> {
    entries: FxHashMap<K, QueueEntry<K>>,
    queues: FxHashMap<String, Heap<K>>,
    tenants: FxHashMap<String, TenantIndex<K>>,
    admitted: FxHashMap<K, QueueEntry<K>>,
}

impl<K> Default for FairQueue<K> {
    fn default() -> Self {
        Self {
            entries: FxHashMap::default(),
            queues: FxHashMap::default(),
            tenants: FxHashMap::default(),
            admitted: FxHashMap::default(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> FairQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a workload, replacing any pending or admitted entry with the same key. Its
    /// priority uses its tenant's current standing (0, "owed everything", for a tenant never
    /// given one). O(log n).
    pub fn push(&mut self, entry: QueueEntry<K>) -> Option<QueueEntry<K>> {
        let old = self.remove(&entry.key);
        let tenant = self.tenants.entry(entry.tenant.clone()).or_default();
        tenant.keys.insert(entry.key.clone());
        let priority = Priority {
            priority_class: entry.priority_class,
            standing: tenant.standing,
            arrival: entry.arrival,
            key: entry.key.clone(),
            gpus: entry.gpus,
        };
        self.queues
            .entry(entry.resource.clone())
            .or_default()
            .push(entry.key.clone(), priority);
        self.entries.insert(entry.key.clone(), entry);
        old
    }

    /// Removes a pending or admitted workload (it was bound, deleted or suspended). O(log n).
    pub fn remove(&mut self, key: &K) -> Option<QueueEntry<K>> {
        if let Some(entry) = self.admitted.remove(key) {
            return Some(entry);
        }
        let entry = self.entries.remove(key)?;
        if let Some(queue) = self.queues.get_mut(&entry.resource) {
            queue.remove(key);
        }
        self.forget_tenant_key(&entry.tenant, key);
        Some(entry)
    }

    /// Sets a tenant's standing and re-prioritises its pending entries: O(k log n) for its k
    /// entries, nothing if the standing did not change.
    pub fn set_standing(&mut self, tenant: &str, standing: Standing) {
        if !self.tenants.contains_key(tenant) {
            self.tenants
                .insert(tenant.to_owned(), TenantIndex::default());
        }
        let Some(index) = self.tenants.get_mut(tenant) else {
            return;
        };
        if index.standing == standing {
            return;
        }
        index.standing = standing;
        for key in &index.keys {
            let Some(entry) = self.entries.get(key) else {
                continue;
            };
            if let Some(queue) = self.queues.get_mut(&entry.resource) {
                queue.change_priority_by(key, |p| p.standing = standing);
            }
        }
    }

    /// The standing the queue uses for `tenant` (0 if never set).
    pub fn standing(&self, tenant: &str) -> Standing {
        self.tenants
            .get(tenant)
            .map_or_else(Standing::default, |t| t.standing)
    }

    /// The pending entry of `key`.
    pub fn get(&self, key: &K) -> Option<&QueueEntry<K>> {
        self.entries.get(key)
    }

    /// Pending workloads over all resources.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No pending workload.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pending workloads waiting for `resource`.
    pub fn len_for(&self, resource: &str) -> usize {
        self.queues.get(resource).map_or(0, Heap::len)
    }

    /// Resources with a queue (possibly empty), in no particular order.
    pub fn resources(&self) -> impl Iterator<Item = &str> {
        self.queues.keys().map(String::as_str)
    }

    /// The workload served next for `resource`. O(1).
    pub fn head(&self, resource: &str) -> Option<&QueueEntry<K>> {
        let (key, _) = self.queues.get(resource)?.peek()?;
        self.entries.get(key)
    }

    /// Removes and returns the head for `resource` (the simulator's dispatch). O(log n).
    pub fn pop(&mut self, resource: &str) -> Option<QueueEntry<K>> {
        let (key, _) = self.queues.get_mut(resource)?.pop()?;
        let entry = self.entries.remove(&key)?;
        self.forget_tenant_key(&entry.tenant, &key);
        Some(entry)
    }

    /// `(position, total)` of a pending workload in its resource's queue; position 1 is the
    /// head. O(n) scan of that queue, meant for explain and the gate.
    pub fn position(&self, key: &K) -> Option<(usize, usize)> {
        let (queue, mine) = self.locate(key)?;
        let ahead = queue.iter().filter(|(_, p)| *p > mine).count();
        Some((ahead + 1, queue.len()))
    }

    /// The workloads served before `key`, in order (empty if `key` is not pending).
    /// O(n + m log m) for m of them.
    pub fn ahead_of(&self, key: &K) -> impl Iterator<Item = &QueueEntry<K>> {
        let mut ahead: Vec<(&Priority<K>, &K)> = match self.locate(key) {
            Some((queue, mine)) => queue
                .iter()
                .filter(|(_, p)| *p > mine)
                .map(|(k, p)| (p, k))
                .collect(),
            None => Vec::new(),
        };
        ahead.sort_unstable_by(|a, b| b.0.cmp(a.0));
        ahead.into_iter().filter_map(|(_, k)| self.entries.get(k))
    }

    /// Every pending workload of `resource`, in order. O(n log n); for explain and tests.
    pub fn in_order(&self, resource: &str) -> Vec<&QueueEntry<K>> {
        let Some(queue) = self.queues.get(resource) else {
            return Vec::new();
        };
        let mut all: Vec<(&Priority<K>, &K)> = queue.iter().map(|(k, p)| (p, k)).collect();
        all.sort_unstable_by(|a, b| b.0.cmp(a.0));
        all.into_iter()
            .filter_map(|(_, k)| self.entries.get(k))
            .collect()
    }

    /// Moves a pending workload to the admitted set after the gate let it through, so that all
    /// its pods pass ([`admit`] answers `AlreadyAdmitted`) even as the first ones bind and use up
    /// free GPUs. Call [`remove`](Self::remove) once its pods are bound. False if not pending.
    pub fn mark_admitted(&mut self, key: &K) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        if let Some(queue) = self.queues.get_mut(&entry.resource) {
            queue.remove(key);
        }
        self.forget_tenant_key(&entry.tenant, key);
        self.admitted.insert(key.clone(), entry);
        true
    }

    /// Whether `key` was admitted and not yet removed.
    pub fn is_admitted(&self, key: &K) -> bool {
        self.admitted.contains_key(key)
    }

    /// Admitted workloads not yet removed. The caller subtracts the GPUs of their unbound pods
    /// from the free counts it passes to [`admit`].
    pub fn admitted(&self) -> impl Iterator<Item = &QueueEntry<K>> {
        self.admitted.values()
    }

    fn locate(&self, key: &K) -> Option<(&Heap<K>, &Priority<K>)> {
        let entry = self.entries.get(key)?;
        let queue = self.queues.get(&entry.resource)?;
        let mine = queue.get_priority(key)?;
        Some((queue, mine))
    }

    fn forget_tenant_key(&mut self, tenant: &str, key: &K) {
        if let Some(index) = self.tenants.get_mut(tenant) {
            index.keys.remove(key);
        }
    }
}

/// Why a workload was let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmitReason {
    /// It heads its resource's queue.
    Head,
    /// Free GPUs cover it and everything ahead of it, so it delays no one.
    Backfill,
    /// It was admitted before (its other pods are binding).
    AlreadyAdmitted,
}

/// The gate's answer for one workload (and so for every pod of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Its pods may be placed.
    Admit(AdmitReason),
    /// Not its turn.
    Wait {
        /// 1-based position in its resource's queue.
        position: usize,
        /// Workloads in that queue.
        total: usize,
        /// GPUs of its resource free now.
        free: u64,
        /// GPUs it and the workloads ahead of it need together.
        needed: u64,
    },
    /// The workload is neither pending nor admitted; the caller must queue it first.
    NotQueued,
}

impl fmt::Display for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admission::Admit(AdmitReason::Head) => write!(f, "admitted: head of the queue"),
            Admission::Admit(AdmitReason::Backfill) => {
                write!(f, "admitted: backfill, free GPUs cover every workload ahead")
            }
            Admission::Admit(AdmitReason::AlreadyAdmitted) => write!(f, "admitted earlier"),
            Admission::Wait {
                position,
                total,
                free,
                needed,
            } => write!(
                f,
                "waiting: position {position} of {total}; {free} GPUs free, {needed} needed by it and the workloads ahead"
            ),
            Admission::NotQueued => write!(f, "not queued"),
        }
    }
}

/// The fair-share gate: admits `key` when it heads its resource's queue, or when the free GPUs
/// of that resource (`free`, already net of GPUs reserved for admitted workloads) cover it *and*
/// every workload ahead of it, so backfill never delays anyone ahead. A gang passes whole or not
/// at all: the queue holds workloads with their total demand. O(n) for a non-head workload.
pub fn admit<K: Clone + Eq + Hash + Ord>(
    queue: &FairQueue<K>,
    key: &K,
    free: &GpuCounts,
) -> Admission {
    if queue.is_admitted(key) {
        return Admission::Admit(AdmitReason::AlreadyAdmitted);
    }
    let Some((heap, mine)) = queue.locate(key) else {
        return Admission::NotQueued;
    };
    if heap.peek().is_some_and(|(k, _)| k == key) {
        return Admission::Admit(AdmitReason::Head);
    }
    let Some(entry) = queue.get(key) else {
        return Admission::NotQueued;
    };
    let mut ahead = 0usize;
    let mut needed = entry.gpus;
    for (_, p) in heap.iter() {
        if p > mine {
            ahead += 1;
            needed = needed.saturating_add(p.gpus);
        }
    }
    let free = free.get(&entry.resource).copied().unwrap_or(0);
    if needed <= free {
        Admission::Admit(AdmitReason::Backfill)
    } else {
        Admission::Wait {
            position: ahead + 1,
            total: heap.len(),
            free,
            needed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: u32, tenant: &str, gpus: u64, class: i32, arrival: f64) -> QueueEntry<u32> {
        QueueEntry {
            key,
            tenant: tenant.into(),
            resource: "gpu".into(),
            gpus,
            priority_class: class,
            arrival,
        }
    }

    #[test]
    fn replace_moves_between_resources() {
        let mut q = FairQueue::new();
        q.push(entry(1, "a", 1, 0, 0.0));
        let mut moved = entry(1, "b", 2, 0, 0.0);
        moved.resource = "vm".into();
        assert!(q.push(moved).is_some());
        assert_eq!(q.len(), 1);
        assert_eq!(q.len_for("gpu"), 0);
        assert_eq!(q.head("vm").map(|e| e.tenant.as_str()), Some("b"));
        // The old tenant no longer re-prioritises the entry.
        q.set_standing("a", Standing::new(5.0));
        assert_eq!(q.position(&1), Some((1, 1)));
    }

    #[test]
    fn pop_and_remove_forget_everything() {
        let mut q = FairQueue::new();
        q.push(entry(1, "a", 1, 0, 0.0));
        q.push(entry(2, "a", 1, 0, 1.0));
        assert_eq!(q.pop("gpu").map(|e| e.key), Some(1));
        assert_eq!(q.remove(&2).map(|e| e.key), Some(2));
        assert!(q.is_empty());
        assert_eq!(q.pop("gpu"), None);
        assert_eq!(q.position(&2), None);
        assert_eq!(admit(&q, &2, &GpuCounts::new()), Admission::NotQueued);
    }

    #[test]
    fn wait_message_names_position() {
        let mut q = FairQueue::new();
        q.push(entry(1, "a", 4, 0, 0.0));
        q.push(entry(2, "b", 2, 0, 1.0));
        let free = GpuCounts::from([("gpu".to_string(), 3)]);
        let answer = admit(&q, &2, &free);
        assert_eq!(
            answer.to_string(),
            "waiting: position 2 of 2; 3 GPUs free, 6 needed by it and the workloads ahead"
        );
    }
}
