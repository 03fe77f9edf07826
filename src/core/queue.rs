//! The fair-share queue of pending GPU workloads: the one queue the extender's gate, the
//! rotation loop and the simulator all read.
//!
//! One queue per GPU resource (`nvidia.com/gpu`, a passthrough name, …). A workload is queued
//! whole (a gang of pods with their total GPU demand), under the one resource it requests
//! (callers pick the resource of its largest request when it asks for several). Order, first
//! served first:
//!
//! 1. higher PriorityClass value;
//! 2. lower tenant [`Standing`] (`held / entitled`: further below entitlement first);
//! 3. inside a tenant, [`WithinTenant`]: least attained service first (default), or arrival;
//! 4. earlier arrival, then smaller key (so the order is total and deterministic).
//!
//! ```text
//!   entries:   key ─▶ QueueEntry
//!   resources: resource ─▶ tenants: tenant ─▶ BTreeSet<Slot>        (the tenant's own order)
//!                          heads:   PriorityQueue<tenant, TenantKey>  (tenants by their head)
//! ```
//!
//! Standing is the same for every entry of a tenant, so a tenant's entries keep their order
//! when it changes: only the tenant's key in each resource's heap of tenants moves.
//! Costs: push, remove, pop O(log n + log T); a standing change O(R log T) for R resources;
//! head O(1). [`FairQueue::in_order`] merges the tenants lazily, O(T + m log T) for the first m
//! entries: the gate walks only as far as it must.
//!
//! Must not: decide placement or admission (`core::gate` does), or read the clock (arrival
//! and attained service are arguments).

use std::cmp::Ordering;
use std::collections::{btree_set, BTreeSet, BinaryHeap};
use std::hash::{BuildHasherDefault, Hash};

use priority_queue::PriorityQueue;
use rustc_hash::{FxHashMap, FxHasher};

use super::fairshare::Standing;
use super::model::WorkloadId;

/// The default key: a workload's identity. The simulator may use a cheaper key (any
/// `Clone + Eq + Hash + Ord` type).
pub type WorkloadKey = WorkloadId;

/// The order of a tenant's own workloads (`queue.withinTenant` in the config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WithinTenant {
    /// Least attained service first (GPU-seconds the workload already received; new work has
    /// none): short work finishes early, as in Tiresias, without changing the tenant's share.
    #[default]
    Las,
    /// First come, first served.
    Fifo,
}

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
    /// GPU-seconds it received before (a workload rotated out and waiting to resume); 0 for
    /// new work.
    pub attained: f64,
}

/// An entry's place inside its tenant: `Ord` is "served first is smaller".
#[derive(Clone, Debug)]
struct Slot<K> {
    class: i32,
    rank: f64,
    arrival: f64,
    key: K,
}

impl<K: Ord> Slot<K> {
    fn of(entry: &QueueEntry<K>, within: WithinTenant) -> Self
    where
        K: Clone,
    {
        let rank = match within {
            WithinTenant::Las if entry.attained > 0.0 => entry.attained,
            WithinTenant::Las => 0.0,
            WithinTenant::Fifo => entry.arrival,
        };
        Slot {
            class: entry.priority_class,
            rank,
            arrival: entry.arrival,
            key: entry.key.clone(),
        }
    }
}

impl<K: Ord> Ord for Slot<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .class
            .cmp(&self.class)
            .then_with(|| self.rank.total_cmp(&other.rank))
            .then_with(|| self.arrival.total_cmp(&other.arrival))
            .then_with(|| self.key.cmp(&other.key))
    }
}
impl<K: Ord> PartialOrd for Slot<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> PartialEq for Slot<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord> Eq for Slot<K> {}

/// The queue's order over entries of any tenants: `Less` when `a` is served first.
fn served_first<K: Ord>(a: &Slot<K>, sa: Standing, b: &Slot<K>, sb: Standing) -> Ordering {
    b.class
        .cmp(&a.class)
        .then_with(|| sa.cmp(&sb))
        .then_with(|| a.cmp(b))
}

/// A tenant's key in a resource's heap of tenants: its head and standing. `Ord` is "served
/// first is greater", as the heap pops the greatest.
#[derive(Clone, Debug)]
struct TenantKey<K> {
    head: Slot<K>,
    standing: Standing,
}

