//! The `rota` simulator policy: on a small contended two-tenant workload it keeps holdings
//! closer to the entitlements than FIFO does, and every rotation respects the quantum.

use rota::core::WorkloadKind;
use rota::sim::engine::{self, JobId, JobStatus, Policy, Sim};
use rota::sim::policy::{Rota, RotaSettings};
use rota::sim::{
    run_policy, summarize, ClusterSpec, EngineConfig, JobSpec, PolicyConfig, PolicyKind,
    TenantSpec, Trace,
};

fn job(tenant: usize, duration: f64, arrival: f64) -> JobSpec {
    JobSpec {
        name: String::new(),
        tenant,
        gpus: 1,
        duration,
        arrival,
        priority: 0,
        kind: WorkloadKind::Job,
    }
}

/// Tenant 0 fills 16 GPUs with long jobs at t = 0; tenant 1 (same weight) arrives at t = 1000
/// with as many shorter jobs. Without rotation tenant 1 waits for tenant 0's jobs to end.
fn contended() -> Trace {
    let mut jobs = Vec::new();
    for k in 0..32 {
        jobs.push(job(0, 20_000.0, k as f64));
        jobs.push(job(1, 5_000.0, 1_000.0 + k as f64));
    }
    let tenants = (0..2)
        .map(|i| TenantSpec {
            name: format!("t{i}"),
            weight: 1.0,
        })
        .collect();
    Trace::from_unsorted(tenants, jobs, None)
}

fn engine() -> EngineConfig {
    EngineConfig {
        warmup_seconds: 0.0,
        restart_cost_seconds: 30.0,
    }
}

#[test]
fn rota_keeps_shares_closer_than_fifo() {
    let trace = contended();
    let cluster = ClusterSpec::homogeneous(16, 8);
    let none = vec![None; trace.tenants.len()];
    let deviation = |kind| {
        let out = run_policy(&trace, &cluster, kind, &engine(), &PolicyConfig::default())
            .expect("policy exists");
        // Every job completes under both policies.
        assert!(out.jobs.iter().all(|j| j.status == JobStatus::Done));
        let s = summarize(&trace, &out, &none);
        (s.share_deviation, s.preemptions)
    };
    let (fifo, fifo_rotations) = deviation(PolicyKind::Fifo);
    let (rota, rota_rotations) = deviation(PolicyKind::Rota);
    assert_eq!(fifo_rotations, 0);
    assert!(rota_rotations > 0, "rota never rotated");
    assert!(
        rota < fifo,
        "share deviation: rota {rota:.4}, fifo {fifo:.4}"
    );
}

/// Wraps the policy and checks, at every tick, that each job it suspends (of `kind`, when
/// given) has run at least `least_run`: its quantum, plus its warning where it has one.
struct QuantumWatch {
    inner: Rota,
    least_run: f64,
    kind: Option<WorkloadKind>,
    jobs: usize,
    rotations: usize,
}

impl Policy for QuantumWatch {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn on_arrival(&mut self, sim: &Sim<'_>, job: JobId) {
        self.inner.on_arrival(sim, job);
    }
    fn on_finish(&mut self, sim: &Sim<'_>, job: JobId) {
        self.inner.on_finish(sim, job);
    }
    fn tick_seconds(&self) -> Option<f64> {
        self.inner.tick_seconds()
    }
    fn on_tick(&mut self, sim: &mut Sim<'_>) {
        // A small trace: scanning every job here is fine for a test.
        let before: Vec<(JobId, f64, u32)> = (0..self.jobs as JobId)
            .filter(|&j| sim.job(j).status == JobStatus::Running)
            .filter(|&j| self.kind.is_none_or(|k| sim.spec(j).kind == k))
            .map(|j| (j, sim.job(j).started_at, sim.job(j).preemptions))
            .collect();
        self.inner.on_tick(sim);
        for (j, started, preemptions) in before {
            if sim.job(j).preemptions > preemptions {
                self.rotations += 1;
                let ran = sim.now() - started;
                assert!(
                    ran >= self.least_run,
                    "job {j} rotated out after {ran} s, before {} s (quantum, and warning)",
                    self.least_run
                );
            }
        }
    }
    fn schedule(&mut self, sim: &mut Sim<'_>) {
        self.inner.schedule(sim);
    }
}

