//! Metrics of a simulated run, as `docs/simulation-validation.md` defines them, and their
//! rendering (table, JSON summary, per-job and per-tenant CSV).
//!
//! Variants (stated here once, and in `simulations/README.md`):
//! - **Measured jobs**: arrival at or after the warm-up (see [`EngineConfig::warmup_seconds`]);
//!   JCT, queueing delay, bounded slowdown (τ = 10 s) and ρ are over measured jobs that
//!   completed. Percentiles are nearest-rank. The drain (after the last arrival) is reported
//!   apart: its length and the jobs completed in it.
//! - **Steady window** for time integrals: from the end of the warm-up to the last arrival (or
//!   to the end of the run when all jobs arrive at once). Share deviation, Jain's index, mean
//!   holdings, worst hourly deviation and time-to-fair-share are over this window.
//! - **Entitlement**: plain weighted water-filling of C over tenants with demand (held +
//!   pending GPUs), weights normalised over all tenants of the trace.
//! - **Worst hourly deviation**: per tenant, the largest mean |held − entitled| (GPUs) over
//!   tumbling 1 h windows aligned to the window start (any sliding hour is covered by two of
//!   them, so the sliding maximum is at most twice this).
//! - **Time-to-fair-share**: from the instant a tenant gets pending work (it had none) to the
//!   first instant it holds ≥ 90 % of its entitlement or has no pending work left.
//! - **ρ (Shockwave static)**: JCT / (d × max(1, N/C)), N = jobs in the system at arrival.
//!   Per tenant, ρ_t = makespan of its jobs in the shared run / makespan alone on
//!   ⌊w_t·C⌋ GPUs under FIFO (absent when its largest gang does not fit there).
//! - **Utilisation**: useful GPU-seconds (run time minus work lost to restarts) / (C × makespan).
//!
//! Time integrals are accumulated at events (no sampling). This module must not drive the
//! simulation or read clocks.

use serde::Serialize;

use super::charts::ShareSeries;
use super::engine::{EngineConfig, JobState, JobStatus, RunOutcome, TenantState};
use super::trace::Trace;
use crate::core::WorkloadKind;

/// A time-to-fair-share episode ends when the tenant holds this share of its entitlement.
pub const FAIR_SHARE_REACHED: f64 = 0.9;
/// Bounded slowdown threshold τ in seconds: short jobs do not dominate the mean.
pub const SLOWDOWN_BOUND_SECONDS: f64 = 10.0;
const HOUR: f64 = 3600.0;

#[derive(Clone, Debug, Default)]
struct TenantAccum {
    held_time: f64,
    entitled_time: f64,
    backlog_received: f64,
    backlog_entitled: f64,
    hour_gap: f64,
    worst_hour: f64,
    peak_held: u64,
    waiting_since: Option<f64>,
    ttfs: Vec<f64>,
    preemptions: u64,
    lost_gpu_seconds: f64,
}

/// Time-weighted metrics, accumulated by the engine at every clock advance.
#[derive(Clone, Debug)]
pub struct Recorder {
    start: f64,
    end: f64,
    covered: f64,
    deviation: f64,
    hour: i64,
    hour_covered: f64,
    tenants: Vec<TenantAccum>,
    preemptions_by_kind: [u64; 3],
    /// Stops announced ahead (a warning period) and announced stops cancelled.
    warnings: u64,
    cancellations: u64,
    /// Held and entitled GPUs over the whole run (warm-up included), for the shares charts.
    pub shares: ShareSeries,
}

impl Recorder {
    /// A recorder for `trace`; fixes the warm-up and the steady window.
    pub fn new(trace: &Trace, config: &EngineConfig) -> Self {
        let last = trace.jobs.last().map_or(0.0, |j| j.arrival);
        let start = effective_warmup(config.warmup_seconds, last);
        Recorder {
            start,
            end: if last > start { last } else { f64::INFINITY },
            covered: 0.0,
            deviation: 0.0,
            hour: 0,
            hour_covered: 0.0,
            tenants: vec![TenantAccum::default(); trace.tenants.len()],
            preemptions_by_kind: [0; 3],
            warnings: 0,
            cancellations: 0,
            shares: ShareSeries::new(trace.tenants.len()),
        }
    }

