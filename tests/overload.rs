//! Overload tests of the HTTP transport (issue #8): thousands of open connections, clients at a
//! byte per second, many bodies at the size cap, and an exhausted body budget.
//!
//! Real sockets on 127.0.0.1 against the real `rota::http::serve_with_stats`, with a small
//! handler (`/healthz` answers `ok`, `/slow` holds its body for a while, anything else echoes
//! the body length) and shortened timeouts so every test runs in seconds. Each test ends by
//! checking that the server recovers: no connection, no reserved budget left, normal service.
//! RSS figures are printed (`--nocapture`) as evidence, never asserted.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use rota::http::{
    serve_with_stats, Error, Handler, Request, Response, ServerOptions, ServerStats, StatsSnapshot,
    TEXT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use common::raw_http::{body_of, header_of, status_code};

mod common;

/// Upper bound for any single test; far above what a healthy run needs.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a `/healthz` answer may take under load before the test fails. Generous on
/// purpose: the point is that it answers at all, not how fast.
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(5);

// === harness ===

/// `/healthz` → `ok`; `/slow` → sleeps `slow` (holding its body), then echoes; else echoes
/// `len N` for an N-byte body.
struct Probe {
    slow: Duration,
}

impl Handler for Probe {
    fn handle(&self, request: Request) -> Response {
        match request.path.as_str() {
            "/healthz" => return Response::with_type(StatusCode::OK, TEXT, "ok"),
            "/slow" => std::thread::sleep(self.slow),
            _ => {}
        }
        Response::with_type(StatusCode::OK, TEXT, format!("len {}", request.body.len()))
    }
}

struct Server {
    addr: SocketAddr,
    stats: ServerStats,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), Error>>,
}

impl Server {
    async fn start(options: ServerOptions, slow: Duration) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("rota=info")
            .try_init();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let stats = ServerStats::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let handler = Arc::new(Probe { slow });
        let task = tokio::spawn(serve_with_stats(
            listener,
            handler,
            options,
            stats.clone(),
            shutdown,
        ));
        Self {
            addr,
            stats,
            stop,
            task,
        }
    }

    /// Once every client is gone: no connection and no budget is left held, and the server
    /// still serves a body and a probe. Then shuts it down.
    async fn assert_recovers(self) {
        until(&self.stats, |s| {
            s.open_connections == 0 && s.reserved_body_bytes == 0
        })
        .await;
        let reply = post(self.addr, "/after", &Bytes::from(vec![b'x'; 4096])).await;
        assert_eq!(status_of(&reply), 200, "{reply}");
        assert_eq!(body_of(&reply), "len 4096", "{reply}");
        assert_eq!(healthz(self.addr).await, 200);
        let _ = self.stop.send(());
        self.task
            .await
            .expect("serve task panicked")
            .expect("serve");
    }
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("test timed out")
}

/// Polls the stats until `done` holds (the test timeout bounds the wait).
async fn until(stats: &ServerStats, done: impl Fn(&StatsSnapshot) -> bool) {
    while !done(&stats.snapshot()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `bytes` and reads until the server closes the connection (a reset ends it too,
/// keeping whatever arrived before).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    exchange_parts(addr, vec![Bytes::copy_from_slice(bytes)]).await
}

/// [`exchange`] for a request in parts, written without copying them (big bodies are shared).
async fn exchange_parts(addr: SocketAddr, parts: Vec<Bytes>) -> String {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    // Write and read at once: a server that answers before reading the whole body must not
    // leave the client stuck in `write_all`.
    let writer = tokio::spawn(async move {
        for part in parts {
            if write.write_all(&part).await.is_err() {
                break;
            }
        }
        write
    });
    let mut reply = Vec::new();
    let _ = read.read_to_end(&mut reply).await;
    writer.abort();
    String::from_utf8_lossy(&reply).into_owned()
}

async fn healthz(addr: SocketAddr) -> u16 {
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let reply = tokio::time::timeout(HEALTHZ_TIMEOUT, exchange(addr, request))
        .await
        .expect("/healthz did not answer in time");
    status_of(&reply)
}

async fn post(addr: SocketAddr, path: &str, body: &Bytes) -> String {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    exchange_parts(addr, vec![Bytes::from(head), body.clone()]).await
}

/// The status code of a raw response; 0 when nothing (or no status line) came back.
fn status_of(reply: &str) -> u16 {
    status_code(reply).unwrap_or(0)
}

/// Sends `now` at once, then `slowly` a byte per second, until the server closes. Returns the
/// reply and how many of the slow bytes were sent.
async fn trickle(addr: SocketAddr, now: &[u8], slowly: &'static [u8]) -> (String, usize) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    write.write_all(now).await.expect("write");
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for byte in slowly {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if write.write_all(&[*byte]).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            // Keep the write half open: only the server may end this exchange.
            std::future::pending::<()>().await;
        })
    };
    let mut reply = Vec::new();
    let _ = read.read_to_end(&mut reply).await;
    writer.abort();
    (
        String::from_utf8_lossy(&reply).into_owned(),
        sent.load(Ordering::Relaxed),
    )
}

