//! Lease leader election against mock API servers (tower-test), in paused tokio time with a
//! wall clock derived from it, so every timing below is exact and virtual. Scripted scenarios
//! check each request (method, path, query, body); the hand-over runs two electors against one
//! in-memory Lease that enforces `resourceVersion` like the API server. Each scenario runs
//! under a timeout.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use parking_lot::Mutex;
use rota::clock::Clock;
use rota::write::leader::{LeaderConfig, LeaderElector};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

const NS: &str = "rota-system";
const LEASE: &str = "rota-extender";
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/rota-system/leases/rota-extender";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/rota-system/leases";
/// Virtual seconds; generous, since paused time jumps straight to the next timer.
const TIMEOUT: Duration = Duration::from_secs(120);
/// 2026-01-01T00:00:00Z: the wall clock at virtual time zero.
const BASE_SECONDS: i64 = 1_767_225_600;
const RENEW: Duration = Duration::from_secs(5);

/// A wall clock that follows paused tokio time from `BASE_SECONDS`.
fn test_clock() -> (Clock, Instant) {
    let start = Instant::now();
    let clock: Clock = Arc::new(move || wall(start.elapsed()));
    (clock, start)
}

fn wall(after: Duration) -> Timestamp {
    let micros = BASE_SECONDS * 1_000_000 + i64::try_from(after.as_micros()).unwrap();
    Timestamp::from_microsecond(micros).unwrap()
}

/// `wall` as the API server would store a MicroTime.
fn micro(after_seconds: i64) -> String {
    let t = Timestamp::from_second(BASE_SECONDS + after_seconds).unwrap();
    t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

fn parse_time(v: &Value) -> Timestamp {
    v.as_str().expect("a timestamp").parse().expect("RFC 3339")
}

fn elector(client: kube::Client, identity: &str, clock: Clock) -> LeaderElector {
    LeaderElector::new(client, LeaderConfig::new(NS, LEASE, identity), clock).unwrap()
}

fn lease(rv: &str, holder: Option<&str>, renewed_after: i64, transitions: i32) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": NS, "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "acquireTime": micro(-100), "renewTime": micro(renewed_after),
                 "leaseTransitions": transitions}})
}

fn status(code: u16, reason: &str) -> Reply {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{reason} (scripted)"), "reason": reason, "code": code});
    Reply::Answer(code, body)
}

/// One request as a mock API server saw it, with the virtual time it arrived.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Option<Value>,
    at: Duration,
}

enum Reply {
    Answer(u16, Value),
    /// Never answer (the request hangs until the client gives up).
    Hang,
}

fn ok(body: Value) -> Reply {
    Reply::Answer(200, body)
}

async fn read(request: Request<Body>, start: Instant) -> anyhow::Result<Seen> {
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let body = if bytes.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&bytes)?)
    };
    Ok(Seen {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        body,
        at: start.elapsed(),
    })
}

/// Answers requests in order from `script`; a request beyond it fails the server. Returns the
/// requests once the client is dropped.
async fn scripted(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    script: Vec<Reply>,
    start: Instant,
) -> anyhow::Result<Vec<Seen>> {
    let mut script = script.into_iter();
    let mut seen = Vec::new();
    let mut hung = Vec::new();
    while let Some((request, send)) = handle.next_request().await {
        seen.push(read(request, start).await?);
        match script.next() {
            Some(Reply::Answer(code, body)) => {
                let response = Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&body)?))?;
                send.send_response(response);
            }
            Some(Reply::Hang) => hung.push(send),
            None => anyhow::bail!("unscripted request {:?}", seen.last()),
        }
    }
    // Hangs may be left over (how many requests a hung server gets is not the point).
    anyhow::ensure!(
        script.all(|r| matches!(r, Reply::Hang)),
        "script not played to the end: {seen:#?}"
    );
    Ok(seen)
}

/// A scripted scenario: the elector runs until `drive` returns, then shuts down; returns the
/// requests the server saw.
async fn scenario<F, Fut>(script: Vec<Reply>, drive: F) -> Vec<Seen>
where
    F: FnOnce(watch::Receiver<bool>, Instant) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (clock, start) = test_clock();
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(scripted(handle, script, start));
    let elector = elector(kube::Client::new(service, "default"), "rota-a", clock);
    let rx = elector.subscribe();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(elector.run(async {
        let _ = stopped.await;
    }));
    let body = async {
        drive(rx.clone(), start).await;
        let _ = stop.send(());
        run.await.unwrap();
        server.await.unwrap().unwrap()
    };
    let seen = tokio::time::timeout(TIMEOUT, body)
        .await
        .expect("scenario timed out");
    assert!(!*rx.borrow(), "leader after run returned");
    seen
}

