//! `rota`: the production engine driving the simulator — the fair-share queue
//! ([`FairQueue`], the extender's), the gate's walk with reservation and backfill
//! ([`gate::walk`], [`gate::due_evictions`]), usage-corrected entitlements ([`entitlements`]
//! over a decayed [`Ledger`]) and the rotation planner ([`crate::core::rotation::plan`]).
//!
//! ```text
//!   arrival ─▶ FairQueue (priority, standing, within tenant: LAS or FIFO) ─▶ gate::walk ─▶ Sim::start
//!   tick (rotation.intervalSeconds) ─▶ ledger ─▶ entitlements ─▶ standings into the queue
//!                                    └─▶ plan ─▶ Sim::suspend (victims back into the queue)
//!                                              └─▶ Sim::start (the claims GPUs were freed for)
//! ```
//!
//! Modelling choices: the ledger is charged with each tenant's exact holdings between calls
//! (holdings only change inside engine events, each followed by a call here); entitlements and
//! queue standings are refreshed on ticks, as the live refresh is periodic; every gang may span
//! the nodes of one pool (as [`crate::sim::SimCluster::place`] places it), so the gate's supply
//! is each pool's free GPUs and the planner sees the pool as one site ([`Spread::AnyNodes`])
//! whose free GPUs are the largest fit; a rotated-out job re-enters the queue with its
//! original arrival and the GPU-seconds it attained, and resumes through the gate. The
//! reservation holder keeps the pool where it fits soonest, so with one pool (the default
//! homogeneous cluster) GPUs released while a large gang waits are kept for it until it
//! fits: at most its size minus one GPU idles meanwhile. The claims a plan freed GPUs for start
//! at once (the live loop admits them). At most [`MAX_CLAIMS`] queue entries are offered to
//! the planner per tick, and only over-share tenants' jobs as victims (the planner ignores
//! the others).
//!
//! Per tick, the planner input is not rebuilt: each job's `WaitingWorkload` /
//! `RunningWorkload` is built once when it is queued or started and kept in `Slots`; a tick
//! lends the entries it offers to a reused [`PlanInput`] and takes them back after the plan.
//! A tick plans only when some tenant is owed more than the margin, another is over it, and
//! some running job passes the planner's own victim test as far as it depends on the job
//! (`may_be_victim`); otherwise the plan is provably empty. Running jobs are kept per tenant
//! in start order, so only tenants over the margin are read. None of this changes a plan.
//!
//! Must not: keep a queue order of its own (the queue is [`FairQueue`]), scan all jobs per
//! event, or read a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use crate::config::{QuantumConfig, RotaConfig, WarningConfig};
use crate::core::fairshare::{entitlements, SharePolicy, Standing, TenantLoad};
use crate::core::feasibility::{Fit, NeverFit};
use crate::core::gate::{self, Step, Supply};
use crate::core::ledger::Ledger;
use crate::core::queue::{FairQueue, QueueEntry, WithinTenant};
use crate::core::rotation::{
    plan, Limits, Plan, PlanInput, ResourceState, RotationHistory, RunningWorkload, Spread,
    StopNotice, TenantShare, WaitingWorkload,
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
    /// Notice before a stop, per kind (`rotation.warning.*`; VMs 300 s by default): the
    /// victim keeps its GPUs until then.
    pub warning: WarningConfig,
    /// Half-life of decayed usage (`usage.halfLifeSeconds`).
    pub half_life_seconds: f64,
    /// Order inside a tenant (`queue.withinTenant`).
    pub within: WithinTenant,
    /// The config, for weights and groups.
    pub config: RotaConfig,
}