    /// Integrates the state `tenants` (constant over `[from, to]`) clipped to the window.
    pub fn integrate(&mut self, from: f64, to: f64, tenants: &[TenantState]) {
        self.shares.add(from, to, tenants);
        let (mut a, b) = (from.max(self.start), to.min(self.end));
        if b <= a {
            return;
        }
        let dt = b - a;
        self.covered += dt;
        for (acc, t) in self.tenants.iter_mut().zip(tenants) {
            let held = t.held as f64;
            acc.held_time += held * dt;
            acc.entitled_time += t.entitled * dt;
            self.deviation += (held - t.entitled).abs() * dt;
            if t.pending_jobs > 0 {
                acc.backlog_received += held * dt;
                acc.backlog_entitled += t.entitled * dt;
            }
        }
        while a < b {
            let hour = ((a - self.start) / HOUR).floor() as i64;
            if hour != self.hour {
                self.close_hour();
                self.hour = hour;
            }
            let seg_end = b.min(self.start + (hour + 1) as f64 * HOUR);
            let dt = seg_end - a;
            if dt <= 0.0 {
                break;
            }
            self.hour_covered += dt;
            for (acc, t) in self.tenants.iter_mut().zip(tenants) {
                acc.hour_gap += (t.held as f64 - t.entitled).abs() * dt;
            }
            a = seg_end;
        }
    }

    /// Looks at the state settled at `now`: peaks and time-to-fair-share episodes.
    pub fn observe(&mut self, now: f64, tenants: &[TenantState]) {
        for (acc, t) in self.tenants.iter_mut().zip(tenants) {
            acc.peak_held = acc.peak_held.max(t.held);
            if let Some(since) = acc.waiting_since {
                if t.held as f64 >= FAIR_SHARE_REACHED * t.entitled - 1e-9 {
                    acc.ttfs.push(now - since);
                    acc.waiting_since = None;
                }
            }
        }
    }

    /// Tenant `t` had no pending work and now has some.
    pub fn backlog_started(&mut self, t: usize, now: f64) {
        if now >= self.start && now <= self.end {
            let acc = &mut self.tenants[t];
            acc.waiting_since.get_or_insert(now);
        }
    }

    /// Tenant `t` has no pending work left.
    pub fn backlog_ended(&mut self, t: usize, now: f64) {
        let acc = &mut self.tenants[t];
        if let Some(since) = acc.waiting_since.take() {
            acc.ttfs.push(now - since);
        }
    }

    /// A job of tenant `t` was suspended, losing `lost_gpu_seconds` of work.
    pub fn preemption(&mut self, t: usize, kind: WorkloadKind, lost_gpu_seconds: f64) {
        let acc = &mut self.tenants[t];
        acc.preemptions += 1;
        acc.lost_gpu_seconds += lost_gpu_seconds;
        self.preemptions_by_kind[kind_index(kind)] += 1;
    }

    /// A stop was announced ahead (the job keeps its GPUs until then).
    pub fn warning(&mut self) {
        self.warnings += 1;
    }

    /// An announced stop was cancelled (the job keeps running).
    pub fn cancellation(&mut self) {
        self.cancellations += 1;
    }

    /// Closes the last hour at the end of the run.
    pub fn finish(&mut self, _end: f64) {
        self.close_hour();
    }

    fn close_hour(&mut self) {
        if self.hour_covered >= 60.0 {
            for acc in &mut self.tenants {
                acc.worst_hour = acc.worst_hour.max(acc.hour_gap / self.hour_covered);
            }
        }
        for acc in &mut self.tenants {
            acc.hour_gap = 0.0;
        }
        self.hour_covered = 0.0;
    }
}

fn kind_index(kind: WorkloadKind) -> usize {
    match kind {
        WorkloadKind::Job => 0,
        WorkloadKind::VirtualMachine => 1,
        WorkloadKind::Pod => 2,
    }
}

