//! Real-socket tests of the HTTP transport (`rota::http::serve`) on 127.0.0.1.
//!
//! Each test binds `127.0.0.1:0`, hands the bound listener to `serve` (no pick-then-bind race),
//! and runs under a timeout so nothing hangs. Malformed and slow clients are raw `TcpStream`
//! writes; well-behaved ones use hyper's client connection.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use rota::http::{
    serve_with_stats, Error, Handler, Request, Response, ServerOptions, ServerStats, TlsFiles, TEXT,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{crypto, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use common::raw_http::{body_of, header_of, status_code};

mod common;

/// Upper bound for any single test; far above what a healthy run needs.
const TEST_TIMEOUT: Duration = Duration::from_secs(5);

// === harness ===

/// Echoes `METHOD PATH BODY_LEN REMOTE_PORT`; panics on `/panic`; on `/slow` signals `started`
/// and then blocks for `slow`.
struct Echo {
    started: Arc<Notify>,
    slow: Duration,
}

impl Handler for Echo {
    fn handle(&self, request: Request) -> Response {
        match request.path.as_str() {
            "/panic" => panic!("test handler panics on purpose"),
            "/slow" => {
                self.started.notify_one();
                std::thread::sleep(self.slow);
            }
            _ => {}
        }
        let port = request.remote.map_or(0, |addr| addr.port());
        let body = format!(
            "{} {} {} {port}",
            request.method,
            request.path,
            request.body.len()
        );
        Response::with_type(StatusCode::OK, TEXT, body)
    }
}

struct Server {
    addr: SocketAddr,
    started: Arc<Notify>,
    stats: ServerStats,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

impl Server {
    async fn start(options: ServerOptions) -> Self {
        init_tracing();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let started = Arc::new(Notify::new());
        let handler = Arc::new(Echo {
            started: started.clone(),
            slow: Duration::from_millis(300),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let stats = ServerStats::new();
        let task = tokio::spawn(serve_with_stats(
            listener,
            handler,
            options,
            stats.clone(),
            shutdown,
        ));
        Self {
            addr,
            started,
            stats,
            stop: Some(stop),
            task,
        }
    }

    /// Fires shutdown and waits for `serve` to return.
    async fn shut_down(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("serve task panicked")
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("rota=debug")
        .try_init();
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("test timed out")
}

fn options() -> ServerOptions {
    ServerOptions {
        max_body_bytes: 1024,
        ..ServerOptions::default()
    }
}

/// A hyper client bound to one fresh connection, and the task driving it.
async fn connect<S>(stream: S) -> (SendRequest<Full<Bytes>>, JoinHandle<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("client handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: &'static str,
) -> (StatusCode, String) {
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    // After a response the client side may still be finishing the previous exchange.
    sender
        .ready()
        .await
        .expect("connection ready for another request");
    let response = sender.send_request(request).await.expect("send request");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Writes `bytes` and reads until the server closes the connection.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("read");
    String::from_utf8_lossy(&reply).into_owned()
}

/// The status code of a raw HTTP/1.1 response.
fn status_of(reply: &str) -> u16 {
    status_code(reply).unwrap_or_else(|| panic!("no status line in {reply:?}"))
}

// === plain HTTP ===

#[tokio::test]
async fn keep_alive_serves_two_requests_on_one_connection() {
    within(async {
        let server = Server::start(options()).await;
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        let port = stream.local_addr().expect("local addr").port();
        let (mut sender, _conn) = connect(stream).await;
        let first = send(&mut sender, Method::GET, "/a?x=1", "").await;
        let second = send(&mut sender, Method::POST, "/b", "hello").await;
        // The server saw the same client port twice: one TCP connection, kept alive.
        assert_eq!(first, (StatusCode::OK, format!("GET /a 0 {port}")));
        assert_eq!(second, (StatusCode::OK, format!("POST /b 5 {port}")));
        server.shut_down().await.expect("serve");
    })
    .await;
}

#[tokio::test]
async fn accept_encoding_gzip_gets_an_identity_reply() {
    within(async {
        let server = Server::start(options()).await;
        let reply = raw_exchange(
            server.addr,
            b"POST /filter HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\
              Content-Length: 3\r\nConnection: close\r\n\r\nabc",
        )
        .await;
        assert_eq!(status_of(&reply), 200, "{reply}");
        assert_eq!(header_of(&reply, "content-encoding"), None, "{reply}");
        assert_eq!(header_of(&reply, "content-type"), Some(TEXT));
        let body = body_of(&reply);
        assert!(body.starts_with("POST /filter 3 "), "{reply}");
        assert_eq!(
            header_of(&reply, "content-length"),
            Some(&*body.len().to_string())
        );
        server.shut_down().await.expect("serve");
    })
    .await;
}

#[tokio::test]
async fn declared_length_over_the_cap_is_413_without_sending_the_body() {
    within(async {
        let server = Server::start(options()).await;
        // The body is never sent: the answer must come from the head alone.
        let reply = raw_exchange(
            server.addr,
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&reply), 413, "{reply}");
        assert!(body_of(&reply).contains("1024 bytes"), "{reply}");
        server.shut_down().await.expect("serve");
    })
    .await;
}

#[tokio::test]
async fn chunked_body_over_the_cap_is_413() {
    within(async {
        let server = Server::start(options()).await;
        let small = raw_exchange(
            server.addr,
            b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              a\r\n0123456789\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&small), 200, "{small}");
        assert!(body_of(&small).starts_with("POST /x 10 "), "{small}");

        // One 2048-byte chunk (0x800) against a 1024-byte cap, no terminating chunk.
        let mut big = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2048));
        big.extend(b"\r\n");
        let reply = raw_exchange(server.addr, &big).await;
        assert_eq!(status_of(&reply), 413, "{reply}");
        server.shut_down().await.expect("serve");
    })
    .await;
}

#[tokio::test]
async fn stalled_body_is_408() {
    within(async {
        let server = Server::start(ServerOptions {
            body_read_timeout: Duration::from_millis(300),
            ..options()
        })
        .await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .expect("write");
        // Keep the stream open without sending the other 90 bytes.
        let reply = read_to_close(&mut stream).await;
        assert_eq!(status_of(&reply), 408, "{reply}");
        assert!(body_of(&reply).contains("300 ms"), "{reply}");
        server.shut_down().await.expect("serve");
    })
    .await;
}

#[tokio::test]
async fn compressed_request_body_is_415() {
    within(async {
        let server = Server::start(options()).await;
        let reply = raw_exchange(
            server.addr,
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd",
        )
        .await;
        assert_eq!(status_of(&reply), 415, "{reply}");
        assert!(body_of(&reply).contains("gzip"), "{reply}");
        server.shut_down().await.expect("serve");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_is_500_and_serving_goes_on() {
    within(async {
        let server = Server::start(options()).await;
        let (mut sender, _conn) =
            connect(TcpStream::connect(server.addr).await.expect("connect")).await;
        let panicked = send(&mut sender, Method::GET, "/panic", "").await;
        assert_eq!(
            panicked,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"internal error"}"#.to_owned()
            )
        );
        // The same connection is still usable...
        let (status, _) = send(&mut sender, Method::GET, "/after", "").await;
        assert_eq!(status, StatusCode::OK);
        // ...and so is the server, on a new one.
        let (mut fresh, _conn) =
            connect(TcpStream::connect(server.addr).await.expect("connect")).await;
        let (status, body) = send(&mut fresh, Method::GET, "/ok", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("GET /ok 0 "), "{body}");
        server.shut_down().await.expect("serve");
    })
    .await;
}

/// Polls the server's stats until `open` connections are being served.
async fn until_open(stats: &ServerStats, open: usize) {
    while stats.snapshot().open_connections != open {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_probes_use_the_reserve_and_the_rest_get_503() {
    within(async {
        let server = Server::start(ServerOptions {
            max_connections: 1,
            reserve_connections: 1,
            ..options()
        })
        .await;
        let (mut first, first_conn) =
            connect(TcpStream::connect(server.addr).await.expect("connect")).await;
        assert_eq!(
            send(&mut first, Method::GET, "/one", "").await.0,
            StatusCode::OK
        );

        // The only normal slot is taken: a body-less request is served on the reserve lane,
        // once (the server closes the connection after it, though the client did not ask).
        let probe = raw_exchange(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status_of(&probe), 200, "{probe}");
        assert!(body_of(&probe).starts_with("GET /healthz 0 "), "{probe}");
        until_open(&server.stats, 1).await;

        // A request with a body is refused there, unread, with Retry-After.
        let post = raw_exchange(
            server.addr,
            b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
        assert_eq!(status_of(&post), 503, "{post}");
        assert_eq!(header_of(&post, "retry-after"), Some("1"), "{post}");
        assert!(body_of(&post).contains("without a body"), "{post}");
        until_open(&server.stats, 1).await;

        // A silent client holds the reserve slot: the next connection is refused at once,
        // before it sends anything, instead of waiting in the backlog.
        let _silent = TcpStream::connect(server.addr).await.expect("connect");
        until_open(&server.stats, 2).await;
        let mut refused = TcpStream::connect(server.addr).await.expect("connect");
        let reply = read_to_close(&mut refused).await;
        assert_eq!(status_of(&reply), 503, "{reply}");
        assert_eq!(header_of(&reply, "retry-after"), Some("1"), "{reply}");
        assert!(body_of(&reply).contains("connection limit"), "{reply}");
        let stats = server.stats.snapshot();
        assert_eq!(stats.shed_connections_total, 1);
        assert_eq!(stats.reserve_lane_connections_total, 3);

        // Closing the first connection frees the normal slot for a keep-alive client again.
        drop(first);
        first_conn.abort();
        until_open(&server.stats, 1).await;
        let (mut again, _conn) =
            connect(TcpStream::connect(server.addr).await.expect("connect")).await;
        assert_eq!(
            send(&mut again, Method::GET, "/a", "").await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(&mut again, Method::GET, "/b", "").await.0,
            StatusCode::OK
        );
        server.shut_down().await.expect("serve");
    })
    .await;
}

// === graceful shutdown ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_flight_finish() {
    within(async {
        let server = Server::start(options()).await;
        let addr = server.addr;
        let started = server.started.clone();
        let (mut sender, _conn) = connect(TcpStream::connect(addr).await.expect("connect")).await;
        let in_flight =
            tokio::spawn(async move { send(&mut sender, Method::GET, "/slow", "").await });
        // Fire shutdown while the handler is busy with the request.
        started.notified().await;
        server.shut_down().await.expect("serve returns Ok");
        let (status, body) = in_flight.await.expect("client task");
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("GET /slow 0 "), "{body}");
        // The listener is gone once serve has returned.
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still accepting after shutdown"
        );
    })
    .await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_connections() {
    within(async {
        // A grace far longer than the test timeout: returning at all proves idle and
        // not-yet-talking connections are closed rather than waited for.
        let server = Server::start(ServerOptions {
            shutdown_grace: Duration::from_secs(60),
            ..options()
        })
        .await;
        let (mut idle, _conn) =
            connect(TcpStream::connect(server.addr).await.expect("connect")).await;
        assert_eq!(
            send(&mut idle, Method::GET, "/", "").await.0,
            StatusCode::OK
        );
        let _silent = TcpStream::connect(server.addr).await.expect("connect");
        // Let the server accept the silent connection before shutting down.
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.shut_down().await.expect("serve");
    })
    .await;
}

#[tokio::test]
async fn shutdown_grace_bounds_the_wait_for_stuck_requests() {
    within(async {
        let server = Server::start(ServerOptions {
            shutdown_grace: Duration::from_millis(300),
            body_read_timeout: Duration::from_secs(60),
            ..options()
        })
        .await;
        let mut stuck = TcpStream::connect(server.addr).await.expect("connect");
        stuck
            .write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n01234")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The body would take 60 s; serve must give up after the 300 ms grace.
        server.shut_down().await.expect("serve");
        let mut rest = Vec::new();
        // The aborted connection is closed without an answer.
        let read = stuck.read_to_end(&mut rest).await;
        assert!(
            read.is_err() || rest.is_empty(),
            "unexpected reply {rest:?}"
        );
    })
    .await;
}

// === TLS ===

fn tls_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tls")
        .join(name)
}

fn tls_files() -> TlsFiles {
    TlsFiles {
        cert: tls_file("cert.pem"),
        key: tls_file("key.pem"),
    }
}

fn tls_connector() -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(tls_file("cert.pem")).expect("cert file") {
        roots.add(cert.expect("cert")).expect("trust test cert");
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn tls_round_trip_with_a_trusted_self_signed_cert() {
    within(async {
        let server = Server::start(ServerOptions {
            tls: Some(tls_files()),
            ..options()
        })
        .await;
        // A plain-HTTP client only loses its own connection.
        let plain = raw_exchange(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");

        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = tls_connector()
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (mut sender, _conn) = connect(tls).await;
        let (status, body) = send(&mut sender, Method::POST, "/filter", "{}").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("POST /filter 2 "), "{body}");
        server.shut_down().await.expect("serve");
    })
    .await;
}

async fn serve_result(tls: TlsFiles) -> Result<(), Error> {
    let server = Server::start(ServerOptions {
        tls: Some(tls),
        ..options()
    })
    .await;
    // A loading error returns at once, before shutdown is ever fired.
    let Server {
        stop: _stop, task, ..
    } = server;
    task.await.expect("serve task panicked")
}

#[tokio::test]
async fn missing_key_file_is_a_clear_startup_error() {
    within(async {
        let missing = tls_file("missing-key.pem");
        let err = serve_result(TlsFiles {
            key: missing.clone(),
            ..tls_files()
        })
        .await
        .expect_err("serve must fail without a key");
        assert_eq!(err.code(), "tls_key");
        assert!(
            matches!(&err, Error::TlsKey { path, .. } if *path == missing),
            "{err:?}"
        );
        assert!(err.to_string().contains("missing-key.pem"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn wrong_or_missing_tls_files_are_startup_errors() {
    within(async {
        let no_key = serve_result(TlsFiles {
            key: tls_file("cert.pem"),
            ..tls_files()
        })
        .await
        .expect_err("a certificate is not a key");
        assert_eq!(no_key.code(), "tls_key", "{no_key}");
        assert!(matches!(no_key, Error::TlsNoKey { .. }), "{no_key:?}");
        assert!(no_key.to_string().contains("cert.pem"), "{no_key}");

        let not_a_cert = serve_result(TlsFiles {
            cert: tls_file("key.pem"),
            ..tls_files()
        })
        .await
        .expect_err("a key is not a certificate");
        assert!(
            matches!(not_a_cert, Error::TlsNoCert { .. }),
            "{not_a_cert:?}"
        );
        assert_eq!(not_a_cert.code(), "tls_cert");

        let no_cert = serve_result(TlsFiles {
            cert: tls_file("missing-cert.pem"),
            ..tls_files()
        })
        .await
        .expect_err("serve must fail without a certificate");
        assert_eq!(no_cert.code(), "tls_cert", "{no_cert}");
        assert!(
            no_cert.to_string().contains("missing-cert.pem"),
            "{no_cert}"
        );
    })
    .await;
}

// === signals ===

#[tokio::test]
async fn shutdown_signal_resolves_on_sigterm() {
    within(async {
        init_tracing();
        let mut signal = std::pin::pin!(rota::http::shutdown_signal());
        // The first poll installs the handlers; only then is SIGTERM safe to send to ourselves
        // (before that its default action would kill the whole test binary).
        assert!(futures::poll!(signal.as_mut()).is_pending());
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", std::process::id())])
            .status()
            .expect("run kill");
        assert!(status.success());
        signal.await;
    })
    .await;
}