#[test]
fn rotations_never_violate_the_quantum() {
    let trace = contended();
    let cluster = ClusterSpec::homogeneous(16, 8);
    let settings = RotaSettings::default();
    let mut watch = QuantumWatch {
        least_run: settings.quantum.job_seconds as f64,
        kind: None,
        inner: Rota::new(&trace, settings),
        jobs: trace.jobs.len(),
        rotations: 0,
    };
    let out = engine::run(&trace, &cluster, &mut watch, &engine());
    assert!(watch.rotations > 0, "no rotation to check");
    let total: u32 = out.jobs.iter().map(|j| j.preemptions).sum();
    assert_eq!(
        total as usize, watch.rotations,
        "every rotation is seen at a tick"
    );
}

/// Checks after every scheduling point that the reservation is honoured: while a job holds
/// it, the free GPUs never hold it (else the gate would have started it), and no job that
/// waited behind it takes the GPUs it keeps.
struct ReservationWatch {
    inner: Rota,
    holders: Vec<JobId>,
    /// The holder after the previous scheduling call, and that call's time.
    last: Option<(JobId, f64)>,
    jobs: usize,
}

impl Policy for ReservationWatch {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn on_arrival(&mut self, sim: &Sim<'_>, job: JobId) {
        self.inner.on_arrival(sim, job);
    }
    fn on_finish(&mut self, sim: &Sim<'_>, job: JobId) {
        self.inner.on_finish(sim, job);
    }
    fn tick_seconds(&self) -> Option<f64> {
        self.inner.tick_seconds()
    }
    fn on_tick(&mut self, sim: &mut Sim<'_>) {
        self.inner.on_tick(sim);
    }
    fn schedule(&mut self, sim: &mut Sim<'_>) {
        self.inner.schedule(sim);
        if let Some(h) = self.inner.reservation_holder() {
            let need = u64::from(sim.spec(h).gpus);
            assert!(
                sim.largest_fit() < need,
                "holder {h} waits with {} GPUs free, needing {need}",
                sim.largest_fit()
            );
            // With one pool the holder keeps it: while it still holds the reservation, no job
            // that was already waiting behind it at the previous call starts (only newcomers
            // ahead of it in the fair-share order may).
            if let Some((held, at)) = self.last.filter(|&(held, _)| held == h) {
                // A small trace: scanning every job here is fine for a test.
                for j in 0..self.jobs as JobId {
                    let (spec, state) = (sim.spec(j), sim.job(j));
                    let started_now =
                        state.status == JobStatus::Running && state.started_at == sim.now();
                    assert!(
                        !started_now || spec.arrival > at,
                        "job {j}, waiting behind holder {held} since {at}, took reserved GPUs at {}",
                        sim.now()
                    );
                }
            }
            if self.holders.last() != Some(&h) {
                self.holders.push(h);
            }
        }
        self.last = self.inner.reservation_holder().map(|h| (h, sim.now()));
    }
}

/// A 16-GPU gang arrives behind an endless stream of one-GPU jobs on a 16-GPU pool. Without a
/// reservation each released GPU would go to the next small job and the gang would starve;
/// with it the gang starts once the small jobs running when it arrived have ended.
#[test]
fn a_big_gang_behind_a_stream_of_small_jobs_starts_once_the_running_ones_end() {
    let mut jobs = Vec::new();
    for k in 0..400 {
        jobs.push(job(0, 100.0, f64::from(k) * 6.0));
    }
    let mut gang = job(1, 500.0, 1_000.5);
    gang.gpus = 16;
    jobs.push(gang);
    let tenants = (0..2)
        .map(|i| TenantSpec {
            name: format!("t{i}"),
            weight: 1.0,
        })
        .collect();
    let trace = Trace::from_unsorted(tenants, jobs, None);
    let cluster = ClusterSpec::homogeneous(16, 8);
    let mut watch = ReservationWatch {
        inner: Rota::new(&trace, RotaSettings::default()),
        holders: Vec::new(),
        last: None,
        jobs: trace.jobs.len(),
    };
    let out = engine::run(&trace, &cluster, &mut watch, &engine());
    let g = trace.jobs.iter().position(|j| j.gpus == 16).unwrap();
    let started = out.jobs[g].first_start.expect("the gang started");
    let wait = started - trace.jobs[g].arrival;
    // The small jobs running at its arrival end within 100 s.
    assert!(wait <= 100.0, "the gang waited {wait} s");
    assert!(
        watch.holders.contains(&(g as JobId)),
        "it held the reservation"
    );
    assert!(out.jobs.iter().all(|j| j.status == JobStatus::Done));
}

