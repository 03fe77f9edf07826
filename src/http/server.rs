//! The accept loop, admission lanes, per-connection serving and graceful shutdown.
//!
//! ```text
//!   serve ─▶ accept loop ─▶ normal permit?  ─spawn─▶ connection (keep-alive, all requests)
//!             │              reserve permit? ─spawn─▶ connection (one body-less request)
//!             │              neither ─▶ immediate 503 + close (shed)
//!             │ shutdown resolves
//!             └─▶ drop listener ─▶ stop.send(true) ─▶ drain tasks ≤ shutdown_grace ─▶ abort rest
//! ```
//!
//! At `max_connections` the server does not leave new connections in the kernel backlog (where
//! kubelet probes on the same port would time out): it keeps accepting. The next
//! `reserve_connections` are served one body-less request each (`/healthz`, `/readyz`,
//! `/metrics`), with a short header timeout and no keep-alive; requests with a body there get
//! 503. Beyond that, a connection gets a canned 503 with `Retry-After` and is closed at once
//! (plain HTTP; with TLS it is just closed), so clients fail fast instead of hanging.
//!
//! Invariants: at most `max_connections + reserve_connections` connection tasks exist (each
//! holds a permit of its lane); the accept loop never waits for a slot; every task lives in one
//! `JoinSet`, so none outlives `serve` by more than the grace period; the only `Err` from `serve`
//! is a startup error. Must not: interpret paths or bodies.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn, Instrument as _};

use super::budget::BodyBudget;
use super::request::{read_request, Lane, ReadContext, RETRY_AFTER_SECONDS};
use super::stats::ServerStats;
use super::{tls, Error, Handler, Request, Response, ServerOptions};

/// Pause after a failed `accept` (EMFILE, ENFILE, ECONNABORTED…): long enough not to spin on a
/// full descriptor table, short enough that clients barely notice.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Longest header wait on the reserve lane: probes send their request at once, and a silent
/// client must not hold one of the few reserve slots for the full header timeout.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves HTTP/1.1 (or HTTPS when `options.tls` is set) on an already bound listener until
/// `shutdown` resolves, then stops accepting, lets in-flight requests finish for at most
/// `options.shutdown_grace`, and returns `Ok(())`.
///
/// Errors only before accepting anything: TLS files that cannot be loaded, or a listener without
/// a local address. Per-connection and per-request problems are answered or logged.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_with_stats(listener, handler, options, ServerStats::new(), shutdown).await
}

/// [`serve`], updating `stats` as it goes: keep a clone to read connection counts and body
/// budget use (for a metrics collector or a test).
pub async fn serve_with_stats<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    options: ServerOptions,
    stats: ServerStats,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let tls = options.tls.as_ref().map(tls::acceptor).transpose()?;
    let local = listener.local_addr().map_err(Error::Listener)?;
    let budget = BodyBudget::new(
        options.max_inflight_body_bytes,
        options.max_body_bytes,
        stats.clone(),
    );
    info!(addr = %local, tls = tls.is_some(), max_connections = options.max_connections,
        reserve_connections = options.reserve_connections,
        body_budget_bytes = stats.snapshot().body_budget_bytes, "HTTP server listening.");
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        handler,
        limits: Limits::from(&options),
        tls,
        stop: stop_rx,
        budget,
        stats,
    });
    let lanes = Lanes {
        // Zero would refuse everything; one connection at a time is the smallest useful limit.
        normal: Arc::new(Semaphore::new(options.max_connections.max(1))),
        reserve: Arc::new(Semaphore::new(options.reserve_connections)),
    };
    let mut connections = JoinSet::new();
    accept_loop(&listener, &shared, &lanes, &mut connections, shutdown).await;
    drop(listener);
    info!(addr = %local, in_flight = connections.len(), "HTTP server shutting down.");
    stop_tx.send_replace(true);
    drain(connections, options.shutdown_grace).await;
    info!(addr = %local, "HTTP server stopped.");
    Ok(())
}