/// The warm-up actually used: `warmup`, or 0 when it would cover half the arrival span or more.
pub fn effective_warmup(warmup: f64, last_arrival: f64) -> f64 {
    if warmup > 0.0 && warmup < 0.5 * last_arrival {
        warmup
    } else {
        0.0
    }
}

/// Mean, nearest-rank percentiles and maximum of a sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Sample size.
    pub count: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Stats {
    /// Statistics of `values` (all zero when empty).
    pub fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Stats::default();
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let rank = |p: f64| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Stats {
            count: n,
            mean: values.iter().sum::<f64>() / n as f64,
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: values[n - 1],
        }
    }
}

/// Finish-time fairness over a set of ρ values.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RhoStats {
    /// Largest ρ.
    pub max: f64,
    /// Mean ρ.
    pub mean: f64,
    /// Share of values above 1.05.
    pub over_1_05: f64,
    /// Share of values above 1.1.
    pub over_1_1: f64,
}

impl RhoStats {
    fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return RhoStats::default();
        }
        let n = values.len() as f64;
        let share = |x: f64| values.iter().filter(|&&v| v > x).count() as f64 / n;
        RhoStats {
            max: values.iter().copied().fold(0.0, f64::max),
            mean: values.iter().sum::<f64>() / n,
            over_1_05: share(1.05),
            over_1_1: share(1.1),
        }
    }
}

/// One tenant's figures.
#[derive(Clone, Debug, Serialize)]
pub struct TenantSummary {
    /// Tenant name.
    pub name: String,
    /// Normalised weight.
    pub weight: f64,
    /// Jobs submitted.
    pub jobs: usize,
    /// GPU-hours asked for (Σ g·d).
    pub gpu_hours: f64,
    /// Mean GPUs held over the steady window.
    pub mean_held: f64,
    /// Mean entitlement over the steady window.
    pub mean_entitled: f64,
    /// Most GPUs held at once.
    pub peak_held: u64,
    /// GPU-time received / entitled while backlogged (Jain's x_t); absent if never backlogged.
    pub received_over_entitled: Option<f64>,
    /// Worst hourly mean |held − entitled|, in GPUs.
    pub worst_hour_deviation_gpus: f64,
    /// Time-to-fair-share episodes, seconds.
    pub time_to_fair_share: Stats,
    /// Mean JCT of its measured jobs, seconds.
    pub jct_mean: f64,
    /// ρ_t (makespan shared / makespan alone on its static partition).
    pub rho: Option<f64>,
    /// Its jobs that can never fit the cluster (never queued).
    pub unplaceable: usize,
    /// Suspensions of its jobs.
    pub preemptions: u64,
    /// GPU-seconds of work lost to them.
    pub lost_gpu_seconds: f64,
}

