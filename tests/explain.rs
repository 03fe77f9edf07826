//! `GET /v1/explain/{namespace}/{pod}` through the extender's handler, the fair-share metrics on
//! `/metrics`, and the refresher that feeds both.

use std::sync::Arc;

use bytes::Bytes;
use hyper::{HeaderMap, Method};
use rota::config::ValidConfig;
use rota::core::explain::{Explanation, PodState};
use rota::core::fairshare::{entitlements, SharePolicy, TenantLoad};
use rota::core::ledger::Ledger;
use rota::extender::{explain, Context, Extender};
use rota::http::{Handler, Request};
use rota::read::rotated_out::RotatedOutIndex;
use rota::read::view::fairshare::{FairShareRefresher, SharedLedger};
use rota::read::view::fairshare_metrics::{FairShareCollector, QueueWaitMetrics};
use rota::read::view::{ClusterView, ViewSettings};
use serde_json::{json, Value};

const GPU: &str = "nvidia.com/gpu";
const NOW: f64 = 1_735_700_000.0;

struct Fixture {
    view: Arc<ClusterView>,
    extender: Extender,
    ledger: SharedLedger,
    refresher: FairShareRefresher,
}

fn fixture() -> Fixture {
    fixture_with(None)
}

fn fixture_with(rotation_marks: Option<Arc<RotatedOutIndex>>) -> Fixture {
    let config = ValidConfig::default();
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(&config)));
    view.set_synced(true);
    let registry = prometheus::Registry::new();
    let ledger: SharedLedger = Arc::new(parking_lot::Mutex::new(Ledger::new(3600.0).unwrap()));
    let policy = SharePolicy::from_config(&config);
    FairShareCollector::register(&registry, view.clone(), ledger.clone(), policy.clone()).unwrap();
    let waits = QueueWaitMetrics::register(&registry).unwrap();
    let refresher = FairShareRefresher::new(view.clone(), policy, ledger.clone(), Some(waits));
    let ctx = Context {
        view: view.clone(),
        config: Arc::new(config),
        learn_nodes: false,
        held_events: None,
        rotation_marks,
    };
    Fixture {
        view,
        extender: Extender::new(ctx, registry).unwrap(),
        ledger,
        refresher,
    }
}

fn apply_node(view: &ClusterView, name: &str, gpus: u64) {
    view.apply_node(
        &serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {GPU: gpus.to_string()},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap(),
    );
}

