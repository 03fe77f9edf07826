//! Incremental fair-share scheduling state: what each tenant holds and waits for, the cluster's
//! GPU capacity, the queue of pending workloads and the reservations of admitted ones.
//!
//! Owned by [`ClusterSnapshot`], which calls the `pub(super)` hooks on every node and pod event,
//! so nothing here ever rescans the cluster:
//!
//! ```text
//!   upsert/remove_node ─▶ node_in/node_out ─▶ capacity, free        (ready, schedulable nodes)
//!   upsert/remove_pod  ─▶ pod_changed ─▶ held per tenant
//!                                    └─▶ workload (pods by UID) ─▶ sync ─▶ FairQueue push/remove
//!                                                                    └─▶ tenant pending, reserved
//!   refresh(policy, usage, now) ─▶ entitlements per resource ─▶ standings into the queue, report
//! ```
//!
//! A **workload** is pending while it has active GPU pods without a node. Its demand is the sum
//! of the requests of those pods or, when a gang is annotated (`rota.io/gang-size`), `gang size ×
//! per-pod request − GPUs its bound pods hold` if that is larger (the pods of a gang may not all
//! exist yet). It is queued under its *primary resource*, the one its pending pods request most
//! of (ties: the smaller name), with the highest PriorityClass value of its pending pods and the
//! earliest creation time of its pending pods as arrival (`+∞`, last, when unknown).
//!
//! An **admitted** workload (see [`Workloads::admit`]) leaves the queue and holds a reservation:
//! the GPUs it still has to bind, `admitted GPUs − GPUs bound since admission`. It stays admitted,
//! so all its pods pass the gate, until none of its pods is pending and the reservation is spent,
//! or until it has no pods left. Tenant `pending` counts queued demand and reservations.
//!
//! Costs per pod event: O(k) for the k pods of its workload (gangs are small) plus O(log n) in
//! the queue; per node event O(resources). [`Workloads::refresh`] is O(T log T) per resource.
//! Must not: read a clock (`now` is an argument), decide placement, or keep Kubernetes objects.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::cluster::ClusterSnapshot;
use super::fairshare::{self, SharePolicy, Standing, TenantLoad};
use super::feasibility::{Demand, NeverFit, Pool};
use super::model::{GpuCounts, GpuNode, GpuPod, WorkloadId};
use super::queue::{FairQueue, QueueEntry, WithinTenant};

/// At most this many bound waits are kept until [`Workloads::drain_bound_waits`]; later ones are
/// dropped (and counted) so that a view nobody drains cannot grow without bound.
pub const MAX_BOUND_WAITS: usize = 10_000;

/// Time constant of the exponentially weighted release rate: 30 minutes, long enough to smooth
/// single job completions, short enough to follow a day's rhythm.
pub const RELEASE_RATE_TIME_CONSTANT_SECONDS: f64 = 1800.0;

/// A release rate is reported only after this much observed time (5 minutes): a rate from one
/// refresh interval says nothing.
pub const RELEASE_RATE_MIN_OBSERVED_SECONDS: f64 = 300.0;

/// What one tenant holds and waits for, per resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantBook {
    /// GPUs held by its bound, active pods.
    pub held: GpuCounts,
    /// GPUs its queued workloads demand plus the reservations of its admitted ones.
    pub pending: GpuCounts,
    /// Its workloads that are queued or admitted and not yet fully bound.
    pub pending_workloads: usize,
}

impl TenantBook {
    fn is_empty(&self) -> bool {
        self.held.is_empty() && self.pending.is_empty() && self.pending_workloads == 0
    }
}

/// The reservation of an admitted workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    /// The resource it was queued for.
    pub resource: String,
    /// GPUs it was admitted with (its queue demand at admission).
    pub gpus: u64,
    /// GPUs of `resource` its pods held at admission.
    pub bound_at_admission: u64,
    /// When it started waiting (unix seconds; `+∞` when unknown).
    pub arrival: f64,
}

/// A queued workload whose pods all bound: the queue-wait histogram's input.
#[derive(Clone, Debug, PartialEq)]
pub struct BoundWait {
    /// The resource it waited for.
    pub resource: String,
    /// When it started waiting (unix seconds, finite).
    pub arrival: f64,
}

/// One tenant's figures for one resource at the last refresh.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TenantShare {
    /// Configured weight among its siblings.
    pub weight: f64,
    /// Weight after the usage correction.
    pub effective_weight: f64,
    /// GPUs held.
    pub held: f64,
    /// GPUs pending (queued or reserved).
    pub pending: f64,
    /// GPUs it is entitled to.
    pub entitled: f64,
    /// GPUs it is entitled to by weight and demand alone (no usage correction): the
    /// simulator's reference for `received_over_entitled`.
    pub plain_entitled: f64,
    /// Decayed usage passed to the refresh.
    pub usage: f64,
}

/// GPU-seconds a tenant received and was entitled to (plain water-filling), summed over
/// resources, while it had work waiting: the long-run fairness figure, as the simulator's
/// `received_over_entitled` defines it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BacklogTotals {
    /// GPU-seconds held while backlogged.
    pub received: f64,
    /// GPU-seconds entitled while backlogged.
    pub entitled: f64,
}