fn assert_request(seen: &Seen, method: Method, path: &str) {
    assert_eq!(
        (&seen.method, seen.path.as_str()),
        (&method, path),
        "{seen:#?}"
    );
    assert_eq!(seen.query, "", "{seen:#?}");
}

fn spec(seen: &Seen) -> &Value {
    &seen.body.as_ref().expect("a body")["spec"]
}

fn resource_version(seen: &Seen) -> &Value {
    &seen.body.as_ref().expect("a body")["metadata"]["resourceVersion"]
}

async fn wait_leader(rx: &mut watch::Receiver<bool>, leading: bool) {
    rx.wait_for(|l| *l == leading).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn acquires_a_missing_lease_by_create_renews_with_put_and_releases() {
    let script = vec![
        status(404, "NotFound"),
        Reply::Answer(201, lease("1", Some("rota-a"), 0, 0)),
        ok(lease("1", Some("rota-a"), 0, 0)),
        ok(lease("2", Some("rota-a"), 5, 0)),
        // Shutdown: read, then free the lease.
        ok(lease("2", Some("rota-a"), 5, 0)),
        ok(lease("3", None, -30, 0)),
    ];
    let seen = scenario(script, |mut rx, start| async move {
        wait_leader(&mut rx, true).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        // One renew period and a bit: exactly one renewal.
        tokio::time::sleep(RENEW + Duration::from_secs(1)).await;
        assert!(*rx.borrow(), "still leading after the renewal");
    })
    .await;
    assert_eq!(seen.len(), 6);
    assert_request(&seen[0], Method::GET, LEASE_PATH);
    assert_request(&seen[1], Method::POST, LEASES);
    let created = spec(&seen[1]);
    assert_eq!(created["holderIdentity"], "rota-a");
    assert_eq!(created["leaseDurationSeconds"], 15);
    assert_eq!(created["leaseTransitions"], 0);
    assert_eq!(parse_time(&created["renewTime"]), wall(Duration::ZERO));
    assert_eq!(seen[1].body.as_ref().unwrap()["metadata"]["name"], LEASE);

    assert_request(&seen[2], Method::GET, LEASE_PATH);
    assert_eq!(seen[2].at, RENEW, "renews every lease_duration / 3");
    assert_request(&seen[3], Method::PUT, LEASE_PATH);
    assert_eq!(resource_version(&seen[3]), "1");
    let renewed = spec(&seen[3]);
    assert_eq!(renewed["holderIdentity"], "rota-a");
    assert_eq!(parse_time(&renewed["renewTime"]), wall(RENEW));
    assert_eq!(
        renewed["acquireTime"],
        micro(-100),
        "a renewal keeps acquireTime"
    );
    assert_eq!(renewed["leaseTransitions"], 0);

    assert_request(&seen[5], Method::PUT, LEASE_PATH);
    assert_eq!(resource_version(&seen[5]), "2");
    let released = spec(&seen[5]);
    assert!(released.get("holderIdentity").is_none(), "{released}");
    let expires = parse_time(&released["renewTime"]).as_second() + 15;
    assert!(
        expires < wall(seen[5].at).as_second(),
        "a released lease is already expired"
    );
}

#[tokio::test(start_paused = true)]
async fn another_holders_unexpired_lease_keeps_us_follower_without_writing() {
    let script = vec![
        ok(lease("7", Some("rota-b"), -3, 2)),
        ok(lease("8", Some("rota-b"), 4, 2)),
        ok(lease("9", Some("rota-b"), 9, 2)),
    ];
    let seen = scenario(script, |rx, _| async move {
        tokio::time::sleep(2 * RENEW + Duration::from_secs(1)).await;
        assert!(!*rx.borrow());
        assert!(!rx.has_changed().unwrap(), "never published leadership");
    })
    .await;
    // Three reads, no write, and no release (it never led).
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_request(s, Method::GET, LEASE_PATH);
    }
}

#[tokio::test(start_paused = true)]
async fn an_expired_foreign_lease_is_taken_over_with_put() {
    let script = vec![
        // Renewed 20 s ago with a 15 s lease: expired.
        ok(lease("7", Some("rota-b"), -20, 3)),
        ok(lease("8", Some("rota-a"), 0, 4)),
        // Shutdown: someone else already holds it, so nothing is released.
        ok(lease("9", Some("rota-b"), 0, 5)),
    ];
    let seen = scenario(script, |mut rx, start| async move {
        wait_leader(&mut rx, true).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    })
    .await;
    assert_eq!(seen.len(), 3);
    assert_request(&seen[1], Method::PUT, LEASE_PATH);
    assert_eq!(resource_version(&seen[1]), "7");
    let taken = spec(&seen[1]);
    assert_eq!(taken["holderIdentity"], "rota-a");
    assert_eq!(
        taken["leaseTransitions"], 4,
        "a new holder counts a transition"
    );
    assert_eq!(parse_time(&taken["acquireTime"]), wall(Duration::ZERO));
    assert_request(&seen[2], Method::GET, LEASE_PATH);
}

