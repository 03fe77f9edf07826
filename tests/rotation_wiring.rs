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
use rota::core::rotation_input::build_plan_input;
use rota::core::{GpuPod, WorkloadId, WorkloadKind};
use rota::read::view::{ClusterView, ViewSettings};
use rota::write::rotation::{
    Action, Actuator, CorePlanner, Direction, LoopSettings, Outcome, Result, RotationLoop,
    RotationMetrics,
};

const GPU: &str = "nvidia.com/gpu";
const NOW: i64 = 1_800_000_000;

/// Records every call: direction, workload and the dry-run flag.
#[derive(Default)]
struct Recording(parking_lot::Mutex<Vec<(Direction, WorkloadId, bool)>>);

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
            input_view.with_snapshot(|s| build_plan_input(s, &[], &Default::default(), &input_config, now))
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
