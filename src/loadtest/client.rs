//! The load generator's HTTP side: one keep-alive HTTP/1.1 connection per worker (hyper's
//! `client::conn::http1` on a `TcpStream`), sending prebuilt bodies back to back until the
//! deadline and recording what came back.
//!
//! Invariants: a worker has at most one request in flight; a non-2xx answer or a transport
//! failure (connect, reset, timeout) is counted as an error under a bounded label (the status
//! code, `connect`, `transport`, `timeout`) and never panics or stops the run; a broken
//! connection is replaced before the next request. Requests that start before the measurement
//! window opens (the `--warmup` period) are sent but not recorded.
//! Must not: parse or allocate answer bodies on the measured path (it only counts their bytes),
//! or build request bodies (they come prebuilt as `Bytes`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT_ENCODING, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::stats::Histogram;
use super::{Error, Verb};

/// How long a worker waits before reconnecting after a failed connect, so a dead target costs
/// a few hundred errors per second instead of a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// Where requests go: an `http://host:port[/prefix]` URL, resolved into its parts once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or address to connect to.
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
    /// The `Host` header value.
    pub authority: String,
    /// Path prefix before the verb (`urlPrefix` in the scheduler's config), without a trailing
    /// slash; empty for the root.
    pub prefix: String,
}

impl Target {
    /// Parses `url`. Only `http` is supported (the extender's plain listener).
    pub fn parse(url: &str) -> Result<Target, Error> {
        let bad = |reason: &str| Error::Target {
            target: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not supported; point at an http listener")),
            _ => return Err(bad("expected http://HOST:PORT")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Target {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The request path of `verb`.
    pub fn path(&self, verb: Verb) -> String {
        format!("{}/{}", self.prefix, verb.as_str())
    }
}

/// One open HTTP/1.1 connection; its driver task ends when this is dropped.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Why an exchange produced no answer.
#[derive(Debug)]
pub enum Failure {
    /// The TCP connect or the HTTP handshake failed.
    Connect(String),
    /// The connection broke while sending or receiving.
    Transport(String),
    /// No complete answer within the request timeout.
    Timeout,
}

impl Failure {
    /// The bounded error label the report counts it under.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Transport(_) => "transport",
            Failure::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(why) => write!(f, "connect failed: {why}"),
            Failure::Transport(why) => write!(f, "connection broke: {why}"),
            Failure::Timeout => f.write_str("timed out"),
        }
    }
}

/// An answer: status, body size, and the body itself when asked for.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Body bytes received.
    pub body_bytes: usize,
    /// The body, only when the caller asked to keep it (the warm-up).
    pub body: Option<Vec<u8>>,
}

/// Opens a connection to `target` within `timeout`.
pub async fn connect(target: &Target, timeout: Duration) -> Result<Connection, Failure> {
    let open = async {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        // Small requests must not wait for Nagle: latency is what is measured.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let driver = tokio::spawn(async move {
            // The connection's own error surfaces on the next send; nothing to do here.
            let _ = conn.await;
        });
        Ok(Connection { sender, driver })
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| Failure::Timeout)?
}

/// Sends one POST of `body` to `path` and reads the whole answer within `timeout`. The body is
/// kept only when `keep_body` (the measured path only counts bytes).
pub async fn exchange(
    conn: &mut Connection,
    target: &Target,
    path: &str,
    body: Bytes,
    timeout: Duration,
    keep_body: bool,
) -> Result<Answer, Failure> {
    let request = hyper::Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, target.authority.as_str())
        .header(USER_AGENT, "rota-loadtest")
        .header(CONTENT_TYPE, "application/json")
        // As Go's client does: the extender must answer identity-encoded anyway.
        .header(ACCEPT_ENCODING, "gzip")
        .body(Full::new(body))
        .map_err(|e| Failure::Transport(format!("cannot build the request: {e}")))?;
    let send = async {
        let transport = |e: hyper::Error| Failure::Transport(e.to_string());
        conn.sender.ready().await.map_err(transport)?;
        let response = conn.sender.send_request(request).await.map_err(transport)?;
        let status = response.status();
        let mut incoming = response.into_body();
        let mut body_bytes = 0;
        let mut kept = keep_body.then(Vec::new);
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(transport)?;
            if let Some(data) = frame.data_ref() {
                body_bytes += data.len();
                if let Some(kept) = kept.as_mut() {
                    kept.extend_from_slice(data);
                }
            }
        }
        Ok(Answer {
            status,
            body_bytes,
            body: kept,
        })
    };
    tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| Failure::Timeout)?
}

/// What one worker does: which verbs and bodies, and when.
#[derive(Clone, Debug)]
pub struct WorkerPlan {
    /// The extender.
    pub target: Arc<Target>,
    /// Verbs to alternate through (each body is sent once per verb, in this order).
    pub verbs: Vec<Verb>,
    /// Prebuilt request bodies.
    pub bodies: Arc<Vec<Bytes>>,
    /// Where this worker starts in the body cycle, so workers do not send in lockstep.
    pub offset: usize,
    /// Requests starting before this are not recorded (the `--warmup` period).
    pub measure_from: Instant,
    /// No request starts at or after this.
    pub until: Instant,
    /// Limit for one request (and for one connect).
    pub request_timeout: Duration,
}

