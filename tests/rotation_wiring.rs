//! The rotation wiring without an API server: the cluster view's snapshot goes through
//! `build_plan_input` into `CorePlanner`, and `RotationLoop` carries the plan out in dry run
//! through a recording actuator. Proves the builder and the planner agree on who is over share.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use prometheus::Registry;
use tokio::sync::watch;

use rota::config::ValidConfig;
use rota::core::fairshare::SharePolicy;
use rota::core::model::GpuNode;
use rota::core::rotation_input::{build_plan_input, MarksById};
use rota::core::{GpuPod, WorkloadId, WorkloadKind};
use rota::read::view::translate::workload_marks;
use rota::read::view::{ClusterView, ViewSettings};
use rota::write::rotation::notice::rfc3339;
use rota::write::rotation::{
    Action, Actuator, CorePlanner, Direction, LoopSettings, Outcome, Result, RotationLoop,
    RotationMetrics,
};
use rota::write::rotation::{Warning, STOP_AT, STOP_FOR};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

const GPU: &str = "nvidia.com/gpu";
const NOW: i64 = 1_800_000_000;

/// Records every call: direction, workload and the dry-run flag; keeps the marks that
/// announced stops leave on the objects.
#[derive(Default)]
struct Recording(
    parking_lot::Mutex<Vec<(Direction, WorkloadId, bool)>>,
    Arc<parking_lot::Mutex<MarksById>>,
);

impl Recording {
    fn push(&self, d: Direction, a: &Action, dry_run: bool) -> Result<Outcome> {
        self.0.lock().push((d, a.workload.clone(), dry_run));
        Ok(if dry_run {
            Outcome::WouldAct
        } else {
            Outcome::Done
        })
    }
}

impl Actuator for Recording {
    fn rotate_out<'a>(&'a self, a: &'a Action, dry_run: bool) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move { self.push(Direction::RotateOut, a, dry_run) })
    }
    fn resume<'a>(&'a self, a: &'a Action, dry_run: bool) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move { self.push(Direction::Resume, a, dry_run) })
    }
    fn warn<'a>(&'a self, w: &'a Warning, dry_run: bool) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            // What the notice writer leaves on the object, as the watch reads it back.
            let annotations: BTreeMap<String, String> = [
                (STOP_AT.to_string(), rfc3339(w.stop_at)),
                (STOP_FOR.to_string(), w.claim.to_string()),
            ]
            .into();
            (self.1.lock()).insert(
                w.action.workload.clone(),
                workload_marks(Some(&annotations)),
            );
            self.push(Direction::Warn, &w.action, dry_run)
        })
    }
    fn cancel<'a>(&'a self, a: &'a Action, dry_run: bool) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async move {
            self.1.lock().remove(&a.workload);
            self.push(Direction::Cancel, a, dry_run)
        })
    }
}

fn job(name: &str) -> WorkloadId {
    WorkloadId {
        kind: WorkloadKind::Job,
        namespace: "ns".into(),
        name: name.into(),
    }
}

fn pod(name: &str, tenant: &str, on: Option<&str>, started_ago: f64) -> GpuPod {
    let now = NOW as f64;
    GpuPod {
        uid: format!("{name}-0"),
        namespace: "ns".into(),
        name: format!("{name}-0"),
        tenant: tenant.into(),
        workload: job(name),
        requests: [(GPU.to_string(), 4)].into(),
        node_name: on.map(Into::into),
        active: true,
        created_at: Some(now - started_ago - 10.0),
        started_at: on.map(|_| now - started_ago),
        ..GpuPod::default()
    }
}

/// One 8-GPU node held by tenant `big` (two 4-GPU Jobs, the older one annotated
/// non-preemptible), while tenant `small` waits for 4 GPUs: both are entitled to 4.
fn cluster(config: &ValidConfig) -> Arc<ClusterView> {
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(config)));
    view.apply_gpu_node(GpuNode {
        name: "n1".into(),
        ready: true,
        allocatable: [(GPU.to_string(), 8)].into(),
        ..GpuNode::default()
    });
    let mut pinned = pod("pinned", "big", Some("n1"), 9000.0);
    pinned.non_preemptible = true;
    view.apply_gpu_pod(pinned);
    view.apply_gpu_pod(pod("victim", "big", Some("n1"), 7200.0));
    view.apply_gpu_pod(pod("waiter", "small", None, 0.0));
    view.refresh_fair_share(&SharePolicy::from_config(config), |_| 0.0, NOW as f64);
    view.set_synced(true);
    view
}