impl<K: Ord> Ord for TenantKey<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        served_first(&other.head, other.standing, &self.head, self.standing)
    }
}
impl<K: Ord> PartialOrd for TenantKey<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> PartialEq for TenantKey<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord> Eq for TenantKey<K> {}

type Heads<K> = PriorityQueue<String, TenantKey<K>, BuildHasherDefault<FxHasher>>;

/// One tenant's entries of one resource, in its own order, with its standing.
#[derive(Clone, Debug)]
struct Own<K> {
    slots: BTreeSet<Slot<K>>,
    standing: Standing,
}

/// One resource's queue: each tenant's entries in its own order, tenants by their heads.
#[derive(Clone, Debug)]
struct ResourceQueue<K> {
    tenants: FxHashMap<String, Own<K>>,
    heads: Heads<K>,
    len: usize,
    /// GPUs of all entries (saturating) and how many entries ask for more than one: the
    /// gate's O(1) answer when everything queued fits ([`FairQueue::demand_of`]).
    gpus: u64,
    multi: usize,
}

impl<K: Ord> Default for ResourceQueue<K> {
    fn default() -> Self {
        Self {
            tenants: FxHashMap::default(),
            heads: Heads::default(),
            len: 0,
            gpus: 0,
            multi: 0,
        }
    }
}

impl<K: Clone + Ord> ResourceQueue<K> {
    /// Re-keys `tenant` in the heap after its entries or standing changed.
    fn rekey(&mut self, tenant: &str) {
        match self
            .tenants
            .get(tenant)
            .and_then(|o| Some((o.slots.first()?, o.standing)))
        {
            Some((head, standing)) => {
                let key = TenantKey {
                    head: head.clone(),
                    standing,
                };
                if self.heads.change_priority(tenant, key.clone()).is_none() {
                    self.heads.push(tenant.to_owned(), key);
                }
            }
            None => {
                self.tenants.remove(tenant);
                self.heads.remove(tenant);
            }
        }
    }
}

/// Pending GPU workloads in fair-share order, per resource, plus the set admitted by the gate
/// whose pods are not all bound yet.
#[derive(Clone, Debug)]
pub struct FairQueue<K = WorkloadKey> {
    within: WithinTenant,
    entries: FxHashMap<K, QueueEntry<K>>,
    resources: FxHashMap<String, ResourceQueue<K>>,
    standings: FxHashMap<String, Standing>,
    admitted: FxHashMap<K, QueueEntry<K>>,
}

