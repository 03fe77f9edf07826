//! `rota`: the production pieces driving the simulator — the fair-share queue order (the rule
//! of [`crate::core::queue`]), the gate, usage-corrected entitlements ([`entitlements`] over a
//! decayed [`Ledger`]) and the rotation planner ([`crate::core::rotation::plan`]) on every tick.
//!
//! ```text
//!   arrival ─▶ queue (priority, standing, arrival) ─▶ gate ─▶ Sim::start
//!   tick (rotation.intervalSeconds) ─▶ ledger ─▶ entitlements ─▶ standings into the queue
//!                                    └─▶ plan ─▶ Sim::suspend (victims back into the queue)
//!                                              └─▶ Sim::start (the claims GPUs were freed for)
//! ```
//!
//! The queue keeps the production order (higher PriorityClass, then lower tenant standing
//! `held / entitled`, then earlier arrival) per tenant, so a standing change costs O(1) and the
//! first job in order that fits costs O(T · gang sizes · log n); `core::queue::FairQueue`
//! re-prioritises a tenant's entries on every standing change, too slow for a 52,849-job
//! replay with a standing change per tenant every tick.
//!
//! Modelling choices: the ledger is charged with each tenant's exact holdings between calls
//! (holdings only change inside engine events, each followed by a call here); entitlements and
//! queue standings are refreshed on ticks, as the live refresh is periodic; every gang may span
//! nodes (as [`crate::sim::SimCluster::place`] places it), so the planner sees the pool as one
//! site ([`Spread::AnyNodes`]) whose free GPUs are the largest fit; a rotated-out job re-enters
//! the queue with its original arrival (its tenant's fair-share position) and resumes through
//! the gate. The gate admits the head while it fits, then backfills behind a blocked head as
//! [`Backfill`] says (default: only into GPUs the head cannot use after the next plan). The
//! claims a plan freed GPUs for start at once (the live loop admits them). At most
//! [`MAX_CLAIMS`] queue entries are offered to the planner per tick, and only over-share
//! tenants' jobs as victims (the planner ignores the others).
//!
//! Per tick, the planner input is not rebuilt: each job's `WaitingWorkload` /
//! `RunningWorkload` (with their strings) is built once when it is queued or started and kept
//! in `Slots`; a tick lends the entries it offers to a reused [`PlanInput`] and takes them back
//! after the plan. A tick plans only when some tenant is owed more than the margin, another is
//! over it, and some running job passes the planner's own victim test as far as it depends on
//! the job (`may_be_victim`); otherwise the plan is provably empty. Only such jobs are offered
//! as victims, in job order (the planner's input order). To find them without a pass over
//! every running job, running jobs are kept per tenant in start order: only tenants over the
//! margin are read, each only as far as runs old enough to pass the shortest quantum. None of
//! this changes a plan.
//!
//! Must not: scan all jobs per event (it keeps its own running set and queue), or read a clock.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use super::{rank, ClassQueue, Rank};
use crate::config::{QuantumConfig, RotaConfig};
use crate::core::fairshare::{entitlements, SharePolicy, Standing, TenantLoad};
use crate::core::ledger::Ledger;
use crate::core::rotation::{
    plan, Limits, Plan, PlanInput, ResourceState, RotationHistory, RunningWorkload, Spread,
    TenantShare, WaitingWorkload,
};
use crate::core::{WorkloadId, WorkloadKind};
use crate::sim::cluster::GPU_RESOURCE;
use crate::sim::engine::{JobId, Policy, Sim, TenantState};
use crate::sim::trace::Trace;

/// At most this many queue entries (in order) are offered to the planner per tick: the gate
/// serves the queue in order, so claims further back would not be admitted this tick anyway.
pub const MAX_CLAIMS: usize = 128;

/// The rotation history is pruned every this many ticks.
const PRUNE_EVERY_TICKS: u64 = 128;

/// Slack of the planner's no-overshoot test (`core::rotation::EPS`), or looser: the victim
/// pre-check must never reject a job the planner would accept.
const VICTIM_EPS: f64 = 1e-6;