/// Every figure of one policy's run (deterministic: no wall-clock values).
#[derive(Clone, Debug, Serialize)]
pub struct PolicySummary {
    /// Policy name.
    pub policy: String,
    /// Total GPUs.
    pub capacity_gpus: u64,
    /// Jobs in the trace.
    pub jobs: usize,
    /// Jobs counted in job statistics (arrived after the warm-up and completed).
    pub jobs_measured: usize,
    /// Jobs that never completed (for example a gang larger than any quota), unplaceable
    /// ones excluded.
    pub jobs_unfinished: usize,
    /// Jobs that can never fit the cluster (a gang larger than every pool): never queued.
    pub jobs_unplaceable: usize,
    /// Warm-up actually excluded, seconds.
    pub warmup_seconds: f64,
    /// Job completion time, seconds.
    pub jct: Stats,
    /// First start − arrival, seconds.
    pub queueing_delay: Stats,
    /// max(1, JCT / max(d, 10 s)).
    pub bounded_slowdown: Stats,
    /// Finish-time fairness per job.
    pub rho: RhoStats,
    /// Finish-time fairness per tenant (tenants with a defined ρ_t).
    pub rho_tenant: RhoStats,
    /// Last completion − first arrival, seconds.
    pub makespan_seconds: f64,
    /// Seconds from the last arrival to the last completion.
    pub drain_seconds: f64,
    /// Jobs completed after the last arrival.
    pub drain_jobs: usize,
    /// Useful GPU-seconds / (C × makespan).
    pub utilisation: f64,
    /// Useful GPU-seconds.
    pub useful_gpu_seconds: f64,
    /// Mean share of the GPUs held over the steady window (busy, lost work included): the
    /// utilisation while the trace is arriving, without the drain's tail.
    pub busy_share_window: f64,
    /// Time average of Σ|held − entitled| / (2C) over the steady window.
    pub share_deviation: f64,
    /// Jain's index over tenants of received/entitled while backlogged.
    pub jain_index: f64,
    /// Time-to-fair-share over all tenants' episodes, seconds.
    pub time_to_fair_share: Stats,
    /// Suspensions, all kinds.
    pub preemptions: u64,
    /// Suspensions of batch Jobs.
    pub preemptions_jobs: u64,
    /// Suspensions of VMs.
    pub preemptions_vms: u64,
    /// GPU-seconds of work lost to suspensions.
    pub lost_gpu_seconds: f64,
    /// Stops announced with a warning period (`rotation.warning`), before they happened.
    pub rotation_warnings: u64,
    /// Announced stops cancelled because their claim no longer needed them.
    pub rotation_cancellations: u64,
    /// Events handled.
    pub events: u64,
    /// Per tenant.
    pub tenants: Vec<TenantSummary>,
}

/// Builds the summary of `run` on `trace`. `alone[t]` is tenant t's makespan alone on its static
/// partition (see [`super::tenant_alone_makespans`]).
pub fn summarize(trace: &Trace, run: &RunOutcome, alone: &[Option<f64>]) -> PolicySummary {
    let rec = &run.recorder;
    let c = run.capacity as f64;
    let last_arrival = trace.jobs.last().map_or(0.0, |j| j.arrival);
    let measured = |i: usize| trace.jobs[i].arrival >= rec.start;
    let done: Vec<usize> = (0..trace.jobs.len())
        .filter(|&i| run.jobs[i].status == JobStatus::Done)
        .collect();
    let unplaceable: Vec<usize> = (0..trace.jobs.len())
        .filter(|&i| run.jobs[i].status == JobStatus::Unplaceable)
        .collect();
    let mine: Vec<usize> = done.iter().copied().filter(|&i| measured(i)).collect();
    let per_job = |f: &dyn Fn(usize) -> f64| Stats::of(mine.iter().map(|&i| f(i)).collect());
    let rho: Vec<f64> = mine.iter().map(|&i| job_rho(trace, run, i, c)).collect();
    let completions = done.iter().filter_map(|&i| run.jobs[i].completion);
    let last_completion = completions.clone().fold(0.0, f64::max);
    let makespan = last_completion.max(last_arrival);
    let useful: f64 = (0..trace.jobs.len())
        .map(|i| (run.jobs[i].executed - run.jobs[i].lost).max(0.0) * trace.jobs[i].gpus as f64)
        .sum();
    let tenants = tenant_summaries(trace, run, alone, &mine);
    let rho_t: Vec<f64> = tenants.iter().filter_map(|t| t.rho).collect();
    let jain_x: Vec<f64> = tenants
        .iter()
        .filter_map(|t| t.received_over_entitled)
        .collect();
    let all_ttfs: Vec<f64> = rec.tenants.iter().flat_map(|t| t.ttfs.clone()).collect();
    PolicySummary {
        policy: run.policy.clone(),
        capacity_gpus: run.capacity,
        jobs: trace.jobs.len(),
        jobs_measured: mine.len(),
        jobs_unfinished: trace.jobs.len() - done.len() - unplaceable.len(),
        jobs_unplaceable: unplaceable.len(),
        warmup_seconds: rec.start,
        jct: per_job(&|i| jct(trace, &run.jobs[i], i)),
        queueing_delay: per_job(&|i| {
            run.jobs[i].first_start.unwrap_or(0.0) - trace.jobs[i].arrival
        }),
        bounded_slowdown: per_job(&|i| {
            let d = trace.jobs[i].duration.max(SLOWDOWN_BOUND_SECONDS);
            (jct(trace, &run.jobs[i], i) / d).max(1.0)
        }),
        rho: RhoStats::of(&rho),
        rho_tenant: RhoStats::of(&rho_t),
        makespan_seconds: makespan,
        drain_seconds: (last_completion - last_arrival).max(0.0),
        drain_jobs: completions.filter(|&t| t > last_arrival).count(),
        utilisation: if c > 0.0 && makespan > 0.0 {
            useful / (c * makespan)
        } else {
            0.0
        },
        useful_gpu_seconds: useful,
        busy_share_window: if c > 0.0 {
            tenants.iter().map(|t| t.mean_held).sum::<f64>() / c
        } else {
            0.0
        },
        share_deviation: if rec.covered > 0.0 && c > 0.0 {
            rec.deviation / rec.covered / (2.0 * c)
        } else {
            0.0
        },
        jain_index: crate::core::fairshare::jain_index(&jain_x),
        time_to_fair_share: Stats::of(all_ttfs),
        preemptions: rec.preemptions_by_kind.iter().sum(),
        preemptions_jobs: rec.preemptions_by_kind[0],
        preemptions_vms: rec.preemptions_by_kind[1],
        lost_gpu_seconds: rec.tenants.iter().map(|t| t.lost_gpu_seconds).sum(),
        rotation_warnings: rec.warnings,
        rotation_cancellations: rec.cancellations,
        events: run.events,
        tenants,
    }
}