#[tokio::test(start_paused = true)]
async fn a_lease_renewed_just_within_its_duration_is_not_taken() {
    // renewTime + 15 s == now: not yet expired (expiry is strictly after).
    let script = vec![ok(lease("7", Some("rota-b"), -15, 0))];
    let seen = scenario(script, |rx, _| async move {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!*rx.borrow());
    })
    .await;
    assert_eq!(seen.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_conflict_on_renew_steps_down_at_once() {
    let script = vec![
        status(404, "NotFound"),
        Reply::Answer(201, lease("1", Some("rota-a"), 0, 0)),
        ok(lease("1", Some("rota-a"), 0, 0)),
        status(409, "Conflict"),
        // Shutdown: the lease is someone else's now; no release.
        ok(lease("2", Some("rota-b"), 5, 1)),
    ];
    let seen = scenario(script, |mut rx, start| async move {
        wait_leader(&mut rx, true).await;
        wait_leader(&mut rx, false).await;
        assert_eq!(
            start.elapsed(),
            RENEW,
            "stepped down in the round that failed"
        );
    })
    .await;
    assert_eq!(seen.len(), 5);
    assert_request(&seen[3], Method::PUT, LEASE_PATH);
    assert_eq!(resource_version(&seen[3]), "1");
}

#[tokio::test(start_paused = true)]
async fn a_renew_that_hangs_steps_down_before_the_lease_could_expire() {
    let script = vec![
        status(404, "NotFound"),
        Reply::Answer(201, lease("1", Some("rota-a"), 0, 0)),
        // The renewal's GET never answers, nor does anything after it.
        Reply::Hang,
        Reply::Hang,
        Reply::Hang,
        Reply::Hang,
    ];
    let seen = scenario(script, |mut rx, start| async move {
        wait_leader(&mut rx, true).await;
        wait_leader(&mut rx, false).await;
        let stepped_down = start.elapsed();
        assert!(stepped_down > RENEW, "{stepped_down:?}");
        // Others may take over after renewTime (0) + 15 s; we stop acting well before.
        assert!(stepped_down <= Duration::from_secs(10), "{stepped_down:?}");
    })
    .await;
    assert!(seen.len() >= 3, "{seen:#?}");
    assert_request(&seen[2], Method::GET, LEASE_PATH);
}

#[tokio::test(start_paused = true)]
async fn a_server_error_steps_down_and_the_next_round_recovers() {
    let script = vec![
        status(404, "NotFound"),
        Reply::Answer(201, lease("1", Some("rota-a"), 0, 0)),
        status(500, "InternalError"),
        ok(lease("1", Some("rota-a"), 0, 0)),
        ok(lease("2", Some("rota-a"), 10, 0)),
        ok(lease("2", Some("rota-a"), 10, 0)),
        ok(lease("3", None, -30, 0)),
    ];
    let seen = scenario(script, |mut rx, start| async move {
        wait_leader(&mut rx, true).await;
        wait_leader(&mut rx, false).await;
        assert_eq!(start.elapsed(), RENEW);
        wait_leader(&mut rx, true).await;
        assert_eq!(
            start.elapsed(),
            2 * RENEW,
            "still ours: renewed on the next round"
        );
    })
    .await;
    assert_eq!(resource_version(&seen[4]), "1");
}

// ---------------------------------------------------------------------------------------------
// Hand-over between two electors sharing one in-memory Lease

/// One Lease, stored as JSON, with resourceVersion enforced on every write.
#[derive(Default)]
struct FakeLease {
    lease: Option<Value>,
    version: u64,
    writes: Vec<(Method, String)>,
}

impl FakeLease {
    fn handle(&mut self, seen: &Seen) -> (u16, Value) {
        let missing = || status_body(404, "NotFound");
        match (&seen.method, seen.path.as_str()) {
            (&Method::GET, LEASE_PATH) => self.lease.clone().map_or_else(missing, |l| (200, l)),
            (&Method::POST, LEASES) if self.lease.is_some() => status_body(409, "AlreadyExists"),
            (&Method::POST, LEASES) => self.store(seen),
            (&Method::PUT, LEASE_PATH) => {
                let Some(current) = &self.lease else {
                    return missing();
                };
                let have = &current["metadata"]["resourceVersion"];
                if resource_version(seen) != have {
                    return status_body(409, "Conflict");
                }
                self.store(seen)
            }
            _ => status_body(405, "MethodNotAllowed"),
        }
    }

    fn store(&mut self, seen: &Seen) -> (u16, Value) {
        self.version += 1;
        let mut lease = seen.body.clone().unwrap_or_default();
        lease["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.lease = Some(lease.clone());
        let holder = lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        self.writes.push((seen.method.clone(), holder));
        let code = if seen.method == Method::POST {
            201
        } else {
            200
        };
        (code, lease)
    }
}

fn status_body(code: u16, reason: &str) -> (u16, Value) {
    match status(code, reason) {
        Reply::Answer(code, body) => (code, body),
        Reply::Hang => unreachable!(),
    }
}

async fn fake_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    fake: Arc<Mutex<FakeLease>>,
    start: Instant,
) -> anyhow::Result<()> {
    while let Some((request, send)) = handle.next_request().await {
        let seen = read(request, start).await?;
        anyhow::ensure!(seen.query.is_empty(), "{seen:?}");
        let (code, body) = fake.lock().handle(&seen);
        let response = Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body)?))?;
        send.send_response(response);
    }
    Ok(())
}