/// The planner's clamp of held and entitled GPUs (`pool::sane`): non-finite or negative is 0.
fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// Whether running `job` passes the planner's victim test as far as it depends on the job
/// alone (`pool::add_victim`: GPUs > 0, its tenant above its entitlement by more than the
/// margin, no overshoot, past its quantum since its start). Looser than the planner's (which
/// also checks the history), never stricter.
fn may_be_victim(settings: &RotaSettings, entitled: &[f64], sim: &Sim<'_>, job: JobId) -> bool {
    let spec = sim.spec(job);
    // As `pool::sane`: the planner clamps non-finite or negative numbers to 0.
    let held = sane(sim.tenants()[spec.tenant].held as f64);
    let excess = held - sane(entitled[spec.tenant]);
    let q = settings.quantum_of(spec.kind);
    spec.gpus > 0
        && excess > settings.limits.margin_gpus
        && spec.gpus as f64 <= excess + VICTIM_EPS
        && q.is_finite()
        && q >= 0.0
        && sim.now() - sim.job(job).started_at >= q
}

/// At least as many GPUs as a tenant `excess` above its entitlement can give without going
/// below it (the planner's no-overshoot test, with room for its slack and rounding).
fn at_most(excess: f64) -> u64 {
    if excess < 0.0 {
        1
    } else if excess < 1e12 {
        excess as u64 + 1
    } else {
        u64::MAX
    }
}

/// The only site of the simulated pool (gangs span nodes freely).
const POOL: &str = "pool";

/// What the `rota` policy takes from the config.
#[derive(Clone, Debug, PartialEq)]
pub struct RotaSettings {
    /// Seconds between rotation ticks (`rotation.intervalSeconds`, default 30).
    pub interval_seconds: f64,
    /// Hysteresis and caps (`rotation.*`).
    pub limits: Limits,
    /// Quanta per kind (`quantum.*`; Jobs 600 s by default).
    pub quantum: QuantumConfig,
    /// Half-life of decayed usage (`usage.halfLifeSeconds`, default 7 days).
    pub half_life_seconds: f64,
    /// What the gate does behind a head that does not fit. Default
    /// [`Backfill::NeverDelayHead`].
    pub backfill: Backfill,
    /// The config, for weights and groups.
    pub config: RotaConfig,
}

/// The gate's rule for jobs behind a head that does not fit the free GPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backfill {
    /// Backfill only into free GPUs beyond those the head must find free after the next plan
    /// (its need minus what its tenant is owed beyond the margin): a backfilled job never takes
    /// GPUs the head could start on. `core::queue::admit` is the same rule without the credit
    /// for what a plan may free.
    #[default]
    NeverDelayHead,
    /// Backfill any job that fits, in queue order (work-conserving; a large head may wait
    /// until its tenant's share or a quiet period lets it start).
    Free,
}

impl RotaSettings {
    /// Settings from a (validated) config.
    pub fn from_config(config: &RotaConfig) -> Self {
        Self {
            interval_seconds: config.rotation.interval_seconds.max(1) as f64,
            limits: Limits::from_config(&config.rotation),
            quantum: config.quantum.clone(),
            half_life_seconds: config.usage.half_life_seconds,
            backfill: Backfill::default(),
            config: config.clone(),
        }
    }

    /// The longest quantum any workload may have.
    fn longest_quantum(&self) -> f64 {
        let q = &self.quantum;
        let longest = q
            .job_seconds
            .max(q.virtual_machine_seconds)
            .max(q.pod_seconds);
        longest.max(q.max_seconds) as f64
    }

    /// The shortest quantum any workload may have: a run shorter than this is past none.
    fn shortest_quantum(&self) -> f64 {
        let q = &self.quantum;
        q.job_seconds
            .min(q.virtual_machine_seconds)
            .min(q.pod_seconds) as f64
    }

    fn quantum_of(&self, kind: WorkloadKind) -> f64 {
        let q = &self.quantum;
        let seconds = match kind {
            WorkloadKind::Job => q.job_seconds,
            WorkloadKind::VirtualMachine => q.virtual_machine_seconds,
            WorkloadKind::Pod => q.pod_seconds,
        };
        seconds as f64
    }
}

