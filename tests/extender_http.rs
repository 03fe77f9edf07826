//! The extender over real HTTP on 127.0.0.1: captured kube-scheduler requests get valid answers,
//! every kind of bad input gets the right status, and the server keeps serving throughout.

use std::path::PathBuf;

use common::extender::ExtenderServer as Server;
use rota::http::ServerOptions;
use serde_json::{json, Value};

mod common;

const CAP: usize = 256 * 1024;

/// An extender without an API server (`--cluster none`) with a small body cap.
async fn start() -> Server {
    Server::start_with(ServerOptions {
        max_body_bytes: CAP,
        ..ServerOptions::default()
    })
    .await
}

fn fixture(name: &str) -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/kube-scheduler-1.36")
        .join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            eprintln!("skipping: {} is absent", path.display());
            None
        }
    }
}

fn gpu_pod(annotations: Value) -> Value {
    json!({"metadata": {"name": "p", "namespace": "team-a", "uid": "u-1", "annotations": annotations},
           "spec": {"containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}})
}

#[tokio::test]
async fn captured_requests_get_valid_answers() {
    let (Some(full), Some(names), Some(prio_full), Some(prio_names)) = (
        fixture("filter-full-nodes.request.json"),
        fixture("filter-node-names.request.json"),
        fixture("prioritize-full-nodes.request.json"),
        fixture("prioritize-node-names.request.json"),
    ) else {
        return;
    };
    let server = start().await;

    let (status, body) = server.request("POST", "/filter", &full).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    // Every node passes, in the scheduler's own order, and full objects are echoed back.
    let sent: Value = serde_json::from_slice(&full).unwrap();
    let order: Vec<Value> = sent["Nodes"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].clone())
        .collect();
    assert_eq!(v["NodeNames"], Value::Array(order.clone()));
    assert_eq!(v["Nodes"]["items"], sent["Nodes"]["items"]);
    assert_eq!(v["Error"], "");

    // The names-only request is judged against the nodes learned from the full request.
    let (status, body) = server.request("POST", "/filter", &names).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["NodeNames"].as_array().unwrap().len(), 3);
    assert_eq!(v["Nodes"], Value::Null);

    for body in [prio_full, prio_names] {
        let (status, answer) = server.request("POST", "/prioritize", &body).await;
        assert_eq!(status, 200, "{answer}");
        let list: Vec<Value> = serde_json::from_str(&answer).unwrap();
        // Sparse (the default): the three learned nodes are alike, so none needs a score.
        assert!(list.is_empty(), "{answer}");
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_and_the_server_keeps_serving() {
    let server = start().await;
    let big = vec![b' '; CAP + 1];
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/filter", b"".to_vec(), 400, "invalid filter request"),
        ("POST", "/filter", br#"{"Pod": {"metadata": "#.to_vec(), 400, "EOF"),
        ("POST", "/filter", br#"{"Pod": 42}"#.to_vec(), 400, "Pod"),
        ("POST", "/filter", br#"{"NodeNames": [1, 2]}"#.to_vec(), 400, "NodeNames"),
        ("POST", "/prioritize", br#"{"Pod": null, "Nodes": null, "NodeNames": null}"#.to_vec(), 400, "Pod is missing"),
        ("POST", "/filter", json!({"Pod": gpu_pod(json!({})), "Nodes": null, "NodeNames": null}).to_string().into_bytes(), 400, "NodeNames and Nodes"),
        ("POST", "/filter", json!({"Pod": gpu_pod(json!({})), "Nodes": {"items": [{"metadata": {}}]}}).to_string().into_bytes(), 400, "Nodes.items[0]"),
        ("POST", "/preempt", br#"{"Pod": {"metadata": {"name": "p"}}, "NodeNameToMetaVictims": {"n": {"Pods": [{"UID": 5}]}}}"#.to_vec(), 400, "UID"),
        ("POST", "/filter", big, 413, ""),
        ("POST", "/frobnicate", b"{}".to_vec(), 404, "no such endpoint"),
        ("GET", "/filter", Vec::new(), 405, "POST"),
        ("POST", "/healthz", Vec::new(), 405, "GET"),
        ("POST", "/bind", b"{}".to_vec(), 501, "does not bind"),
    ];
    for (method, path, body, want, needle) in cases {
        let (status, answer) = server.request(method, path, &body).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        if !needle.is_empty() {
            assert!(
                answer.contains(needle),
                "{method} {path}: {answer:?} lacks {needle:?}"
            );
        }
        if status != 413 {
            let v: Value =
                serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"));
            assert!(v["error"].is_string(), "{answer}");
            assert!(!answer.trim_end().contains('\n'), "one line: {answer:?}");
        }
        let (status, _) = server.request("GET", "/healthz", b"").await;
        assert_eq!(status, 200, "still serving after {method} {path}");
    }

    // A pod with malformed rota annotations: every node rejected, the reason names the problem.
    let body = json!({"Pod": gpu_pod(json!({"rota.io/min-gpu-memory": "lots", "rota.io/gpu-models": " , "})),
                      "NodeNames": ["a", "b"]});
    let (status, answer) = server
        .request("POST", "/filter", body.to_string().as_bytes())
        .await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["NodeNames"], json!([]));
    let reason = v["FailedAndUnresolvableNodes"]["a"].as_str().unwrap();
    assert!(
        reason.contains("rota.io/min-gpu-memory") && reason.contains("lots"),
        "{reason}"
    );
    assert!(reason.contains("rota.io/gpu-models"), "{reason}");
    assert_eq!(v["FailedNodes"], json!({}));

    // Go's client always sends Accept-Encoding: gzip; an identity answer must do.
    let body = json!({"Pod": gpu_pod(json!({})), "NodeNames": ["x"]}).to_string();
    let (status, answer) = server
        .raw(
            "POST",
            "/filter",
            &["Accept-Encoding: gzip", "Content-Type: application/json"],
            body.as_bytes(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["NodeNames"],
        json!(["x"])
    );

    let (status, metrics) = server.request("GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"rota_extender_requests_total{code="400",verb="filter"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("rota_extender_request_duration_seconds_bucket"));
    assert!(metrics.contains("rota_cluster_view_synced 1"));
    // Answer sizes: the handler's answers are measured (the last filter answer alone is
    // larger than 20 bytes); the transport's 413 is not an answer the handler sized.
    let value = |series: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(series));
        line.and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value(r#"rota_extender_response_size_bytes_sum{verb="filter"}"#) > 20.0,
        "{metrics}"
    );
    let sized = value(r#"rota_extender_response_size_bytes_count{verb="filter"}"#);
    let answered: f64 = ["200", "400", "405", "413"]
        .iter()
        .map(|c| {
            value(&format!(
                r#"rota_extender_requests_total{{code="{c}",verb="filter"}}"#
            ))
        })
        .sum();
    assert_eq!(
        sized,
        answered - 1.0,
        "every filter answer but the 413 is sized: {metrics}"
    );
    // The handlers' CPU is counted, and is no more than the time they took (1 ms for the
    // clock reads between the two).
    let cpu = value(r#"rota_extender_cpu_seconds_total{verb="filter"}"#);
    let took = value(r#"rota_extender_request_duration_seconds_sum{verb="filter"}"#);
    assert!(
        cpu > 0.0 && cpu <= took + 0.001,
        "cpu {cpu} s, took {took} s"
    );
    // Every answer is counted, the transport's own (413) and unknown paths (bounded label).
    for series in [
        r#"rota_extender_requests_total{code="413",verb="filter"} 1"#,
        r#"rota_extender_requests_total{code="404",verb="other"} 1"#,
        r#"rota_extender_requests_total{code="405",verb="healthz"} 1"#,
        r#"rota_extender_requests_total{code="405",verb="filter"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} missing in {metrics}");
    }
    assert!(
        !metrics.contains("frobnicate"),
        "a path became a label value"
    );
    server.stop().await;
}

/// One raw request over a fresh connection; the whole answer, head included.
async fn raw_exchange(server: &Server, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = stream.read_to_end(&mut out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn head_works_where_get_does_and_405_names_the_allowed_methods() {
    use common::raw_http::{body_of, header_of, status_code};
    let server = start().await;
    let head = "HEAD /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let reply = raw_exchange(&server, head).await;
    assert_eq!(status_code(&reply), Some(200), "{reply}");
    assert_eq!(body_of(&reply), "", "HEAD has no body: {reply}");
    let post =
        "POST /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    let reply = raw_exchange(&server, post).await;
    assert_eq!(status_code(&reply), Some(405), "{reply}");
    assert_eq!(header_of(&reply, "allow"), Some("GET, HEAD"), "{reply}");
    let get = "GET /filter HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let reply = raw_exchange(&server, get).await;
    assert_eq!(header_of(&reply, "allow"), Some("POST"), "{reply}");
    let (status, answer) = server.request("GET", "/v1/explain/ns/pod", b"").await;
    assert_eq!(status, 404);
    assert!(answer.contains("needs a cluster"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn preempt_answers_meta_victims_and_never_an_empty_node() {
    let server = start().await;
    let body = json!({
        "Pod": gpu_pod(json!({})),
        "NodeNameToVictims": {
            "n1": {"Pods": [
                {"metadata": {"name": "low", "uid": "u-low"}, "spec": {"priority": 1, "containers": []}},
                {"metadata": {"name": "high", "uid": "u-high"}, "spec": {"priority": 50, "containers": []}}
            ], "NumPDBViolations": 1},
            "n2": {"Pods": [], "NumPDBViolations": 0}
        },
        "NodeNameToMetaVictims": null
    });
    let (status, answer) = server
        .request("POST", "/preempt", body.to_string().as_bytes())
        .await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    // Without an API server the view knows none of the victims: a pod rota cannot show to be
    // over its tenant's share and past its quantum is never offered, so no node is left, and
    // the answer is still the map (never null, never a node without victims). The kept-victim
    // path is covered in tests/gate.rs.
    assert_eq!(v, json!({"NodeNameToMetaVictims": {}}));
    server.stop().await;
}

#[tokio::test]
async fn readiness_and_liveness() {
    let server = start().await;
    assert_eq!(server.request("GET", "/healthz", b"").await.0, 200);
    assert_eq!(server.request("GET", "/readyz", b"").await.0, 200);
    // Any URL prefix before the verb works, as kube-scheduler's urlPrefix allows.
    let body = json!({"Pod": gpu_pod(json!({})), "NodeNames": ["x"]}).to_string();
    assert_eq!(
        server
            .request("POST", "/gpu-fairshare/filter", body.as_bytes())
            .await
            .0,
        200
    );
    server.stop().await;
}
