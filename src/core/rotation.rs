//! The rotation planner: which running workloads to rotate out, and which rotated-out ones to
//! resume, so that GPU time moves from tenants above their entitlement to tenants below it.
//!
//! Pure: [`plan`] reads a [`PlanInput`] (plain data that the live loop and the simulator both
//! build, with `now` inside it) and a [`RotationHistory`], and returns a [`Plan`]. The caller
//! acts on the plan, then calls [`RotationHistory::record`].
//!
//! **Rules**, per GPU resource (resources in name order; the caps are shared):
//!
//! 1. *Claims* are served in fair-share order: the waiting workloads in the order given (the
//!    queue's), merged with the rotated-out workloads (by their tenant's standing
//!    `held / entitled` at the start of the tick, then earliest rotated out; a tie goes to the
//!    rotated-out one, which ran before).
//! 2. A claim that the free GPUs cover (on one node when it needs one node) takes them: a waiting
//!    workload needs no action (the queue gate admits it), a rotated-out workload is resumed when
//!    its tenant is below its entitlement and resuming brings the tenant closer to it.
//! 3. Otherwise GPUs are made, only when the claim's tenant is below its entitlement by more than
//!    `margin_gpus` (hysteresis) and the tick cap is not spent. A *victim* is a running workload
//!    that is preemptible (not annotated `rota.io/preemptible: "false"`), not of a protected
//!    PriorityClass, past its quantum (since its last start or resume, and since its last
//!    rotation out), of priority ≤ the claim's, of another tenant that is above its entitlement
//!    by more than the margin, and whose removal leaves that tenant at or above its entitlement
//!    (no overshoot: the victim's tenant never becomes a claimant because of the rotation, which
//!    is what prevents ping-pong).
//! 4. Victim choice: the smallest set covering the claim, best fit first. For a one-node claim,
//!    a single victim on a node where `free + its GPUs there` is exactly the need, else the
//!    smallest such excess, then the most attained service; failing a single victim, several on
//!    one node (largest first, ending with the best fit), probing at most [`MAX_NODE_PROBES`]
//!    nodes. For an any-node claim the same over the pool's free GPUs and victims' totals.
//! 5. A set is taken only if the total share gap `Σ_t |held_t − entitled_t|` of the resource
//!    strictly falls when the victims leave and the claim starts; at most `max_per_tick`
//!    rotations per tick and `max_per_tenant_per_tick` per victim tenant; and never from a tenant
//!    that took GPUs from the claim's tenant on the previous tick (no trading back and forth).
//!
//! 6. *Announced stops* (`rotation.warning`). When a chosen victim has a warning period, the
//!    set is not stopped: each victim gets a [`Warning`] with `stop_at = now + the longest
//!    warning of the set`, and the claim counts as served. On later ticks the input carries the
//!    notice on each victim ([`RunningWorkload::stop`], read back from the object, so any leader
//!    keeps it), and the notices are settled before any claim: a group whose claim no longer
//!    waits ([`CLAIM_GONE`]), whose claim's tenant is no longer below its share
//!    ([`CLAIM_AT_SHARE`]), whose victims' tenant would fall below its share by more than the
//!    margin ([`VICTIM_AT_SHARE`]), or with a victim that opted out ([`OPTED_OUT`]) is cancelled;
//!    otherwise its GPUs stay promised (the victims count as gone, the claim as started, and the
//!    claim is not served again: no second victim), and once `now ≥ stop_at` the victims are
//!    rotated out and the transfer (or the resume) follows. A victim under notice is never a
//!    victim again. Due stops were counted against the caps when announced, not again.
//!
//! **Guarantees** (property tests in `tests/rotation.rs`): no workload is rotated out twice
//! within its quantum; no pair of tenants trades GPUs back on consecutive ticks; every non-empty
//! plan strictly reduces the total share gap when applied (victims leave, claims start); a
//! workload with a warning period is never stopped unannounced or before its announced time, a
//! cancelled stop is not carried out, and a promised claim gets no second victim.
//!
//! **Cost**: most ticks have nothing to do, so work is skipped where the result is provably
//! empty: a resource with no rotated-out claim is skipped when no tenant is owed, or none is
//! over, beyond the margin (or the cap is spent); claims stop once the cap is spent and no
//! resume can follow; a claim searches only if the free GPUs plus what the tenants it may take
//! from could give (each at most its excess and its rotations left times its largest
//! candidate) reach it, found in one O(n) pass over the n running workloads. The victim
//! indexes are built at the first search that can succeed, O(n log n), and the one-node
//! indexes only for a one-node claim; then per claim O(T · log n) over the T tenants with
//! victims (each tenant's index scan is bounded by [`MAX_SCAN_PER_TENANT`]). No claim scans
//! all running workloads. `tests.rs` checks that the shortcuts never change a plan.
//!
//! Must not: read a clock, call the API server, or look at Kubernetes objects. Tenants not listed
//! in a [`ResourceState`] have no known entitlement: their workloads are never victims and their
//! claims never trigger a rotation (the safe reading, as in `preemption`).

