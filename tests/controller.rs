//! The watchers against a mock API server (tower-test), and the watch plumbing on synthetic
//! event streams. Every scenario runs under a 5-second timeout.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::client::Body;
use kube::runtime::watcher::{self, Event};
use rota::read::cluster::{feed, run_watchers, Error, SyncGate};
use rota::read::view::{ClusterView, ViewSettings};
use serde_json::{json, Value};

const GPU: &str = "nvidia.com/gpu";
const A10: &str = "nvidia.com/GA102GL_A10";
const TIMEOUT: Duration = Duration::from_secs(5);

fn settings() -> ViewSettings {
    ViewSettings {
        gpu_resources: vec![GPU.into(), A10.into()],
        tenant_label: "rota.io/tenant".into(),
        within_tenant: Default::default(),
    }
}

fn object(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/objects")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn list(kind: &str, items: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"resourceVersion": "48213977"},
        "items": items,
    }))
    .unwrap()
}

fn used(view: &ClusterView, node: &str, resource: &str) -> Option<u64> {
    view.with_snapshot(|s| {
        s.node(node)
            .map(|n| n.used.get(resource).copied().unwrap_or(0))
    })
}

/// What the mock API server does besides answering the two lists.
#[derive(Default)]
struct Scenario {
    /// Events sent (one JSON line each) on the first pod watch; other watches stay pending.
    pod_watch_events: Vec<Value>,
    /// Answer the first node LIST with a 500.
    fail_first_node_list: bool,
}

/// Plays the API server: answers one LIST of nodes and one of pods (in either order), plays
/// the scenario, and leaves watches pending. Returns the set of paths it listed successfully.
async fn api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    scenario: Scenario,
) -> anyhow::Result<BTreeSet<String>> {
    let mut listed = BTreeSet::new();
    let mut pending = Vec::new();
    let mut pod_events = Some(scenario.pod_watch_events);
    let mut fail_node_list = scenario.fail_first_node_list;
    while let Some((request, send)) = handle.next_request().await {
        anyhow::ensure!(request.method() == Method::GET, "unexpected {request:?}");
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        if path == "/api/v1/pods" {
            // Terminal pods are filtered out server-side.
            anyhow::ensure!(
                query.contains("fieldSelector="),
                "no field selector: {query}"
            );
        }
        if query.contains("watch=true") {
            match pod_events.take_if(|_| path == "/api/v1/pods") {
                Some(events) => {
                    let mut body = Vec::new();
                    for e in events {
                        body.extend(serde_json::to_vec(&e)?);
                        body.push(b'\n');
                    }
                    send.send_response(Response::new(Body::from(body)));
                }
                None => pending.push(send),
            }
            continue;
        }
        if path == "/api/v1/nodes" && std::mem::take(&mut fail_node_list) {
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500});
            let response = Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Body::from(serde_json::to_vec(&status)?))?;
            send.send_response(response);
            continue;
        }
        let body = match path.as_str() {
            "/api/v1/nodes" => list(
                "NodeList",
                vec![object("node-gpu-h100"), object("node-vm-a10")],
            ),
            "/api/v1/pods" => list(
                "PodList",
                vec![
                    object("pod-job-train"),
                    object("pod-virt-launcher"),
                    object("pod-init-heavy"),
                ],
            ),
            other => anyhow::bail!("unexpected path {other}"),
        };
        anyhow::ensure!(listed.insert(path.clone()), "listed {path} twice");
        let response = Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(body))?;
        send.send_response(response);
    }
    Ok(listed)
}

#[tokio::test]
async fn watchers_sync_the_view_from_the_api_server() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(api_server(handle, Scenario::default()));
    let client = kube::Client::new(service, "default");
    let view = Arc::new(ClusterView::new(settings()));
    let watchers = tokio::spawn(run_watchers(client, view.clone()));

    let mut rx = view.subscribe();
    let synced = tokio::time::timeout(TIMEOUT, rx.wait_for(|_| view.is_synced())).await;
    assert!(matches!(synced, Ok(Ok(_))), "the view never synced");
    // resnet-train 2 + llm-finetune 4 on the H100 node; the VM's A10 on the passthrough node.
    assert_eq!(used(&view, "gpu-h100-01", GPU), Some(6));
    assert_eq!(used(&view, "vm-a10-02", A10), Some(1));
    assert_eq!(view.read().pod_count(), 3);
    assert!(!watchers.is_finished(), "watchers must keep running");

    watchers.abort();
    // Dropping the client ends the request stream, so the server reports what it listed.
    let listed = tokio::time::timeout(TIMEOUT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let want: BTreeSet<String> = ["/api/v1/nodes", "/api/v1/pods"].map(String::from).into();
    assert_eq!(listed, want);
}