/// A job larger than every pool is reported as unplaceable, never queued, and stalls no one.
#[test]
fn a_job_larger_than_the_cluster_is_reported_and_blocks_no_one() {
    let mut jobs = vec![job(0, 1_000.0, 0.0), job(1, 100.0, 2.0), job(1, 100.0, 3.0)];
    jobs[0].gpus = 64;
    let tenants = (0..2)
        .map(|i| TenantSpec {
            name: format!("t{i}"),
            weight: 1.0,
        })
        .collect();
    let trace = Trace::from_unsorted(tenants, jobs, None);
    let cluster = ClusterSpec::homogeneous(16, 8);
    let out = run_policy(
        &trace,
        &cluster,
        PolicyKind::Rota,
        &engine(),
        &PolicyConfig::default(),
    )
    .expect("policy exists");
    assert_eq!(out.jobs[0].status, JobStatus::Unplaceable);
    assert_eq!(out.jobs[1].first_start, Some(2.0));
    assert_eq!(out.jobs[2].first_start, Some(3.0));
    let s = summarize(&trace, &out, &[None, None]);
    assert_eq!((s.jobs_unplaceable, s.jobs_unfinished), (1, 0));
    assert_eq!(s.tenants[0].unplaceable, 1);
    let note = rota::sim::report::unplaceable_note(&s).expect("a note");
    assert!(note.contains("1 jobs") && note.contains("t0 1"), "{note}");
}

/// Tenant 0 fills 16 GPUs with long VMs at t = 0; tenant 1 (same weight) arrives at t = 1000
/// with as many batch Jobs: rota must stop VMs for it, announcing each stop first.
fn vms_then_jobs() -> Trace {
    let mut jobs = Vec::new();
    for k in 0..16 {
        let mut vm = job(0, 40_000.0, k as f64);
        vm.kind = WorkloadKind::VirtualMachine;
        jobs.push(vm);
        jobs.push(job(1, 5_000.0, 1_000.0 + k as f64));
    }
    let tenants = (0..2)
        .map(|i| TenantSpec {
            name: format!("t{i}"),
            weight: 1.0,
        })
        .collect();
    Trace::from_unsorted(tenants, jobs, None)
}

#[test]
fn vms_are_stopped_only_after_their_warning_which_costs_the_waiting_tenant() {
    let trace = vms_then_jobs();
    let cluster = ClusterSpec::homogeneous(16, 8);
    let none = vec![None; trace.tenants.len()];
    let run = |warning: u64| {
        let mut config = rota::config::RotaConfig::default();
        config.rotation.warning.virtual_machine_seconds = warning;
        let settings = RotaSettings::from_config(&config);
        let mut watch = QuantumWatch {
            least_run: (settings.quantum.virtual_machine_seconds + warning) as f64,
            kind: Some(WorkloadKind::VirtualMachine),
            inner: Rota::new(&trace, settings),
            jobs: trace.jobs.len(),
            rotations: 0,
        };
        let out = engine::run(&trace, &cluster, &mut watch, &engine());
        assert!(out.jobs.iter().all(|j| j.status == JobStatus::Done));
        let s = summarize(&trace, &out, &none);
        assert!(watch.rotations > 0, "no VM was rotated out");
        assert_eq!(s.preemptions_vms as usize, watch.rotations);
        s
    };
    let (warned, blunt) = (run(300), run(0));
    // Every VM stop was announced first; with no warning period none is.
    assert!(
        warned.rotation_warnings >= warned.preemptions_vms,
        "{warned:?}"
    );
    assert_eq!(blunt.rotation_warnings, 0);
    assert_eq!(blunt.rotation_cancellations, 0);
    // The GPUs stay with the VMs during the warning: the waiting tenant's Jobs finish later.
    let t1 = |s: &rota::sim::PolicySummary| s.tenants[1].jct_mean;
    assert!(
        t1(&warned) > t1(&blunt),
        "tenant 1 JCT: warned {} s, blunt {} s",
        t1(&warned),
        t1(&blunt)
    );
}
