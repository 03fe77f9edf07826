//! The usage ledger's stores: the file store on a real temporary directory (round trip,
//! atomic replace, missing, corrupt and truncated files) and the ConfigMap store against a
//! scripted mock API server (tower-test) that records every request. Each scenario runs under
//! a 5-second timeout.

use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use rota::core::ledger::{parse_record, Ledger};
use rota::write::ledger_store::{
    ConfigMapLedgerStore, Error, FileLedgerStore, LedgerKeeper, LedgerStore, CONFIG_MAP_KEY,
};
use serde_json::{json, Value};

use common::tempdir::TempDir;

mod common;
const H: f64 = 3600.0;
const TIMEOUT: Duration = Duration::from_secs(5);
const NS: &str = "rota-system";
const NAME: &str = "rota-ledger";
const CM_PATH: &str = "/api/v1/namespaces/rota-system/configmaps/rota-ledger";
const CM_COLLECTION: &str = "/api/v1/namespaces/rota-system/configmaps";

/// Two tenants charged over two hours, with a measured figure for one.
fn sample_ledger() -> Ledger {
    let mut l = Ledger::new(H).unwrap();
    l.advance(1_000.0, []);
    l.advance(
        4_600.0,
        [("physics", 4.0, Some(3.0)), ("course-101", 1.0, None)],
    );
    l.advance(8_200.0, [("physics", 2.0, Some(2.0))]);
    l
}

fn assert_same_usage(a: &Ledger, b: &Ledger) {
    let names: Vec<&str> = a.tenants().collect();
    assert_eq!(names, b.tenants().collect::<Vec<_>>());
    assert_eq!(a.updated_at(), b.updated_at());
    let now = a.updated_at().unwrap();
    for name in names {
        let (x, y) = (a.tenant_usage(name, now), b.tenant_usage(name, now));
        assert!(x.allocated > 0.0, "{name} was never charged");
        assert!(
            (x.allocated - y.allocated).abs() <= 1e-9 * x.allocated,
            "{name}: {x:?} {y:?}"
        );
        assert!(
            (x.measured - y.measured).abs() <= 1e-9 * x.allocated.max(1.0),
            "{name}"
        );
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f).await.expect("timed out")
}

// ---------------------------------------------------------------------------------------------
// File store

#[tokio::test]
async fn file_store_round_trip_keeps_usage_per_tenant() {
    let dir = TempDir::new("ledger", "round-trip");
    let ledger = sample_ledger();
    within(FileLedgerStore::new(dir.file("ledger.json"), H).save(&ledger))
        .await
        .unwrap();
    // A new store, as after a restart.
    let loaded = within(FileLedgerStore::new(dir.file("ledger.json"), H).load())
        .await
        .unwrap();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_same_usage(&ledger, &loaded.ledger);
}

#[tokio::test]
async fn file_save_replaces_a_corrupt_file_atomically_and_leaves_no_temp_file() {
    let dir = TempDir::new("ledger", "atomic");
    let path = dir.file("ledger.json");
    // One good tenant, one corrupt entry, one negative value.
    let corrupt = r#"{"apiVersion":"rota.io/v1alpha1","kind":"UsageLedger","updatedAt":500.0,
        "tenants":{"good":{"allocatedGpuSeconds":120.5,"measuredGpuSeconds":60.0},
                   "bad":{"allocatedGpuSeconds":"lots"},
                   "neg":{"allocatedGpuSeconds":-3.0,"measuredGpuSeconds":0.0}}}"#;
    std::fs::write(&path, corrupt).unwrap();
    let store = FileLedgerStore::new(&path, H);

    let loaded = within(store.load()).await.unwrap();
    assert_eq!(loaded.ledger.tenants().collect::<Vec<_>>(), ["good"]);
    assert_eq!(loaded.ledger.usage("good", 500.0), 120.5);
    assert_eq!(loaded.problems.len(), 2, "{:?}", loaded.problems);
    assert!(loaded.problems.iter().any(|p| p.contains("\"bad\"")));
    assert!(loaded.problems.iter().any(|p| p.contains("\"neg\"")));

    within(store.save(&loaded.ledger)).await.unwrap();
    assert_eq!(
        dir.entries(),
        ["ledger.json"],
        "a temporary file was left behind"
    );
    assert!(!store.temp_path().exists());
    assert_eq!(
        store.temp_path().parent(),
        path.parent(),
        "rename must stay in one directory"
    );
    let again = within(store.load()).await.unwrap();
    assert!(again.problems.is_empty(), "{:?}", again.problems);
    assert_eq!(again.ledger.usage("good", 500.0), 120.5);
}