mod pool;
#[cfg(test)]
mod tests;
mod victims;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::RotationConfig;

use super::model::WorkloadId;
use pool::Pool;

/// `reason_code` of a rotation out: the workload's tenant is above its share.
pub const OVER_SHARE: &str = "over_share";
/// `reason_code` of a resume: its tenant is below its share and GPUs are free.
pub const RESUME_TURN: &str = "resume_turn";
/// `reason_code` of a cancelled stop: the claim it made room for is no longer waiting
/// (placed elsewhere, deleted, or resumed by hand).
pub const CLAIM_GONE: &str = "claim_gone";
/// `reason_code` of a cancelled stop: the claim's tenant is no longer below its share.
pub const CLAIM_AT_SHARE: &str = "claim_at_share";
/// `reason_code` of a cancelled stop: stopping it would now leave its own tenant below its
/// share (by more than the margin).
pub const VICTIM_AT_SHARE: &str = "victim_at_share";
/// `reason_code` of a cancelled stop: the workload opted out (`rota.io/preemptible: "false"`)
/// or is now of a protected PriorityClass.
pub const OPTED_OUT: &str = "opted_out";

/// At most this many index entries are examined per tenant and claim (entries too large for the
/// tenant's slack or of too high a priority are skipped), which bounds a claim's cost.
pub const MAX_SCAN_PER_TENANT: usize = 1024;

/// At most this many nodes (those with the most reclaimable GPUs) are probed when a one-node
/// claim needs several victims.
pub const MAX_NODE_PROBES: usize = 64;

/// Slack for comparing fractional GPU counts.
const EPS: f64 = 1e-9;

/// Where a claim's GPUs must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Spread {
    /// All on one node (a gang that must share a node, or a single pod).
    #[default]
    OneNode,
    /// On any nodes of the pool.
    AnyNodes,
}

/// A running workload, as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunningWorkload {
    /// The workload (its kind picks the actuator).
    pub id: WorkloadId,
    /// Tenant charged for it.
    pub tenant: String,
    /// The GPU resource it holds.
    pub resource: String,
    /// GPUs held per node.
    pub nodes: Vec<(String, u64)>,
    /// Start of its current run (its last start or resume), seconds.
    pub started_at: f64,
    /// GPU-seconds received so far.
    pub attained_gpu_seconds: f64,
    /// Effective minimum run time, already clamped (defaults: Job 600 s, VM 3600 s).
    pub quantum_seconds: f64,
    /// False when annotated `rota.io/preemptible: "false"`.
    pub preemptible: bool,
    /// Its PriorityClass is in `rotation.protectedPriorityClasses`.
    pub protected: bool,
    /// PriorityClass value (a claim never displaces a workload of higher priority).
    pub priority: i32,
    /// Notice its owner gets before it is stopped, already clamped (defaults: VM 300 s, Job
    /// and Pod 0). 0 stops it at once when picked.
    pub warning_seconds: f64,
    /// The stop rota announced for it, if any (read back from the object, so a new leader
    /// honours it).
    pub stop: Option<StopNotice>,
}

/// A stop rota announced: the workload is stopped at `stop_at` to make room for `claim`.
#[derive(Clone, Debug, PartialEq)]
pub struct StopNotice {
    /// When it is stopped, seconds (same clock as `PlanInput::now`).
    pub stop_at: f64,
    /// The waiting or rotated-out workload the GPUs are reserved for.
    pub claim: WorkloadId,
}