impl Default for RotaSettings {
    /// The default config's settings.
    fn default() -> Self {
        Self::from_config(&RotaConfig::default())
    }
}

/// Pending jobs in the queue's order, kept per tenant (module docs).
#[derive(Debug)]
struct Pending {
    order: Vec<BTreeSet<Rank>>,
    sizes: Vec<ClassQueue>,
    standing: Vec<Standing>,
}

/// The position of a job in the queue: PriorityClass (negated), tenant standing, arrival.
type Key = (i64, Standing, JobId);

impl Pending {
    fn new(tenants: usize) -> Self {
        Self {
            order: vec![BTreeSet::new(); tenants],
            sizes: vec![ClassQueue::default(); tenants],
            standing: vec![Standing::default(); tenants],
        }
    }

    fn key(&self, t: usize, r: Rank) -> Key {
        (r.0, self.standing[t], r.1)
    }

    fn push(&mut self, t: usize, gpus: u32, r: Rank) {
        self.order[t].insert(r);
        self.sizes[t].insert(gpus, r);
    }

    fn remove(&mut self, t: usize, gpus: u32, r: Rank) -> bool {
        self.sizes[t].remove(gpus, r);
        self.order[t].remove(&r)
    }

    /// The job served next: `(tenant, rank)`.
    fn head(&self) -> Option<(usize, Rank)> {
        (0..self.order.len())
            .filter_map(|t| self.order[t].first().map(|&r| (self.key(t, r), t, r)))
            .min()
            .map(|(_, t, r)| (t, r))
    }

    /// The first job in order of at most `limit` GPUs: `(tenant, rank)`.
    fn first_fitting(&self, limit: u64) -> Option<(usize, Rank)> {
        (0..self.sizes.len())
            .filter_map(|t| {
                let (r, _) = self.sizes[t].first_fitting(limit)?;
                Some((self.key(t, r), t, r))
            })
            .min()
            .map(|(_, t, r)| (t, r))
    }

    /// The first `n` jobs in order (a merge of the tenants' ordered sets).
    fn in_order(&self, n: usize) -> Vec<JobId> {
        let mut iters: Vec<_> = self.order.iter().map(|o| o.iter()).collect();
        let mut heap = BinaryHeap::new();
        for (t, it) in iters.iter_mut().enumerate() {
            if let Some(&r) = it.next() {
                heap.push(Reverse((self.key(t, r), t)));
            }
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(Reverse((key, t))) = heap.pop() else {
                break;
            };
            out.push(key.2);
            if let Some(&r) = iters[t].next() {
                heap.push(Reverse((self.key(t, r), t)));
            }
        }
        out
    }
}

