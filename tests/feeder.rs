//! The one restartable feeder serves every watched kind: when a watch stream ends, the feeder
//! counts a restart, waits its jittered backoff and starts a fresh watch, whose list replaces
//! what the first one left. Checked for each kind the serving process watches: Nodes and Pods
//! (cluster view), Jobs and VirtualMachines (rotated-out index, which used to be spawned once
//! and never restarted), and agent and dcgm-exporter pods (telemetry directory). Paused tokio
//! time, so the backoff is virtual.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::DynamicObject;
use kube::runtime::watcher::{self, Event};
use rota::config::ValidConfig;
use rota::core::telemetry::TelemetrySource;
use rota::core::WorkloadKind;
use rota::read::cluster::{SyncGate, ViewIndex};
use rota::read::feeder::{FeedMetrics, Feeder, Index};
use rota::read::rotated_out::{job_entry, vm_entry, RotatedOutFeed, RotatedOutIndex};
use rota::read::telemetry::agents::{AgentDirectory, Discovery, ReporterFeed};
use rota::read::view::{ClusterView, ViewSettings};
use serde_json::json;
use tokio::sync::watch;

type Events<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

fn list<K: Send + 'static>(objects: Vec<K>) -> Vec<Result<Event<K>, watcher::Error>> {
    let mut events = vec![Ok(Event::Init)];
    events.extend(objects.into_iter().map(|o| Ok(Event::InitApply(o))));
    events.push(Ok(Event::InitDone));
    events
}

/// Runs a feeder over `index` whose first watch lists `first` and ends, and whose later
/// watches list `second` and stay open; returns once `replaced` holds (checked every 10 ms of
/// virtual time), with the number of watches started.
async fn restarted<K, I>(
    index: I,
    first: Vec<K>,
    second: Vec<K>,
    metrics: &Arc<FeedMetrics>,
    replaced: impl Fn() -> bool,
) -> usize
where
    K: Clone + Send + Sync + 'static,
    I: Index<K>,
{
    let kind = index.kind();
    let calls = AtomicUsize::new(0);
    let make = || -> Events<K> {
        match calls.fetch_add(1, Ordering::SeqCst) {
            0 => stream::iter(list(first.clone())).boxed(),
            _ => stream::iter(list(second.clone()))
                .chain(stream::pending())
                .boxed(),
        }
    };
    let (stop, mut stopped) = watch::channel(false);
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let feeding = Feeder::new(metrics.clone(), None).run(make, index, shutdown);
    let checking = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !replaced() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{kind}: the second list never replaced the first"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send_replace(true);
    };
    tokio::join!(feeding, checking);
    assert_eq!(metrics.restarts(kind), 1, "{kind}: one restart");
    assert!(
        metrics.last_event_age(kind).is_some(),
        "{kind}: events stamped"
    );
    calls.load(Ordering::SeqCst)
}

fn settings() -> ViewSettings {
    ViewSettings::from_config(&ValidConfig::default())
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name},
        "status": {"allocatable": {"nvidia.com/gpu": "8"}}}))
    .unwrap()
}

fn gpu_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ml", "uid": format!("uid-{name}")},
        "spec": {"nodeName": "n1", "containers": [{"name": "c",
                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
        "status": {"phase": "Running"}
    }))
    .unwrap()
}

fn job(name: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ml",
                     "annotations": {"rota.io/rotated-out-at": "2026-01-31T12:00:00Z"}},
        "spec": {"suspend": true, "template": {"spec": {"containers": [{"name": "c",
                 "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}}
    }))
    .unwrap()
}

fn vm(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "course",
                     "annotations": {"rota.io/rotated-out-at": "2026-01-31T12:00:00Z"}},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {
                 "gpus": [{"name": "g", "deviceName": "nvidia.com/gpu"}]}}}}}
    }))
    .unwrap()
}

fn reporter(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "rota-system", "uid": format!("uid-{name}")},
        "spec": {"nodeName": node, "containers": []},
        "status": {"phase": "Running", "podIP": "10.0.0.7"}
    }))
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn nodes_and_pods_are_watched_again_after_their_streams_end() {
    let metrics = FeedMetrics::new();
    let view = ClusterView::new(settings());
    let gate = SyncGate::new(&["nodes", "pods"]);
    let names = || {
        let snapshot = view.read();
        let mut names: Vec<String> = snapshot.nodes().map(|n| n.name.clone()).collect();
        names.sort();
        names
    };
    let index = ViewIndex::<Node>::new(&view, &gate);
    let calls = restarted(
        index,
        vec![node("old")],
        vec![node("new")],
        &metrics,
        || names() == ["new"],
    )
    .await;
    assert_eq!(calls, 2);

    let index = ViewIndex::<Pod>::new(&view, &gate);
    let pods = || view.read().pod_count();
    let has = |uid: &str| view.read().pod(uid).is_some();
    restarted(
        index,
        vec![gpu_pod("a")],
        vec![gpu_pod("b")],
        &metrics,
        || pods() == 1 && has("uid-b"),
    )
    .await;
    assert!(view.is_synced(), "both kinds listed");
}