#[tokio::test]
async fn the_over_share_tenant_gives_way_in_dry_run_once_per_quantum() {
    let config = Arc::new(ValidConfig::default());
    assert!(config.rotation.dry_run, "dry run is the default");
    let view = cluster(&config);
    let (input_view, input_config) = (view.clone(), config.clone());
    let planner = CorePlanner::new(
        move |now: Timestamp| {
            let now = now.as_millisecond() as f64 / 1000.0;
            input_view.with_snapshot(|s| {
                build_plan_input(s, &[], &Default::default(), &input_config, now)
            })
        },
        Duration::from_secs(config.quantum.max_seconds),
    );
    let recording = Arc::new(Recording::default());
    let (leader_tx, leader) = watch::channel(false);
    let metrics = RotationMetrics::register(&Registry::new()).unwrap();
    let clock: rota::clock::Clock = Arc::new(|| Timestamp::from_second(NOW).unwrap());
    let mut rotation = RotationLoop::new(
        planner,
        recording.clone(),
        leader,
        metrics,
        LoopSettings::from_config(&config),
        clock,
    );

    // Not leading: nothing is acted on.
    rotation.tick().await;
    assert!(recording.0.lock().is_empty());

    leader_tx.send(true).unwrap();
    rotation.tick().await;
    assert_eq!(
        *recording.0.lock(),
        vec![(Direction::RotateOut, job("victim"), true)],
        "the preemptible Job of the over-share tenant, in dry run"
    );

    // The dry-run rotation counts for the quantum: the next tick does not repeat it, and the
    // non-preemptible Job is never offered instead.
    rotation.tick().await;
    assert_eq!(recording.0.lock().len(), 1);
}

/// A leader announces a stop and loses the Lease in the middle of the warning: the next leader
/// reads the notice back from the object, announces nothing new (no second victim for the same
/// claim), and stops the victim at the announced time, not before.
#[tokio::test]
async fn a_new_leader_keeps_the_stop_the_old_one_announced() {
    let mut raw = rota::config::RotaConfig::default();
    raw.rotation.dry_run = false;
    raw.rotation.warning.job_seconds = 300;
    let config = Arc::new(raw.validate().unwrap());
    let view = cluster(&config);
    let recording = Arc::new(Recording::default());
    let now = Arc::new(AtomicI64::new(NOW));
    let term = |leader: watch::Receiver<bool>| {
        let (view, input_config, objects) = (view.clone(), config.clone(), recording.1.clone());
        let planner = CorePlanner::new(
            move |t: Timestamp| {
                let marks = objects.lock().clone();
                let t = t.as_second() as f64;
                view.with_snapshot(|s| build_plan_input(s, &[], &marks, &input_config, t))
            },
            Duration::from_secs(config.quantum.max_seconds),
        );
        let clock_now = now.clone();
        let clock: rota::clock::Clock =
            Arc::new(move || Timestamp::from_second(clock_now.load(Ordering::SeqCst)).unwrap());
        let metrics = RotationMetrics::register(&Registry::new()).unwrap();
        let settings = LoopSettings::from_config(&config);
        RotationLoop::new(planner, recording.clone(), leader, metrics, settings, clock)
    };
    let (_first_tx, first) = watch::channel(true);
    term(first).tick().await;
    let calls = || recording.0.lock().clone();
    assert_eq!(calls(), vec![(Direction::Warn, job("victim"), false)]);

    // A new leader with an empty memory, 100 s into the warning: nothing to do.
    let (_second_tx, second) = watch::channel(true);
    let mut next = term(second);
    now.store(NOW + 100, Ordering::SeqCst);
    next.tick().await;
    assert_eq!(calls().len(), 1, "{:?}", calls());
    // At the announced time it stops the victim.
    now.store(NOW + 300, Ordering::SeqCst);
    next.tick().await;
    assert_eq!(calls()[1..], [(Direction::RotateOut, job("victim"), false)]);
}