/// Entitlements of one resource at the last refresh.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceShares {
    /// GPUs of ready, schedulable nodes.
    pub capacity: u64,
    /// Tenants with demand, by name.
    pub tenants: BTreeMap<String, TenantShare>,
    /// Jain's index of `held / entitled` over tenants entitled to something (1 when none).
    pub jain_index: f64,
}

/// The result of the last [`Workloads::refresh`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FairShareReport {
    /// When it was computed (unix seconds).
    pub at: f64,
    /// Per resource.
    pub resources: BTreeMap<String, ResourceShares>,
    /// Each tenant's standing (`Σ held / Σ entitled` over resources), as pushed into the queue.
    pub standings: BTreeMap<String, Standing>,
}

#[derive(Clone, Debug, PartialEq)]
struct PodSlot {
    requests: GpuCounts,
    bound: bool,
    priority: i32,
    created_at: Option<f64>,
    gang_size: Option<u32>,
}

impl PodSlot {
    fn of(pod: &GpuPod) -> Self {
        Self {
            requests: pod.requests.clone(),
            bound: pod.node_name.is_some(),
            priority: pod.priority,
            created_at: pod.created_at.filter(|t| t.is_finite()),
            gang_size: pod.gang_size,
        }
    }
}

/// What a workload adds to its tenant's pending figures.
#[derive(Clone, Debug, PartialEq)]
struct Contribution {
    tenant: String,
    resource: String,
    gpus: u64,
    reserved: bool,
}

/// One workload: its active GPU pods and, once admitted, its reservation.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    tenant: String,
    pods: FxHashMap<String, PodSlot>,
    admitted: Option<Reservation>,
    contribution: Option<Contribution>,
    per_pod: GpuCounts,
    bound: GpuCounts,
    pending_pods: usize,
}

impl Workload {
    /// The tenant charged (that of its latest pod event).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Its reservation, when admitted and not yet fully bound.
    pub fn admitted(&self) -> Option<&Reservation> {
        self.admitted.as_ref()
    }

    /// The largest request of `resource` among its pods: what one of its pods needs on a node.
    pub fn per_pod(&self, resource: &str) -> u64 {
        self.per_pod.get(resource).copied().unwrap_or(0)
    }

    /// GPUs of `resource` its bound pods hold.
    pub fn bound(&self, resource: &str) -> u64 {
        self.bound.get(resource).copied().unwrap_or(0)
    }

    /// GPUs still reserved for it (admitted, not all bound yet); 0 otherwise.
    pub fn reserved_gpus(&self) -> u64 {
        self.contribution
            .as_ref()
            .filter(|c| c.reserved)
            .map_or(0, |c| c.gpus)
    }

    /// Active pods without a node.
    pub fn pending_pods(&self) -> usize {
        self.pending_pods
    }

    /// Active GPU pods.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

/// Sums over a workload's pods, recomputed on each of its events (O(k)).
#[derive(Default)]
struct Aggregate {
    pending: GpuCounts,
    bound: GpuCounts,
    per_pod: GpuCounts,
    pending_pods: usize,
    priority: Option<i32>,
    arrival: Option<f64>,
    gang: Option<u32>,
}

impl Aggregate {
    fn of(pods: &FxHashMap<String, PodSlot>) -> Self {
        let mut a = Aggregate::default();
        for pod in pods.values() {
            for (r, &n) in &pod.requests {
                let per = a.per_pod.entry(r.clone()).or_insert(0);
                *per = (*per).max(n);
            }
            a.gang = a.gang.max(pod.gang_size);
            if pod.bound {
                add(&mut a.bound, &pod.requests);
                continue;
            }
            add(&mut a.pending, &pod.requests);
            a.pending_pods += 1;
            a.priority = a.priority.max(Some(pod.priority));
            if let Some(t) = pod.created_at {
                a.arrival = Some(a.arrival.map_or(t, |a: f64| a.min(t)));
            }
        }
        a
    }

    /// The queue entry of a workload with pending pods (module docs).
    fn entry(&self, key: &WorkloadId, tenant: &str) -> Option<QueueEntry> {
        if self.pending_pods == 0 {
            return None;
        }
        let (resource, &pending) = self
            .pending
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))?;
        let get = |m: &GpuCounts| m.get(resource).copied().unwrap_or(0);
        let gang = self.gang.map_or(0, |g| {
            u64::from(g)
                .saturating_mul(get(&self.per_pod))
                .saturating_sub(get(&self.bound))
        });
        Some(QueueEntry {
            key: key.clone(),
            tenant: tenant.to_owned(),
            resource: resource.clone(),
            gpus: pending.max(gang),
            priority_class: self.priority.unwrap_or(0),
            arrival: self.arrival.unwrap_or(f64::INFINITY),
            attained: 0.0,
        })
    }
}

/// What [`Workloads::sync`] decided for the queue.
enum QueueOp {
    Keep,
    Push(QueueEntry),
    /// Leave the queue (or the admitted set).
    Remove,
}

