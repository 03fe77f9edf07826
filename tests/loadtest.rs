//! `rota loadtest` against the real extender service in process on 127.0.0.1: the warm-up
//! teaches a `--cluster none` extender its nodes, the measured load completes without errors
//! and reports ordered quantiles, and a dead target is an error result, not a panic.

use std::time::Duration;

use common::extender::ExtenderServer as Server;
use rota::http::ServerOptions;
use rota::loadtest::{self, LoadtestOptions, Quantiles, Verb};
use serde_json::{json, Value};
use tokio::net::TcpListener;

mod common;

fn options(target: String, nodes: u32) -> LoadtestOptions {
    LoadtestOptions {
        target,
        nodes,
        concurrency: 2,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        ..LoadtestOptions::default()
    }
}

fn assert_ordered(q: &Quantiles) {
    assert!(q.p50_ms > 0.0, "{q:?}");
    assert!(
        q.p50_ms <= q.p90_ms && q.p90_ms <= q.p99_ms && q.p99_ms <= q.p999_ms,
        "{q:?}"
    );
    assert!(q.p999_ms <= q.max_ms, "{q:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_against_a_cluster_none_extender_runs_clean_and_teaches_the_nodes() {
    let server = Server::start_with(ServerOptions::default()).await;
    assert_eq!(server.view.read().node_count(), 0);
    let report = loadtest::load_test(&options(server.url(), 200))
        .await
        .expect("the load test runs");

    // The warm-up sent all 200 nodes in full, and every one passed.
    let warmup = report.warmup_request.as_ref().expect("warm-up ran");
    assert_eq!(warmup.status, 200);
    assert_eq!(warmup.passed_nodes, 200);
    assert!(report.bodies.warmup_bytes > report.bodies.request_max_bytes);
    assert_eq!(
        server.view.read().node_count(),
        200,
        "the view learned the nodes"
    );

    assert!(report.total.requests > 0, "{report:?}");
    assert_eq!(report.total.errors, 0, "{:?}", report.verbs);
    assert_eq!(report.total.error_rate, 0.0);
    assert!(report.total.throughput_per_second > 0.0);
    let verbs: Vec<Verb> = report.verbs.iter().map(|v| v.verb).collect();
    assert_eq!(verbs, [Verb::Filter, Verb::Prioritize]);
    for verb in &report.verbs {
        assert!(verb.requests > 0, "{verb:?}");
        assert!(verb.mean_answer_bytes > 0.0, "{verb:?}");
        assert_ordered(verb.latency.as_ref().expect("latency recorded"));
    }
    assert_ordered(report.total.latency.as_ref().unwrap());
    let sum: u64 = report.verbs.iter().map(|v| v.requests).sum();
    assert_eq!(sum, report.total.requests);

    // The learned nodes are judged, not waved through as unknown: a pod that asks for a GPU
    // model none of them has is refused on each, with the node's model in the reason.
    let names = loadtest::node_names(200);
    let pod = json!({"metadata": {"name": "p", "namespace": "team-x", "uid": "u-1",
                     "annotations": {"rota.io/gpu-models": "NoSuchGPU"}},
                     "spec": {"containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}});
    let body = json!({"Pod": pod, "Nodes": null, "NodeNames": names}).to_string();
    let (status, answer) = server.post("/filter", body.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["NodeNames"], json!([]));
    let refused = v["FailedAndUnresolvableNodes"].as_object().unwrap();
    assert_eq!(refused.len(), 200);
    assert!(refused["gpu-node-0001"]
        .as_str()
        .unwrap()
        .contains("node has GPU model"));

    // A names-only request for the same nodes and a plain GPU pod passes every node.
    let pod = json!({"metadata": {"name": "q", "namespace": "team-x", "uid": "u-2"},
                     "spec": {"containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}});
    let body = json!({"Pod": pod, "Nodes": null, "NodeNames": names}).to_string();
    let (status, answer) = server.post("/filter", body.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["NodeNames"], json!(names));

    let text = report.render_text();
    assert!(text.contains("filter") && text.contains("p99.9"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_warmup_against_a_cluster_none_extender_leaves_it_ignorant() {
    let server = Server::start_with(ServerOptions::default()).await;
    let report = loadtest::load_test(&LoadtestOptions {
        no_warmup: true,
        verbs: vec![Verb::Prioritize],
        ..options(server.url(), 50)
    })
    .await
    .expect("the load test runs");
    assert!(report.warmup_request.is_none());
    assert_eq!(server.view.read().node_count(), 0);
    assert_eq!(report.verbs.len(), 1);
    assert!(report.verbs[0].requests > 0);
    assert_eq!(report.total.errors, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_dead_target_is_an_error_result() {
    // Bind and drop: nothing listens on this port afterwards.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    for no_warmup in [false, true] {
        let result = loadtest::load_test(&LoadtestOptions {
            no_warmup,
            ..options(format!("http://127.0.0.1:{port}"), 10)
        })
        .await;
        let err = result.expect_err("nothing listens there");
        assert_eq!(err.code(), "connect", "{err}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }
    let err = loadtest::load_test(&options("https://127.0.0.1:1".into(), 10))
        .await
        .expect_err("https is refused");
    assert_eq!(err.code(), "target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_counted_as_errors_by_status() {
    // A 1 KiB body cap: every request of 20 node names is answered 413.
    let server = Server::start_with(ServerOptions {
        max_body_bytes: 1024,
        ..ServerOptions::default()
    })
    .await;
    let err = loadtest::load_test(&options(server.url(), 20))
        .await
        .expect_err("the warm-up is refused");
    assert_eq!(err.code(), "warmup");
    assert!(err.to_string().contains("413"), "{err}");

    let report = loadtest::load_test(&LoadtestOptions {
        no_warmup: true,
        ..options(server.url(), 20)
    })
    .await
    .expect("refusals are counted, not raised");
    assert!(report.total.requests > 0);
    assert_eq!(report.total.errors, report.total.requests);
    assert_eq!(report.total.error_rate, 1.0);
    assert!(report.total.latency.is_none());
    for verb in &report.verbs {
        assert_eq!(
            verb.errors_by_kind.get("413"),
            Some(&verb.requests),
            "{verb:?}"
        );
    }
    assert!(report.render_text().contains("413 ×"));
    server.stop().await;
}