#[tokio::test]
async fn missing_file_gives_an_empty_ledger_and_a_problem() {
    let dir = TempDir::new("ledger", "missing");
    let path = dir.file("never-written.json");
    let loaded = within(FileLedgerStore::new(&path, H).load()).await.unwrap();
    assert_eq!(loaded.ledger.tenants().count(), 0);
    assert_eq!(loaded.ledger.updated_at(), None);
    assert_eq!(loaded.problems.len(), 1);
    assert!(
        loaded.problems[0].contains(&path.display().to_string()),
        "{:?}",
        loaded.problems
    );
    assert!(loaded.problems[0].contains("starting from zero"));
}

#[tokio::test]
async fn every_truncation_of_the_file_loads_without_panic_and_reports_a_problem() {
    let dir = TempDir::new("ledger", "truncated");
    let path = dir.file("ledger.json");
    let store = FileLedgerStore::new(&path, H);
    within(store.save(&sample_ledger())).await.unwrap();
    let full = std::fs::read(&path).unwrap();
    let half = full.len() / 2;
    // Half the file first (the case named in the issue), then every prefix: none may panic.
    for cut in std::iter::once(half).chain(0..full.len()) {
        std::fs::write(&path, &full[..cut]).unwrap();
        let loaded = within(store.load()).await;
        let loaded = loaded.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert!(!loaded.problems.is_empty(), "cut at {cut} reported nothing");
    }
}

#[tokio::test]
async fn a_file_that_is_not_utf8_is_recovered_with_a_problem() {
    let dir = TempDir::new("ledger", "utf8");
    let path = dir.file("ledger.json");
    std::fs::write(&path, b"{\"apiVersion\":\"rota.io/v1alpha1\",\"kind\":\"UsageLedger\",\"tenants\":{\"a\xff\":{\"allocatedGpuSeconds\":1.0,\"measuredGpuSeconds\":0.0}}}").unwrap();
    let loaded = within(FileLedgerStore::new(&path, H).load()).await.unwrap();
    assert!(
        loaded.problems[0].contains("UTF-8"),
        "{:?}",
        loaded.problems
    );
}

#[tokio::test]
async fn saving_into_a_missing_directory_is_a_retryable_write_error() {
    let dir = TempDir::new("ledger", "no-dir");
    let store = FileLedgerStore::new(dir.file("absent/ledger.json"), H);
    let err = within(store.save(&sample_ledger())).await.unwrap_err();
    assert!(matches!(err, Error::Write { .. }), "{err:?}");
    assert_eq!(err.code(), "write");
    assert!(err.is_retryable());
    assert_eq!(dir.entries(), Vec::<String>::new());
}

#[tokio::test]
async fn keeper_saves_every_tick_so_a_restart_loses_nothing_saved() {
    let dir = TempDir::new("ledger", "keeper");
    let path = dir.file("ledger.json");
    let (mut keeper, problems) = within(LedgerKeeper::load(FileLedgerStore::new(&path, H)))
        .await
        .unwrap();
    assert_eq!(problems.len(), 1, "a fresh start reports the missing file");
    within(keeper.tick(0.0, [])).await.unwrap();
    within(keeper.tick(30.0, [("a", 2.0, Some(1.0)), ("b", 1.0, None)]))
        .await
        .unwrap();
    within(keeper.tick(60.0, [("a", 2.0, Some(1.0))]))
        .await
        .unwrap();
    assert!(keeper.ledger().usage("a", 60.0) > keeper.ledger().usage("b", 60.0));

    let (restarted, problems) = within(LedgerKeeper::load(FileLedgerStore::new(&path, H)))
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_same_usage(keeper.ledger(), restarted.ledger());
}

// ---------------------------------------------------------------------------------------------
// ConfigMap store against a scripted API server