impl<K> Default for FairQueue<K> {
    fn default() -> Self {
        Self {
            within: WithinTenant::default(),
            entries: FxHashMap::default(),
            resources: FxHashMap::default(),
            standings: FxHashMap::default(),
            admitted: FxHashMap::default(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> FairQueue<K> {
    /// An empty queue with the default order inside tenants ([`WithinTenant::Las`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty queue that orders each tenant's workloads by `within`.
    pub fn with_order(within: WithinTenant) -> Self {
        Self {
            within,
            ..Self::default()
        }
    }

    /// The order inside tenants.
    pub fn within_tenant(&self) -> WithinTenant {
        self.within
    }

    /// Queues a workload, replacing any pending or admitted entry with the same key. Its
    /// place uses its tenant's current standing (0, "owed everything", for a tenant never
    /// given one). O(log n + log T).
    pub fn push(&mut self, entry: QueueEntry<K>) -> Option<QueueEntry<K>> {
        let old = self.remove(&entry.key);
        let standing = self.standing(&entry.tenant);
        let queue = match self.resources.get_mut(&entry.resource) {
            Some(q) => q,
            None => self.resources.entry(entry.resource.clone()).or_default(),
        };
        let own = match queue.tenants.get_mut(&entry.tenant) {
            Some(own) => own,
            None => queue.tenants.entry(entry.tenant.clone()).or_insert(Own {
                slots: BTreeSet::new(),
                standing,
            }),
        };
        if own.slots.insert(Slot::of(&entry, self.within)) {
            queue.len += 1;
            queue.gpus = queue.gpus.saturating_add(entry.gpus);
            queue.multi += usize::from(entry.gpus > 1);
        }
        queue.rekey(&entry.tenant);
        self.entries.insert(entry.key.clone(), entry);
        old
    }

    /// Removes a pending or admitted workload (it was bound, deleted or suspended).
    /// O(log n + log T).
    pub fn remove(&mut self, key: &K) -> Option<QueueEntry<K>> {
        if let Some(entry) = self.admitted.remove(key) {
            return Some(entry);
        }
        let entry = self.entries.remove(key)?;
        self.unlink(&entry);
        Some(entry)
    }

    /// Sets a tenant's standing: O(R log T), whatever the number of its entries.
    pub fn set_standing(&mut self, tenant: &str, standing: Standing) {
        match self.standings.get_mut(tenant) {
            Some(s) if *s == standing => return,
            Some(s) => *s = standing,
            None => {
                self.standings.insert(tenant.to_owned(), standing);
            }
        }
        for queue in self.resources.values_mut() {
            if let Some(own) = queue.tenants.get_mut(tenant) {
                own.standing = standing;
                queue.rekey(tenant);
            }
        }
    }

    /// The standing the queue uses for `tenant` (0 if never set).
    pub fn standing(&self, tenant: &str) -> Standing {
        self.standings.get(tenant).copied().unwrap_or_default()
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
        self.resources.get(resource).map_or(0, |q| q.len)
    }

    /// `(GPUs of all entries, entries asking for more than one GPU)` of `resource`'s queue.
    /// O(1).
    pub fn demand_of(&self, resource: &str) -> (u64, usize) {
        self.resources
            .get(resource)
            .map_or((0, 0), |q| (q.gpus, q.multi))
    }

    /// Resources with a queue (possibly empty), in no particular order.
    pub fn resources(&self) -> impl Iterator<Item = &str> {
        self.resources.keys().map(String::as_str)
    }

    /// The workload served next for `resource`. O(1).
    pub fn head(&self, resource: &str) -> Option<&QueueEntry<K>> {
        let (_, key) = self.resources.get(resource)?.heads.peek()?;
        self.entries.get(&key.head.key)
    }

    /// Removes and returns the head for `resource`. O(log n + log T).
    pub fn pop(&mut self, resource: &str) -> Option<QueueEntry<K>> {
        let key = self.head(resource)?.key.clone();
        self.remove(&key)
    }

    /// Every pending workload of `resource`, lazily in order: the first m cost
    /// O(T + m log T).
    pub fn in_order<'q>(&'q self, resource: &str) -> InOrder<'q, K> {
        let mut cursors = BinaryHeap::new();
        if let Some(queue) = self.resources.get(resource) {
            for own in queue.tenants.values() {
                let mut iter = own.slots.iter();
                if let Some(head) = iter.next() {
                    cursors.push(Cursor {
                        head,
                        standing: own.standing,
                        rest: iter,
                    });
                }
            }
        }
        InOrder {
            entries: &self.entries,
            cursors,
        }
    }

    /// `(position, total)` of a pending workload in its resource's queue; position 1 is the
    /// head. O(position · log T): for explain and tests.
    pub fn position(&self, key: &K) -> Option<(usize, usize)> {
        let entry = self.entries.get(key)?;
        let position = self.in_order(&entry.resource).position(|e| &e.key == key)?;
        Some((position + 1, self.len_for(&entry.resource)))
    }

    /// The workloads served before `key`, in order (empty if `key` is not pending).
    pub fn ahead_of<'q>(&'q self, key: &'q K) -> impl Iterator<Item = &'q QueueEntry<K>> {
        let resource = self.entries.get(key).map_or("", |e| e.resource.as_str());
        let pending = self.entries.contains_key(key);
        self.in_order(resource)
            .take_while(move |e| pending && &e.key != key)
    }

    /// Moves a pending workload to the admitted set after the gate let it through, so that all
    /// its pods pass even as the first ones bind and use up free GPUs. Call
    /// [`remove`](Self::remove) once its pods are bound. False if not pending.
    pub fn mark_admitted(&mut self, key: &K) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        self.unlink(&entry);
        self.admitted.insert(key.clone(), entry);
        true
    }

    /// Whether `key` was admitted and not yet removed.
    pub fn is_admitted(&self, key: &K) -> bool {
        self.admitted.contains_key(key)
    }

    /// Admitted workloads not yet removed. The caller subtracts the GPUs of their unbound pods
    /// from the free GPUs the gate hands out.
    pub fn admitted(&self) -> impl Iterator<Item = &QueueEntry<K>> {
        self.admitted.values()
    }

    /// Drops `entry` from its resource's queue (it already left `entries`).
    fn unlink(&mut self, entry: &QueueEntry<K>) {
        let Some(queue) = self.resources.get_mut(&entry.resource) else {
            return;
        };
        let removed = queue
            .tenants
            .get_mut(&entry.tenant)
            .is_some_and(|own| own.slots.remove(&Slot::of(entry, self.within)));
        if removed {
            queue.len -= 1;
            queue.gpus = queue.gpus.saturating_sub(entry.gpus);
            queue.multi -= usize::from(entry.gpus > 1);
            queue.rekey(&entry.tenant);
        }
    }
}

/// One tenant's place in a lazy merge: its next entry and the rest.
struct Cursor<'q, K> {
    head: &'q Slot<K>,
    standing: Standing,
    rest: btree_set::Iter<'q, Slot<K>>,
}