#[tokio::test]
async fn pod_going_terminal_arrives_as_delete_and_releases_gpus() {
    let mut finished = object("pod-job-train");
    finished["status"]["phase"] = json!("Succeeded");
    finished["metadata"]["resourceVersion"] = json!("48214001");
    let events = vec![json!({"type": "DELETED", "object": finished})];
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let scenario = Scenario {
        pod_watch_events: events,
        ..Scenario::default()
    };
    let server = tokio::spawn(api_server(handle, scenario));
    let client = kube::Client::new(service, "default");
    let view = Arc::new(ClusterView::new(settings()));
    let watchers = tokio::spawn(run_watchers(client, view.clone()));

    let mut rx = view.subscribe();
    let released = rx.wait_for(|_| view.is_synced() && used(&view, "gpu-h100-01", GPU) == Some(4));
    let released = tokio::time::timeout(TIMEOUT, released).await;
    assert!(
        matches!(released, Ok(Ok(_))),
        "the finished pod kept its GPUs"
    );
    assert!(view
        .read()
        .pod("0b6e6a1c-57c4-4d3f-a2f1-9a7d51e3c001")
        .is_none());
    watchers.abort();
    server.abort();
}

#[tokio::test]
async fn a_failed_list_is_retried_with_backoff() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let scenario = Scenario {
        fail_first_node_list: true,
        ..Scenario::default()
    };
    let server = tokio::spawn(api_server(handle, scenario));
    let client = kube::Client::new(service, "default");
    let view = Arc::new(ClusterView::new(settings()));
    let watchers = tokio::spawn(run_watchers(client, view.clone()));

    let mut rx = view.subscribe();
    let synced = tokio::time::timeout(TIMEOUT, rx.wait_for(|_| view.is_synced())).await;
    assert!(
        matches!(synced, Ok(Ok(_))),
        "the view never synced after a failed list"
    );
    assert_eq!(used(&view, "gpu-h100-01", GPU), Some(6));
    watchers.abort();
    let listed = tokio::time::timeout(TIMEOUT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(listed.contains("/api/v1/nodes"));
}

fn typed<K: serde::de::DeserializeOwned>(name: &str) -> K {
    serde_json::from_value(object(name)).unwrap()
}

#[tokio::test]
async fn relist_replaces_atomically_and_errors_do_not_stop_the_feed() {
    let view = ClusterView::new(settings());
    let gate = SyncGate::new(&["nodes", "pods"]);
    let nodes = stream::iter(vec![
        Ok(Event::Init),
        Ok(Event::InitApply(typed::<Node>("node-gpu-h100"))),
        Ok(Event::InitDone),
    ]);
    let ended = feed(nodes, &view, &gate).await;
    assert!(matches!(ended, Err(Error::StreamEnded { kind: "nodes" })));
    assert!(!view.is_synced(), "pods have not listed yet");

    let stale: Pod = typed("pod-init-heavy");
    view.apply_pod(&stale);
    let stale_uid = stale.metadata.uid.clone().unwrap();
    let mut checked_before_done = false;
    let pods = stream::iter(vec![
        Err(watcher::Error::NoResourceVersion),
        Ok(Event::Init),
        Ok(Event::InitApply(typed::<Pod>("pod-job-train"))),
        Ok(Event::InitApply(typed::<Pod>("pod-sidecar"))),
        Ok(Event::InitDone),
        Ok(Event::Apply(typed::<Pod>("pod-limits-only"))),
    ])
    .inspect(|event| {
        // Runs before the feed handles InitDone: the listed pods are buffered, not visible.
        if matches!(event, Ok(Event::InitDone)) {
            let snapshot = view.read();
            assert!(snapshot.pod(&stale_uid).is_some());
            assert_eq!(snapshot.pod_count(), 1);
            checked_before_done = true;
        }
    });
    let mut rx = view.subscribe();
    rx.borrow_and_update();
    let ended = tokio::time::timeout(TIMEOUT, feed(pods, &view, &gate))
        .await
        .unwrap();
    assert!(matches!(ended, Err(Error::StreamEnded { kind: "pods" })));
    assert!(checked_before_done);
    assert!(view.is_synced());
    assert!(rx.has_changed().unwrap());
    let snapshot = view.read();
    assert!(snapshot
        .pod(stale.metadata.uid.as_deref().unwrap())
        .is_none());
    assert_eq!(snapshot.pod_count(), 3);
    assert_eq!(snapshot.node("gpu-h100-01").unwrap().free(GPU), 6);
}

#[tokio::test]
async fn node_delete_and_reapply_through_the_feed() {
    let view = ClusterView::new(settings());
    view.apply_pod(&typed::<Pod>("pod-virt-launcher"));
    let gate = SyncGate::new(&["nodes"]);
    let node: Node = typed("node-vm-a10");
    let events = stream::iter(vec![
        Ok(Event::Init),
        Ok(Event::InitDone),
        Ok(Event::Apply(node.clone())),
        Ok(Event::Delete(node.clone())),
    ]);
    let _ = tokio::time::timeout(TIMEOUT, feed(events, &view, &gate))
        .await
        .unwrap();
    assert!(
        view.is_synced(),
        "a gate with one kind opens on its first list"
    );
    assert!(view.read().node("vm-a10-02").is_none());
    view.apply_node(&node);
    assert_eq!(used(&view, "vm-a10-02", A10), Some(1));
}