/// Resolves on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C), logging which one arrived.
/// A signal whose handler cannot be installed is logged and never fires; the other still does.
pub async fn shutdown_signal() {
    let name = tokio::select! {
        () = wait_for_signal(SignalKind::terminate(), "SIGTERM") => "SIGTERM",
        () = wait_for_signal(SignalKind::interrupt(), "SIGINT") => "SIGINT",
    };
    info!(signal = name, "Shutdown signal received.");
}

async fn wait_for_signal(kind: SignalKind, name: &'static str) {
    match signal(kind) {
        Ok(mut stream) => {
            if stream.recv().await.is_some() {
                return;
            }
            // The runtime is shutting down: no signal arrived, so do not report one.
        }
        Err(err) => error!(signal = name, error = %err, "Cannot listen for a shutdown signal."),
    }
    std::future::pending::<()>().await;
}

// === impl accept loop ===

/// What every connection task needs, shared behind one `Arc`.
struct Shared<H> {
    handler: Arc<H>,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    /// Turns `true` when shutdown starts.
    stop: watch::Receiver<bool>,
    budget: BodyBudget,
    stats: ServerStats,
}

/// The per-connection and per-request limits taken from [`ServerOptions`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_body_bytes: usize,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    max_header_bytes: usize,
    max_headers: usize,
}

impl From<&ServerOptions> for Limits {
    fn from(options: &ServerOptions) -> Self {
        Self {
            max_body_bytes: options.max_body_bytes,
            header_read_timeout: options.header_read_timeout,
            body_read_timeout: options.body_read_timeout,
            max_header_bytes: options.max_header_bytes,
            max_headers: options.max_headers,
        }
    }
}

impl Limits {
    fn header_timeout(&self, lane: Lane) -> Duration {
        match lane {
            Lane::Normal => self.header_read_timeout,
            Lane::Reserve => self.header_read_timeout.min(RESERVE_HEADER_TIMEOUT),
        }
    }
}

/// Connection slots: the normal lane and the small reserve kept for body-less requests.
struct Lanes {
    normal: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
}

impl Lanes {
    /// A slot on the first lane that has one, or `None` when both are full.
    fn admit(&self) -> Option<(Lane, OwnedSemaphorePermit)> {
        if let Ok(permit) = self.normal.clone().try_acquire_owned() {
            return Some((Lane::Normal, permit));
        }
        let permit = self.reserve.clone().try_acquire_owned().ok()?;
        Some((Lane::Reserve, permit))
    }
}

/// An accepted connection and the slot it holds.
struct Admitted {
    stream: TcpStream,
    remote: SocketAddr,
    lane: Lane,
    permit: OwnedSemaphorePermit,
}

async fn accept_loop<H: Handler>(
    listener: &TcpListener,
    shared: &Arc<Shared<H>>,
    lanes: &Lanes,
    connections: &mut JoinSet<()>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = joined {
                    error!(error = %err, "Connection task failed.");
                }
            }
            // `accept` is cancel-safe: losing this branch loses no connection.
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => match lanes.admit() {
                    Some((lane, permit)) => {
                        let admitted = Admitted { stream, remote, lane, permit };
                        connections.spawn(serve_connection(shared.clone(), admitted));
                    }
                    None => shed(shared, stream, remote),
                },
                Err(err) => {
                    warn!(error = %err, "Accepting a connection failed; retrying.");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            },
        }
    }
}