impl<K: Ord> Ord for Cursor<'_, K> {
    fn cmp(&self, other: &Self) -> Ordering {
        served_first(other.head, other.standing, self.head, self.standing)
    }
}
impl<K: Ord> PartialOrd for Cursor<'_, K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> PartialEq for Cursor<'_, K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord> Eq for Cursor<'_, K> {}

/// The entries of one resource in queue order; see [`FairQueue::in_order`].
pub struct InOrder<'q, K> {
    entries: &'q FxHashMap<K, QueueEntry<K>>,
    cursors: BinaryHeap<Cursor<'q, K>>,
}

impl<'q, K: Eq + Hash + Ord> Iterator for InOrder<'q, K> {
    type Item = &'q QueueEntry<K>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut cursor = self.cursors.pop()?;
            let key = &cursor.head.key;
            if let Some(next) = cursor.rest.next() {
                cursor.head = next;
                self.cursors.push(cursor);
            }
            if let Some(entry) = self.entries.get(key) {
                return Some(entry);
            }
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
            attained: 0.0,
        }
    }

    fn keys(q: &FairQueue<u32>) -> Vec<u32> {
        q.in_order("gpu").map(|e| e.key).collect()
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
        assert_eq!(q.ahead_of(&2).count(), 0);
    }

    #[test]
    fn las_serves_the_least_attained_first_inside_a_tenant_only() {
        let mut q = FairQueue::new();
        q.set_standing("a", Standing::new(0.5));
        q.set_standing("b", Standing::new(0.2));
        let mut resumed = entry(1, "a", 1, 0, 0.0);
        resumed.attained = 7200.0;
        q.push(resumed);
        q.push(entry(2, "a", 1, 0, 5.0));
        q.push(entry(3, "b", 1, 0, 9.0));
        // b is further below its share; inside a, the new workload passes the resumed one.
        assert_eq!(keys(&q), vec![3, 2, 1]);
        let mut fifo = FairQueue::with_order(WithinTenant::Fifo);
        fifo.set_standing("a", Standing::new(0.5));
        fifo.push(
            q.get(&1)
                .cloned()
                .unwrap_or_else(|| entry(1, "a", 1, 0, 0.0)),
        );
        fifo.push(entry(2, "a", 1, 0, 5.0));
        assert_eq!(keys(&fifo), vec![1, 2]);
    }

    #[test]
    fn ahead_of_lists_the_entries_served_first() {
        let mut q = FairQueue::new();
        q.push(entry(1, "a", 4, 0, 0.0));
        q.push(entry(2, "b", 2, 0, 1.0));
        q.push(entry(3, "a", 2, 0, 2.0));
        let ahead: Vec<u32> = q.ahead_of(&3).map(|e| e.key).collect();
        assert_eq!(ahead, vec![1, 2]);
        assert_eq!(q.position(&3), Some((3, 3)));
    }
}