/// One request as the mock API server saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Option<Value>,
}

/// Answers requests in order with `(status, body)`; a request beyond the script fails the
/// server. Returns every request once the client is dropped.
async fn api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    script: Vec<(u16, Value)>,
) -> anyhow::Result<Vec<Seen>> {
    let mut script = script.into_iter();
    let mut seen = Vec::new();
    while let Some((request, send)) = handle.next_request().await {
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await?.to_bytes();
        let body = if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&bytes)?)
        };
        seen.push(Seen {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            body,
        });
        let Some((status, answer)) = script.next() else {
            anyhow::bail!("unscripted request {:?}", seen.last());
        };
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer)?))?;
        send.send_response(response);
    }
    Ok(seen)
}

fn status(code: u16, reason: &str) -> (u16, Value) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{reason} (scripted)"), "reason": reason, "code": code});
    (code, body)
}

fn config_map(resource_version: &str, ledger_json: Option<&str>) -> Value {
    let mut data = json!({"note": "kept by hand"});
    if let Some(text) = ledger_json {
        data[CONFIG_MAP_KEY] = json!(text);
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": resource_version},
        "data": data})
}

fn stored_json() -> String {
    serde_json::to_string(&sample_ledger().to_record()).unwrap()
}

/// Runs `body` with a ConfigMap store on a mock client, then returns what the server saw.
async fn with_store<F, Fut>(script: Vec<(u16, Value)>, body: F) -> Vec<Seen>
where
    F: FnOnce(ConfigMapLedgerStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(api_server(handle, script));
    let client = kube::Client::new(service, "default");
    within(body(ConfigMapLedgerStore::new(client, NS, NAME, H))).await;
    within(server).await.unwrap().unwrap()
}

/// The ledger a request body carries in `data["ledger.json"]`.
fn ledger_in(seen: &Seen) -> Ledger {
    let body = seen.body.as_ref().expect("a body");
    let text = body["data"][CONFIG_MAP_KEY]
        .as_str()
        .expect("data[ledger.json]");
    let (ledger, problems) = parse_record(text, H).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    ledger
}

fn assert_request(seen: &Seen, method: Method, path: &str) {
    assert_eq!(
        (&seen.method, seen.path.as_str()),
        (&method, path),
        "{seen:?}"
    );
    assert_eq!(seen.query, "", "no dry run or other parameters: {seen:?}");
}

#[tokio::test]
async fn configmap_404_on_load_gives_an_empty_ledger_and_save_creates_it() {
    let created = config_map("1", Some("{}"));
    let script = vec![status(404, "NotFound"), (201, created)];
    let seen = with_store(script, |store| async move {
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.ledger.tenants().count(), 0);
        assert_eq!(loaded.problems.len(), 1);
        assert!(loaded.problems[0].contains("configmap/rota-system/rota-ledger"));
        store.save(&sample_ledger()).await.unwrap();
    })
    .await;
    assert_eq!(seen.len(), 2);
    assert_request(&seen[0], Method::GET, CM_PATH);
    assert_request(&seen[1], Method::POST, CM_COLLECTION);
    let body = seen[1].body.as_ref().unwrap();
    assert_eq!(body["metadata"]["name"], NAME);
    assert!(body["metadata"].get("resourceVersion").is_none());
    assert_same_usage(&sample_ledger(), &ledger_in(&seen[1]));
}

#[tokio::test]
async fn configmap_save_replaces_with_the_resource_version_it_read() {
    let stored = stored_json();
    let script = vec![
        (200, config_map("41", Some(&stored))),
        (200, config_map("42", Some(&stored))),
        (200, config_map("43", Some(&stored))),
    ];
    let seen = with_store(script, |store| async move {
        let loaded = store.load().await.unwrap();
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        assert_same_usage(&sample_ledger(), &loaded.ledger);
        let mut ledger = loaded.ledger;
        ledger.advance(9_000.0, [("course-101", 3.0, None)]);
        store.save(&ledger).await.unwrap();
        store.save(&ledger).await.unwrap();
    })
    .await;
    assert_eq!(seen.len(), 3);
    assert_request(&seen[0], Method::GET, CM_PATH);
    for (i, rv) in [(1, "41"), (2, "42")] {
        assert_request(&seen[i], Method::PUT, CM_PATH);
        let body = seen[i].body.as_ref().unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], rv, "save {i}");
        assert_eq!(body["data"]["note"], "kept by hand", "other keys are kept");
        let sent = ledger_in(&seen[i]);
        assert_eq!(sent.updated_at(), Some(9_000.0));
        assert!(sent.usage("course-101", 9_000.0) > sample_ledger().usage("course-101", 9_000.0));
    }
}

