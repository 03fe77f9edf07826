//! The event-driven engine: a virtual clock, a heap of events, the simulated cluster, and the
//! calls into a [`Policy`] at every scheduling point.
//!
//! ```text
//!   trace arrivals (cursor) ─┐                    ┌─▶ Policy::on_arrival / on_finish (queues)
//!   event heap (completion, ├─▶ one instant ──────┼─▶ Policy::on_timer / on_tick
//!   timer, tick)            ─┘  advance clock     └─▶ Policy::schedule ─▶ Sim::start / suspend
//!                               (metrics integrals)
//! ```
//!
//! Invariants: the clock never goes back; events at the same time are handled in the order
//! completions/timers/ticks (by sequence number) then arrivals (by trace order), and the policy
//! schedules once per instant, only when capacity was freed or work arrived (or a timer/tick
//! fired), so the same trace, cluster, policy and config give the same run. Per-tenant
//! aggregates (held, pending) are updated incrementally on every transition; nothing here scans
//! all jobs per event. A job holds exactly its `gpus` GPUs while running and none otherwise.
//! The engine reads no wall clock (the CLI times runs).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::cluster::{ClusterSpec, Placement, SimCluster};
use super::report::Recorder;
use super::trace::{JobSpec, Trace};

/// Index of a job in its [`Trace`] (also its arrival rank).
pub type JobId = u32;

/// Engine knobs that are not policy choices.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Work lost when a running job is suspended, in seconds at its gang size (the job resumes
    /// from its progress minus this, never below zero). Default 30 s: a checkpoint restore.
    pub restart_cost_seconds: f64,
    /// Arrivals in the first `warmup_seconds` of the trace are left out of job statistics and
    /// time integrals. Default 24 h. Ignored (0) when it would cover half the arrivals' span or
    /// more, so short traces still report something.
    pub warmup_seconds: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            restart_cost_seconds: 30.0,
            warmup_seconds: 24.0 * 3600.0,
        }
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Not submitted yet.
    Future,
    /// Submitted, never started.
    Pending,
    /// Holding its GPUs.
    Running,
    /// Started before, then suspended; waiting to resume.
    Suspended,
    /// Completed.
    Done,
    /// It can never fit the cluster (a gang larger than every pool): reported, never queued,
    /// so it stalls no one.
    Unplaceable,
}

/// The dynamic state of one job.
#[derive(Clone, Debug)]
pub struct JobState {
    /// Where the job is.
    pub status: JobStatus,
    /// Seconds of work left at its gang size.
    pub remaining: f64,
    /// Start of the current run (valid while running).
    pub started_at: f64,
    /// First start, if any.
    pub first_start: Option<f64>,
    /// Completion time, once done.
    pub completion: Option<f64>,
    /// Seconds run in total, including work later lost.
    pub executed: f64,
    /// Seconds of work lost to restarts.
    pub lost: f64,
    /// Times the job was suspended.
    pub preemptions: u32,
    /// Most nodes one of its placements used.
    pub max_nodes: u32,
    /// GPUs of its last placement (equals the job's `gpus` once it ran).
    pub placed_gpus: u32,
    /// Jobs in the system (pending, running or suspended, itself included) when it arrived.
    pub contending_at_arrival: u32,
    generation: u32,
    placement: Placement,
}

/// A tenant's live aggregates.
#[derive(Clone, Debug, Default)]
pub struct TenantState {
    /// GPUs held by its running jobs.
    pub held: u64,
    /// GPUs asked for by its pending and suspended jobs.
    pub pending_gpus: u64,
    /// Number of its pending and suspended jobs.
    pub pending_jobs: u32,
    /// Weight normalised over all tenants of the trace (sums to 1).
    pub weight: f64,
    /// Entitlement now (water-filling over tenants with demand).
    pub entitled: f64,
}