/// The soft `Max open files` limit of this process, from `/proc/self/limits`.
fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `VmRSS` and `VmHWM` of this process (client and server together), for the log.
fn memory_line() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|line| line.starts_with("VmRSS") || line.starts_with("VmHWM"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_amid_2000_open_connections() {
    const CLIENTS: usize = 2000;
    match open_files_soft_limit() {
        Some(limit) if limit >= 4500 => {}
        other => {
            eprintln!(
                "SKIPPED healthz_answers_amid_2000_open_connections: needs a soft RLIMIT_NOFILE \
                 of at least 4500 (client and server ends in one process), found {other:?}; \
                 raise it with `ulimit -n 8192`."
            );
            return;
        }
    }
    within(async {
        let server = Server::start(
            ServerOptions {
                header_read_timeout: Duration::from_secs(20),
                body_read_timeout: Duration::from_secs(20),
                ..ServerOptions::default()
            },
            Duration::ZERO,
        )
        .await;
        let mut clients = Vec::with_capacity(CLIENTS);
        let mut half_bodies = 0;
        for i in 0..CLIENTS {
            let mut stream = TcpStream::connect(server.addr).await.expect("connect");
            match i % 3 {
                0 => {} // idle: connected, nothing sent
                1 => stream
                    .write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Half: ")
                    .await
                    .expect("write half a head"),
                _ => {
                    let mut half =
                        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".to_vec();
                    half.extend_from_slice(&[b'b'; 500]);
                    stream.write_all(&half).await.expect("write half a body");
                    half_bodies += 1;
                }
            }
            clients.push(stream);
        }
        // Every connection is being served, and every half-sent body holds its budget
        // (1,000 bytes counts as one whole KiB).
        until(&server.stats, |s| {
            s.open_connections == CLIENTS && s.reserved_body_bytes == half_bodies * 1024
        })
        .await;
        eprintln!("{CLIENTS} connections open: {}", memory_line());

        assert_eq!(healthz(server.addr).await, 200);
        let stats = server.stats.snapshot();
        assert!(
            stats.peak_open_connections > CLIENTS,
            "the probe was served alongside the others: {stats:?}"
        );
        assert_eq!(stats.shed_connections_total, 0, "{stats:?}");

        drop(clients);
        server.assert_recovers().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_and_do_not_delay_others() {
    within(async {
        let server = Server::start(
            ServerOptions {
                header_read_timeout: Duration::from_secs(1),
                body_read_timeout: Duration::from_secs(2),
                ..ServerOptions::default()
            },
            Duration::ZERO,
        )
        .await;
        let addr = server.addr;
        // Connected, never says anything: closed at the header timeout, without an answer.
        let silent = tokio::spawn(exchange(addr, b""));
        // One request, then idle on keep-alive: the header timeout closes that too.
        let idle = tokio::spawn(exchange(addr, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"));
        // A head at a byte per second: the timeout covers the whole head, not each byte.
        let slow_head = tokio::spawn(trickle(
            addr,
            b"GET /x HTTP/1.1\r\n",
            b"Host: x\r\nX-Padding: 0123456789\r\n\r\n",
        ));
        // A body at a byte per second: 408 at the body timeout.
        let slow_body = tokio::spawn(trickle(
            addr,
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n",
            b"012345678901234567890123456789",
        ));
        // Meanwhile others are served as usual.
        for _ in 0..10 {
            assert_eq!(healthz(addr).await, 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        assert_eq!(
            silent.await.expect("task"),
            "",
            "silent client got an answer"
        );
        let idle = idle.await.expect("task");
        assert_eq!(status_of(&idle), 200, "{idle}");
        assert_eq!(body_of(&idle), "len 0", "one answer, then closed: {idle}");
        let (reply, sent) = slow_head.await.expect("task");
        assert_eq!(reply, "", "a head that never completed got an answer");
        assert!(
            sent < 10,
            "the slow head was cut late or not at all ({sent} bytes)"
        );
        let (reply, sent) = slow_body.await.expect("task");
        assert_eq!(status_of(&reply), 408, "{reply}");
        assert!(body_of(&reply).contains("2000 ms"), "{reply}");
        assert!(sent < 30, "the whole slow body got through ({sent} bytes)");
        server.assert_recovers().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_at_the_size_cap_stay_within_the_budget() {
    const SENDERS: usize = 20;
    const CAP: usize = 8 << 20;
    const BUDGET: usize = 32 << 20;
    within(async {
        let server = Server::start(
            ServerOptions {
                max_body_bytes: CAP,
                max_inflight_body_bytes: BUDGET,
                body_read_timeout: Duration::from_secs(10),
                ..ServerOptions::default()
            },
            Duration::ZERO,
        )
        .await;
        let addr = server.addr;
        eprintln!("before the senders: {}", memory_line());
        let body = Bytes::from(vec![b'z'; CAP]);
        let senders: Vec<_> = (0..SENDERS)
            .map(|_| {
                let body = body.clone();
                tokio::spawn(async move { post(addr, "/echo", &body).await })
            })
            .collect();
        // A prober that checks /healthz every 50 ms until the senders are done.
        let done = Arc::new(tokio::sync::Notify::new());
        let prober = {
            let done = done.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                loop {
                    statuses.push(healthz(addr).await);
                    tokio::select! {
                        () = done.notified() => return statuses,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            })
        };

        let (mut served, mut refused) = (0, 0);
        for sender in senders {
            let reply = sender.await.expect("sender task");
            match status_of(&reply) {
                200 => {
                    assert_eq!(body_of(&reply), format!("len {CAP}"));
                    served += 1;
                }
                503 => {
                    assert_eq!(header_of(&reply, "retry-after"), Some("1"), "{reply}");
                    assert!(body_of(&reply).starts_with(r#"{"error":"#), "{reply}");
                    refused += 1;
                }
                _ => panic!("a sender got no proper answer: {reply:?}"),
            }
        }
        done.notify_one();
        let probes = prober.await.expect("prober task");
        eprintln!(
            "after {SENDERS} bodies of {CAP} bytes ({served} served, {refused} refused): {}",
            memory_line()
        );

        let stats = server.stats.snapshot();
        assert_eq!(stats.body_budget_bytes, BUDGET);
        assert!(
            stats.peak_reserved_body_bytes <= BUDGET,
            "reserved over budget: {stats:?}"
        );
        assert!(
            stats.peak_reserved_body_bytes > CAP,
            "never two at once: {stats:?}"
        );
        assert!(
            stats.budget_waits_total > 0,
            "nobody had to wait: {stats:?}"
        );
        assert_eq!(stats.budget_rejections_total, refused, "{stats:?}");
        assert!(served > 0, "{stats:?}");
        assert!(
            !probes.is_empty() && probes.iter().all(|&s| s == 200),
            "{probes:?}"
        );
        server.assert_recovers().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhausted_budget_is_503_with_retry_after_and_probes_never_wait() {
    const CAP: usize = 64 << 10;
    within(async {
        let server = Server::start(
            ServerOptions {
                max_body_bytes: CAP,
                max_inflight_body_bytes: CAP,
                body_read_timeout: Duration::from_millis(500),
                ..ServerOptions::default()
            },
            // Far past the waiter's 500 ms: the holder cannot finish first on a busy machine.
            Duration::from_secs(3),
        )
        .await;
        let addr = server.addr;
        // The holder's body takes the whole budget and keeps it while its handler runs.
        let holder =
            tokio::spawn(async move { post(addr, "/slow", &Bytes::from(vec![b'h'; CAP])).await });
        until(&server.stats, |s| s.reserved_body_bytes == CAP).await;

        // A small body has to wait, and gets 503 when its 500 ms are up.
        let refused = post(addr, "/x", &Bytes::from_static(b"0123456789")).await;
        assert_eq!(status_of(&refused), 503, "{refused}");
        assert_eq!(header_of(&refused, "retry-after"), Some("1"), "{refused}");
        assert_eq!(
            header_of(&refused, "connection"),
            Some("close"),
            "{refused}"
        );
        let error: serde_json::Value =
            serde_json::from_str(body_of(&refused)).expect("one-line JSON error");
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.contains("overloaded")),
            "{error}"
        );

        // A probe needs no budget: answered while the holder still has all of it.
        assert_eq!(healthz(addr).await, 200);
        assert_eq!(server.stats.snapshot().reserved_body_bytes, CAP);

        let held = holder.await.expect("holder task");
        assert_eq!(body_of(&held), format!("len {CAP}"), "{held}");
        let stats = server.stats.snapshot();
        assert_eq!(stats.budget_rejections_total, 1, "{stats:?}");
        assert_eq!(stats.peak_reserved_body_bytes, CAP, "{stats:?}");
        server.assert_recovers().await;
    })
    .await;
}
