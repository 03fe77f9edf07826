//! The serving process as a person meets it: real `rota extender` child processes against a
//! hand-written mock API server on loopback (plain HTTP, reached through a kubeconfig), so the
//! composition root, the signal handling and the shutdown order are all exercised for real.
//!
//! - Hand-over: SIGTERM to the leader releases the Lease (holder cleared, renew time expired)
//!   before the process exits 0, and the second replica leads within 2 s of the release.
//! - Loud failures: a missing namespace, a 403 on the Lease and an unreachable API server are
//!   each one ERROR line (however many retries), a counter in `/metrics`, and a `/readyz` that
//!   fails with the reason, while the process keeps serving.
//!
//! The mock keeps the Lease and the ledger ConfigMap with `resourceVersion` checks (a stale
//! write gets 409), answers lists of Nodes, Pods and Jobs with empty lists, holds watches open,
//! and records every Lease write with the time it was applied.

mod common;

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw_http::{body_of, status_code};
use common::tempdir::TempDir;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{json, Value};

const NS: &str = "rota-system";
const LEASE: &str = "rota-extender";
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/rota-system/leases/rota-extender";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/rota-system/leases";
const LEDGER_PATH: &str = "/api/v1/namespaces/rota-system/configmaps/rota-usage-ledger";
const CONFIG_MAPS: &str = "/api/v1/namespaces/rota-system/configmaps";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Everything works.
    Normal,
    /// The namespace `rota-system` does not exist.
    NamespaceMissing,
    /// RBAC forbids every Lease request.
    LeaseForbidden,
}

/// One applied Lease write: when, and the holder it left.
#[derive(Clone, Debug)]
struct LeaseWrite {
    at: Instant,
    holder: Option<String>,
    renew_time: Option<String>,
}

struct Mock {
    mode: Mode,
    lease: Option<Value>,
    config_map: Option<Value>,
    version: u64,
    writes: Vec<LeaseWrite>,
}

type Shared = Arc<Mutex<Mock>>;
type Body = BoxBody<Bytes, Infallible>;

fn full(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str, kind: &str, name: &str, message: &str) -> Response<Body> {
    full(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code,
                "details": {"name": name, "kind": kind}}),
    )
}

fn list(kind: &str) -> Response<Body> {
    full(
        200,
        &json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}),
    )
}

/// A watch that stays open and quiet until the connection closes.
fn open_watch() -> Response<Body> {
    let never = futures::stream::pending::<Result<Frame<Bytes>, Infallible>>();
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(StreamBody::new(never).boxed())
        .unwrap()
}

impl Mock {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// Create or replace `stored` from `body`, enforcing `resourceVersion` like the API server.
    fn write(
        &mut self,
        method: &Method,
        body: &Value,
        resource: &str,
        name: &str,
    ) -> Result<Value, Box<Response<Body>>> {
        let stored = if resource == "leases" {
            &self.lease
        } else {
            &self.config_map
        };
        if *method == Method::POST && stored.is_some() {
            let message = format!("{resource} \"{name}\" already exists");
            return Err(Box::new(status(
                409,
                "AlreadyExists",
                resource,
                name,
                &message,
            )));
        }
        if *method == Method::PUT {
            let Some(current) = stored else {
                let message = format!("{resource} \"{name}\" not found");
                return Err(Box::new(status(404, "NotFound", resource, name, &message)));
            };
            if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                let message = "the object has been modified; please apply your changes to the latest version and try again";
                return Err(Box::new(status(409, "Conflict", resource, name, message)));
            }
        }
        let mut object = body.clone();
        object["metadata"]["resourceVersion"] = json!(self.next_version());
        object["metadata"]["namespace"] = json!(NS);
        if resource == "leases" {
            self.writes.push(LeaseWrite {
                at: Instant::now(),
                holder: object["spec"]["holderIdentity"].as_str().map(str::to_owned),
                renew_time: object["spec"]["renewTime"].as_str().map(str::to_owned),
            });
            self.lease = Some(object.clone());
        } else {
            self.config_map = Some(object.clone());
        }
        Ok(object)
    }
}