/// What one verb saw in the measured window.
#[derive(Clone, Debug, Default)]
pub struct VerbStats {
    /// Latency of the 2xx answers.
    pub latency: Histogram,
    /// Errors by label: the HTTP status (`"500"`) or `connect`, `transport`, `timeout`.
    pub errors: BTreeMap<String, u64>,
    /// Request body bytes sent.
    pub sent_bytes: u64,
    /// Answer body bytes received (2xx and not).
    pub received_bytes: u64,
}

impl VerbStats {
    /// Requests recorded: answered 2xx plus errors.
    pub fn requests(&self) -> u64 {
        self.latency.len() + self.error_count()
    }

    /// Errors of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds `other` into this.
    pub fn merge(&mut self, other: &VerbStats) {
        self.latency.merge(&other.latency);
        for (label, n) in &other.errors {
            *self.errors.entry(label.clone()).or_default() += n;
        }
        self.sent_bytes += other.sent_bytes;
        self.received_bytes += other.received_bytes;
    }

    fn error(&mut self, label: &str) {
        *self.errors.entry(label.to_string()).or_default() += 1;
    }
}

/// Per-verb statistics of one worker (or, merged, of the run).
pub type RunStats = BTreeMap<Verb, VerbStats>;

/// Runs one worker until `plan.until` and returns what it recorded.
pub async fn run_worker(plan: WorkerPlan) -> RunStats {
    let mut stats: RunStats = plan
        .verbs
        .iter()
        .map(|&v| (v, VerbStats::default()))
        .collect();
    let paths: Vec<String> = plan.verbs.iter().map(|&v| plan.target.path(v)).collect();
    let (verbs, bodies) = (plan.verbs.len().max(1), plan.bodies.len().max(1));
    let mut conn: Option<Connection> = None;
    let mut i = plan.offset;
    loop {
        let started = Instant::now();
        if started >= plan.until || plan.bodies.is_empty() {
            break;
        }
        let (slot, body) = (i % verbs, plan.bodies[(i / verbs) % bodies].clone());
        i += 1;
        let verb = plan.verbs[slot];
        let measured = started >= plan.measure_from;
        let entry = stats.entry(verb).or_default();
        if conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
            match connect(&plan.target, plan.request_timeout).await {
                Ok(c) => conn = Some(c),
                Err(failure) => {
                    if measured {
                        entry.error(failure.code());
                    }
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let sent = body.len() as u64;
        let result = exchange(
            c,
            &plan.target,
            &paths[slot],
            body,
            plan.request_timeout,
            false,
        )
        .await;
        let elapsed = started.elapsed();
        if result.is_err() {
            conn = None;
        }
        if measured {
            record(entry, result, sent, elapsed);
        }
    }
    stats
}

fn record(entry: &mut VerbStats, result: Result<Answer, Failure>, sent: u64, elapsed: Duration) {
    entry.sent_bytes += sent;
    match result {
        Ok(answer) => {
            entry.received_bytes += answer.body_bytes as u64;
            if answer.status.is_success() {
                entry.latency.record(elapsed);
            } else {
                entry.error(answer.status.as_str());
            }
        }
        Err(failure) => entry.error(failure.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_host_port_and_prefix() {
        let t = Target::parse("http://127.0.0.1:8888").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8888));
        assert_eq!(t.path(Verb::Filter), "/filter");
        let t = Target::parse("http://rota.example:9000/gpu-fairshare/").unwrap();
        assert_eq!(t.authority, "rota.example:9000");
        assert_eq!(t.path(Verb::Prioritize), "/gpu-fairshare/prioritize");
        assert_eq!(Target::parse("http://[::1]:1").unwrap().host, "::1");
        assert_eq!(Target::parse("http://localhost").unwrap().port, 80);
        for bad in ["https://x:1", "ftp://x", "127.0.0.1:8888", "not a url", ""] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_and_failures_count_as_labelled_errors() {
        let mut entry = VerbStats::default();
        let answer = |code: u16| {
            Ok(Answer {
                status: StatusCode::from_u16(code).unwrap(),
                body_bytes: 10,
                body: None,
            })
        };
        let ms = Duration::from_millis(1);
        record(&mut entry, answer(200), 5, ms);
        record(&mut entry, answer(503), 5, ms);
        record(&mut entry, Err(Failure::Timeout), 5, ms);
        assert_eq!(entry.requests(), 3);
        assert_eq!(entry.latency.len(), 1);
        assert_eq!(entry.errors.get("503"), Some(&1));
        assert_eq!(entry.errors.get("timeout"), Some(&1));
        assert_eq!((entry.sent_bytes, entry.received_bytes), (15, 20));
    }
}