impl RunningWorkload {
    /// GPUs held over all nodes.
    pub fn gpus(&self) -> u64 {
        super::quantity::saturating_sum(self.nodes.iter().map(|&(_, g)| g))
    }
}

/// A pending workload, as the queue orders it.
#[derive(Clone, Debug, PartialEq)]
pub struct WaitingWorkload {
    /// The workload.
    pub id: WorkloadId,
    /// Tenant charged for it.
    pub tenant: String,
    /// The GPU resource it waits for.
    pub resource: String,
    /// GPUs it needs (the whole gang).
    pub gpus: u64,
    /// Whether its GPUs must be on one node.
    pub spread: Spread,
    /// PriorityClass value.
    pub priority: i32,
}

/// A workload rota rotated out and has not resumed yet.
#[derive(Clone, Debug, PartialEq)]
pub struct RotatedOutWorkload {
    /// The workload, its tenant, resource, GPUs, spread and priority.
    pub workload: WaitingWorkload,
    /// When it was rotated out, seconds.
    pub rotated_out_at: f64,
}

/// One tenant's position on one resource.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantShare {
    /// Tenant name.
    pub tenant: String,
    /// GPUs held now.
    pub held: f64,
    /// GPUs it is entitled to now (from `fairshare::entitlements`).
    pub entitled: f64,
}

/// One GPU resource: its tenants and free GPUs per node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceState {
    /// Resource name.
    pub resource: String,
    /// Tenants with held GPUs or demand (each listed once; later duplicates are ignored).
    pub tenants: Vec<TenantShare>,
    /// Free GPUs per ready, schedulable node (nodes not listed have none free).
    pub free: Vec<(String, u64)>,
}

/// The caps from `RotationConfig`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Hysteresis: a gap of at most this many GPUs is left alone. Default 1.
    pub margin_gpus: f64,
    /// Rotations out per tick. Default 4.
    pub max_per_tick: u32,
    /// Rotations out per victim tenant per tick. Default 1.
    pub max_per_tenant_per_tick: u32,
}

impl Limits {
    /// The caps of a rotation config (a negative or NaN margin counts as 0).
    pub fn from_config(config: &RotationConfig) -> Self {
        Self {
            margin_gpus: if config.margin_gpus > 0.0 {
                config.margin_gpus
            } else {
                0.0
            },
            max_per_tick: config.max_per_tick,
            max_per_tenant_per_tick: config.max_per_tenant_per_tick,
        }
    }
}

impl Default for Limits {
    /// The config defaults: margin 1 GPU, 4 per tick, 1 per tenant.
    fn default() -> Self {
        Self::from_config(&RotationConfig::default())
    }
}

/// Everything one tick's plan depends on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanInput {
    /// The tick's time, seconds (same clock as `started_at` and the history).
    pub now: f64,
    /// Running workloads.
    pub running: Vec<RunningWorkload>,
    /// Pending workloads in fair-share order.
    pub waiting: Vec<WaitingWorkload>,
    /// Rotated-out workloads.
    pub rotated_out: Vec<RotatedOutWorkload>,
    /// Per resource: tenants' held and entitled GPUs, free GPUs per node.
    pub resources: Vec<ResourceState>,
    /// Caps and hysteresis.
    pub limits: Limits,
}

/// A stop announced this tick: the victim keeps running until `stop_at`, its GPUs reserved
/// for `claim`; the actuator records the notice on the object and tells its owner.
#[derive(Clone, Debug, PartialEq)]
pub struct Warning {
    /// The victim, its tenant and GPUs, and why (reason code [`OVER_SHARE`]).
    pub action: Action,
    /// When it will be stopped, seconds.
    pub stop_at: f64,
    /// The workload its GPUs go to.
    pub claim: WorkloadId,
    /// That workload's tenant.
    pub claim_tenant: String,
}

/// One thing the planner wants done to one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    /// The workload; its kind picks the actuator.
    pub workload: WorkloadId,
    /// The tenant charged for it.
    pub tenant: String,
    /// GPUs this action frees or takes.
    pub gpus: u64,
    /// A human sentence explaining why.
    pub reason: String,
    /// A bounded label for metrics: [`OVER_SHARE`] or [`RESUME_TURN`]; for a cancelled stop,
    /// why ([`CLAIM_GONE`], [`CLAIM_AT_SHARE`], [`VICTIM_AT_SHARE`], [`OPTED_OUT`]).
    pub reason_code: &'static str,
}