async fn handle(mock: Shared, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let bytes = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let watching = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let mut mock = mock.lock();
    let in_namespace = path.contains("/namespaces/rota-system/");
    let reply = match (method.clone(), path.as_str()) {
        _ if mock.mode == Mode::NamespaceMissing && in_namespace => {
            let resource = if path.contains("/leases") {
                "leases"
            } else {
                "configmaps"
            };
            if method == Method::POST {
                let message = format!("namespaces \"{NS}\" not found");
                status(404, "NotFound", "namespaces", NS, &message)
            } else {
                status(
                    404,
                    "NotFound",
                    resource,
                    "x",
                    &format!("{resource} not found"),
                )
            }
        }
        _ if mock.mode == Mode::LeaseForbidden && path.starts_with(LEASES) => {
            let message = format!(
                "leases.coordination.k8s.io \"{LEASE}\" is forbidden: User \"system:serviceaccount:rota-system:rota-extender\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"{NS}\""
            );
            status(403, "Forbidden", "leases", LEASE, &message)
        }
        (Method::GET, LEASE_PATH) => match &mock.lease {
            Some(lease) => full(200, lease),
            None => status(
                404,
                "NotFound",
                "leases",
                LEASE,
                "leases \"rota-extender\" not found",
            ),
        },
        (Method::GET, LEDGER_PATH) => match &mock.config_map {
            Some(cm) => full(200, cm),
            None => status(
                404,
                "NotFound",
                "configmaps",
                "rota-usage-ledger",
                "configmaps \"rota-usage-ledger\" not found",
            ),
        },
        (Method::POST, LEASES) | (Method::PUT, LEASE_PATH) => {
            match mock.write(&method, &body, "leases", LEASE) {
                Ok(object) => full(if method == Method::POST { 201 } else { 200 }, &object),
                Err(reply) => *reply,
            }
        }
        (Method::POST, CONFIG_MAPS) | (Method::PUT, LEDGER_PATH) => {
            match mock.write(&method, &body, "configmaps", "rota-usage-ledger") {
                Ok(object) => full(if method == Method::POST { 201 } else { 200 }, &object),
                Err(reply) => *reply,
            }
        }
        (Method::GET, "/api/v1/nodes" | "/api/v1/pods" | "/apis/batch/v1/jobs") if watching => {
            open_watch()
        }
        (Method::GET, "/api/v1/nodes") => list("NodeList"),
        (Method::GET, "/api/v1/pods") => list("PodList"),
        (Method::GET, "/apis/batch/v1/jobs") => list("JobList"),
        (Method::POST, p) if p.ends_with("/events") => full(201, &body),
        // KubeVirt is not installed, nor anything else.
        _ => status(
            404,
            "NotFound",
            "",
            "",
            &format!("the server could not find {path}"),
        ),
    };
    Ok(reply)
}