/// A scheduling policy: decides which pending jobs start and which running jobs are suspended.
///
/// The engine calls `on_arrival` / `on_finish` so the policy can keep its own queues (it must
/// not rescan all jobs), `schedule` once per instant where something changed, `on_timer` when a
/// timer set with [`Sim::set_timer`] fires, and `on_tick` every `tick_seconds` (rotation).
pub trait Policy {
    /// Name in reports (`fifo`, `las`, …).
    fn name(&self) -> &str;
    /// A job was submitted (status `Pending`).
    fn on_arrival(&mut self, sim: &Sim<'_>, job: JobId);
    /// A running job completed and released its GPUs.
    fn on_finish(&mut self, _sim: &Sim<'_>, _job: JobId) {}
    /// A timer set for `job` fired while that job is still in the same run.
    fn on_timer(&mut self, _sim: &mut Sim<'_>, _job: JobId) {}
    /// Seconds between rotation ticks; `None` (default) means no ticks.
    fn tick_seconds(&self) -> Option<f64> {
        None
    }
    /// A rotation tick.
    fn on_tick(&mut self, _sim: &mut Sim<'_>) {}
    /// A scheduling point: start (and, if the policy preempts, suspend) jobs.
    fn schedule(&mut self, sim: &mut Sim<'_>);
}

#[derive(Clone, Copy, Debug)]
enum EventKind {
    Completion(JobId, u32),
    Timer(JobId, u32),
    Tick,
}

#[derive(Clone, Copy, Debug)]
struct Event {
    time: f64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time
            .total_cmp(&other.time)
            .then(self.seq.cmp(&other.seq))
    }
}

/// The simulation state a policy sees and acts on.
pub struct Sim<'t> {
    trace: &'t Trace,
    config: &'t EngineConfig,
    now: f64,
    cluster: SimCluster,
    jobs: Vec<JobState>,
    tenants: Vec<TenantState>,
    events: BinaryHeap<Reverse<Event>>,
    seq: u64,
    in_system: u32,
    running: u32,
    entitlements_stale: bool,
    /// Scratch for `refresh`: each tenant's demand and weight.
    demands: Vec<f64>,
    weights: Vec<f64>,
    recorder: Recorder,
}

impl<'t> Sim<'t> {
    /// Virtual time now, in seconds since the trace origin.
    pub fn now(&self) -> f64 {
        self.now
    }

    /// The static description of `job`.
    pub fn spec(&self, job: JobId) -> &'t JobSpec {
        &self.trace.jobs[job as usize]
    }

    /// The dynamic state of `job`.
    pub fn job(&self, job: JobId) -> &JobState {
        &self.jobs[job as usize]
    }

    /// Tenants' live aggregates, indexed like [`Trace::tenants`].
    pub fn tenants(&self) -> &[TenantState] {
        &self.tenants
    }

    /// Total GPUs (C).
    pub fn capacity(&self) -> u64 {
        self.cluster.capacity()
    }

    /// Free GPUs now.
    pub fn free(&self) -> u64 {
        self.cluster.free()
    }

    /// The largest gang that could start now without suspending anything.
    pub fn largest_fit(&self) -> u64 {
        self.cluster.largest_fit()
    }

    /// Engine knobs.
    pub fn config(&self) -> &EngineConfig {
        self.config
    }

    /// GPU-seconds `job` has received so far (its current run included).
    pub fn attained(&self, job: JobId) -> f64 {
        let s = &self.jobs[job as usize];
        let current = if s.status == JobStatus::Running {
            self.now - s.started_at
        } else {
            0.0
        };
        (s.executed + current) * self.spec(job).gpus as f64
    }

    /// The simulated cluster (for policies that call the production core through
    /// [`SimCluster::snapshot`]).
    pub fn cluster(&self) -> &SimCluster {
        &self.cluster
    }

    /// Starts a pending or suspended job if its gang fits now. Returns whether it started.
    pub fn start(&mut self, job: JobId) -> bool {
        let gpus = self.spec(job).gpus;
        let status = self.jobs[job as usize].status;
        if !matches!(status, JobStatus::Pending | JobStatus::Suspended) {
            return false;
        }
        let Some(placement) = self.cluster.place(gpus) else {
            return false;
        };
        let now = self.now;
        let s = &mut self.jobs[job as usize];
        s.status = JobStatus::Running;
        s.started_at = now;
        s.first_start.get_or_insert(now);
        s.max_nodes = s.max_nodes.max(placement.len() as u32);
        s.placed_gpus = placement.iter().map(|&(_, g)| g).sum();
        s.placement = placement;
        s.generation += 1;
        let (end, generation) = (now + s.remaining, s.generation);
        self.running += 1;
        let tenant = self.spec(job).tenant;
        let t = &mut self.tenants[tenant];
        t.held += gpus as u64;
        t.pending_gpus -= gpus as u64;
        t.pending_jobs -= 1;
        if t.pending_jobs == 0 {
            self.recorder.backlog_ended(tenant, now);
        }
        self.push(end, EventKind::Completion(job, generation));
        true
    }

    /// Counts a stop announced ahead for `job` (it keeps running until then).
    pub fn note_warning(&mut self, job: JobId) {
        if self.jobs.get(job as usize).is_some() {
            self.recorder.warning();
        }
    }

    /// Counts the cancellation of `job`'s announced stop.
    pub fn note_cancellation(&mut self, job: JobId) {
        if self.jobs.get(job as usize).is_some() {
            self.recorder.cancellation();
        }
    }

    /// Suspends a running job: it releases its GPUs and keeps its progress minus the restart
    /// cost. Returns whether it was running.
    pub fn suspend(&mut self, job: JobId) -> bool {
        let spec = self.spec(job);
        let (cost, now) = (self.config.restart_cost_seconds.max(0.0), self.now);
        let s = &mut self.jobs[job as usize];
        if s.status != JobStatus::Running {
            return false;
        }
        self.cluster.release(&s.placement);
        s.placement.clear();
        let ran = now - s.started_at;
        s.executed += ran;
        s.remaining = (s.remaining - ran).max(0.0);
        let lost = cost.min(spec.duration - s.remaining).max(0.0);
        s.remaining += lost;
        s.lost += lost;
        s.preemptions += 1;
        s.status = JobStatus::Suspended;
        s.generation += 1;
        self.running -= 1;
        let t = &mut self.tenants[spec.tenant];
        t.held -= spec.gpus as u64;
        t.pending_gpus += spec.gpus as u64;
        t.pending_jobs += 1;
        let newly_backlogged = t.pending_jobs == 1;
        self.recorder
            .preemption(spec.tenant, spec.kind, lost * spec.gpus as f64);
        if newly_backlogged {
            self.recorder.backlog_started(spec.tenant, now);
        }
        true
    }

    /// Asks for [`Policy::on_timer`] for `job` at time `at` (not before now), provided the job is
    /// still in its current run then (a suspension or completion cancels it).
    pub fn set_timer(&mut self, job: JobId, at: f64) {
        let generation = self.jobs[job as usize].generation;
        self.push(at.max(self.now), EventKind::Timer(job, generation));
    }

    fn push(&mut self, time: f64, kind: EventKind) {
        self.seq += 1;
        self.events.push(Reverse(Event {
            time,
            seq: self.seq,
            kind,
        }));
    }

    /// Admits an arrival into the system; false (and marked [`JobStatus::Unplaceable`]) when
    /// its gang is larger than every pool (a gang spans the nodes of one pool freely).
    fn arrive(&mut self, job: JobId) -> bool {
        let spec = self.spec(job);
        if self.cluster.largest_pool() < u64::from(spec.gpus) {
            self.jobs[job as usize].status = JobStatus::Unplaceable;
            return false;
        }
        self.in_system += 1;
        let s = &mut self.jobs[job as usize];
        s.status = JobStatus::Pending;
        s.contending_at_arrival = self.in_system;
        let t = &mut self.tenants[spec.tenant];
        t.pending_gpus += spec.gpus as u64;
        t.pending_jobs += 1;
        if t.pending_jobs == 1 {
            self.recorder.backlog_started(spec.tenant, self.now);
        }
        self.entitlements_stale = true;
        true
    }

    fn finish(&mut self, job: JobId) {
        let spec = self.spec(job);
        let now = self.now;
        let s = &mut self.jobs[job as usize];
        self.cluster.release(&s.placement);
        s.placement.clear();
        s.executed += now - s.started_at;
        s.remaining = 0.0;
        s.status = JobStatus::Done;
        s.completion = Some(now);
        self.in_system -= 1;
        self.running -= 1;
        self.tenants[spec.tenant].held -= spec.gpus as u64;
        self.entitlements_stale = true;
    }

    /// Recomputes entitlements if demand changed since the last time.
    fn refresh(&mut self) {
        if !self.entitlements_stale {
            return;
        }
        self.entitlements_stale = false;
        let capacity = self.capacity() as f64;
        // Reused buffers: this runs after most events.
        self.demands.clear();
        (self.demands).extend(
            self.tenants
                .iter()
                .map(|t| (t.held + t.pending_gpus) as f64),
        );
        self.weights.clear();
        self.weights.extend(self.tenants.iter().map(|t| t.weight));
        for (t, e) in
            self.tenants
                .iter_mut()
                .zip(entitlements(capacity, &self.demands, &self.weights))
        {
            t.entitled = e;
        }
    }

    /// Moves the clock to `to`, integrating the time-weighted metrics over the gap.
    fn advance(&mut self, to: f64) {
        self.refresh();
        self.recorder.observe(self.now, &self.tenants);
        self.recorder.integrate(self.now, to, &self.tenants);
        self.now = to;
    }

    fn work_left(&self, next_arrival: usize) -> bool {
        self.running > 0 || next_arrival < self.trace.jobs.len() || !self.events.is_empty()
    }
}

/// Weighted max-min water-filling of `capacity` over tenants with `demands` (the production
/// [`crate::core::fairshare::water_fill`], without usage correction: the simulator's "fair"
/// baseline and its metrics use plain instantaneous entitlements).
pub fn entitlements(capacity: f64, demands: &[f64], weights: &[f64]) -> Vec<f64> {
    crate::core::fairshare::water_fill(capacity, demands, weights)
}

/// What a finished simulation hands to the report.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The policy's name.
    pub policy: String,
    /// Final state of every job, indexed like the trace.
    pub jobs: Vec<JobState>,
    /// Time-weighted metrics and counters.
    pub recorder: Recorder,
    /// Events handled (arrivals, completions, timers, ticks).
    pub events: u64,
    /// Time of the last event.
    pub end: f64,
    /// Total GPUs.
    pub capacity: u64,
}

/// Replays `trace` on `cluster` under `policy`.
pub fn run(
    trace: &Trace,
    cluster: &ClusterSpec,
    policy: &mut dyn Policy,
    config: &EngineConfig,
) -> RunOutcome {
    let mut sim = new_sim(trace, cluster, config);
    let mut next = 0usize;
    let mut handled = 0u64;
    let tick = policy.tick_seconds().filter(|s| *s > 0.0 && s.is_finite());
    if let Some(step) = tick {
        sim.push(step, EventKind::Tick);
    }
    loop {
        let heap_time = sim.events.peek().map(|Reverse(e)| e.time);
        let arrival_time = trace.jobs.get(next).map(|j| j.arrival);
        let now = match (heap_time, arrival_time) {
            (Some(h), Some(a)) => h.min(a),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => break,
        };
        sim.advance(now.max(sim.now));
        let mut changed = false;
        while let Some(&Reverse(e)) = sim.events.peek() {
            if e.time > sim.now {
                break;
            }
            sim.events.pop();
            handled += 1;
            changed |= handle(&mut sim, policy, e.kind, tick, next);
        }
        while trace.jobs.get(next).is_some_and(|j| j.arrival <= sim.now) {
            let id = next as JobId;
            next += 1;
            handled += 1;
            if sim.arrive(id) {
                policy.on_arrival(&sim, id);
                changed = true;
            }
        }
        if changed {
            sim.refresh();
            policy.schedule(&mut sim);
        }
    }
    let end = sim.now;
    sim.refresh();
    sim.recorder.observe(end, &sim.tenants);
    sim.recorder.finish(end);
    RunOutcome {
        policy: policy.name().to_owned(),
        jobs: sim.jobs,
        recorder: sim.recorder,
        events: handled,
        end,
        capacity: sim.cluster.capacity(),
    }
}

/// Handles one heap event; returns whether the policy should schedule.
fn handle(
    sim: &mut Sim<'_>,
    policy: &mut dyn Policy,
    kind: EventKind,
    tick: Option<f64>,
    next: usize,
) -> bool {
    match kind {
        EventKind::Completion(job, generation) => {
            let s = &sim.jobs[job as usize];
            if s.generation != generation || s.status != JobStatus::Running {
                return false;
            }
            sim.finish(job);
            policy.on_finish(sim, job);
            true
        }
        EventKind::Timer(job, generation) => {
            let s = &sim.jobs[job as usize];
            if s.generation != generation || s.status != JobStatus::Running {
                return false;
            }
            sim.refresh();
            policy.on_timer(sim, job);
            true
        }
        EventKind::Tick => {
            sim.refresh();
            policy.on_tick(sim);
            // Keep ticking while anything can still change; a tick with nothing running and
            // nothing to come could only repeat itself forever.
            if let Some(step) = tick {
                if sim.work_left(next) {
                    sim.push(sim.now + step, EventKind::Tick);
                }
            }
            true
        }
    }
}

fn new_sim<'t>(trace: &'t Trace, cluster: &ClusterSpec, config: &'t EngineConfig) -> Sim<'t> {
    let total_weight: f64 = trace.tenants.iter().map(|t| t.weight.max(0.0)).sum();
    let tenants = trace
        .tenants
        .iter()
        .map(|t| TenantState {
            weight: if total_weight > 0.0 {
                t.weight.max(0.0) / total_weight
            } else {
                1.0 / trace.tenants.len() as f64
            },
            ..TenantState::default()
        })
        .collect();
    let cluster = SimCluster::new(cluster);
    Sim {
        trace,
        config,
        now: 0.0,
        jobs: trace
            .jobs
            .iter()
            .map(|j| JobState {
                status: JobStatus::Future,
                remaining: j.duration,
                started_at: 0.0,
                first_start: None,
                completion: None,
                executed: 0.0,
                lost: 0.0,
                preemptions: 0,
                max_nodes: 0,
                placed_gpus: 0,
                contending_at_arrival: 0,
                generation: 0,
                placement: Placement::new(),
            })
            .collect(),
        recorder: Recorder::new(trace, config),
        cluster,
        tenants,
        events: BinaryHeap::new(),
        seq: 0,
        in_system: 0,
        running: 0,
        entitlements_stale: true,
        demands: Vec::new(),
        weights: Vec::new(),
    }
}