/// GPUs made free for one claim: who they go to and whose workloads gave them up.
#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    /// The waiting or rotated-out workload the GPUs are for (the loop admits it).
    pub to: WorkloadId,
    /// Its tenant.
    pub to_tenant: String,
    /// The resource.
    pub resource: String,
    /// GPUs it takes in all (freed by the victims plus GPUs that were free).
    pub gpus: u64,
    /// The tenants of its victims, in the order of `Plan::rotate_out`.
    pub from_tenants: Vec<String>,
}

/// What one tick should do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Running workloads to rotate out now (picked with no warning, or announced stops due).
    pub rotate_out: Vec<Action>,
    /// Rotated-out workloads to resume.
    pub resume: Vec<Action>,
    /// Why each rotation happened: the claim it serves (the history keeps the tenant pairs).
    /// Only GPUs handed over this tick: an announced stop adds its transfer when it is due.
    pub transfers: Vec<Transfer>,
    /// Stops announced this tick (victims with a warning period).
    pub warnings: Vec<Warning>,
    /// Announced stops called off (reason code says why); the notice is removed.
    pub cancellations: Vec<Action>,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.rotate_out.is_empty()
            && self.resume.is_empty()
            && self.warnings.is_empty()
            && self.cancellations.is_empty()
    }
}

/// What the planner remembers of one workload.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WorkloadHistory {
    /// When rota last rotated it out.
    pub rotated_out_at: Option<f64>,
    /// When rota last resumed it.
    pub resumed_at: Option<f64>,
}

/// The planner's memory between ticks: last rotation and resume per workload, and the
/// `(from-tenant, to-tenant)` pairs of the previous tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RotationHistory {
    workloads: FxHashMap<WorkloadId, WorkloadHistory>,
    pairs: BTreeSet<(String, String)>,
}

impl RotationHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a plan that was carried out at `now`; the plan's pairs replace the previous
    /// tick's (so call it every tick, with an empty plan when nothing was done).
    pub fn record(&mut self, plan: &Plan, now: f64) {
        for a in &plan.rotate_out {
            self.workloads
                .entry(a.workload.clone())
                .or_default()
                .rotated_out_at = Some(now);
        }
        for a in &plan.resume {
            self.workloads
                .entry(a.workload.clone())
                .or_default()
                .resumed_at = Some(now);
        }
        let handed = plan.transfers.iter().flat_map(|t| {
            t.from_tenants
                .iter()
                .map(|f| (f.clone(), t.to_tenant.clone()))
        });
        // An announced stop is a decision too: no trading back on the next tick.
        let announced =
            (plan.warnings.iter()).map(|w| (w.action.tenant.clone(), w.claim_tenant.clone()));
        self.pairs = handed.chain(announced).collect();
    }

    /// What is remembered of `id`.
    pub fn workload(&self, id: &WorkloadId) -> Option<&WorkloadHistory> {
        self.workloads.get(id)
    }

    /// The `(from-tenant, to-tenant)` pairs of the last recorded tick, in order.
    pub fn previous_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(a, b)| (a.as_str(), b.as_str()))
    }

    /// Forgets a workload that no longer exists.
    pub fn forget(&mut self, id: &WorkloadId) {
        self.workloads.remove(id);
    }

    /// Forgets workloads whose last rotation and resume are both before `before` (older than
    /// any quantum), so the history stays bounded.
    pub fn prune(&mut self, before: f64) {
        self.workloads.retain(|_, h| {
            h.rotated_out_at.is_some_and(|t| t >= before)
                || h.resumed_at.is_some_and(|t| t >= before)
        });
    }

    /// Workloads remembered.
    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.pairs.is_empty()
    }
}

/// The total share gap `Σ |held − entitled|` of one resource's tenants.
pub fn share_gap(tenants: &[TenantShare]) -> f64 {
    tenants.iter().map(|t| (t.held - t.entitled).abs()).sum()
}

/// Plans one tick (see the module docs for the rules).
pub fn plan(input: &PlanInput, history: &RotationHistory) -> Plan {
    plan_with(input, history, true)
}