impl RotaSettings {
    /// Settings from a (validated) config.
    pub fn from_config(config: &RotaConfig) -> Self {
        Self {
            interval_seconds: config.rotation.interval_seconds.max(1) as f64,
            limits: Limits::from_config(&config.rotation),
            quantum: config.quantum.clone(),
            warning: config.rotation.warning.clone(),
            half_life_seconds: config.usage.half_life_seconds,
            within: config.queue.within_tenant,
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

    fn warning_of(&self, kind: WorkloadKind) -> f64 {
        self.warning.seconds_for(kind) as f64
    }

    fn quantum_of(&self, kind: WorkloadKind) -> f64 {
        self.quantum.seconds_for(kind) as f64
    }
}

impl Default for RotaSettings {
    /// The default config's settings.
    fn default() -> Self {
        Self::from_config(&RotaConfig::default())
    }
}

/// The simulated pools as the gate's supply: free GPUs and capacity per pool (a gang spans
/// the nodes of one pool, never two).
struct SimSupply {
    pools: Vec<(u64, u64)>,
}

impl SimSupply {
    fn of(sim: &Sim<'_>) -> Self {
        Self {
            pools: sim.cluster().pools().collect(),
        }
    }

    fn largest_free(&self) -> u64 {
        self.pools.iter().map(|&(free, _)| free).max().unwrap_or(0)
    }
}

impl Supply<JobId> for SimSupply {
    fn fit(&self, entry: &QueueEntry<JobId>) -> Fit {
        let largest = self.pools.iter().map(|&(_, c)| c).max().unwrap_or(0);
        if self.pools.is_empty() {
            Fit::Never(NeverFit::NoNodes)
        } else if entry.gpus > largest {
            Fit::Never(NeverFit::GangTooLarge {
                gpus: entry.gpus,
                capacity: largest,
            })
        } else if self.largest_free() >= entry.gpus {
            Fit::Now
        } else {
            Fit::Later
        }
    }

    /// As `SimCluster::place`: the pool with the fewest free GPUs that holds it.
    fn take(&mut self, entry: &QueueEntry<JobId>) {
        let pool = (self.pools.iter_mut())
            .filter(|(free, _)| *free >= entry.gpus)
            .min_by_key(|(free, _)| *free);
        if let Some((free, _)) = pool {
            *free -= entry.gpus;
        }
    }

    /// The pool where it fits soonest (the most free GPUs among pools that can hold it) is
    /// kept for it: its free GPUs are no one else's.
    fn reserve(&mut self, entry: &QueueEntry<JobId>) {
        let pool = (self.pools.iter_mut())
            .filter(|(_, c)| *c >= entry.gpus)
            .max_by_key(|(free, _)| *free);
        if let Some((free, _)) = pool {
            *free = 0;
        }
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
    /// The production queue.
    queue: FairQueue<JobId>,
    /// Per tenant, its pending jobs by gang size (for the `may_cover` bound only).
    sizes: Vec<BTreeMap<u64, u32>>,
    /// The reservation holder of the last gate walk.
    holder: Option<JobId>,
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
    /// Announced stops of running jobs: the notice and the job it makes room for.
    notices: BTreeMap<JobId, (StopNotice, JobId)>,
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
    /// The job holding the reservation after the last gate walk: the first in queue order
    /// that fits only once others release GPUs.
    pub fn reservation_holder(&self) -> Option<JobId> {
        self.holder
    }

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
        let within = settings.within;
        Self {
            ledger: Ledger::new(settings.half_life_seconds).ok(),
            settings,
            share,
            names: trace.tenants.iter().map(|t| t.name.clone()).collect(),
            charged: vec![0.0; tenants],
            entitled: vec![0.0; tenants],
            queue: FairQueue::with_order(within),
            sizes: vec![BTreeMap::new(); tenants],
            holder: None,
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
            notices: BTreeMap::new(),
        }
    }

    fn enqueue(&mut self, sim: &Sim<'_>, job: JobId) {
        let spec = sim.spec(job);
        let gpus = u64::from(spec.gpus);
        self.queue.push(QueueEntry {
            key: job,
            tenant: self.names[spec.tenant].clone(),
            resource: GPU_RESOURCE.into(),
            gpus,
            priority_class: spec.priority,
            arrival: spec.arrival,
            attained: sim.attained(job),
        });
        *self.sizes[spec.tenant].entry(gpus).or_default() += 1;
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
        let sizes = &mut self.sizes[spec.tenant];
        if let Some(n) = sizes.get_mut(&u64::from(spec.gpus)) {
            *n -= 1;
            if *n == 0 {
                sizes.remove(&u64::from(spec.gpus));
            }
        }
        self.queue.remove(&job).is_some()
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
            // A tenant with no demand holds nothing: owed its share the moment work arrives.
            let standing = if e.demand > 0.0 {
                e.standing
            } else {
                Standing::new(0.0)
            };
            self.queue.set_standing(&self.names[i], standing);
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
        (tenants.enumerate()).any(|(i, te)| {
            owed(te)
                && self.sizes[i]
                    .first_key_value()
                    .is_some_and(|(&g, _)| g <= reach)
        })
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
            warning_seconds: self.settings.warning_of(spec.kind),
            stop: None,
        }
    }

    /// Fills `buffer` for this tick, lending it the entries of the jobs it lists.
    fn fill_input(&mut self, sim: &Sim<'_>) {
        // Only jobs passing the planner's victim test can be victims: the planner skips the
        // others without indexing them (victims keep the input's order), so leaving them out
        // changes no plan and saves lending them every tick. `has_victim` listed them, per
        // tenant; the input lists them in job order.
        // Announced stops are settled every tick, so their jobs are always listed.
        self.victims.extend(self.notices.keys());
        self.victims.sort_unstable();
        self.victims.dedup();
        let slots = &mut self.slots;
        for &job in &self.victims {
            // Every running job has an entry (set at launch); one lent is listed with it.
            if let Some(mut w) = slots.running.get_mut(job as usize).and_then(Option::take) {
                w.started_at = sim.job(job).started_at;
                w.attained_gpu_seconds = sim.attained(job);
                w.stop = self.notices.get(&job).map(|(n, _)| n.clone());
                self.buffer.running.push(w);
                slots.lent_running.push(job);
            }
        }
        let claims = self.queue.in_order(GPU_RESOURCE).take(MAX_CLAIMS);
        // A promised claim is offered wherever it is in the queue: unlisted, it would read
        // as gone and its stop be cancelled.
        let promised = self.notices.values().map(|&(_, claim)| claim);
        for job in claims.map(|e| e.key).chain(promised) {
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

    /// Suspends the victims (back into the queue), starts the claims GPUs were freed for, and
    /// keeps the announced stops (new ones noted, cancelled ones dropped).
    fn apply(&mut self, sim: &mut Sim<'_>, plan: &Plan) {
        for w in &plan.warnings {
            let (Ok(job), Ok(claim)) = (w.action.workload.name.parse(), w.claim.name.parse())
            else {
                continue;
            };
            let notice = StopNotice {
                stop_at: w.stop_at,
                claim: w.claim.clone(),
            };
            self.notices.insert(job, (notice, claim));
            sim.note_warning(job);
        }
        for a in &plan.cancellations {
            if let Ok(job) = a.workload.name.parse::<JobId>() {
                if self.notices.remove(&job).is_some() {
                    sim.note_cancellation(job);
                }
            }
        }
        for a in &plan.rotate_out {
            let Ok(job) = a.workload.name.parse::<JobId>() else {
                continue;
            };
            self.notices.remove(&job);
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
}

impl Policy for Rota {
    fn name(&self) -> &str {
        "rota"
    }

    fn on_arrival(&mut self, sim: &Sim<'_>, job: JobId) {
        self.enqueue(sim, job);
    }

    fn on_finish(&mut self, sim: &Sim<'_>, job: JobId) {
        // A job that ends during its warning frees its GPUs itself.
        self.notices.remove(&job);
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
        let announced = !self.notices.is_empty();
        let plan = if announced || self.may_rotate(sim) {
            if announced {
                // `may_rotate` may have stopped before listing the victims.
                self.has_victim(sim);
            }
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

    /// The gate: `gate::walk` over the production queue admits, in order, every job the free
    /// GPUs hold; the first that fits only later holds the reservation (the pool where it fits
    /// soonest is kept for it), and jobs behind it are backfilled into the other pools.
    fn schedule(&mut self, sim: &mut Sim<'_>) {
        self.charge(sim);
        let smallest = (self.sizes.iter())
            .filter_map(|s| s.first_key_value().map(|(&g, _)| g))
            .min()
            .unwrap_or(u64::MAX);
        let mut supply = SimSupply::of(sim);
        let (mut admitted, mut holder) = (Vec::new(), None);
        gate::walk(&self.queue, GPU_RESOURCE, &mut supply, |e, step, left| {
            match step {
                Step::Admit { .. } => admitted.push(e.key),
                Step::Reserve => holder = Some(e.key),
                Step::Wait | Step::Never(_) => {}
            }
            // Past the holder, only jobs that fit the free GPUs left can still be admitted.
            match holder.is_some() && left.largest_free() < smallest {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            }
        });
        for job in admitted {
            self.launch(sim, job);
        }
        self.holder = holder;
        self.snapshot(sim);
    }
}
