//! The accept loop, per-connection serving and graceful shutdown.
//!
//! ```text
//!   serve ─▶ accept loop (permit, accept) ─spawn─▶ connection task ─▶ hyper http1 ─▶ respond
//!             │ shutdown resolves                        ▲ stop (watch): finish current request
//!             └─▶ drop listener ─▶ stop.send(true) ─▶ drain tasks ≤ shutdown_grace ─▶ abort rest
//! ```
//!
//! Invariants: at most `max_connections` connection tasks exist (each holds a semaphore permit);
//! every task lives in one `JoinSet`, so none outlives `serve` by more than the grace period;
//! the only `Err` from `serve` is a startup error. Must not: interpret paths or bodies.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn, Instrument as _};

use super::{tls, Error, Handler, Request, Response, ServerOptions};

/// Pause after a failed `accept` (EMFILE, ENFILE, ECONNABORTED…): long enough not to spin on a
/// full descriptor table, short enough that clients barely notice.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

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
    let tls = options.tls.as_ref().map(tls::acceptor).transpose()?;
    let local = listener.local_addr().map_err(Error::Listener)?;
    info!(addr = %local, tls = tls.is_some(), max_connections = options.max_connections,
        "HTTP server listening.");
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        handler,
        limits: Limits::from(&options),
        tls,
        stop: stop_rx,
    });
    let mut connections = JoinSet::new();
    // Zero would deadlock the accept loop; one connection at a time is the smallest useful limit.
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    accept_loop(&listener, &shared, &permits, &mut connections, shutdown).await;
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
}

/// The per-request limits taken from [`ServerOptions`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_body_bytes: usize,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
}

impl From<&ServerOptions> for Limits {
    fn from(options: &ServerOptions) -> Self {
        Self {
            max_body_bytes: options.max_body_bytes,
            header_read_timeout: options.header_read_timeout,
            body_read_timeout: options.body_read_timeout,
        }
    }
}

async fn accept_loop<H: Handler>(
    listener: &TcpListener,
    shared: &Arc<Shared<H>>,
    permits: &Arc<Semaphore>,
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
            // Both awaits inside are cancel-safe: losing this branch drops the permit unused.
            accepted = accept_one(listener, permits) => {
                if let Some((stream, remote, permit)) = accepted {
                    connections.spawn(serve_connection(shared.clone(), stream, remote, permit));
                }
            }
        }
    }
}