/// [`plan`], with the shortcuts that skip provably fruitless work (`skip`) or without them
/// (tests compare the two).
fn plan_with(input: &PlanInput, history: &RotationHistory, skip: bool) -> Plan {
    let mut tick = Tick::new(input, history);
    // Resources with announced stops, found in one pass: those are settled every tick.
    let noticed: FxHashSet<&str> = (input.running.iter())
        .filter(|w| w.stop.is_some())
        .map(|w| w.resource.as_str())
        .collect();
    let mut resources: Vec<&ResourceState> = input.resources.iter().collect();
    resources.sort_by(|a, b| a.resource.cmp(&b.resource));
    resources.dedup_by(|a, b| a.resource == b.resource);
    for state in resources {
        let r = state.resource.as_str();
        let rotated = input
            .rotated_out
            .iter()
            .filter(|w| w.workload.resource == r);
        // Without a rotated-out claim nothing can be resumed, so only a rotation could
        // change the plan: skip the resource when none can happen (cap spent, or no tenant
        // owed or over beyond the margin).
        let resumes = rotated.clone().next().is_some();
        // Announced stops are settled every tick (stopped when due, or cancelled).
        let announced = noticed.contains(r);
        let keep_going = resumes || announced;
        if skip && !keep_going && tick.rotations_left() == 0 {
            continue;
        }
        let mut pool = Pool::new(state, &input.running, &tick);
        let promised = match announced {
            true => tick.settle_notices(&mut pool, input, r),
            false => FxHashSet::default(),
        };
        if skip && !keep_going && !pool.may_rotate(tick.limits.margin_gpus) {
            continue;
        }
        let waiting = input.waiting.iter().filter(|w| w.resource == r);
        let claims = pool.claims(waiting, rotated);
        let last_resume = claims.iter().rposition(|c| c.resume);
        for (i, claim) in claims.iter().enumerate() {
            // Past the last resume with the cap spent, a claim can only take free GPUs,
            // which no later claim reads.
            if skip && tick.rotations_left() == 0 && last_resume.is_none_or(|l| i > l) {
                break;
            }
            // GPUs are already promised to it: no second victim for the same claim.
            if promised.contains(&claim.workload.id) {
                continue;
            }
            tick.serve(&mut pool, claim, skip);
        }
    }
    tick.plan
}

/// A workload asking for GPUs this tick: waiting, or rotated out (then served by a resume).
#[derive(Clone, Copy)]
struct Claim<'a> {
    workload: &'a WaitingWorkload,
    tenant: usize,
    resume: bool,
}

/// State shared by the resources of one tick: time, caps spent, pair bans, the plan so far.
struct Tick<'a> {
    now: f64,
    limits: Limits,
    history: &'a RotationHistory,
    /// `(victim tenant, claim tenant)` pairs forbidden this tick.
    banned: FxHashSet<(&'a str, &'a str)>,
    rotations: u32,
    per_tenant: FxHashMap<&'a str, u32>,
    plan: Plan,
}

impl<'a> Tick<'a> {
    fn new(input: &'a PlanInput, history: &'a RotationHistory) -> Self {
        Self {
            now: input.now,
            limits: input.limits,
            history,
            // Last tick `from` gave to `to`: now `to` must not give back to `from`.
            banned: history.previous_pairs().map(|(f, t)| (t, f)).collect(),
            rotations: 0,
            per_tenant: FxHashMap::default(),
            plan: Plan::default(),
        }
    }

    /// Whether `w` has run its quantum, counted from its last start or resume and from its
    /// last rotation out. An unknown or NaN time or quantum reads as "not yet".
    fn past_quantum(&self, w: &RunningWorkload) -> bool {
        let q = w.quantum_seconds;
        if !(q.is_finite() && q >= 0.0) {
            return false;
        }
        // The history can only move `since` later: a run too short since its start is too
        // short, without the lookup. (A NaN start may still be rescued by a resume.)
        if !self.may_be_past_quantum(w) {
            return false;
        }
        let mut since = w.started_at;
        if let Some(h) = self.history.workload(&w.id) {
            if let Some(r) = h.resumed_at {
                since = since.max(r);
            }
            if h.rotated_out_at
                .is_some_and(|t| self.now - t < q || t.is_nan())
            {
                return false;
            }
        }
        self.now - since >= q
    }