#[derive(Clone, Debug, Default)]
struct ReleaseRate {
    last_total: u64,
    last_at: Option<f64>,
    /// Exponentially weighted GPUs per second, started at 0.
    average: f64,
    observed: f64,
}

/// The incremental state; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct Workloads {
    capacity: GpuCounts,
    free: GpuCounts,
    /// Ready, schedulable nodes by free and by allocatable GPUs, per resource: the gate's
    /// supply (`core::gate::ClusterSupply`).
    free_pools: FxHashMap<String, Pool>,
    capacity_pools: FxHashMap<String, Pool>,
    reserved: GpuCounts,
    tenants: FxHashMap<String, TenantBook>,
    workloads: FxHashMap<WorkloadId, Workload>,
    queue: FairQueue<WorkloadId>,
    report: Option<FairShareReport>,
    released: GpuCounts,
    release_rates: BTreeMap<String, ReleaseRate>,
    bound_waits: Vec<BoundWait>,
    dropped_waits: u64,
    /// GPUs of workloads rotated out (suspended Jobs, halted VMs), per tenant: they have no
    /// pods, but their tenants still want the GPUs, so they count as pending demand.
    dormant: BTreeMap<String, GpuCounts>,
    backlog: BTreeMap<String, BacklogTotals>,
}

/// Whether a node's GPUs count towards capacity: ready and not cordoned.
pub fn counts_capacity(node: &GpuNode) -> bool {
    node.ready && !node.unschedulable
}

impl Workloads {
    // === reads ===

    /// GPUs of ready, schedulable nodes, per resource.
    pub fn capacity(&self, resource: &str) -> u64 {
        self.capacity.get(resource).copied().unwrap_or(0)
    }

    /// Free GPUs of ready, schedulable nodes, per resource (reservations not subtracted).
    pub fn free(&self, resource: &str) -> u64 {
        self.free.get(resource).copied().unwrap_or(0)
    }

    /// Free GPUs of `resource` net of reservations: what the gate may hand out. Equals the
    /// total of [`ClusterSupply`](super::gate::ClusterSupply) before a walk, in O(1).
    pub fn admissible(&self, resource: &str) -> u64 {
        self.free(resource).saturating_sub(self.reserved(resource))
    }

    /// Ready, schedulable nodes by free GPUs of `resource` (reservations not subtracted).
    pub fn free_pool(&self, resource: &str) -> Pool {
        self.free_pools.get(resource).cloned().unwrap_or_default()
    }

    /// How many ready, schedulable nodes have at least `gpus` of `resource` free
    /// (reservations not subtracted): O(d) for d distinct free counts, whatever the cluster's
    /// size.
    pub fn nodes_with_free(&self, resource: &str, gpus: u64) -> u64 {
        (self.free_pools.get(resource)).map_or(0, |p| p.nodes_with_at_least(gpus))
    }

    /// Ready, schedulable nodes by allocatable GPUs of `resource`.
    pub fn capacity_pool(&self, resource: &str) -> Pool {
        self.capacity_pools
            .get(resource)
            .cloned()
            .unwrap_or_default()
    }

    /// GPUs reserved for admitted workloads whose pods are not all bound yet.
    pub fn reserved(&self, resource: &str) -> u64 {
        self.reserved.get(resource).copied().unwrap_or(0)
    }

    /// [`admissible`](Self::admissible) for every resource with free GPUs.
    pub fn free_for_admission(&self) -> GpuCounts {
        (self.free.keys())
            .map(|r| (r.clone(), self.admissible(r)))
            .collect()
    }

    /// A tenant's book, if it holds or waits for anything.
    pub fn tenant(&self, name: &str) -> Option<&TenantBook> {
        self.tenants.get(name)
    }

    /// Every tenant that holds or waits for something, in no particular order.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, &TenantBook)> {
        self.tenants.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// A workload with active GPU pods.
    pub fn workload(&self, key: &WorkloadId) -> Option<&Workload> {
        self.workloads.get(key)
    }

    /// The fair-share queue (pending workloads and the admitted set).
    pub fn queue(&self) -> &FairQueue<WorkloadId> {
        &self.queue
    }

    /// The last refresh's figures; `None` before the first.
    pub fn report(&self) -> Option<&FairShareReport> {
        self.report.as_ref()
    }

    /// `tenant`'s entitlement to `resource` at the last refresh; `None` when unknown (no
    /// refresh yet, or the tenant had no demand then).
    pub fn entitled(&self, tenant: &str, resource: &str) -> Option<f64> {
        let shares = self.report.as_ref()?.resources.get(resource)?;
        shares.tenants.get(tenant).map(|s| s.entitled)
    }

    /// GPUs of `resource` that `tenant` holds now.
    pub fn held(&self, tenant: &str, resource: &str) -> u64 {
        self.tenants
            .get(tenant)
            .and_then(|b| b.held.get(resource))
            .copied()
            .unwrap_or(0)
    }