/// Refuses a connection when both lanes are full: a canned 503 (plain HTTP only; a TLS client
/// could not read it) written without waiting, then close. Best effort: a client that already
/// sent its request may see a reset instead.
fn shed<H>(shared: &Shared<H>, stream: TcpStream, remote: SocketAddr) {
    let total = shared.stats.connection_shed();
    if shared.tls.is_none() {
        // A fresh socket's send buffer is empty, so this small write completes or fails at once.
        let _ = stream.try_write(&shed_reply());
    }
    // Log the first refusal and then every thousandth, not one line per connection of a flood.
    if total == 1 || total % 1000 == 0 {
        warn!(%remote, shed_total = total,
            "At the connection limit with the reserve full; refusing connections with 503.");
    } else {
        debug!(%remote, "Connection refused at the connection limit.");
    }
}

/// The raw answer written to a refused connection.
fn shed_reply() -> Vec<u8> {
    let body = Response::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded: connection limit reached; retry later",
    )
    .body;
    let mut reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {}\r\ncontent-length: {}\r\n\
         retry-after: {RETRY_AFTER_SECONDS}\r\nconnection: close\r\n\r\n",
        super::JSON,
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    reply
}

/// Waits for in-flight connections for at most `grace`, then aborts what is left.
async fn drain(mut connections: JoinSet<()>, grace: Duration) {
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all_done).await.is_err() {
        warn!(
            remaining = connections.len(),
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "Shutdown grace period over; closing the remaining connections."
        );
        connections.abort_all();
    }
}

// === impl connection ===

async fn serve_connection<H: Handler>(shared: Arc<Shared<H>>, admitted: Admitted) {
    let Admitted {
        stream,
        remote,
        lane,
        permit: _permit,
    } = admitted;
    if lane == Lane::Reserve {
        shared.stats.reserve_lane_used();
        debug!(%remote, "At the connection limit; serving on the reserve lane.");
    }
    // Counted after the lane, so a reader that sees the connection open also sees its lane.
    let _open = shared.stats.connection_opened();
    // Requests and answers are small and latency matters more than packet count.
    if let Err(err) = stream.set_nodelay(true) {
        debug!(%remote, error = %err, "Cannot set TCP_NODELAY.");
    }
    let Some(acceptor) = shared.tls.clone() else {
        return serve_http(&shared, stream, remote, lane).await;
    };
    // The handshake counts against the header timeout: a silent client must not hold a slot.
    let handshake =
        tokio::time::timeout(shared.limits.header_timeout(lane), acceptor.accept(stream));
    match handshake.await {
        Ok(Ok(tls)) => serve_http(&shared, tls, remote, lane).await,
        Ok(Err(err)) => debug!(%remote, error = %err, "TLS handshake failed."),
        Err(_) => debug!(%remote, "TLS handshake timed out."),
    }
}

async fn serve_http<H, S>(shared: &Arc<Shared<H>>, stream: S, remote: SocketAddr, lane: Lane)
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_shared = shared.clone();
    let service = service_fn(move |request| {
        let shared = service_shared.clone();
        async move { Ok::<_, Infallible>(respond(&shared, request, remote, lane).await) }
    });
    let builder = http1_builder(&shared.limits, lane);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping(shared.stop.clone()) => {
            // Finish the request in progress (if any), then close instead of keeping alive.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        debug!(%remote, error = %err, "Connection ended with an error.");
    }
}

/// hyper's connection settings. The header timeout also cuts idle keep-alive connections (hyper
/// starts it whenever it waits for a request head). `max_buf_size` bounds hyper's read buffer
/// per connection (heads and body reads alike); hyper's floor is 8 KiB.
fn http1_builder(limits: &Limits, lane: Lane) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout(lane))
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF_BYTES))
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        // The reserve lane serves one request per connection, so its slot frees at once.
        .keep_alive(lane == Lane::Normal);
    builder
}

/// hyper panics on a `max_buf_size` below this.
const MIN_BUF_BYTES: usize = 8 << 10;