#[tokio::test(start_paused = true)]
async fn the_rotated_out_feeds_are_restarted_too() {
    let metrics = FeedMetrics::new();
    let index = RotatedOutIndex::new();
    let s = settings();
    let ids = || -> Vec<String> {
        let mut ids: Vec<String> = index
            .list()
            .iter()
            .map(|e| e.workload.id.to_string())
            .collect();
        ids.sort();
        ids
    };
    let jobs = RotatedOutFeed::new(&index, WorkloadKind::Job, |j: &Job| job_entry(j, &s));
    restarted(jobs, vec![job("old")], vec![job("new")], &metrics, || {
        ids() == ["job/ml/new"]
    })
    .await;
    let vms = RotatedOutFeed::new(&index, WorkloadKind::VirtualMachine, |v: &DynamicObject| {
        vm_entry(v, &s)
    });
    restarted(vms, vec![vm("old")], vec![vm("new")], &metrics, || {
        ids() == ["job/ml/new", "vm/course/new"]
    })
    .await;
    assert!(index.is_synced());
    assert_eq!(metrics.restarts("jobs"), 1);
    assert_eq!(metrics.restarts("virtualmachines"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_reporter_feeds_are_restarted_too() {
    let metrics = FeedMetrics::new();
    let directory = AgentDirectory::new(Vec::new());
    let nodes = || -> Vec<String> {
        let mut nodes: Vec<String> = directory.targets().into_iter().map(|t| t.node).collect();
        nodes.sort();
        nodes
    };
    for (source, port) in [
        (TelemetrySource::Agent, 9402),
        (TelemetrySource::DcgmExporter, 9400),
    ] {
        let discovery = Discovery {
            selector: "app=x".into(),
            port,
            source,
        };
        let feed = ReporterFeed {
            discovery: &discovery,
            directory: &directory,
        };
        let (old, new) = match source {
            TelemetrySource::Agent => ("n-old", "n-new"),
            TelemetrySource::DcgmExporter => ("d-old", "d-new"),
        };
        let want = new.to_owned();
        restarted(
            feed,
            vec![reporter("old", old)],
            vec![reporter("new", new)],
            &metrics,
            || nodes().contains(&want) && !nodes().iter().any(|n| n == old),
        )
        .await;
    }
    assert_eq!(metrics.restarts("agents"), 1);
    assert_eq!(metrics.restarts("dcgm-exporters"), 1);
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_with_jitter_and_stop_on_shutdown() {
    let metrics = FeedMetrics::new();
    let view = ClusterView::new(settings());
    let gate = SyncGate::new(&["nodes"]);
    let index = ViewIndex::<Node>::new(&view, &gate);
    let starts = parking_lot::Mutex::new(Vec::new());
    // Every watch ends at once: the feeder keeps restarting, ever more slowly.
    let make = || -> Events<Node> {
        starts.lock().push(tokio::time::Instant::now());
        stream::iter(list(vec![node("n")])).boxed()
    };
    let began = tokio::time::Instant::now();
    let shutdown = tokio::time::sleep(Duration::from_secs(100));
    Feeder::new(metrics.clone(), None)
        .run(make, index, shutdown)
        .await;
    let starts = starts.lock().clone();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 5, "{gaps:?}");
    // Each delay is in [d/2, d] for d = 1, 2, 4, 8, 16, 30, 30 … seconds.
    for (i, gap) in gaps.iter().enumerate() {
        let d = Duration::from_secs(1u64 << i.min(5)).min(Duration::from_secs(30));
        assert!(
            *gap >= d / 2 && *gap <= d,
            "restart {i}: {gap:?} outside [{:?}, {d:?}]",
            d / 2
        );
    }
    assert_eq!(metrics.restarts("nodes") as usize, starts.len());
    assert!(
        began.elapsed() >= Duration::from_secs(100),
        "ran until shutdown"
    );
}