    /// GPUs of `resource` released per second (completed or deleted bound pods), averaged
    /// exponentially over [`RELEASE_RATE_TIME_CONSTANT_SECONDS`]; `None` until
    /// [`RELEASE_RATE_MIN_OBSERVED_SECONDS`] of refreshes were seen.
    pub fn release_rate(&self, resource: &str) -> Option<f64> {
        let r = self.release_rates.get(resource)?;
        if r.observed < RELEASE_RATE_MIN_OBSERVED_SECONDS {
            return None;
        }
        // The average starts at 0; dividing by the weight observed so far removes that bias,
        // so early on it is simply GPUs released / seconds observed.
        let weight = 1.0 - (-r.observed / RELEASE_RATE_TIME_CONSTANT_SECONDS).exp();
        Some(r.average / weight)
    }

    /// Takes the waits of queued workloads that bound since the last call. The caller observes
    /// `now − arrival`, so a wait is measured up to the drain (the refresh period), not the bind.
    pub fn drain_bound_waits(&mut self) -> Vec<BoundWait> {
        std::mem::take(&mut self.bound_waits)
    }

    /// Waits dropped because nobody drained them (see [`MAX_BOUND_WAITS`]).
    pub fn dropped_waits(&self) -> u64 {
        self.dropped_waits
    }

    // === decisions ===

    /// Moves a queued workload to the admitted set with a reservation of its queue demand.
    /// False when it is not queued (already admitted, or nothing pending).
    pub fn admit(&mut self, key: &WorkloadId) -> bool {
        let Some(entry) = self.queue.get(key).cloned() else {
            return false;
        };
        let Some(w) = self.workloads.get_mut(key) else {
            return false;
        };
        if !self.queue.mark_admitted(key) {
            return false;
        }
        w.admitted = Some(Reservation {
            bound_at_admission: w.bound(&entry.resource),
            resource: entry.resource,
            gpus: entry.gpus,
            arrival: entry.arrival,
        });
        self.sync(key);
        true
    }

    /// Recomputes entitlements per resource from capacity, held and pending GPUs and decayed
    /// `usage` (any unit, the same for every tenant), pushes each tenant's standing into the
    /// queue and keeps the figures (see [`Self::report`]). Also updates the release rate.
    pub fn refresh(&mut self, policy: &SharePolicy, usage: impl Fn(&str) -> f64, now: f64) {
        self.accumulate_backlog(now);
        let mut report = FairShareReport {
            at: now,
            ..FairShareReport::default()
        };
        let mut totals: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for resource in self.resources() {
            let shares = self.shares_of(policy, &usage, &resource);
            for (tenant, s) in &shares.tenants {
                let t = totals.entry(tenant.clone()).or_default();
                t.0 += s.held;
                t.1 += s.entitled;
            }
            report.resources.insert(resource, shares);
        }
        // A tenant without demand now holds nothing: owed its share the moment work arrives.
        if let Some(last) = &self.report {
            for tenant in last.standings.keys().filter(|t| !totals.contains_key(*t)) {
                self.queue.set_standing(tenant, Standing::new(0.0));
            }
        }
        for (tenant, (held, entitled)) in totals {
            let standing = Standing::of(held, entitled);
            self.queue.set_standing(&tenant, standing);
            report.standings.insert(tenant, standing);
        }
        self.update_release_rates(now);
        self.report = Some(report);
    }

    /// Per tenant, GPU-seconds received and entitled while it had work waiting, since this
    /// state was created (integrated between refreshes from the previous refresh's figures).
    pub fn backlog_totals(&self) -> &BTreeMap<String, BacklogTotals> {
        &self.backlog
    }

    /// Adds what each tenant backlogged at the last refresh held and was entitled to since.
    fn accumulate_backlog(&mut self, now: f64) {
        let Some(last) = &self.report else {
            return;
        };
        let dt = now - last.at;
        if !(dt.is_finite() && dt > 0.0) {
            return;
        }
        for shares in last.resources.values() {
            for (tenant, s) in &shares.tenants {
                if s.pending <= 0.0 {
                    continue;
                }
                let t = self.backlog.entry(tenant.clone()).or_default();
                t.received += s.held * dt;
                t.entitled += s.plain_entitled * dt;
            }
        }
    }

    /// What a queued workload needs placed: its GPUs in pods of its largest request of the
    /// queue's resource (one pod of all of them when the view knows no pod).
    pub fn demand(&self, entry: &QueueEntry) -> Demand {
        let per_pod = self
            .workload(&entry.key)
            .map_or(entry.gpus, |w| w.per_pod(&entry.resource));
        Demand::new(entry.gpus, per_pod)
    }

    /// Every queued workload that can never fit, with its tenant and why. O(n) over the
    /// queue: for metrics, not the request path.
    pub fn unplaceable(&self) -> Vec<(&QueueEntry, NeverFit)> {
        let mut out = Vec::new();
        for resource in self.queue.resources() {
            let capacity = self.capacity_pool(resource);
            for entry in self.queue.in_order(resource) {
                if let Err(why) = capacity.check(self.demand(entry)) {
                    out.push((entry, why));
                }
            }
        }
        out
    }

    /// Replaces the demand of rotated-out workloads (per tenant and resource); it joins the
    /// pending demand at the next [`refresh`](Self::refresh), so that their tenants keep an
    /// entitlement and the rotation planner can resume them.
    pub fn set_dormant(&mut self, dormant: BTreeMap<String, GpuCounts>) {
        self.dormant = dormant;
    }