/// Resolves once shutdown has started (or `serve` is gone).
async fn stopping(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means: stop.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Reads, answers and logs one request. Never fails: every problem becomes a status code.
async fn respond<H: Handler>(
    shared: &Shared<H>,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
    lane: Lane,
) -> hyper::Response<Full<Bytes>> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::debug_span!("http_request", %method, %path, %remote);
    let ctx = ReadContext {
        max_body_bytes: shared.limits.max_body_bytes,
        body_read_timeout: shared.limits.body_read_timeout,
        budget: &shared.budget,
        lane,
    };
    async {
        let (reply, close, retry_after) = match read_request(request, remote, &ctx).await {
            Ok((request, _reservation)) => (
                // The reservation is held until the handler is done with the body.
                call_handler(&*shared.handler, request, &method, &path),
                false,
                None,
            ),
            // The body may be partly unread: the connection cannot be reused safely.
            Err(rejection) => {
                let reply = rejection.response();
                let seconds = started.elapsed().as_secs_f64();
                shared.handler.rejected(&path, reply.status, seconds);
                (reply, true, rejection.retry_after())
            }
        };
        debug!(
            status = reply.status.as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
            "HTTP request served."
        );
        to_hyper(reply, close, retry_after)
    }
    .instrument(span)
    .await
}

// === impl request ===

/// Runs the handler on this thread; a panic becomes a logged 500, and the connection lives on.
fn call_handler<H: Handler>(
    handler: &H,
    request: Request,
    method: &Method,
    path: &str,
) -> Response {
    // Handlers share state only through locks and atomics; a panic mid-update is the handler's
    // invariant to keep, and the alternative (killing the server) is worse.
    match catch_unwind(AssertUnwindSafe(|| handler.handle(request))) {
        Ok(reply) => reply,
        Err(payload) => {
            error!(%method, %path, panic = panic_message(payload.as_ref()),
                "Request handler panicked; answered 500.");
            Response::error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "non-string panic payload"
    }
}

fn to_hyper(
    reply: Response,
    close: bool,
    retry_after: Option<u32>,
) -> hyper::Response<Full<Bytes>> {
    let length = reply.body.len();
    let content_type = HeaderValue::from_str(reply.content_type).unwrap_or_else(|_| {
        warn!(
            content_type = reply.content_type,
            "Handler gave an invalid Content-Type."
        );
        HeaderValue::from_static("application/octet-stream")
    });
    let mut response = hyper::Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(seconds) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Some(Ok(allow)) = reply.allow.map(HeaderValue::from_str) {
        headers.insert(ALLOW, allow);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::HeaderMap;

    #[test]
    fn panics_become_internal_errors() {
        struct Boom;
        impl Handler for Boom {
            fn handle(&self, _: Request) -> Response {
                panic!("boom")
            }
        }
        let request = Request {
            method: Method::GET,
            path: "/".into(),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            remote: None,
        };
        let reply = call_handler(&Boom, request, &Method::GET, "/");
        assert_eq!(
            reply,
            Response::error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        );
    }

    #[test]
    fn hyper_response_carries_type_length_and_close() {
        let reply = to_hyper(
            Response::with_type(StatusCode::OK, super::super::TEXT, "hi"),
            true,
            Some(3),
        );
        assert_eq!(reply.headers()[CONTENT_TYPE], super::super::TEXT);
        assert_eq!(reply.headers()[CONTENT_LENGTH], "2");
        assert_eq!(reply.headers()[CONNECTION], "close");
        assert_eq!(reply.headers()[RETRY_AFTER], "3");
        let bad = to_hyper(
            Response::with_type(StatusCode::OK, "bad\ntype", ""),
            false,
            None,
        );
        assert_eq!(bad.headers()[CONTENT_TYPE], "application/octet-stream");
        assert!(bad.headers().get(CONNECTION).is_none());
        assert!(bad.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn shed_reply_is_a_complete_503_with_retry_after() {
        let reply = String::from_utf8(shed_reply()).expect("ASCII");
        let (head, body) = reply.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("retry-after: 1\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}\r\n", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert!(json["error"]
            .as_str()
            .is_some_and(|e| e.contains("overloaded")));
    }
}