fn jct(trace: &Trace, s: &JobState, i: usize) -> f64 {
    s.completion.unwrap_or(f64::NAN) - trace.jobs[i].arrival
}

fn job_rho(trace: &Trace, run: &RunOutcome, i: usize, c: f64) -> f64 {
    let d = trace.jobs[i].duration;
    let n = run.jobs[i].contending_at_arrival as f64;
    let ideal = d * (n / c).max(1.0);
    if ideal > 0.0 {
        jct(trace, &run.jobs[i], i) / ideal
    } else {
        1.0
    }
}

fn tenant_summaries(
    trace: &Trace,
    run: &RunOutcome,
    alone: &[Option<f64>],
    measured: &[usize],
) -> Vec<TenantSummary> {
    let n = trace.tenants.len();
    let (mut jobs, mut gpu_s) = (vec![0usize; n], vec![0.0; n]);
    let (mut first, mut last) = (vec![f64::INFINITY; n], vec![f64::NEG_INFINITY; n]);
    let mut finished_all = vec![true; n];
    let mut unplaceable = vec![0usize; n];
    for (spec, s) in trace.jobs.iter().zip(&run.jobs) {
        let t = spec.tenant;
        jobs[t] += 1;
        if s.status == JobStatus::Unplaceable {
            unplaceable[t] += 1;
            continue;
        }
        gpu_s[t] += spec.gpus as f64 * spec.duration;
        first[t] = first[t].min(spec.arrival);
        match s.completion {
            Some(c) => last[t] = last[t].max(c),
            None => finished_all[t] = false,
        }
    }
    let (mut jct_sum, mut jct_n) = (vec![0.0; n], vec![0usize; n]);
    for &i in measured {
        let t = trace.jobs[i].tenant;
        jct_sum[t] += jct(trace, &run.jobs[i], i);
        jct_n[t] += 1;
    }
    let rec = &run.recorder;
    let total_w: f64 = trace.tenants.iter().map(|t| t.weight.max(0.0)).sum();
    (0..n)
        .map(|t| {
            let acc = &rec.tenants[t];
            let shared = last[t] - first[t];
            TenantSummary {
                name: trace.tenants[t].name.clone(),
                weight: if total_w > 0.0 {
                    trace.tenants[t].weight / total_w
                } else {
                    0.0
                },
                jobs: jobs[t],
                gpu_hours: gpu_s[t] / HOUR,
                mean_held: ratio(acc.held_time, rec.covered).unwrap_or(0.0),
                mean_entitled: ratio(acc.entitled_time, rec.covered).unwrap_or(0.0),
                peak_held: acc.peak_held,
                received_over_entitled: ratio(acc.backlog_received, acc.backlog_entitled),
                worst_hour_deviation_gpus: acc.worst_hour,
                time_to_fair_share: Stats::of(acc.ttfs.clone()),
                jct_mean: ratio(jct_sum[t], jct_n[t] as f64).unwrap_or(0.0),
                rho: alone
                    .get(t)
                    .copied()
                    .flatten()
                    .filter(|_| finished_all[t] && jobs[t] > 0)
                    .and_then(|a| ratio(shared, a)),
                unplaceable: unplaceable[t],
                preemptions: acc.preemptions,
                lost_gpu_seconds: acc.lost_gpu_seconds,
            }
        })
        .collect()
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

// === rendering ===

/// One line per job: `job,tenant,kind,gpus,arrival,first_start,completion,duration,jct,
/// queueing,slowdown,preemptions,lost_seconds,measured`. Empty cells for what did not happen.
pub fn jobs_csv(trace: &Trace, run: &RunOutcome) -> String {
    let mut out = String::from(
        "job,tenant,kind,gpus,arrival,first_start,completion,duration,jct,queueing,slowdown,\
         preemptions,lost_seconds,measured\n",
    );
    let start = run.recorder.start;
    for (spec, s) in trace.jobs.iter().zip(&run.jobs) {
        let opt = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
        let jct = s.completion.map(|c| c - spec.arrival);
        let slowdown = jct.map(|j| (j / spec.duration.max(SLOWDOWN_BOUND_SECONDS)).max(1.0));
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            spec.name,
            trace.tenants[spec.tenant].name,
            spec.kind.as_str(),
            spec.gpus,
            spec.arrival,
            opt(s.first_start),
            opt(s.completion),
            spec.duration,
            opt(jct),
            opt(s.first_start.map(|f| f - spec.arrival)),
            opt(slowdown),
            s.preemptions,
            s.lost,
            spec.arrival >= start && s.status == JobStatus::Done,
        ));
    }
    out
}