    /// What [`Tick::past_quantum`] can tell without the history: false means not past it.
    fn may_be_past_quantum(&self, w: &RunningWorkload) -> bool {
        let (q, since) = (w.quantum_seconds, w.started_at);
        q.is_finite() && q >= 0.0 && (since.is_nan() || self.now - since >= q)
    }

    fn rotated(&self, tenant: &str) -> u32 {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }

    fn rotations_left(&self) -> u32 {
        self.limits.max_per_tick.saturating_sub(self.rotations)
    }

    fn serve(&mut self, pool: &mut Pool<'a>, claim: &Claim<'a>, skip: bool) {
        let w = claim.workload;
        if w.gpus == 0 {
            return;
        }
        if let Some(site) = pool.free_fit(w) {
            if !claim.resume {
                pool.take_free(site, w.gpus, &[]);
                pool.expect(claim.tenant, w.gpus);
            } else if pool.may_resume(claim.tenant, w.gpus) {
                pool.take_free(site, w.gpus, &[]);
                self.resume(pool, claim, "GPUs are free");
            }
            return;
        }
        if self.rotations_left() == 0
            || !pool.owed_beyond_margin(claim.tenant, self.limits.margin_gpus)
        {
            return;
        }
        if skip && !pool.may_cover(claim, self) {
            return;
        }
        pool.prepare(claim, self);
        let Some(choice) = pool.search(claim, self) else {
            return;
        };
        match pool.commit(&choice, claim, self) {
            Some(from) => self.hand_over(pool, claim, "GPUs were freed by rotation", from),
            // Announced: the victims run out their warning; the claim waits for them.
            None => pool.start(claim.tenant, w.gpus),
        }
    }

    /// `claim` takes the GPUs its victims (of tenants `from`) gave up: a rotated-out claim is
    /// resumed, a waiting one counts as started (the gate admits it), and the transfer is kept.
    fn hand_over(&mut self, pool: &mut Pool<'a>, claim: &Claim<'a>, why: &str, from: Vec<String>) {
        let w = claim.workload;
        if claim.resume {
            self.resume(pool, claim, why);
        } else {
            pool.start(claim.tenant, w.gpus);
        }
        self.plan.transfers.push(Transfer {
            to: w.id.clone(),
            to_tenant: w.tenant.clone(),
            resource: w.resource.clone(),
            gpus: w.gpus,
            from_tenants: from,
        });
    }

    /// Settles the announced stops of resource `r`, grouped by the claim they make room for:
    /// a group whose claim no longer needs it is cancelled; otherwise its victims count as
    /// gone and its claim as started (the GPUs are promised), and the victims are stopped
    /// once due (then the transfer, and the resume of a rotated-out claim, follow). Returns
    /// the claims whose GPUs are promised.
    fn settle_notices(
        &mut self,
        pool: &mut Pool<'a>,
        input: &'a PlanInput,
        r: &str,
    ) -> FxHashSet<&'a WorkloadId> {
        let mut groups: BTreeMap<&'a WorkloadId, Vec<&'a RunningWorkload>> = BTreeMap::new();
        for w in input.running.iter().filter(|w| w.resource == r) {
            if let Some(notice) = &w.stop {
                groups.entry(&notice.claim).or_default().push(w);
            }
        }
        let mut claims: FxHashMap<&WorkloadId, (&'a WaitingWorkload, bool)> = (input.waiting)
            .iter()
            .filter(|w| w.resource == r && groups.contains_key(&w.id))
            .map(|w| (&w.id, (w, false)))
            .collect();
        for o in input.rotated_out.iter().map(|o| &o.workload) {
            if o.resource == r && groups.contains_key(&o.id) {
                claims.entry(&o.id).or_insert((o, true));
            }
        }
        let mut promised = FxHashSet::default();
        for (id, victims) in groups {
            let found = claims.get(id).and_then(|&(workload, resume)| {
                let tenant = pool.tenant(&workload.tenant)?;
                Some(Claim {
                    workload,
                    tenant,
                    resume,
                })
            });
            match self.still_needed(pool, found.as_ref(), &victims) {
                Ok(()) => {
                    if let Some(claim) = found {
                        promised.insert(id);
                        self.keep_promise(pool, &claim, &victims);
                    }
                }
                Err((code, why)) => {
                    for v in victims {
                        self.plan
                            .cancellations
                            .push(cancellation(v, id, code, &why));
                    }
                }
            }
        }
        promised
    }