/// Samples both channels on every change; returns how often both said "leader".
async fn monitor(
    mut a: watch::Receiver<bool>,
    mut b: watch::Receiver<bool>,
    mut stop: oneshot::Receiver<()>,
) -> usize {
    let (mut a_open, mut b_open) = (true, true);
    let mut both = 0;
    loop {
        tokio::select! {
            r = a.changed(), if a_open => a_open = r.is_ok(),
            r = b.changed(), if b_open => b_open = r.is_ok(),
            _ = &mut stop => return both,
        }
        if *a.borrow() && *b.borrow() {
            both += 1;
        }
    }
}

struct Replica {
    rx: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    run: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn replica(identity: &str, fake: &Arc<Mutex<FakeLease>>, clock: Clock, start: Instant) -> Replica {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(fake_server(handle, fake.clone(), start));
    let elector = elector(kube::Client::new(service, "default"), identity, clock);
    let rx = elector.subscribe();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(elector.run(async {
        let _ = stopped.await;
    }));
    Replica {
        rx,
        stop,
        run,
        server,
    }
}

#[tokio::test(start_paused = true)]
async fn hand_over_between_two_instances_never_has_two_leaders() {
    let (clock, start) = test_clock();
    let fake = Arc::new(Mutex::new(FakeLease::default()));
    let a = replica("rota-a", &fake, clock.clone(), start);
    let b = replica("rota-b", &fake, clock, start);
    let (stop_monitor, monitor_stopped) = oneshot::channel();
    let watcher = tokio::spawn(monitor(a.rx.clone(), b.rx.clone(), monitor_stopped));

    let body = async {
        // Both start at once: exactly one create wins.
        let (mut a_rx, mut b_rx) = (a.rx.clone(), b.rx.clone());
        tokio::select! {
            r = a_rx.wait_for(|l| *l) => { r.unwrap(); }
            r = b_rx.wait_for(|l| *l) => { r.unwrap(); }
        }
        let a_leads = *a.rx.borrow();
        let (first, second) = if a_leads { (a, b) } else { (b, a) };
        // Several renewals: the follower stays a follower.
        tokio::time::sleep(6 * RENEW + Duration::from_secs(1)).await;
        assert!(*first.rx.borrow() && !*second.rx.borrow());

        first.stop.send(()).unwrap();
        first.run.await.unwrap();
        let released = start.elapsed();
        assert!(!*first.rx.borrow());
        let mut second_rx = second.rx.clone();
        second_rx.wait_for(|l| *l).await.unwrap();
        let took_over = start.elapsed() - released;
        assert!(took_over <= RENEW, "took {took_over:?} after the release");

        second.stop.send(()).unwrap();
        second.run.await.unwrap();
        stop_monitor.send(()).unwrap();
        let both = watcher.await.unwrap();
        first.server.await.unwrap().unwrap();
        second.server.await.unwrap().unwrap();
        (both, a_leads)
    };
    let (both, a_leads) = tokio::time::timeout(TIMEOUT, body)
        .await
        .expect("timed out");
    assert_eq!(both, 0, "both replicas reported leader at once");

    let fake = fake.lock();
    let (first, second) = if a_leads {
        ("rota-a", "rota-b")
    } else {
        ("rota-b", "rota-a")
    };
    let holders: Vec<&str> = fake.writes.iter().map(|(_, h)| h.as_str()).collect();
    // First: create + 6 renewals + release; second: take-over, release.
    assert_eq!(fake.writes[0].0, Method::POST);
    assert_eq!(holders[..7], [first; 7]);
    assert_eq!(holders[7..], ["", second, ""], "{holders:?}");
    let lease = fake.lease.as_ref().unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}