/// A run's start as a key that sorts like the number (`f64::total_cmp` order).
fn start_key(started_at: f64) -> u64 {
    let bits = started_at.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// Running jobs per tenant, in start order (module docs).
#[derive(Debug, Default)]
struct Running {
    by_tenant: Vec<BTreeSet<(u64, JobId)>>,
    /// Each running job's key in its tenant's set, indexed by [`JobId`].
    keys: Vec<u64>,
}

impl Running {
    fn new(tenants: usize, jobs: usize) -> Self {
        Self {
            by_tenant: vec![BTreeSet::new(); tenants],
            keys: vec![0; jobs],
        }
    }

    fn insert(&mut self, tenant: usize, job: JobId, started_at: f64) {
        let key = start_key(started_at);
        if let (Some(set), Some(k)) = (
            self.by_tenant.get_mut(tenant),
            self.keys.get_mut(job as usize),
        ) {
            *k = key;
            set.insert((key, job));
        }
    }

    fn remove(&mut self, tenant: usize, job: JobId) {
        if let (Some(set), Some(&key)) =
            (self.by_tenant.get_mut(tenant), self.keys.get(job as usize))
        {
            set.remove(&(key, job));
        }
    }
}

/// The `rota` policy.
pub struct Rota {
    settings: RotaSettings,
    share: SharePolicy,
    names: Vec<String>,
    ledger: Option<Ledger>,
    /// Holdings at the end of the last call (what was held since then).
    charged: Vec<f64>,
    entitled: Vec<f64>,
    pending: Pending,
    running: Running,
    /// The jobs `may_be_victim` passed this tick (a reused buffer).
    victims: Vec<JobId>,
    /// Per tenant, the most GPUs of one of those jobs (0: none).
    largest: Vec<u64>,
    history: RotationHistory,
    ticks: u64,
    /// Planner inputs kept between ticks (module docs): each job's entries are built once,
    /// when it is queued or started, and lent to `buffer` for a plan.
    slots: Slots,
    /// The planner input, reused: its vectors are emptied back into `slots` after each plan.
    buffer: PlanInput,
}

/// Each job's planner entries, indexed by [`JobId`]: its waiting entry while queued, its
/// running entry while running (`None` while lent to the planner input).
#[derive(Debug, Default)]
struct Slots {
    waiting: Vec<Option<WaitingWorkload>>,
    running: Vec<Option<RunningWorkload>>,
    /// The jobs lent to the input, in the input's order.
    lent_running: Vec<JobId>,
    lent_waiting: Vec<JobId>,
}

impl Rota {
    /// A `rota` policy for `trace` with `settings`. Tenant weights are the trace's (which the
    /// CLI already took from the config when one was given); groups come from the config.
    pub fn new(trace: &Trace, settings: RotaSettings) -> Self {
        let mut share = SharePolicy::from_config(&settings.config);
        for t in &trace.tenants {
            let group = settings
                .config
                .tenants
                .iter()
                .find(|c| c.name == t.name)
                .and_then(|c| c.group.as_deref());
            share = share.with_tenant(&t.name, t.weight, group);
        }
        let tenants = trace.tenants.len();
        Self {
            ledger: Ledger::new(settings.half_life_seconds).ok(),
            settings,
            share,
            names: trace.tenants.iter().map(|t| t.name.clone()).collect(),
            charged: vec![0.0; tenants],
            entitled: vec![0.0; tenants],
            pending: Pending::new(tenants),
            running: Running::new(tenants, trace.jobs.len()),
            victims: Vec::new(),
            largest: Vec::new(),
            history: RotationHistory::new(),
            ticks: 0,
            slots: Slots {
                waiting: vec![None; trace.jobs.len()],
                running: vec![None; trace.jobs.len()],
                ..Slots::default()
            },
            buffer: PlanInput::default(),
        }
    }

    fn enqueue(&mut self, sim: &Sim<'_>, job: JobId) {
        let spec = sim.spec(job);
        self.pending
            .push(spec.tenant, spec.gpus, rank(spec.priority, job));
        let entry = WaitingWorkload {
            id: self.workload_id(sim, job),
            tenant: self.names[spec.tenant].clone(),
            resource: GPU_RESOURCE.into(),
            gpus: spec.gpus as u64,
            spread: Spread::AnyNodes,
            priority: spec.priority,
        };
        if let Some(slot) = self.slots.waiting.get_mut(job as usize) {
            *slot = Some(entry);
        }
    }

    fn dequeue(&mut self, sim: &Sim<'_>, job: JobId) -> bool {
        if let Some(slot) = self.slots.waiting.get_mut(job as usize) {
            *slot = None;
        }
        let spec = sim.spec(job);
        self.pending
            .remove(spec.tenant, spec.gpus, rank(spec.priority, job))
    }

    /// Charges the ledger with what each tenant held since the last call.
    fn charge(&mut self, sim: &Sim<'_>) {
        if let Some(ledger) = &mut self.ledger {
            let held = self.names.iter().zip(&self.charged);
            ledger.advance(sim.now(), held.map(|(n, &h)| (n.as_str(), h, None)));
        }
    }

    /// Remembers the holdings now, charged at the next call.
    fn snapshot(&mut self, sim: &Sim<'_>) {
        for (c, t) in self.charged.iter_mut().zip(sim.tenants()) {
            *c = t.held as f64;
        }
    }

    /// Usage-corrected entitlements, and the standings they give the queue.
    fn refresh(&mut self, sim: &Sim<'_>) {
        let now = sim.now();
        let usage: Vec<f64> = self
            .names
            .iter()
            .map(|n| self.ledger.as_ref().map_or(0.0, |l| l.usage(n, now)))
            .collect();
        let loads: Vec<TenantLoad<'_>> = self
            .names
            .iter()
            .zip(sim.tenants())
            .zip(&usage)
            .map(|((name, t), &u)| TenantLoad {
                tenant: name,
                held: t.held as f64,
                pending: t.pending_gpus as f64,
                usage: u,
            })
            .collect();
        let e = entitlements(&self.share, sim.capacity() as f64, &loads);
        for (i, e) in e.iter().enumerate() {
            self.entitled[i] = e.entitled;
            self.pending.standing[i] = e.standing;
        }
    }

    /// Some tenant with pending work is owed more than the margin while another holds more
    /// than the margin above its entitlement: only then can a plan rotate anything.
    fn may_rotate(&mut self, sim: &Sim<'_>) -> bool {
        let m = self.settings.limits.margin_gpus;
        let tenants = sim.tenants().iter().zip(&self.entitled);
        let (mut owed, mut over) = (false, false);
        for (t, &e) in tenants {
            owed |= t.pending_jobs > 0 && e - t.held as f64 > m;
            over |= t.held as f64 - e > m;
        }
        owed && over && self.has_victim(sim) && self.may_cover(sim)
    }

    /// Whether some claim could get GPUs from a plan. The planner searches only for claims
    /// of tenants owed more than the margin that the free GPUs do not cover, and a search
    /// succeeds only if the free GPUs plus what the over-share tenants could give reach the
    /// claim: each tenant at most its excess (no overshoot) and at most its per-tenant cap
    /// times its largest victim (`largest`, from `has_victim`, a superset of the planner's
    /// victims). This is `core::rotation`'s own per-claim bound (`Pool::may_cover`) with
    /// fewer exclusions (no pair bans or priorities), and every job of an owed tenant counts,
    /// not only the claims offered; so when it is false every search fails and the plan is
    /// empty.
    fn may_cover(&self, sim: &Sim<'_>) -> bool {
        let limits = self.settings.limits;
        let cap = u64::from(limits.max_per_tenant_per_tick);
        let tenants = sim.tenants().iter().zip(&self.entitled);
        let mut reach = sim.largest_fit();
        for ((t, &e), &largest) in tenants.clone().zip(&self.largest) {
            if largest > 0 {
                let excess = sane(t.held as f64) - sane(e);
                reach = reach.saturating_add(at_most(excess).min(cap.saturating_mul(largest)));
            }
        }
        let owed =
            |(t, &e): (&TenantState, &f64)| sane(e) - sane(t.held as f64) > limits.margin_gpus;
        (tenants.enumerate())
            .any(|(i, te)| owed(te) && self.pending.sizes[i].first_fitting(reach).is_some())
    }

    /// Collects into `victims` the running jobs that pass the planner's victim test as far
    /// as it depends on the job alone (`may_be_victim`), and each tenant's largest into
    /// `largest`; whether there are any.
    /// The planner's own test is stricter (it also checks the history, which only rotations
    /// add to), so when there are none every claim finds no victim, no rotation happens, and
    /// the plan is empty: skipping it changes nothing. Reads only tenants above their
    /// entitlement by more than the margin (`may_be_victim` requires it), each in start order
    /// until a run is shorter than the shortest quantum (later starts are shorter still).
    fn has_victim(&mut self, sim: &Sim<'_>) -> bool {
        let (settings, entitled) = (&self.settings, &self.entitled);
        let (now, shortest) = (sim.now(), settings.shortest_quantum());
        self.victims.clear();
        self.largest.clear();
        self.largest.resize(self.running.by_tenant.len(), 0);
        for (t, set) in self.running.by_tenant.iter().enumerate() {
            let excess = sane(sim.tenants()[t].held as f64) - sane(entitled[t]);
            // As `may_be_victim` words it (a NaN compares false there too).
            let over = excess > settings.limits.margin_gpus;
            if !over {
                continue;
            }
            for &(_, job) in set {
                let long_enough = now - sim.job(job).started_at >= shortest;
                if !long_enough {
                    break;
                }
                if may_be_victim(settings, entitled, sim, job) {
                    self.victims.push(job);
                    self.largest[t] = self.largest[t].max(u64::from(sim.spec(job).gpus));
                }
            }
        }
        !self.victims.is_empty()
    }

    fn workload_id(&self, sim: &Sim<'_>, job: JobId) -> WorkloadId {
        let spec = sim.spec(job);
        WorkloadId {
            kind: spec.kind,
            namespace: self.names[spec.tenant].clone(),
            name: job.to_string(),
        }
    }

    /// The running entry of a job just started (its run starts now).
    fn running_entry(&self, sim: &Sim<'_>, job: JobId) -> RunningWorkload {
        let spec = sim.spec(job);
        RunningWorkload {
            id: self.workload_id(sim, job),
            tenant: self.names[spec.tenant].clone(),
            resource: GPU_RESOURCE.into(),
            nodes: vec![(POOL.into(), spec.gpus as u64)],
            started_at: sim.job(job).started_at,
            attained_gpu_seconds: sim.attained(job),
            quantum_seconds: self.settings.quantum_of(spec.kind),
            preemptible: true,
            protected: false,
            priority: spec.priority,
        }
    }

    /// Fills `buffer` for this tick, lending it the entries of the jobs it lists.
    fn fill_input(&mut self, sim: &Sim<'_>) {
        // Only jobs passing the planner's victim test can be victims: the planner skips the
        // others without indexing them (victims keep the input's order), so leaving them out
        // changes no plan and saves lending them every tick. `has_victim` listed them, per
        // tenant; the input lists them in job order.
        self.victims.sort_unstable();
        let slots = &mut self.slots;
        for &job in &self.victims {
            // Every running job has an entry (set at launch); one lent is listed with it.
            if let Some(mut w) = slots.running.get_mut(job as usize).and_then(Option::take) {
                w.started_at = sim.job(job).started_at;
                w.attained_gpu_seconds = sim.attained(job);
                self.buffer.running.push(w);
                slots.lent_running.push(job);
            }
        }
        for job in self.pending.in_order(MAX_CLAIMS) {
            if let Some(w) = slots.waiting.get_mut(job as usize).and_then(Option::take) {
                self.buffer.waiting.push(w);
                slots.lent_waiting.push(job);
            }
        }
        self.buffer.now = sim.now();
        self.buffer.limits = self.settings.limits;
        if self.buffer.resources.is_empty() {
            self.buffer.resources.push(self.resource_state());
        }
        let state = &mut self.buffer.resources[0];
        for ((share, t), &entitled) in state
            .tenants
            .iter_mut()
            .zip(sim.tenants())
            .zip(&self.entitled)
        {
            share.held = t.held as f64;
            share.entitled = entitled;
        }
        state.free[0].1 = sim.largest_fit();
    }

    /// The pool's resource state; held, entitled and free are set by `fill_input`.
    fn resource_state(&self) -> ResourceState {
        let tenants = self
            .names
            .iter()
            .map(|name| TenantShare {
                tenant: name.clone(),
                held: 0.0,
                entitled: 0.0,
            })
            .collect();
        ResourceState {
            resource: GPU_RESOURCE.into(),
            tenants,
            free: vec![(POOL.into(), 0)],
        }
    }

    /// Returns the entries lent to `buffer` to their slots.
    fn reclaim_input(&mut self) {
        let running = self.buffer.running.drain(..);
        for (job, w) in self.slots.lent_running.drain(..).zip(running) {
            self.slots.running[job as usize] = Some(w);
        }
        let waiting = self.buffer.waiting.drain(..);
        for (job, w) in self.slots.lent_waiting.drain(..).zip(waiting) {
            self.slots.waiting[job as usize] = Some(w);
        }
    }

    /// Suspends the victims (back into the queue) and starts the claims GPUs were freed for.
    fn apply(&mut self, sim: &mut Sim<'_>, plan: &Plan) {
        for a in &plan.rotate_out {
            let Ok(job) = a.workload.name.parse::<JobId>() else {
                continue;
            };
            let tenant = sim.spec(job).tenant;
            if sim.suspend(job) {
                self.running.remove(tenant, job);
                if let Some(slot) = self.slots.running.get_mut(job as usize) {
                    *slot = None;
                }
                self.enqueue(sim, job);
            }
        }
        for t in &plan.transfers {
            if let Ok(job) = t.to.name.parse::<JobId>() {
                self.launch(sim, job);
            }
        }
    }

    /// Starts a queued job if it fits now.
    fn launch(&mut self, sim: &mut Sim<'_>, job: JobId) -> bool {
        if !sim.start(job) {
            return false;
        }
        self.dequeue(sim, job);
        (self.running).insert(sim.spec(job).tenant, job, sim.job(job).started_at);
        if (job as usize) < self.slots.running.len() {
            self.slots.running[job as usize] = Some(self.running_entry(sim, job));
        }
        true
    }

    /// GPUs a blocked head of `gpus` GPUs of tenant `t` must find free: its need minus what
    /// the next plan may free for it (what its tenant is owed, when beyond the margin).
    fn head_keep(&self, sim: &Sim<'_>, t: usize, gpus: u64) -> u64 {
        if self.settings.backfill == Backfill::Free {
            return 0;
        }
        let owed = self.entitled[t] - sim.tenants()[t].held as f64;
        let rotatable = if owed > self.settings.limits.margin_gpus {
            owed.floor() as u64
        } else {
            0
        };
        gpus.saturating_sub(rotatable)
    }
}

impl Policy for Rota {
    fn name(&self) -> &str {
        "rota"
    }

    fn on_arrival(&mut self, sim: &Sim<'_>, job: JobId) {
        self.enqueue(sim, job);
    }

    fn on_finish(&mut self, sim: &Sim<'_>, job: JobId) {
        self.running.remove(sim.spec(job).tenant, job);
        if let Some(slot) = self.slots.running.get_mut(job as usize) {
            *slot = None;
        }
    }

    fn tick_seconds(&self) -> Option<f64> {
        Some(self.settings.interval_seconds)
    }

    fn on_tick(&mut self, sim: &mut Sim<'_>) {
        self.charge(sim);
        self.refresh(sim);
        let plan = if self.may_rotate(sim) {
            self.fill_input(sim);
            let p = plan(&self.buffer, &self.history);
            self.reclaim_input();
            self.apply(sim, &p);
            p
        } else {
            Plan::default()
        };
        self.history.record(&plan, sim.now());
        // Entries older than any quantum decide nothing any more: keep the history bounded.
        self.ticks += 1;
        if self.ticks % PRUNE_EVERY_TICKS == 0 {
            self.history
                .prune(sim.now() - self.settings.longest_quantum());
        }
        self.snapshot(sim);
    }

    /// The gate: start the head while it fits. Behind a head that does not fit, backfill in
    /// queue order only into free GPUs beyond what the head must find free (see
    /// `head_keep`), so a backfill never takes GPUs the head could start on after the next
    /// plan.
    fn schedule(&mut self, sim: &mut Sim<'_>) {
        self.charge(sim);
        while let Some((t, head)) = self.pending.head() {
            let gpus = sim.spec(head.1).gpus as u64;
            let free = sim.largest_fit();
            let job = if gpus <= free {
                head.1
            } else {
                let keep = self.head_keep(sim, t, gpus);
                match self.pending.first_fitting(free.saturating_sub(keep)) {
                    Some((_, r)) if free > keep => r.1,
                    _ => break,
                }
            };
            if !self.launch(sim, job) {
                break;
            }
        }
        self.snapshot(sim);
    }
}
