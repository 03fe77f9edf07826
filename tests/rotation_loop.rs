//! The rotation loop in paused tokio time, with a scripted planner and a recording actuator:
//! it acts only while leader, starts acting on the first tick after it becomes leader, stops
//! before the next action when leadership is lost mid-tick, keeps ticking through failures and
//! timeouts, and publishes its metrics on the registry it was given. Waits are bounded by a
//! 2-second timeout in virtual time (paused time jumps straight to it if the loop hangs).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use parking_lot::Mutex;
use prometheus::Registry;
use rota::clock::Clock;
use rota::core::rotation::{
    Limits, PlanInput, ResourceState, RunningWorkload, Spread, TenantShare, WaitingWorkload,
};
use rota::core::{WorkloadId, WorkloadKind};
use rota::write::rotation::CorePlanner;
use rota::write::rotation::{
    Action, ActionReport, Actuator, Direction, Error, LoopSettings, Outcome, Plan, Planner,
    RotationLoop, RotationMetrics, TickSummary,
};
use tokio::sync::{oneshot, watch};

const INTERVAL: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Fixtures

type Behaviour = dyn Fn(&Action) -> Result<Outcome, Error> + Send + Sync;

/// Records every call; answers with `behaviour`; optionally runs `on_call` first (to flip
/// leadership) or never answers (to hit the timeout).
struct Recording {
    calls: Mutex<Vec<(Direction, String)>>,
    behaviour: Box<Behaviour>,
    on_call: Option<Box<dyn Fn() + Send + Sync>>,
    hang: bool,
}

impl Recording {
    fn new(behaviour: impl Fn(&Action) -> Result<Outcome, Error> + Send + Sync + 'static) -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            behaviour: Box::new(behaviour),
            on_call: None,
            hang: false,
        }
    }

    fn calls(&self) -> Vec<(Direction, String)> {
        self.calls.lock().clone()
    }

    fn call<'a>(
        &'a self,
        direction: Direction,
        action: &'a Action,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        self.calls
            .lock()
            .push((direction, action.workload.name.clone()));
        if let Some(hook) = &self.on_call {
            hook();
        }
        Box::pin(async move {
            if self.hang {
                std::future::pending::<()>().await;
            }
            (self.behaviour)(action)
        })
    }
}

impl Actuator for Recording {
    fn rotate_out<'a>(
        &'a self,
        action: &'a Action,
        _dry_run: bool,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        self.call(Direction::RotateOut, action)
    }

    fn resume<'a>(
        &'a self,
        action: &'a Action,
        _dry_run: bool,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        self.call(Direction::Resume, action)
    }
}

fn action(kind: WorkloadKind, name: &str, tenant: &str, reason_code: &'static str) -> Action {
    Action {
        workload: WorkloadId {
            kind,
            namespace: "ns".into(),
            name: name.into(),
        },
        tenant: tenant.into(),
        gpus: 2,
        reason: format!("{name} of {tenant}: {reason_code}"),
        reason_code,
    }
}

fn rotate_out_plan(names: &[&str]) -> Plan {
    Plan {
        rotate_out: names
            .iter()
            .map(|n| action(WorkloadKind::Job, n, "physics", "over_share"))
            .collect(),
        ..Plan::default()
    }
}

/// A planner that returns `plan` every tick and counts how often it was asked.
fn counting_planner(plan: Plan) -> (impl Planner, Arc<Mutex<usize>>) {
    let asked = Arc::new(Mutex::new(0));
    let counter = asked.clone();
    let planner = move |_now: Timestamp| {
        *counter.lock() += 1;
        plan.clone()
    };
    (planner, asked)
}

fn clock() -> Clock {
    let at = "2026-01-31T12:00:00Z".parse::<Timestamp>().unwrap();
    Arc::new(move || at)
}

fn settings(dry_run: bool, concurrency: usize) -> LoopSettings {
    LoopSettings {
        interval: INTERVAL,
        dry_run,
        concurrency,
        action_timeout: Duration::from_secs(1),
    }
}

struct Harness<P> {
    registry: Registry,
    leader: watch::Sender<bool>,
    rotation: RotationLoop<P>,
}

fn harness<P: Planner>(
    planner: P,
    actuator: Arc<dyn Actuator>,
    leading: bool,
    s: LoopSettings,
) -> Harness<P> {
    let registry = Registry::new();
    let metrics = RotationMetrics::register(&registry).unwrap();
    let (leader, rx) = watch::channel(leading);
    let rotation = RotationLoop::new(planner, actuator, rx, metrics, s, clock());
    Harness {
        registry,
        leader,
        rotation,
    }
}