/// Serves the mock on a loopback port until the test's runtime ends.
async fn start_mock(mode: Mode) -> (Shared, SocketAddr) {
    let mock = Arc::new(Mutex::new(Mock {
        mode,
        lease: None,
        config_map: None,
        version: 100,
        writes: Vec::new(),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shared = mock.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let mock = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |r| handle(mock.clone(), r));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (mock, address)
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kubeconfig(dir: &TempDir, server: &str) -> std::path::PathBuf {
    let path = dir.file("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {server}\n\
         users:\n- name: mock\n  user:\n    token: mock-token\ncontexts:\n- name: mock\n  context:\n    \
         cluster: mock\n    user: mock\n    namespace: default\ncurrent-context: mock\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A `rota extender` child process and the lines it wrote to stderr.
struct Rota {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Rota {
    fn start(kubeconfig: &std::path::Path, identity: &str) -> Self {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rota"))
            .args(["extender", "--cluster", "kube", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--namespace", NS, "--log-format", "text"])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info")
            .env_remove("POD_NAMESPACE")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rota starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        let name = identity.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{name}] {line}");
                sink.lock().push(line);
            }
        });
        Self { child, port, lines }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: rota\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).ok()?;
        Some((status_code(&reply)?, body_of(&reply).to_owned()))
    }

    /// Lines of stderr containing every one of `words`.
    fn lines_with(&self, words: &[&str]) -> Vec<String> {
        let lines = self.lines.lock();
        lines
            .iter()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .cloned()
            .collect()
    }

    fn errors(&self) -> Vec<String> {
        self.lines_with(&[" ERROR "])
    }

    /// The value of the metric line starting with `series` (name and labels as rendered).
    fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the exit, up to `limit`; returns the status and when it was seen.
    fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Instant) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "rota did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Rota {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it returns `Some`, up to `limit`.
async fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn holder(mock: &Shared) -> Option<String> {
    let mock = mock.lock();
    let lease = mock.lease.as_ref()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_before_exit_and_the_next_replica_leads_within_2s() {
    let dir = TempDir::new("serve", "handover");
    let (mock, address) = start_mock(Mode::Normal).await;
    let config = kubeconfig(&dir, &format!("http://{address}"));

    let mut first = Rota::start(&config, "rota-a");
    eventually(Duration::from_secs(20), "rota-a to lead", || {
        (holder(&mock).as_deref() == Some("rota-a")).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "rota-a to be ready", || {
        first.get("/readyz").filter(|(code, _)| *code == 200)
    })
    .await;
    let second = Rota::start(&config, "rota-b");
    eventually(Duration::from_secs(10), "rota-b to serve", || {
        second.get("/healthz")
    })
    .await;
    // rota-b reads the lease (held, unexpired) and stays a follower.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(holder(&mock).as_deref(), Some("rota-a"));

    // Taken before the signal: the child may write its release before this thread runs again.
    let signalled = Instant::now();
    first.sigterm();
    let (status, exited) = first.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "rota-a exited with {status}");
    assert!(
        exited - signalled < Duration::from_secs(15),
        "shutdown took {:?}",
        exited - signalled
    );

    let writes = mock.lock().writes.clone();
    let release = writes
        .iter()
        .find(|w| w.at >= signalled && w.holder.is_none())
        .unwrap_or_else(|| panic!("no release written after SIGTERM: {writes:#?}"));
    assert!(release.at <= exited, "the release came after the exit");
    let renewed: k8s_openapi::jiff::Timestamp = release
        .renew_time
        .as_deref()
        .expect("a renew time")
        .parse()
        .unwrap();
    let now = k8s_openapi::jiff::Timestamp::now();
    assert!(
        renewed.as_second() + 15 < now.as_second(),
        "the released lease must read as expired"
    );

    let taken = eventually(Duration::from_secs(5), "rota-b to lead", || {
        let mock = mock.lock();
        let w = mock
            .writes
            .iter()
            .find(|w| w.holder.as_deref() == Some("rota-b"))?;
        Some(w.at)
    })
    .await;
    let gap = taken.duration_since(release.at);
    assert!(
        gap <= Duration::from_secs(2),
        "rota-b led {gap:?} after the release"
    );

    // The loops stopped and the Lease went in order, without an error on the way out.
    assert!(first.errors().is_empty(), "{:#?}", first.errors());
    assert_eq!(first.lines_with(&["Released the lease"]).len(), 1);
    // A first start without a ledger: one INFO line, no warnings about it.
    let no_ledger = first.lines_with(&["No usage ledger stored yet"]);
    assert_eq!(no_ledger.len(), 1, "{no_ledger:#?}");
    assert!(no_ledger[0].contains(" INFO "), "{no_ledger:#?}");
    assert!(first.lines_with(&[" WARN ", "ledger"]).is_empty());
}

/// Runs one misconfigured replica until `/readyz` fails for `reason`, lets it retry a few
/// more times, then checks the ERROR line, the metric and the probe; ends with a clean SIGTERM.
async fn loud_failure(
    rota: &mut Rota,
    readyz_words: &[&str],
    error_words: &[&str],
    component: &str,
    reason: &str,
) {
    let series =
        format!("rota_api_failures_total{{component=\"{component}\",reason=\"{reason}\"}}");
    let (code, body) = eventually(
        Duration::from_secs(20),
        "/readyz to name the reason",
        || {
            let (code, body) = rota.get("/readyz")?;
            readyz_words
                .iter()
                .all(|w| body.contains(w))
                .then_some((code, body))
        },
    )
    .await;
    assert_eq!(code, 503, "{body}");
    // Several more retries (followers retry every second) must not log again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let errors = rota.errors();
    assert_eq!(
        errors.len(),
        1,
        "one ERROR line per state change: {errors:#?}"
    );
    for word in error_words {
        assert!(
            errors[0].contains(word),
            "{word:?} missing from {}",
            errors[0]
        );
    }
    let count = rota.metric(&series).unwrap_or(0.0);
    assert!(
        count >= 2.0,
        "{series} = {count}: every failed attempt counts"
    );
    let failing = format!("rota_readiness_failing{{component=\"{component}\"}}");
    assert_eq!(rota.metric(&failing), Some(1.0), "{failing}");
    // The extender still answers kube-scheduler, in its degraded way.
    let (code, _) = rota.get("/healthz").expect("healthz answers");
    assert_eq!(code, 200);
    rota.sigterm();
    let (status, _) = rota.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_namespace_is_one_error_a_metric_and_a_failing_readyz() {
    let dir = TempDir::new("serve", "namespace");
    let (_mock, address) = start_mock(Mode::NamespaceMissing).await;
    let mut rota = Rota::start(&kubeconfig(&dir, &format!("http://{address}")), "rota-a");
    loud_failure(
        &mut rota,
        &["lease: namespace does not exist", "namespace rota-system"],
        &["namespace rota-system", "lease rota-system/rota-extender"],
        "lease",
        "namespace_missing",
    )
    .await;
    assert!(rota.lines_with(&[" WARN ", "no ledger"]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_lease_is_one_error_a_metric_and_a_failing_readyz() {
    let dir = TempDir::new("serve", "forbidden");
    let (_mock, address) = start_mock(Mode::LeaseForbidden).await;
    let mut rota = Rota::start(&kubeconfig(&dir, &format!("http://{address}")), "rota-a");
    loud_failure(
        &mut rota,
        &[
            "lease: forbidden by the API server",
            "lease rota-system/rota-extender",
        ],
        &["forbids", "lease rota-system/rota-extender"],
        "lease",
        "forbidden",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_one_error_a_metric_and_a_failing_readyz() {
    let dir = TempDir::new("serve", "unreachable");
    // A port nobody listens on: connections are refused.
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut rota = Rota::start(&kubeconfig(&dir, &url), "rota-a");
    loud_failure(
        &mut rota,
        &["apiserver: API server unreachable", &url],
        &["cannot reach the API server", &url],
        "apiserver",
        "unreachable",
    )
    .await;
}