/// One line per tenant with the figures of [`TenantSummary`].
pub fn tenants_csv(summary: &PolicySummary) -> String {
    let mut out = String::from(
        "tenant,weight,jobs,gpu_hours,mean_held,mean_entitled,peak_held,received_over_entitled,\
         worst_hour_deviation_gpus,ttfs_mean,ttfs_max,jct_mean,rho,preemptions,lost_gpu_seconds\n",
    );
    for t in &summary.tenants {
        let opt = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            t.name,
            t.weight,
            t.jobs,
            t.gpu_hours,
            t.mean_held,
            t.mean_entitled,
            t.peak_held,
            opt(t.received_over_entitled),
            t.worst_hour_deviation_gpus,
            t.time_to_fair_share.mean,
            t.time_to_fair_share.max,
            t.jct_mean,
            opt(t.rho),
            t.preemptions,
            t.lost_gpu_seconds,
        ));
    }
    out
}

/// One line naming the jobs that can never fit the cluster, per tenant; `None` when there are
/// none.
pub fn unplaceable_note(s: &PolicySummary) -> Option<String> {
    if s.jobs_unplaceable == 0 {
        return None;
    }
    let per_tenant: Vec<String> = (s.tenants.iter())
        .filter(|t| t.unplaceable > 0)
        .map(|t| format!("{} {}", t.name, t.unplaceable))
        .collect();
    Some(format!(
        "unplaceable: {} jobs ask for more GPUs than any node pool of this cluster holds; they were reported, not queued ({})",
        s.jobs_unplaceable,
        per_tenant.join(", ")
    ))
}