/// Waits for a connection slot, then for a connection. `None` after a failed accept, which is
/// logged and followed by a short pause so that a full descriptor table does not spin the loop.
async fn accept_one(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let Ok(permit) = permits.clone().acquire_owned().await else {
        // Unreachable while `serve` owns the semaphore and never closes it.
        tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
        return None;
    };
    match listener.accept().await {
        Ok((stream, remote)) => Some((stream, remote, permit)),
        Err(err) => {
            warn!(error = %err, "Accepting a connection failed; retrying.");
            tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            None
        }
    }
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

async fn serve_connection<H: Handler>(
    shared: Arc<Shared<H>>,
    stream: TcpStream,
    remote: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    // Requests and answers are small and latency matters more than packet count.
    if let Err(err) = stream.set_nodelay(true) {
        debug!(%remote, error = %err, "Cannot set TCP_NODELAY.");
    }
    let Some(acceptor) = shared.tls.clone() else {
        return serve_http(&shared, stream, remote).await;
    };
    // The handshake counts against the header timeout: a silent client must not hold a slot.
    let handshake =
        tokio::time::timeout(shared.limits.header_read_timeout, acceptor.accept(stream));
    match handshake.await {
        Ok(Ok(tls)) => serve_http(&shared, tls, remote).await,
        Ok(Err(err)) => debug!(%remote, error = %err, "TLS handshake failed."),
        Err(_) => debug!(%remote, "TLS handshake timed out."),
    }
}

async fn serve_http<H, S>(shared: &Arc<Shared<H>>, stream: S, remote: SocketAddr)
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_shared = shared.clone();
    let service = service_fn(move |request| {
        let shared = service_shared.clone();
        async move { Ok::<_, Infallible>(respond(&shared, request, remote).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_read_timeout)
        .keep_alive(true);
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

/// Resolves once shutdown has started (or `serve` is gone).
async fn stopping(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means: stop.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

// === impl request ===

/// Why the transport answered a request itself instead of calling the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rejection {
    /// A `Content-Encoding` other than identity (the value as sent).
    UnsupportedEncoding(String),
    /// The body is larger than the limit (bytes).
    TooLarge(usize),
    /// The body did not arrive within the timeout.
    Timeout(Duration),
    /// The body could not be read (malformed chunking, client gone).
    BadBody(String),
}

impl Rejection {
    fn response(&self) -> Response {
        match self {
            Self::UnsupportedEncoding(encoding) => Response::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format_args!(
                    "unsupported Content-Encoding {encoding:?}: send the body uncompressed"
                ),
            ),
            Self::TooLarge(limit) => Response::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format_args!("request body exceeds the limit of {limit} bytes"),
            ),
            Self::Timeout(after) => Response::error(
                StatusCode::REQUEST_TIMEOUT,
                format_args!("request body not received within {} ms", after.as_millis()),
            ),
            Self::BadBody(reason) => Response::error(
                StatusCode::BAD_REQUEST,
                format_args!("cannot read the request body: {reason}"),
            ),
        }
    }
}

/// Reads, answers and logs one request. Never fails: every problem becomes a status code.
async fn respond<H: Handler>(
    shared: &Shared<H>,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
) -> hyper::Response<Full<Bytes>> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::debug_span!("http_request", %method, %path, %remote);
    async {
        let (reply, close) = match read_request(request, remote, &shared.limits).await {
            Ok(request) => (
                call_handler(&*shared.handler, request, &method, &path),
                false,
            ),
            // The body may be partly unread: the connection cannot be reused safely.
            Err(rejection) => (rejection.response(), true),
        };
        debug!(
            status = reply.status.as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
            "HTTP request served."
        );
        to_hyper(reply, close)
    }
    .instrument(span)
    .await
}

async fn read_request(
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
    limits: &Limits,
) -> Result<Request, Rejection> {
    let (parts, body) = request.into_parts();
    check_head(
        &parts.headers,
        body.size_hint().lower(),
        limits.max_body_bytes,
    )?;
    let body = read_body(body, limits).await?;
    Ok(Request {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        remote: Some(remote),
    })
}

/// Rejects what can be rejected from the head alone, before reading any body byte.
/// `body_at_least` is the body's known minimum size (the `Content-Length`, when sent).
fn check_head(
    headers: &HeaderMap,
    body_at_least: u64,
    max_body_bytes: usize,
) -> Result<(), Rejection> {
    if let Some(encoding) = unsupported_encoding(headers) {
        return Err(Rejection::UnsupportedEncoding(encoding));
    }
    if body_at_least > u64::try_from(max_body_bytes).unwrap_or(u64::MAX) {
        return Err(Rejection::TooLarge(max_body_bytes));
    }
    Ok(())
}

/// The `Content-Encoding` value when it names anything but identity; we never decompress.
fn unsupported_encoding(headers: &HeaderMap) -> Option<String> {
    headers.get_all(CONTENT_ENCODING).iter().find_map(|value| {
        let text = String::from_utf8_lossy(value.as_bytes());
        let only_identity = text
            .split(',')
            .map(str::trim)
            .all(|coding| coding.is_empty() || coding.eq_ignore_ascii_case("identity"));
        (!only_identity).then(|| text.into_owned())
    })
}

/// Collects the body within the size cap and the read timeout.
async fn read_body(body: Incoming, limits: &Limits) -> Result<Bytes, Rejection> {
    let collect = Limited::new(body, limits.max_body_bytes).collect();
    match tokio::time::timeout(limits.body_read_timeout, collect).await {
        Err(_elapsed) => Err(Rejection::Timeout(limits.body_read_timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Rejection::TooLarge(limits.max_body_bytes))
        }
        Ok(Err(err)) => Err(Rejection::BadBody(err.to_string())),
    }
}

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

fn to_hyper(reply: Response, close: bool) -> hyper::Response<Full<Bytes>> {
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
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn identity_and_absent_encodings_pass() {
        assert_eq!(check_head(&headers(&[]), 0, 10), Ok(()));
        let identity = headers(&[
            ("content-encoding", "Identity"),
            ("content-encoding", " identity, "),
        ]);
        assert_eq!(check_head(&identity, 10, 10), Ok(()));
        // Accept-Encoding concerns the reply only and is never a reason to reject.
        assert_eq!(
            check_head(&headers(&[("accept-encoding", "gzip")]), 0, 10),
            Ok(())
        );
    }

    #[test]
    fn compressed_bodies_are_refused_with_the_coding_named() {
        let gzip = headers(&[
            ("content-encoding", "identity"),
            ("content-encoding", "gzip"),
        ]);
        let rejection = check_head(&gzip, 0, 10);
        assert_eq!(
            rejection,
            Err(Rejection::UnsupportedEncoding("gzip".into()))
        );
        let reply = Rejection::UnsupportedEncoding("gzip".into()).response();
        assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(String::from_utf8_lossy(&reply.body).contains("gzip"));
    }

    #[test]
    fn declared_length_over_the_cap_is_refused_before_reading() {
        assert_eq!(
            check_head(&headers(&[]), 11, 10),
            Err(Rejection::TooLarge(10))
        );
        assert_eq!(
            Rejection::TooLarge(10).response().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

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
        );
        assert_eq!(reply.headers()[CONTENT_TYPE], super::super::TEXT);
        assert_eq!(reply.headers()[CONTENT_LENGTH], "2");
        assert_eq!(reply.headers()[CONNECTION], "close");
        let bad = to_hyper(Response::with_type(StatusCode::OK, "bad\ntype", ""), false);
        assert_eq!(bad.headers()[CONTENT_TYPE], "application/octet-stream");
        assert!(bad.headers().get(CONNECTION).is_none());
    }
}