    fn resources(&self) -> Vec<String> {
        let mut all: Vec<String> = self.capacity.keys().cloned().collect();
        for book in self.tenants.values() {
            all.extend(book.held.keys().cloned());
            all.extend(book.pending.keys().cloned());
        }
        for counts in self.dormant.values() {
            all.extend(counts.keys().cloned());
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    fn shares_of(
        &self,
        policy: &SharePolicy,
        usage: &impl Fn(&str) -> f64,
        resource: &str,
    ) -> ResourceShares {
        let mut names: Vec<&str> = self
            .tenants
            .iter()
            .filter(|(_, b)| b.held.contains_key(resource) || b.pending.contains_key(resource))
            .map(|(t, _)| t.as_str())
            .chain(
                self.dormant
                    .iter()
                    .filter(|(_, d)| d.contains_key(resource))
                    .map(|(t, _)| t.as_str()),
            )
            .collect();
        names.sort_unstable();
        names.dedup();
        let get =
            |m: Option<&GpuCounts>| m.and_then(|m| m.get(resource)).copied().unwrap_or(0) as f64;
        let loads: Vec<TenantLoad<'_>> = names
            .iter()
            .map(|&t| {
                let book = self.tenants.get(t);
                TenantLoad {
                    tenant: t,
                    held: get(book.map(|b| &b.held)),
                    pending: get(book.map(|b| &b.pending)) + get(self.dormant.get(t)),
                    usage: usage(t),
                }
            })
            .collect();
        let capacity = self.capacity(resource);
        let result = fairshare::entitlements(policy, capacity as f64, &loads);
        let plain_loads: Vec<TenantLoad<'_>> = loads
            .iter()
            .map(|l| TenantLoad { usage: 0.0, ..*l })
            .collect();
        let plain = fairshare::entitlements(policy, capacity as f64, &plain_loads);
        let ratios: Vec<f64> = result
            .iter()
            .filter(|e| e.entitled > 0.0)
            .map(|e| e.held / e.entitled)
            .collect();
        let tenants = loads
            .iter()
            .zip(&result)
            .zip(&plain)
            .map(|((l, e), p)| {
                let share = TenantShare {
                    weight: e.weight,
                    effective_weight: e.effective_weight,
                    held: e.held,
                    pending: l.pending,
                    entitled: e.entitled,
                    plain_entitled: p.entitled,
                    usage: l.usage,
                };
                (l.tenant.to_owned(), share)
            })
            .collect();
        ResourceShares {
            capacity,
            tenants,
            jain_index: fairshare::jain_index(&ratios),
        }
    }

    fn update_release_rates(&mut self, now: f64) {
        if !now.is_finite() {
            return;
        }
        let resources: Vec<String> = self
            .capacity
            .keys()
            .chain(self.released.keys())
            .cloned()
            .collect();
        for resource in resources {
            let total = self.released.get(&resource).copied().unwrap_or(0);
            let r = self.release_rates.entry(resource).or_default();
            if let Some(last) = r.last_at.filter(|&last| now > last) {
                let dt = now - last;
                let instant = total.saturating_sub(r.last_total) as f64 / dt;
                let alpha = 1.0 - (-dt / RELEASE_RATE_TIME_CONSTANT_SECONDS).exp();
                r.average += alpha * (instant - r.average);
                r.observed += dt;
            }
            if r.last_at.is_none_or(|last| now > last) {
                r.last_at = Some(now);
                r.last_total = total;
            }
        }
    }

    // === hooks called by ClusterSnapshot ===

    /// An empty state whose queue orders each tenant's workloads by `within`.
    pub(super) fn with_queue_order(within: WithinTenant) -> Self {
        Self {
            queue: FairQueue::with_order(within),
            ..Self::default()
        }
    }

    /// Counts a node's capacity and free GPUs (if it is ready and schedulable).
    pub(super) fn node_in(&mut self, node: &GpuNode) {
        if !counts_capacity(node) {
            return;
        }
        for (r, &a) in &node.allocatable {
            bump(&mut self.capacity, r, a, true);
            bump(&mut self.free, r, node.free(r), true);
            self.capacity_pools.entry(r.clone()).or_default().add(a);
            self.free_pools
                .entry(r.clone())
                .or_default()
                .add(node.free(r));
        }
    }

    /// Stops counting a node (before it changes or goes away).
    pub(super) fn node_out(&mut self, node: &GpuNode) {
        if !counts_capacity(node) {
            return;
        }
        for (r, &a) in &node.allocatable {
            bump(&mut self.capacity, r, a, false);
            bump(&mut self.free, r, node.free(r), false);
            if let Some(pool) = self.capacity_pools.get_mut(r) {
                pool.remove(a);
            }
            if let Some(pool) = self.free_pools.get_mut(r) {
                pool.remove(node.free(r));
            }
        }
    }

    /// Forgets every node's contribution (before a re-list or a usage reset).
    pub(super) fn clear_nodes(&mut self) {
        self.capacity.clear();
        self.free.clear();
        self.capacity_pools.clear();
        self.free_pools.clear();
    }

    /// A pod was added (`old == None`), changed, or removed (`new == None`). Only pods that
    /// request a managed GPU are passed.
    pub(super) fn pod_changed(&mut self, old: Option<&GpuPod>, new: Option<&GpuPod>) {
        if let Some(old) = old.filter(|p| p.holds_gpus()) {
            self.charge_held(&old.tenant, &old.requests, false);
            if !new.is_some_and(GpuPod::holds_gpus) {
                add(&mut self.released, &old.requests);
            }
        }
        if let Some(new) = new.filter(|p| p.holds_gpus()) {
            self.charge_held(&new.tenant, &new.requests, true);
        }
        let tracked = |p: &&GpuPod| p.active && p.wants_gpus();
        let old = old.filter(tracked);
        if let Some(old) = old {
            if let Some(w) = self.workloads.get_mut(&old.workload) {
                w.pods.remove(&old.uid);
            }
        }
        let new = new.filter(tracked);
        if let Some(new) = new {
            let w = self.workloads.entry(new.workload.clone()).or_default();
            w.tenant.clone_from(&new.tenant);
            w.pods.insert(new.uid.clone(), PodSlot::of(new));
        }
        if let Some(old) = old {
            self.sync(&old.workload);
        }
        if let Some(new) = new.filter(|n| old.is_none_or(|o| o.workload != n.workload)) {
            self.sync(&new.workload);
        }
    }

    /// Before a re-list of pods: forgets everything derived from pods and returns what must
    /// survive it (admissions), to hand to [`Self::end_pod_reset`].
    pub(super) fn begin_pod_reset(&mut self) -> Vec<(WorkloadId, Reservation)> {
        let carried = self
            .workloads
            .iter_mut()
            .filter_map(|(k, w)| Some((k.clone(), w.admitted.take()?)))
            .collect();
        self.tenants.clear();
        self.workloads.clear();
        self.reserved.clear();
        self.queue = FairQueue::with_order(self.queue.within_tenant());
        if let Some(report) = &self.report {
            for (tenant, &standing) in &report.standings {
                self.queue.set_standing(tenant, standing);
            }
        }
        carried
    }

    /// After a re-list: re-admits the workloads admitted before it that still exist.
    pub(super) fn end_pod_reset(&mut self, carried: Vec<(WorkloadId, Reservation)>) {
        for (key, reservation) in carried {
            let Some(w) = self.workloads.get_mut(&key) else {
                continue;
            };
            let entry = QueueEntry {
                key: key.clone(),
                tenant: w.tenant.clone(),
                resource: reservation.resource.clone(),
                gpus: reservation.gpus,
                priority_class: 0,
                arrival: reservation.arrival,
                attained: 0.0,
            };
            w.admitted = Some(reservation);
            self.queue.push(entry);
            self.queue.mark_admitted(&key);
            self.sync(&key);
        }
    }

    // === internals ===

    fn charge_held(&mut self, tenant: &str, requests: &GpuCounts, add_it: bool) {
        let book = self.tenants.entry(tenant.to_owned()).or_default();
        for (r, &n) in requests {
            bump(&mut book.held, r, n, add_it);
        }
        self.tidy(tenant);
    }

    fn tidy(&mut self, tenant: &str) {
        if self.tenants.get(tenant).is_some_and(TenantBook::is_empty) {
            self.tenants.remove(tenant);
        }
    }

    /// Brings one workload's queue entry, reservation and contribution in line with its pods.
    fn sync(&mut self, key: &WorkloadId) {
        let Some(w) = self.workloads.get_mut(key) else {
            return;
        };
        if w.pods.is_empty() {
            let old = w.contribution.take();
            self.workloads.remove(key);
            self.queue.remove(key);
            self.set_contribution(old, None);
            return;
        }
        let agg = Aggregate::of(&w.pods);
        let (op, next) = match &w.admitted {
            Some(res) => {
                let bound_since = agg
                    .bound
                    .get(&res.resource)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(res.bound_at_admission);
                let reserved = res.gpus.saturating_sub(bound_since);
                if agg.pending_pods == 0 && reserved == 0 {
                    (QueueOp::Remove, None)
                } else {
                    let c = Contribution {
                        tenant: w.tenant.clone(),
                        resource: res.resource.clone(),
                        gpus: reserved,
                        reserved: true,
                    };
                    (QueueOp::Keep, Some(c))
                }
            }
            None => match agg.entry(key, &w.tenant) {
                Some(entry) => {
                    let c = Contribution {
                        tenant: entry.tenant.clone(),
                        resource: entry.resource.clone(),
                        gpus: entry.gpus,
                        reserved: false,
                    };
                    let same = self.queue.get(key) == Some(&entry);
                    (
                        if same {
                            QueueOp::Keep
                        } else {
                            QueueOp::Push(entry)
                        },
                        Some(c),
                    )
                }
                None => (QueueOp::Remove, None),
            },
        };
        // A wait ends in a bind only if this event bound GPUs (not if its pending pods left).
        let bound_more = total(&agg.bound) > total(&w.bound);
        if matches!(op, QueueOp::Remove) {
            w.admitted = None;
        }
        w.per_pod = agg.per_pod;
        w.bound = agg.bound;
        w.pending_pods = agg.pending_pods;
        let old = std::mem::replace(&mut w.contribution, next.clone());
        match op {
            QueueOp::Keep => {}
            QueueOp::Push(entry) => {
                self.queue.push(entry);
            }
            QueueOp::Remove => {
                if let Some(entry) = self.queue.remove(key) {
                    if bound_more {
                        self.record_wait(entry);
                    }
                }
            }
        }
        self.set_contribution(old, next);
    }

    fn set_contribution(&mut self, old: Option<Contribution>, new: Option<Contribution>) {
        if old == new {
            return;
        }
        if let Some(c) = old {
            self.apply_contribution(&c, false);
        }
        if let Some(c) = new {
            self.apply_contribution(&c, true);
        }
    }

    fn apply_contribution(&mut self, c: &Contribution, add_it: bool) {
        let book = self.tenants.entry(c.tenant.clone()).or_default();
        bump(&mut book.pending, &c.resource, c.gpus, add_it);
        book.pending_workloads = if add_it {
            book.pending_workloads + 1
        } else {
            book.pending_workloads.saturating_sub(1)
        };
        if c.reserved {
            bump(&mut self.reserved, &c.resource, c.gpus, add_it);
        }
        self.tidy(&c.tenant);
    }

    fn record_wait(&mut self, entry: QueueEntry) {
        if !entry.arrival.is_finite() {
            return;
        }
        if self.bound_waits.len() >= MAX_BOUND_WAITS {
            self.dropped_waits += 1;
            return;
        }
        self.bound_waits.push(BoundWait {
            resource: entry.resource,
            arrival: entry.arrival,
        });
    }
}

impl ClusterSnapshot {
    /// Recomputes entitlements and standings; see [`Workloads::refresh`].
    pub fn refresh_fair_share(
        &mut self,
        policy: &SharePolicy,
        usage: impl Fn(&str) -> f64,
        now: f64,
    ) {
        self.workloads_mut().refresh(policy, usage, now);
    }
}

/// Adds or subtracts `n` at `key`, dropping entries that reach 0.
fn bump(map: &mut GpuCounts, key: &str, n: u64, add_it: bool) {
    if n == 0 {
        return;
    }
    if add_it {
        let slot = map.entry(key.to_owned()).or_insert(0);
        *slot = slot.saturating_add(n);
    } else if let Some(slot) = map.get_mut(key) {
        *slot = slot.saturating_sub(n);
        if *slot == 0 {
            map.remove(key);
        }
    }
}

fn total(counts: &GpuCounts) -> u64 {
    counts.values().fold(0u64, |a, &n| a.saturating_add(n))
}

fn add(into: &mut GpuCounts, other: &GpuCounts) {
    for (r, &n) in other {
        bump(into, r, n, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::WorkloadKind;

    const GPU: &str = "nvidia.com/gpu";

    fn node(name: &str, gpus: u64, ready: bool) -> GpuNode {
        GpuNode {
            name: name.into(),
            ready,
            allocatable: [(GPU.to_string(), gpus)].into(),
            ..GpuNode::default()
        }
    }

    fn job_pod(job: &str, i: u32, tenant: &str, gpus: u64, on: Option<&str>) -> GpuPod {
        GpuPod {
            uid: format!("{job}-{i}"),
            namespace: "ns".into(),
            name: format!("{job}-{i}"),
            tenant: tenant.into(),
            workload: WorkloadId {
                kind: WorkloadKind::Job,
                namespace: "ns".into(),
                name: job.into(),
            },
            requests: [(GPU.to_string(), gpus)].into(),
            node_name: on.map(String::from),
            active: true,
            created_at: Some(100.0 + f64::from(i)),
            ..GpuPod::default()
        }
    }

    #[test]
    fn rotated_out_demand_keeps_its_tenant_entitled() {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(node("n1", 8, true));
        c.upsert_pod(job_pod("big", 0, "a", 8, Some("n1")));
        let policy = SharePolicy::flat(1.0);
        c.refresh_fair_share(&policy, |_| 0.0, 1_000.0);
        assert_eq!(c.workloads().entitled("b", GPU), None, "no pods, no demand");

        // b's Job was rotated out: its 4 GPUs still count as demand, so b is entitled to them
        // (and a, holding everything, is over its share) — the planner can resume b.
        let dormant = BTreeMap::from([("b".to_string(), [(GPU.to_string(), 4)].into())]);
        c.workloads_mut().set_dormant(dormant);
        c.refresh_fair_share(&policy, |_| 0.0, 1_001.0);
        assert_eq!(c.workloads().entitled("b", GPU), Some(4.0));
        assert_eq!(c.workloads().entitled("a", GPU), Some(4.0));
    }

    fn key(job: &str) -> WorkloadId {
        WorkloadId {
            kind: WorkloadKind::Job,
            namespace: "ns".into(),
            name: job.into(),
        }
    }

    #[test]
    fn capacity_and_free_follow_node_and_pod_events() {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(node("a", 8, true));
        c.upsert_node(node("b", 4, false));
        assert_eq!(
            (c.workloads().capacity(GPU), c.workloads().free(GPU)),
            (8, 8)
        );
        c.upsert_pod(job_pod("j", 0, "t", 3, Some("a")));
        c.upsert_pod(job_pod("k", 0, "t", 1, Some("b")));
        assert_eq!(c.workloads().free(GPU), 5);
        c.upsert_node(node("b", 4, true));
        assert_eq!(
            (c.workloads().capacity(GPU), c.workloads().free(GPU)),
            (12, 8)
        );
        assert_eq!(c.workloads().held("t", GPU), 4);
        c.remove_node("a");
        assert_eq!(
            (c.workloads().capacity(GPU), c.workloads().free(GPU)),
            (4, 3)
        );
        c.reset_nodes(vec![node("a", 8, true)]);
        assert_eq!(
            (c.workloads().capacity(GPU), c.workloads().free(GPU)),
            (8, 5)
        );
        c.reset_pods(Vec::new());
        assert_eq!(c.workloads().free(GPU), 8);
        assert!(c.workloads().tenant("t").is_none());
    }

    #[test]
    fn a_gang_is_queued_whole_and_its_reservation_shrinks_as_pods_bind() {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(node("a", 8, true));
        let mut first = job_pod("g", 0, "t", 2, None);
        first.gang_size = Some(4);
        c.upsert_pod(first.clone());
        let entry = c.workloads().queue().get(&key("g")).cloned().unwrap();
        assert_eq!((entry.gpus, entry.arrival), (8, 100.0));
        assert_eq!(c.workloads().tenant("t").unwrap().pending[GPU], 8);

        assert!(c.workloads_mut().admit(&key("g")));
        assert!(!c.workloads_mut().admit(&key("g")), "admitted once");
        assert_eq!(c.workloads().reserved(GPU), 8);
        first.node_name = Some("a".into());
        c.upsert_pod(first);
        assert_eq!(c.workloads().reserved(GPU), 6, "one pod bound");
        assert!(
            c.workloads().queue().is_admitted(&key("g")),
            "still admitted"
        );
        for i in 1..4 {
            let mut p = job_pod("g", i, "t", 2, Some("a"));
            p.gang_size = Some(4);
            c.upsert_pod(p);
        }
        assert_eq!(c.workloads().reserved(GPU), 0);
        assert!(!c.workloads().queue().is_admitted(&key("g")));
        let book = c.workloads().tenant("t").unwrap();
        assert_eq!((book.held[GPU], book.pending_workloads), (8, 0));
        let waits = c.workloads_mut().drain_bound_waits();
        assert_eq!(waits.len(), 1);
        assert_eq!(waits[0].arrival, 100.0);
    }

    #[test]
    fn a_relist_keeps_admissions_and_deleting_pending_pods_records_no_wait() {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(node("a", 8, true));
        let pods = vec![job_pod("g", 0, "t", 2, None), job_pod("g", 1, "t", 2, None)];
        for p in &pods {
            c.upsert_pod(p.clone());
        }
        c.workloads_mut().admit(&key("g"));
        c.reset_pods(pods.clone());
        assert!(c.workloads().queue().is_admitted(&key("g")));
        assert_eq!(c.workloads().reserved(GPU), 4);
        c.remove_pod(&pods[0].uid);
        c.remove_pod(&pods[1].uid);
        assert!(c.workloads().workload(&key("g")).is_none());
        assert_eq!(c.workloads().reserved(GPU), 0);
        assert!(c.workloads_mut().drain_bound_waits().is_empty());
    }

    #[test]
    fn refresh_pushes_standings_and_measures_the_release_rate() {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(node("a", 4, true));
        c.upsert_pod(job_pod("rich", 0, "rich", 4, Some("a")));
        c.upsert_pod(job_pod("r2", 0, "rich", 1, None));
        c.upsert_pod(job_pod("poor", 5, "poor", 1, None));
        // Arrival favours rich's second job until the standings arrive.
        assert_eq!(c.workloads().queue().head(GPU).unwrap().key, key("r2"));
        c.refresh_fair_share(&SharePolicy::default(), |_| 0.0, 0.0);
        assert_eq!(c.workloads().queue().head(GPU).unwrap().key, key("poor"));
        assert_eq!(c.workloads().entitled("poor", GPU), Some(1.0));
        assert_eq!(c.workloads().entitled("rich", GPU), Some(3.0));
        assert_eq!(c.workloads().release_rate(GPU), None);
        c.remove_pod("rich-0");
        c.refresh_fair_share(&SharePolicy::default(), |_| 0.0, 10.0);
        assert_eq!(c.workloads().release_rate(GPU), None, "10 s say nothing");
        c.refresh_fair_share(&SharePolicy::default(), |_| 0.0, 400.0);
        // 4 GPUs in 400 s, the later seconds weighing a little more.
        let rate = c.workloads().release_rate(GPU).unwrap();
        assert!(rate > 0.0 && rate < 4.0 / 400.0, "{rate}");
        assert!((rate - 0.01).abs() < 0.002, "{rate}");
    }
}