/// Spawns the loop; returns the handle and the shutdown trigger.
fn spawn<P: Planner + 'static>(
    rotation: RotationLoop<P>,
) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(rotation.run(async move {
        let _ = stopped.await;
    }));
    (handle, stop)
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f).await.expect("timed out")
}

/// The value of the sample of `name` whose labels include every pair of `labels`.
fn sample(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = String::from_utf8(rota::metrics::render(registry)).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|line| {
            let (series, _) = line.rsplit_once(' ').unwrap_or((line, ""));
            let bare = series.split('{').next() == Some(name);
            bare && labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit_once(' ')?.1.parse().ok())
}

/// Lets the spawned loop run through `d` of virtual time.
async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
}

fn conflict(action: &Action) -> Result<Outcome, Error> {
    Err(Error::Conflict {
        verb: "patch",
        workload: action.workload.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Leadership

#[tokio::test(start_paused = true)]
async fn a_replica_that_is_not_leader_never_plans_or_acts() {
    let actuator = Arc::new(Recording::new(|_| Ok(Outcome::Done)));
    let (planner, asked) = counting_planner(rotate_out_plan(&["a"]));
    let h = harness(planner, actuator.clone(), false, settings(false, 4));
    let (task, stop) = spawn(h.rotation);
    advance(INTERVAL * 5).await;
    assert!(actuator.calls().is_empty());
    assert_eq!(*asked.lock(), 0);
    assert_eq!(sample(&h.registry, "rota_leader", &[]), Some(0.0));
    stop.send(()).unwrap();
    within(task).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn becoming_leader_acts_on_the_next_tick_and_losing_it_stops() {
    let actuator = Arc::new(Recording::new(|_| Ok(Outcome::Done)));
    let (planner, _) = counting_planner(rotate_out_plan(&["a"]));
    let h = harness(planner, actuator.clone(), false, settings(false, 4));
    let (task, stop) = spawn(h.rotation);
    // Ticks at 0 s and 30 s pass as follower; leadership arrives at 45 s.
    advance(Duration::from_secs(45)).await;
    h.leader.send(true).unwrap();
    advance(Duration::from_secs(1)).await;
    assert!(actuator.calls().is_empty(), "acted before the next tick");
    assert_eq!(sample(&h.registry, "rota_leader", &[]), Some(1.0));
    advance(Duration::from_secs(15)).await; // 61 s: the 60 s tick ran.
    assert_eq!(actuator.calls(), [(Direction::RotateOut, "a".to_owned())]);
    h.leader.send(false).unwrap();
    advance(INTERVAL * 4).await;
    assert_eq!(actuator.calls().len(), 1, "acted after losing leadership");
    assert_eq!(sample(&h.registry, "rota_leader", &[]), Some(0.0));
    stop.send(()).unwrap();
    within(task).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn losing_leadership_mid_tick_stops_before_the_next_action() {
    let (leader_tx, leader_rx) = watch::channel(true);
    let leader_tx = Arc::new(leader_tx);
    let flip = leader_tx.clone();
    let mut recording = Recording::new(|_| Ok(Outcome::Done));
    recording.on_call = Some(Box::new(move || {
        flip.send_replace(false);
    }));
    let actuator = Arc::new(recording);
    let registry = Registry::new();
    let metrics = RotationMetrics::register(&registry).unwrap();
    let mut plan = rotate_out_plan(&["a", "b"]);
    plan.resume
        .push(action(WorkloadKind::Job, "c", "bio", "resume_turn"));
    let (planner, _) = counting_planner(plan);
    let mut rotation = RotationLoop::new(
        planner,
        actuator.clone(),
        leader_rx,
        metrics,
        settings(false, 1),
        clock(),
    );
    let summary = within(rotation.tick()).await;
    assert_eq!(actuator.calls(), [(Direction::RotateOut, "a".to_owned())]);
    assert_eq!(
        summary,
        TickSummary {
            attempted: 1,
            failed: 0,
            skipped: 2
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_elector_counts_as_not_leader() {
    let actuator = Arc::new(Recording::new(|_| Ok(Outcome::Done)));
    let (planner, asked) = counting_planner(rotate_out_plan(&["a"]));
    let h = harness(planner, actuator.clone(), true, settings(false, 4));
    let (task, stop) = spawn(h.rotation);
    advance(Duration::from_secs(1)).await; // the 0 s tick acted
    assert_eq!(actuator.calls().len(), 1);
    drop(h.leader); // the elector ended without publishing false
    advance(INTERVAL * 3).await;
    assert_eq!(actuator.calls().len(), 1);
    assert_eq!(*asked.lock(), 1);
    stop.send(()).unwrap();
    within(task).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Failures

#[tokio::test(start_paused = true)]
async fn failures_are_counted_and_retried_on_later_ticks() {
    let actuator = Arc::new(Recording::new(conflict));
    let (planner, _) = counting_planner(rotate_out_plan(&["a"]));
    let h = harness(planner, actuator.clone(), true, settings(false, 4));
    let (task, stop) = spawn(h.rotation);
    advance(INTERVAL * 2 + Duration::from_secs(1)).await; // ticks at 0, 30, 60 s
    assert_eq!(
        actuator.calls().len(),
        3,
        "the loop kept ticking after failures"
    );
    let failures = sample(
        &h.registry,
        "rota_rotation_failures_total",
        &[("kind", "job"), ("reason", "conflict")],
    );
    assert_eq!(failures, Some(3.0));
    assert_eq!(sample(&h.registry, "rota_rotations_total", &[]), None);
    stop.send(()).unwrap();
    within(task).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hung_action_times_out_as_a_retryable_failure() {
    let mut recording = Recording::new(|_| Ok(Outcome::Done));
    recording.hang = true;
    let actuator = Arc::new(recording);
    let h = harness(
        rotate_out_plan_fn(&["slow"]),
        actuator.clone(),
        true,
        settings(false, 4),
    );
    let mut rotation = h.rotation;
    let summary = within(rotation.tick()).await;
    assert_eq!(summary.failed, 1);
    let timeouts = sample(
        &h.registry,
        "rota_rotation_failures_total",
        &[("reason", "timeout")],
    );
    assert_eq!(timeouts, Some(1.0));
}

fn rotate_out_plan_fn(names: &'static [&'static str]) -> impl Planner {
    move |_now: Timestamp| rotate_out_plan(names)
}

// ---------------------------------------------------------------------------------------------
// Metrics and the planner's record

/// A planner that rotates `a` out on the first tick and resumes it on the second, and keeps
/// every report it is given.
struct TwoTicks {
    tick: usize,
    reports: Arc<Mutex<Vec<Seen>>>,
}

/// What the planner was told of one action: direction, workload name, outcome code.
type Seen = (Direction, String, &'static str);

impl Planner for TwoTicks {
    fn plan(&mut self, _now: Timestamp) -> Plan {
        self.tick += 1;
        let a = action(WorkloadKind::Job, "a", "physics", "over_share");
        match self.tick {
            1 => Plan {
                rotate_out: vec![a],
                ..Plan::default()
            },
            2 => Plan {
                resume: vec![Action {
                    reason_code: "resume_turn",
                    ..a
                }],
                ..Plan::default()
            },
            _ => Plan::default(),
        }
    }

    fn record(&mut self, _now: Timestamp, reports: &[ActionReport]) {
        let mut seen = self.reports.lock();
        for r in reports {
            let code = r.result.as_ref().map_or("error", Outcome::code);
            seen.push((r.direction, r.action.workload.name.clone(), code));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_follow_rotations_and_the_planner_sees_every_report() {
    let actuator = Arc::new(Recording::new(|_| Ok(Outcome::Done)));
    let reports = Arc::new(Mutex::new(Vec::new()));
    let planner = TwoTicks {
        tick: 0,
        reports: reports.clone(),
    };
    let h = harness(planner, actuator, true, settings(false, 4));
    let mut rotation = h.rotation;
    let r = &h.registry;

    within(rotation.tick()).await;
    let out = [
        ("tenant", "physics"),
        ("kind", "job"),
        ("reason", "over_share"),
    ];
    assert_eq!(sample(r, "rota_rotations_total", &out), Some(1.0));
    assert_eq!(
        sample(r, "rota_rotated_out_workloads", &[("tenant", "physics")]),
        Some(1.0)
    );
    assert_eq!(
        sample(r, "rota_planner_duration_seconds_count", &[]),
        Some(1.0)
    );
    assert_eq!(sample(r, "rota_rotation_dry_run", &[]), Some(0.0));

    within(rotation.tick()).await;
    let back = [("tenant", "physics"), ("reason", "resume_turn")];
    assert_eq!(sample(r, "rota_rotations_total", &back), Some(1.0));
    assert_eq!(
        sample(r, "rota_rotated_out_workloads", &[("tenant", "physics")]),
        Some(0.0)
    );
    assert_eq!(
        sample(r, "rota_planner_duration_seconds_count", &[]),
        Some(2.0)
    );
    assert_eq!(
        *reports.lock(),
        [
            (Direction::RotateOut, "a".to_owned(), "done"),
            (Direction::Resume, "a".to_owned(), "done")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_counts_would_be_rotations_but_holds_nothing_rotated_out() {
    let actuator = Arc::new(Recording::new(|_| Ok(Outcome::WouldAct)));
    let h = harness(
        rotate_out_plan_fn(&["a", "b"]),
        actuator.clone(),
        true,
        settings(true, 4),
    );
    let mut rotation = h.rotation;
    let summary = within(rotation.tick()).await;
    assert_eq!(summary.attempted, 2);
    let r = &h.registry;
    assert_eq!(
        sample(r, "rota_rotations_total", &[("tenant", "physics")]),
        Some(2.0)
    );
    assert_eq!(sample(r, "rota_rotated_out_workloads", &[]), None);
    assert_eq!(sample(r, "rota_rotation_dry_run", &[]), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn seeded_rotated_out_workloads_show_until_resumed() {
    let actuator = Arc::new(Recording::new(|_| Ok(Outcome::Done)));
    let resume = Plan {
        resume: vec![action(
            WorkloadKind::VirtualMachine,
            "vm1",
            "bio",
            "resume_turn",
        )],
        ..Plan::default()
    };
    let (planner, _) = counting_planner(resume);
    let h = harness(planner, actuator, true, settings(false, 4));
    let mut rotation = h.rotation;
    let vm1 = action(WorkloadKind::VirtualMachine, "vm1", "bio", "x").workload;
    let vm2 = action(WorkloadKind::VirtualMachine, "vm2", "bio", "x").workload;
    rotation.seed_rotated_out([(vm1, "bio".to_owned()), (vm2, "bio".to_owned())]);
    let r = &h.registry;
    assert_eq!(
        sample(r, "rota_rotated_out_workloads", &[("tenant", "bio")]),
        Some(2.0)
    );
    within(rotation.tick()).await;
    assert_eq!(
        sample(r, "rota_rotated_out_workloads", &[("tenant", "bio")]),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------------------------
// The core planner behind the loop

/// physics holds 8 GPUs on n1 (entitled to 4): Job p1, past its quantum, and p2 of a protected
/// PriorityClass; bio waits for 4.
fn over_share_input(now: Timestamp) -> PlanInput {
    let job = |name: &str| WorkloadId {
        kind: WorkloadKind::Job,
        namespace: "ns".into(),
        name: name.into(),
    };
    let running = |name: &str, protected: bool| RunningWorkload {
        id: job(name),
        tenant: "physics".into(),
        resource: "nvidia.com/gpu".into(),
        nodes: vec![("n1".into(), 4)],
        started_at: 0.0,
        attained_gpu_seconds: 4000.0,
        quantum_seconds: 600.0,
        preemptible: true,
        protected,
        priority: 0,
        warning_seconds: 0.0,
        stop: None,
    };
    PlanInput {
        now: now.as_second() as f64,
        running: vec![running("p1", false), running("p2", true)],
        waiting: vec![WaitingWorkload {
            id: job("b1"),
            tenant: "bio".into(),
            resource: "nvidia.com/gpu".into(),
            gpus: 4,
            spread: Spread::OneNode,
            priority: 0,
        }],
        rotated_out: vec![],
        resources: vec![ResourceState {
            resource: "nvidia.com/gpu".into(),
            tenants: vec![
                TenantShare {
                    tenant: "physics".into(),
                    held: 8.0,
                    entitled: 4.0,
                },
                TenantShare {
                    tenant: "bio".into(),
                    held: 0.0,
                    entitled: 4.0,
                },
            ],
            free: vec![],
        }],
        limits: Limits::default(),
    }
}

#[tokio::test(start_paused = true)]
async fn the_core_planner_remembers_what_was_done_and_honours_the_quantum() {
    let actuator = Arc::new(Recording::new(|_| Ok(Outcome::Done)));
    let planner = CorePlanner::new(over_share_input, Duration::from_secs(86_400));
    let h = harness(planner, actuator.clone(), true, settings(false, 4));
    let mut rotation = h.rotation;
    let first = within(rotation.tick()).await;
    assert_eq!(first.attempted, 1, "p1 makes room for bio");
    assert_eq!(actuator.calls(), [(Direction::RotateOut, "p1".to_owned())]);
    // Same cluster next tick (the clock is fixed): p1 is within its quantum since its rotation.
    let second = within(rotation.tick()).await;
    assert_eq!(second.attempted, 0, "{:?}", actuator.calls());
    let over = [("tenant", "physics"), ("reason", "over_share")];
    assert_eq!(
        sample(&h.registry, "rota_rotations_total", &over),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn the_core_planner_retries_what_failed() {
    let actuator = Arc::new(Recording::new(conflict));
    let planner = CorePlanner::new(over_share_input, Duration::from_secs(86_400));
    let h = harness(planner, actuator.clone(), true, settings(false, 4));
    let mut rotation = h.rotation;
    within(rotation.tick()).await;
    within(rotation.tick()).await;
    let p1 = (Direction::RotateOut, "p1".to_owned());
    assert_eq!(actuator.calls(), [p1.clone(), p1]);
}