#[tokio::test]
async fn configmap_conflict_rereads_and_retries_once() {
    let stored = stored_json();
    let script = vec![
        (200, config_map("41", Some(&stored))),
        status(409, "Conflict"),
        (200, config_map("57", Some("{\"edited\": \"by hand\"}"))),
        (200, config_map("58", Some(&stored))),
    ];
    let seen = with_store(script, |store| async move {
        let loaded = store.load().await.unwrap();
        store.save(&loaded.ledger).await.unwrap();
    })
    .await;
    let shape: Vec<(&Method, &str)> = seen.iter().map(|s| (&s.method, s.path.as_str())).collect();
    assert_eq!(
        shape,
        [
            (&Method::GET, CM_PATH),
            (&Method::PUT, CM_PATH),
            (&Method::GET, CM_PATH),
            (&Method::PUT, CM_PATH)
        ]
    );
    assert_eq!(
        seen[1].body.as_ref().unwrap()["metadata"]["resourceVersion"],
        "41"
    );
    assert_eq!(
        seen[3].body.as_ref().unwrap()["metadata"]["resourceVersion"],
        "57"
    );
    assert_same_usage(&sample_ledger(), &ledger_in(&seen[3]));
}

#[tokio::test]
async fn configmap_second_conflict_is_a_retryable_error() {
    let stored = stored_json();
    let script = vec![
        (200, config_map("41", Some(&stored))),
        status(409, "Conflict"),
        (200, config_map("57", Some(&stored))),
        status(409, "Conflict"),
    ];
    let seen = with_store(script, |store| async move {
        let loaded = store.load().await.unwrap();
        let err = store.save(&loaded.ledger).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
        assert!(err.is_retryable());
    })
    .await;
    assert_eq!(seen.len(), 4, "exactly one retry");
}

#[tokio::test]
async fn configmap_404_on_save_creates_it() {
    let stored = stored_json();
    let script = vec![
        (200, config_map("41", Some(&stored))),
        status(404, "NotFound"),
        (201, config_map("60", Some(&stored))),
    ];
    let seen = with_store(script, |store| async move {
        let loaded = store.load().await.unwrap();
        store.save(&loaded.ledger).await.unwrap();
    })
    .await;
    assert_eq!(seen.len(), 3);
    assert_request(&seen[1], Method::PUT, CM_PATH);
    assert_request(&seen[2], Method::POST, CM_COLLECTION);
    assert!(seen[2].body.as_ref().unwrap()["metadata"]
        .get("resourceVersion")
        .is_none());
    assert_same_usage(&sample_ledger(), &ledger_in(&seen[2]));
}

#[tokio::test]
async fn configmap_without_the_key_or_with_corrupt_json_is_recovered() {
    let script = vec![
        (200, config_map("41", None)),
        (
            200,
            config_map(
                "42",
                Some("{\"apiVersion\":\"rota.io/v1alpha1\",\"tenants\":{\"a\":"),
            ),
        ),
    ];
    let seen = with_store(script, |store| async move {
        let missing = store.load().await.unwrap();
        assert_eq!(missing.ledger.tenants().count(), 0);
        assert!(
            missing.problems[0].contains(CONFIG_MAP_KEY),
            "{:?}",
            missing.problems
        );
        let truncated = store.load().await.unwrap();
        assert_eq!(truncated.ledger.tenants().count(), 0);
        assert!(!truncated.problems.is_empty());
    })
    .await;
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn configmap_forbidden_is_not_retryable() {
    let script = vec![status(403, "Forbidden")];
    with_store(script, |store| async move {
        let err = store.load().await.unwrap_err();
        assert_eq!(err.code(), "api");
        assert!(!err.is_retryable(), "{err:?}");
    })
    .await;
}