/// One line on the stops announced ahead (`rotation.warning`) by a policy that warns; `None`
/// when it announced none.
pub fn warning_note(s: &PolicySummary) -> Option<String> {
    if s.rotation_warnings == 0 {
        return None;
    }
    Some(format!(
        "{}: {} stops announced ahead (rotation.warning; the GPUs stay with the workload until \
         then), {} cancelled because the waiting job no longer needed them",
        s.policy, s.rotation_warnings, s.rotation_cancellations
    ))
}

/// Column headers of the table, units in the names (`_h` hours, `_%` percent).
pub const TABLE_HEADERS: [&str; 12] = [
    "policy",
    "jct_h",
    "p95_h",
    "wait_h",
    "util_%",
    "dev_%",
    "jain",
    "rho>1.1",
    "preempt",
    "lost_gpu_h",
    "unfinished",
    "unplaceable",
];

/// One line per column that needs explaining (the others are counts named in full).
pub const LEGEND: [&str; 7] = [
    "jct_h, p95_h: mean and 95th-percentile job completion time (arrival to finish), hours",
    "wait_h: mean time from arrival to first start, hours",
    "util_%: useful GPU time (lost work excluded) / (GPUs x time until the last job ends)",
    "dev_%: mean distance of tenants' GPUs from their weighted fair share, % of cluster (0 = fair)",
    "jain: Jain's index of GPU time received / entitled while waiting (1 = equal treatment)",
    "rho>1.1: share of jobs finishing 10 % later than on an equal slice of the cluster",
    "preempt: jobs suspended to hand GPUs over (rotations); lost_gpu_h: work redone after them",
];

/// The table's cells, one row per policy, in [`TABLE_HEADERS`] order (shared by the text table
/// and the HTML report).
pub fn table_rows(summaries: &[PolicySummary]) -> Vec<[String; 12]> {
    summaries
        .iter()
        .map(|s| {
            [
                s.policy.clone(),
                format!("{:.2}", s.jct.mean / HOUR),
                format!("{:.2}", s.jct.p95 / HOUR),
                format!("{:.2}", s.queueing_delay.mean / HOUR),
                format!("{:.1}", s.utilisation * 100.0),
                format!("{:.1}", s.share_deviation * 100.0),
                format!("{:.3}", s.jain_index),
                format!("{:.3}", s.rho.over_1_1),
                s.preemptions.to_string(),
                format!("{:.1}", s.lost_gpu_seconds / HOUR),
                s.jobs_unfinished.to_string(),
                s.jobs_unplaceable.to_string(),
            ]
        })
        .collect()
}

/// A fixed-width table (under 100 columns), one row per policy, then the legend.
pub fn table(summaries: &[PolicySummary]) -> String {
    let rows = table_rows(summaries);
    let width = |i: usize| {
        let cells = rows.iter().map(|r| r[i].len());
        cells.chain([TABLE_HEADERS[i].len()]).max().unwrap_or(0)
    };
    let widths: Vec<usize> = (0..TABLE_HEADERS.len()).map(width).collect();
    let line = |cells: &[&str]| {
        let padded: Vec<String> = (cells.iter().zip(&widths).enumerate())
            .map(|(i, (c, w))| match i {
                0 => format!("{c:<w$}"),
                _ => format!("{c:>w$}"),
            })
            .collect();
        padded.join(" ") + "\n"
    };
    let mut out = line(&TABLE_HEADERS);
    for row in &rows {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    for legend in LEGEND {
        out.push_str(legend);
        out.push('\n');
    }
    out
}

/// The replay's wall-clock time per policy, one line; `timing[i]` is `(wall seconds, events/s)`
/// of `summaries[i]`. Kept out of the table: it varies from run to run.
pub fn timing_line(summaries: &[PolicySummary], timing: &[(f64, f64)]) -> String {
    let parts: Vec<String> = (summaries.iter().zip(timing))
        .map(|(s, (wall, _))| format!("{} {wall:.2} s", s.policy))
        .collect();
    format!("replay time (wall clock): {}", parts.join(", "))
}