    /// Whether an announced stop still serves its claim; else the reason code and sentence.
    fn still_needed(
        &self,
        pool: &Pool<'a>,
        claim: Option<&Claim<'a>>,
        victims: &[&RunningWorkload],
    ) -> Result<(), (&'static str, String)> {
        let Some(claim) = claim else {
            return Err((
                CLAIM_GONE,
                "it no longer waits (placed elsewhere or deleted)".into(),
            ));
        };
        if let Some(v) = victims.iter().find(|v| !v.preemptible || v.protected) {
            return Err((OPTED_OUT, format!("{} may no longer be rotated out", v.id)));
        }
        if !pool.below_share(claim.tenant) {
            let why = format!(
                "tenant {} is no longer below its share",
                claim.workload.tenant
            );
            return Err((CLAIM_AT_SHARE, why));
        }
        let mut given: BTreeMap<&str, u64> = BTreeMap::new();
        for v in victims {
            let slot = given.entry(&v.tenant).or_default();
            *slot = slot.saturating_add(v.gpus());
        }
        for (tenant, gpus) in given {
            if !pool.keeps_share(tenant, gpus, self.limits.margin_gpus) {
                let why = format!("tenant {tenant} would fall below its share");
                return Err((VICTIM_AT_SHARE, why));
            }
        }
        Ok(())
    }

    /// The promise of an announced stop: its GPUs go to `claim`; due victims are stopped.
    fn keep_promise(
        &mut self,
        pool: &mut Pool<'a>,
        claim: &Claim<'a>,
        victims: &[&RunningWorkload],
    ) {
        let mut due = 0;
        for v in victims {
            pool.leave(&v.tenant, v.gpus());
            // A time that cannot be compared counts as due: a promise never holds forever.
            if v.stop.as_ref().is_some_and(|n| {
                n.stop_at.partial_cmp(&self.now) != Some(std::cmp::Ordering::Greater)
            }) {
                due += 1;
                let reason = format!(
                    "announced stop is due: its GPUs go to {} (tenant {}, below its share)",
                    claim.workload.id, claim.workload.tenant
                );
                self.plan.rotate_out.push(Action {
                    workload: v.id.clone(),
                    tenant: v.tenant.clone(),
                    gpus: v.gpus(),
                    reason,
                    reason_code: OVER_SHARE,
                });
            }
        }
        if due < victims.len() {
            pool.start(claim.tenant, claim.workload.gpus);
            return;
        }
        let from = victims.iter().map(|v| v.tenant.clone()).collect();
        self.hand_over(
            pool,
            claim,
            "GPUs were freed by an announced rotation",
            from,
        );
    }

    fn resume(&mut self, pool: &mut Pool<'a>, claim: &Claim<'a>, why: &str) {
        let w = claim.workload;
        let (held, entitled) = pool.standing_numbers(claim.tenant);
        let reason = format!(
            "tenant {} holds {} {} GPUs, below its share of {:.1}; {why}",
            w.tenant,
            Gpus(held),
            w.resource,
            entitled
        );
        pool.start(claim.tenant, w.gpus);
        self.plan.resume.push(Action {
            workload: w.id.clone(),
            tenant: w.tenant.clone(),
            gpus: w.gpus,
            reason,
            reason_code: RESUME_TURN,
        });
    }
}

/// The cancellation of `victim`'s announced stop for `claim`.
fn cancellation(
    victim: &RunningWorkload,
    claim: &WorkloadId,
    code: &'static str,
    why: &str,
) -> Action {
    Action {
        workload: victim.id.clone(),
        tenant: victim.tenant.clone(),
        gpus: victim.gpus(),
        reason: format!("the stop announced to make room for {claim} is cancelled: {why}"),
        reason_code: code,
    }
}

/// A GPU count that prints without a fraction when it has none.
struct Gpus(f64);

impl fmt::Display for Gpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if (self.0 - self.0.round()).abs() < EPS {
            write!(f, "{}", self.0.round())
        } else {
            write!(f, "{:.1}", self.0)
        }
    }
}
