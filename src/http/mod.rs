//! A small HTTP/1.1 server (hyper on tokio) shared by the extender and the agent.
//!
//! The transport reads the whole body (within a size cap, a global in-flight body budget and a
//! read timeout) and hands a [`Request`] to a synchronous [`Handler`]: every endpoint is one
//! pure-ish function from a request to a [`Response`], testable without a socket. Handler panics
//! become a 500 and never take the process or the connection down.
//!
//! ```text
//!   TcpListener ─accept─▶ lane ─▶ (TLS) ─▶ hyper http1 ─▶ budget ─▶ read body ─▶ Handler::handle
//!     normal: max_connections          head ≤ max_header_bytes   cap, timeout    panic ─▶ 500
//!     reserve: body-less only    413 · 408 · 415 · 400 · 503 (+Retry-After) here
//!     neither: 503 + close
//! ```
//!
//! Memory is bounded by the options: bodies by `max_inflight_body_bytes` (reserved before a
//! byte is read, see `budget.rs`), per-connection buffers by `max_header_bytes`, connections by
//! `max_connections + reserve_connections`. Invariants: a body is never read past
//! `max_body_bytes` nor before its budget is reserved; requests without a body never wait for
//! budget; transport rejections are answered here and never reach the handler; the accept loop
//! never dies on an accept error and never waits for a free slot. Must not: decompress bodies,
//! log bodies, or know any endpoint (that is the handler's job).

mod budget;
pub mod memory_limit;
mod request;
mod server;
mod stats;
mod tls;

pub use server::{serve, serve_with_stats, shutdown_signal};

/// Reads the TLS certificate and key now, so that a bad file stops the process before it
/// claims to serve HTTPS (the server reads them again when it starts).
pub fn check_tls(files: &TlsFiles) -> Result<(), Error> {
    tls::acceptor(files).map(drop)
}
pub use stats::{ServerStats, StatsSnapshot};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use hyper::{HeaderMap, Method, StatusCode};

/// A fully read request.
#[derive(Debug, Clone)]
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// Path without the query string.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// The whole body (already within the size cap).
    pub body: Bytes,
    /// Peer address, when known.
    pub remote: Option<SocketAddr>,
}

/// A response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// Body bytes.
    pub body: Bytes,
    /// `Allow` header value (the methods a 405's path accepts); `None` for no header.
    pub allow: Option<&'static str>,
}

/// The JSON content type.
pub const JSON: &str = "application/json";
/// The Prometheus text exposition content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Plain text.
pub const TEXT: &str = "text/plain; charset=utf-8";

impl Response {
    /// A JSON response with the given status.
    pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type: JSON,
            body: body.into(),
            allow: None,
        }
    }

    /// A one-line JSON error: `{"error":"<message>"}`.
    pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Self {
        let body = serde_json::json!({ "error": message.to_string() }).to_string();
        Self::json(status, body)
    }

    /// A response with any content type.
    pub fn with_type(
        status: StatusCode,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            allow: None,
        }
    }
}

/// One endpoint set: a synchronous function from request to response.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Must not block for long: it runs on a runtime worker thread.
    fn handle(&self, request: Request) -> Response;

    /// Called for every request the transport answers itself (413, 408, 415, 400, 503), with
    /// the request's path, the status and the seconds spent, so the handler's metrics count
    /// every answer. Default: nothing.
    fn rejected(&self, _path: &str, _status: StatusCode, _seconds: f64) {}
}

/// TLS certificate and key files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// Transport limits and options. Worst-case memory is about `max_inflight_body_bytes` plus
/// `(max_connections + reserve_connections) × (max_header_bytes + ~16 KiB)` (plus rustls'
/// own buffers, tens of KiB per connection, with TLS), plus what handlers allocate while
/// parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Largest accepted body; larger bodies get 413. Default 64 MiB.
    pub max_body_bytes: usize,
    /// Body bytes all requests together may hold at once. Each request with a body reserves its
    /// `Content-Length` (or `max_body_bytes` when chunked) before reading it, waits in line
    /// when the budget is used up, and gets 503 with `Retry-After` if its body deadline passes
    /// first. Raised to `max_body_bytes` if smaller. Default 512 MiB: eight bodies at the
    /// default cap, or hundreds of real kube-scheduler requests (well under 1 MiB with
    /// `nodeCacheCapable`), while keeping the extender within a 1 GiB memory limit.
    pub max_inflight_body_bytes: usize,
    /// Time allowed to receive the request head (and, with TLS, to finish the handshake); also
    /// how long an idle keep-alive connection stays open. Default 10 s; then the connection is
    /// closed without an answer.
    pub header_read_timeout: Duration,
    /// Time allowed, once the head is in, to get body budget and receive the whole body.
    /// Default 30 s; then 408 (or 503 while still waiting for budget).
    pub body_read_timeout: Duration,
    /// How long graceful shutdown waits for in-flight requests. Default 10 s.
    pub shutdown_grace: Duration,
    /// Most connections served at once. Default 4096.
    pub max_connections: usize,
    /// Extra connections accepted beyond `max_connections` that may make one request without a
    /// body (kubelet probes, metrics scrapes): a flood of connections does not fail the pod's
    /// probes. Beyond these, connections get an immediate 503 and are closed. Default 32.
    pub reserve_connections: usize,
    /// Largest request head (request line and headers); larger ones get 431. Also bounds hyper's
    /// per-connection read buffer (at least 8 KiB). Default 16 KiB: kube-scheduler sends a few
    /// hundred bytes, and 16 KiB × 4,128 connections is 66 MiB at worst.
    pub max_header_bytes: usize,
    /// Most header fields in a request; more get 431. Default 100 (hyper's own default, set
    /// explicitly so it is documented).
    pub max_headers: usize,
    /// Serve HTTPS with these files instead of plain HTTP.
    pub tls: Option<TlsFiles>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 << 20,
            max_inflight_body_bytes: 512 << 20,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 4096,
            reserve_connections: 32,
            max_header_bytes: 16 << 10,
            max_headers: 100,
            tls: None,
        }
    }
}

/// Errors that stop [`serve`] before it accepts anything. Per-connection and per-request
/// failures are answered or logged, never returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The certificate chain file could not be read or is not valid PEM.
    #[error("cannot read TLS certificate file {}: {source}", path.display())]
    TlsCert {
        /// The certificate file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("TLS certificate file {} holds no PEM certificate", path.display())]
    TlsNoCert {
        /// The certificate file.
        path: PathBuf,
    },
    /// The private key file could not be read or is not valid PEM.
    #[error("cannot read TLS private key file {}: {source}", path.display())]
    TlsKey {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    /// The key file is readable PEM but holds no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("TLS private key file {} holds no PEM private key", path.display())]
    TlsNoKey {
        /// The key file.
        path: PathBuf,
    },
    /// rustls refused the certificate and key (for example, a key that does not match).
    #[error("invalid TLS certificate {} or key {}: {source}", cert.display(), key.display())]
    TlsConfig {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        #[source]
        source: tokio_rustls::rustls::Error,
    },
    /// The listener's local address could not be read (the socket is unusable).
    #[error("cannot read the listener's local address: {0}")]
    Listener(#[source] std::io::Error),
}

impl Error {
    /// A short, bounded label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TlsCert { .. } | Self::TlsNoCert { .. } => "tls_cert",
            Self::TlsKey { .. } | Self::TlsNoKey { .. } => "tls_key",
            Self::TlsConfig { .. } => "tls_config",
            Self::Listener(_) => "listener",
        }
    }

    /// Whether retrying the same call could succeed. None of these can: they are
    /// configuration or socket problems that need an operator.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