fn pod_json(name: &str, tenant: &str, gpus: u64, node: Option<&str>, created: &str) -> Value {
    let mut spec = json!({"containers": [{"name": "c",
        "resources": {"limits": {GPU: gpus.to_string()}}}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    json!({"metadata": {"name": name, "namespace": "lab", "uid": format!("uid-{name}"),
                        "labels": {"rota.io/tenant": tenant}, "creationTimestamp": created},
           "spec": spec})
}

fn apply_pod(view: &ClusterView, name: &str, tenant: &str, gpus: u64, node: Option<&str>) {
    let created = "2025-01-01T00:00:00Z";
    view.apply_pod(&serde_json::from_value(pod_json(name, tenant, gpus, node, created)).unwrap());
}

fn get(extender: &Extender, path: &str) -> (u16, Value, String) {
    let response = extender.handle(Request {
        method: Method::GET,
        path: path.into(),
        query: None,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        remote: None,
    });
    let text = String::from_utf8_lossy(&response.body).to_string();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (response.status.as_u16(), value, text)
}

/// 8 GPUs, physics holds 6; three workloads wait: bio 4, chem 2 (later), physics 1 (earliest).
fn scenario(f: &mut Fixture) {
    apply_node(&f.view, "n1", 8);
    apply_pod(&f.view, "phys-run", "physics", 6, Some("n1"));
    let pending = [
        ("bio", "bio", 4, "2025-01-01T01:00:00Z"),
        ("chem", "chem", 2, "2025-01-01T02:00:00Z"),
        ("phys-more", "physics", 1, "2024-12-01T00:00:00Z"),
    ];
    for (name, tenant, gpus, created) in pending {
        let pod = pod_json(name, tenant, gpus, None, created);
        f.view.apply_pod(&serde_json::from_value(pod).unwrap());
    }
    f.ledger
        .lock()
        .advance(NOW - 7200.0, std::iter::empty::<(&str, f64, Option<f64>)>());
    f.ledger.lock().advance(NOW, [("physics", 6.0, Some(3.0))]);
    assert!(f.refresher.tick(NOW));
    assert!(!f.refresher.tick(NOW + 2.0), "nothing changed");
}

/// Entitlements of bio, chem and physics in [`scenario`], from the pure function.
fn expected(f: &Fixture) -> Vec<f64> {
    let usage = f.ledger.lock().usage("physics", NOW);
    let load = |tenant, held, pending, usage| TenantLoad {
        tenant,
        held,
        pending,
        usage,
    };
    let loads = [
        load("bio", 0.0, 4.0, 0.0),
        load("chem", 0.0, 2.0, 0.0),
        load("physics", 6.0, 1.0, usage),
    ];
    entitlements(&SharePolicy::default(), 8.0, &loads)
        .iter()
        .map(|e| e.entitled)
        .collect()
}

#[test]
fn explain_answers_position_tenant_figures_and_what_is_ahead() {
    let mut f = fixture();
    scenario(&mut f);
    let (status, value, text) = get(&f.extender, "/v1/explain/lab/chem");
    assert_eq!(status, 200, "{text}");
    let e: Explanation = serde_json::from_value(value).unwrap();
    assert_eq!(e.state, PodState::Waiting);
    assert_eq!(
        (e.workload.as_str(), e.tenant.as_str()),
        ("pod/lab/chem", "chem")
    );
    assert_eq!((e.position, e.queue_length), (Some(2), 3));
    assert_eq!(e.ahead.len(), 1);
    assert_eq!(
        (
            e.ahead[0].workload.as_str(),
            e.ahead[0].tenant.as_str(),
            e.ahead[0].gpus
        ),
        ("pod/lab/bio", "bio", 4)
    );
    assert_eq!((e.gpus, e.gpus_ahead, e.free_gpus), (2, 4, 2));
    // Capacity 8 over demands bio 4, chem 2, physics 7 (6 held + 1, and past usage).
    let shares = expected(&f);
    assert_eq!(e.tenant_share.entitled, Some(shares[1]));
    assert_eq!(
        (
            e.tenant_share.held,
            e.tenant_share.pending,
            e.tenant_share.weight
        ),
        (0, 2, 1.0)
    );
    assert_eq!(e.refreshed_at, Some(NOW));
    // No GPU was ever released: the estimate is honest about it.
    assert_eq!(e.estimated_start.seconds, None);
    assert!(
        e.estimated_start.basis.contains("4 more GPUs"),
        "{:?}",
        e.estimated_start
    );

    // Physics waits last: its usage and holding put it behind the others.
    let (_, value, _) = get(&f.extender, "/v1/explain/lab/phys-more");
    let e: Explanation = serde_json::from_value(value).unwrap();
    assert_eq!(e.position, Some(3));
    assert_eq!(e.tenant_share.held, 6);
    assert!(e.tenant_share.usage_gpu_seconds.unwrap() > 0.0);
    assert!(
        e.tenant_share.standing.unwrap() > 1.0,
        "{:?}",
        e.tenant_share
    );
    let ahead: Vec<&str> = e.ahead.iter().map(|a| a.tenant.as_str()).collect();
    assert_eq!(ahead, ["bio", "chem"]);

    let (_, value, _) = get(&f.extender, "/v1/explain/lab/phys-run");
    assert_eq!(value["state"], "running");
}

#[test]
fn explain_gives_404_for_unknown_pods_and_400_for_bad_paths() {
    let mut f = fixture();
    scenario(&mut f);
    let (status, value, _) = get(&f.extender, "/v1/explain/lab/nobody");
    assert_eq!(status, 404);
    assert!(
        value["error"].as_str().unwrap().contains("lab/nobody"),
        "{value}"
    );
    let (status, value, _) = get(&f.extender, "/v1/explain/lab");
    assert_eq!(status, 400);
    assert!(value["error"].is_string());
}

#[test]
fn the_estimate_follows_the_release_rate() {
    let mut f = fixture();
    scenario(&mut f);
    // The physics pod finishes: 6 GPUs released within the first observed 10 minutes.
    f.view.delete_pod_key("uid-phys-run");
    assert!(f.refresher.tick(NOW + 600.0));
    let (_, value, _) = get(&f.extender, "/v1/explain/lab/phys-more");
    let e: Explanation = serde_json::from_value(value).unwrap();
    // Physics holds nothing now and arrived first: it heads the queue with 8 GPUs free.
    assert_eq!(
        e.estimated_start.seconds,
        Some(0.0),
        "{:?}",
        e.estimated_start
    );

    // An 8-GPU pod waits for GPUs to be released, at 6 per 600 s (one per 100 s).
    apply_pod(&f.view, "huge", "bio", 8, None);
    f.refresher.tick(NOW + 600.0);
    let (_, value, _) = get(&f.extender, "/v1/explain/lab/huge");
    let e: Explanation = serde_json::from_value(value).unwrap();
    let needed = e.gpus + e.gpus_ahead - e.free_gpus;
    let seconds = e.estimated_start.seconds.unwrap();
    assert!(
        (seconds - needed as f64 * 100.0).abs() < 1e-6,
        "{seconds} for {needed}"
    );
}

#[test]
fn a_pod_larger_than_every_node_is_explained_as_never_fitting() {
    let mut f = fixture();
    scenario(&mut f);
    apply_pod(&f.view, "huge", "bio", 16, None);
    f.refresher.tick(NOW + 600.0);
    let (_, value, _) = get(&f.extender, "/v1/explain/lab/huge");
    let e: Explanation = serde_json::from_value(value).unwrap();
    assert_eq!(e.estimated_start.seconds, None);
    assert!(
        e.gate.starts_with(
            "can never fit: one pod asks for 16 GPUs but the largest node it may use has 8"
        ),
        "{}",
        e.gate
    );
    assert!(
        e.estimated_start.basis.starts_with("never:"),
        "{:?}",
        e.estimated_start
    );
    // It holds no one up: the 4-GPU pod behind it is not told to wait for it.
    let (_, value, _) = get(&f.extender, "/v1/explain/lab/bio");
    let bio: Explanation = serde_json::from_value(value).unwrap();
    assert!(!bio.gate.contains("huge"), "{}", bio.gate);
    let (_, _, text) = get(&f.extender, "/metrics");
    assert_eq!(
        metric(
            &text,
            "rota_unplaceable_workloads{reason=\"pod_too_large\",tenant=\"bio\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_export_tenant_shares_usage_fairness_and_queue_waits() {
    let mut f = fixture();
    scenario(&mut f);
    let (status, _, text) = get(&f.extender, "/metrics");
    assert_eq!(status, 200);
    let shares = expected(&f);
    let g = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("{name} in\n{text}"));
    assert_eq!(g(r#"rota_tenant_weight{tenant="physics"}"#), 1.0);
    assert_eq!(
        g(r#"rota_tenant_allocated_gpus{resource="nvidia.com/gpu",tenant="physics"}"#),
        6.0
    );
    assert_eq!(
        g(r#"rota_tenant_entitled_gpus{resource="nvidia.com/gpu",tenant="physics"}"#),
        shares[2]
    );
    assert_eq!(
        g(r#"rota_tenant_share_gap_gpus{resource="nvidia.com/gpu",tenant="physics"}"#),
        6.0 - shares[2]
    );
    assert_eq!(g(r#"rota_tenant_pending_workloads{tenant="bio"}"#), 1.0);
    let allocated = g(r#"rota_tenant_usage_gpu_seconds{kind="allocated",tenant="physics"}"#);
    let measured = g(r#"rota_tenant_usage_gpu_seconds{kind="measured",tenant="physics"}"#);
    assert!(allocated > 0.0 && (measured - allocated / 2.0).abs() < 1e-6 * allocated);
    // Only physics holds anything: x = (6/e, 0, 0) over the three tenants.
    let jain = g(r#"rota_fairness_jain_index{resource="nvidia.com/gpu"}"#);
    assert!((jain - 1.0 / 3.0).abs() < 1e-9, "{jain}");

    // bio binds: its wait (from creation at 01:00 to this refresh) is observed once.
    let bound = pod_json("bio", "bio", 4, Some("n1"), "2025-01-01T01:00:00Z");
    f.view.apply_pod(&serde_json::from_value(bound).unwrap());
    f.refresher.tick(NOW + 10.0);
    let (_, _, text) = get(&f.extender, "/metrics");
    let count = metric(
        &text,
        r#"rota_queue_wait_seconds_count{resource="nvidia.com/gpu"}"#,
    );
    let sum = metric(
        &text,
        r#"rota_queue_wait_seconds_sum{resource="nvidia.com/gpu"}"#,
    );
    let created = 1_735_693_200.0; // 2025-01-01T01:00:00Z
    assert_eq!(count, Some(1.0));
    assert_eq!(sum, Some(NOW + 10.0 - created));
    // The long-run figure: in those 10 s every tenant had work waiting; physics held 6 GPUs,
    // and by weight and demand alone (4, 2, 7 on 8 GPUs) bio and physics were entitled to 3
    // each, chem to its 2.
    let total = |tenant: &str, what: &str| {
        metric(
            &text,
            &format!("rota_tenant_{what}_gpu_seconds_total{{tenant=\"{tenant}\"}}"),
        )
        .unwrap_or_else(|| panic!("{tenant} {what} in\n{text}"))
    };
    assert_eq!(total("physics", "received"), 60.0);
    assert_eq!(total("bio", "received"), 0.0);
    assert!((total("bio", "entitled") - 30.0).abs() < 1e-9);
    assert!((total("physics", "entitled") - 30.0).abs() < 1e-9);
    assert!((total("chem", "entitled") - 20.0).abs() < 1e-9);
}

#[tokio::test]
async fn rota_explain_fetches_over_http_and_prints_a_summary() {
    let mut f = fixture();
    scenario(&mut f);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rota::http::serve(
        listener,
        Arc::new(f.extender),
        rota::http::ServerOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let e = explain::fetch(&base, "lab/chem").await.unwrap();
    let text = explain::summary(&e);
    assert!(
        text.contains("Position 2 of 3 for nvidia.com/gpu"),
        "{text}"
    );
    assert!(
        text.contains("Tenant chem (weight 1): holds 0 GPUs"),
        "{text}"
    );
    assert!(text.contains("pod/lab/bio (tenant bio, 4 GPUs"), "{text}");
    let missing = explain::fetch(&base, "lab/nobody").await.unwrap_err();
    assert!(format!("{missing:#}").contains("404"), "{missing:#}");
    assert!(explain::fetch(&base, "no-slash").await.is_err());
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

fn rotation_of(f: &Fixture, path: &str) -> Value {
    let (status, body, text) = get(&f.extender, path);
    assert_eq!(status, 200, "{text}");
    body["rotation"].clone()
}

/// Running workloads are explained too: whether and when the rotation loop may stop them.
#[test]
fn explain_tells_a_running_workload_where_it_stands_with_rotation() {
    let mut f = fixture();
    scenario(&mut f);
    // physics holds 6 of 8 GPUs, well above its share, and ran past its quantum.
    let r = rotation_of(&f, "/v1/explain/lab/phys-run");
    assert_eq!(r["state"], "candidate", "{r}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("tenant physics holds 6"),
        "{r}"
    );
    // A fresh start is protected until the end of its quantum.
    // (The endpoint reads the real clock.)
    let started = (rota::clock::now_seconds() - 100.0).floor();
    let start = rota::clock::rfc3339(started);
    let mut fresh = pod_json("phys-new", "physics", 1, Some("n1"), &start);
    fresh["status"] = json!({ "startTime": start });
    f.view.apply_pod(&serde_json::from_value(fresh).unwrap());
    let r = rotation_of(&f, "/v1/explain/lab/phys-new");
    assert_eq!(r["state"], "protected", "{r}");
    assert_eq!(r["protected_until"].as_f64(), Some(started + 600.0));
    // Opted out: never a candidate, and it says why.
    let mut pinned = pod_json("pinned", "physics", 1, Some("n1"), "2025-01-01T00:00:00Z");
    pinned["metadata"]["annotations"] = json!({"rota.io/preemptible": "false"});
    f.view.apply_pod(&serde_json::from_value(pinned).unwrap());
    let r = rotation_of(&f, "/v1/explain/lab/pinned");
    assert_eq!(r["state"], "not_candidate", "{r}");
    assert!(r["detail"].as_str().unwrap().contains("preemptible"), "{r}");
    // A waiting pod has no rotation side.
    assert!(rotation_of(&f, "/v1/explain/lab/bio").is_null());
}

/// A VM is explained by its own name (not its launcher pod's), with the stop announced on it.
#[test]
fn explain_finds_a_vm_by_name_and_shows_its_announced_stop() {
    let index = Arc::new(RotatedOutIndex::new());
    let mut f = fixture_with(Some(index.clone()));
    scenario(&mut f);
    let mut launcher = pod_json(
        "virt-launcher-desk-x7k2q",
        "physics",
        1,
        Some("n1"),
        "2025-01-01T00:00:00Z",
    );
    launcher["metadata"]["ownerReferences"] = json!([{"apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance", "name": "desk", "uid": "vmi-uid", "controller": true}]);
    f.view.apply_pod(&serde_json::from_value(launcher).unwrap());
    let vm = rota::core::WorkloadId::parse("vm/lab/desk").unwrap();
    let annotations = [
        (
            "rota.io/stop-at".to_string(),
            "2025-01-01T03:00:00Z".to_string(),
        ),
        ("rota.io/stop-for".to_string(), "pod/lab/bio".to_string()),
    ]
    .into();
    index.set_marks(
        vm,
        rota::read::view::translate::workload_marks(Some(&annotations)),
    );
    let (status, body, text) = get(&f.extender, "/v1/explain/lab/desk");
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["workload"], "vm/lab/desk");
    let r = &body["rotation"];
    assert_eq!(r["state"], "scheduled", "{r}");
    assert_eq!(r["stop_for"], "pod/lab/bio");
    assert_eq!(
        r["warning_seconds"].as_f64(),
        Some(300.0),
        "VMs get 300 s by default"
    );
    let detail = r["detail"].as_str().unwrap();
    assert!(
        detail.contains("2025-01-01T03:00:00Z") && detail.contains("pod/lab/bio"),
        "{detail}"
    );
    let e: Explanation = serde_json::from_value(body).unwrap();
    assert!(explain::summary(&e).contains("Rotation: scheduled to stop at 2025-01-01T03:00:00Z"));
}
