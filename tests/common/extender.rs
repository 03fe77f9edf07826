//! The extender served in process on an ephemeral 127.0.0.1 port, as `--cluster none` runs it,
//! with a raw HTTP/1.1 client that reports status and body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rota::config::ValidConfig;
use rota::extender::{Context, Extender};
use rota::http::{self, ServerOptions};
use rota::metrics::ClusterCollector;
use rota::read::view::{ClusterView, ViewSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running extender; `stop` shuts it down gracefully.
pub struct ExtenderServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its cluster view (learned from `nodeCacheCapable: false` requests).
    pub view: Arc<ClusterView>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ExtenderServer {
    /// Starts one with the default config and the given transport options.
    pub async fn start_with(options: ServerOptions) -> Self {
        let config = ValidConfig::default();
        let view = Arc::new(ClusterView::new(ViewSettings::from_config(&config)));
        view.set_synced(true);
        let registry = prometheus::Registry::new();
        ClusterCollector::register(&registry, view.clone()).unwrap();
        let ctx = Context {
            view: view.clone(),
            config: Arc::new(config),
            learn_nodes: true,
            held_events: None,
            rotation_marks: None,
        };
        let extender = Arc::new(Extender::new(ctx, registry).unwrap());
        // Bind first and hand the bound listener over: no pick-then-bind race.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            http::serve(listener, extender, options, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            view,
            stop: Some(tx),
            task,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One POST with `Connection: close`, answered as (status, body).
    pub async fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        self.raw("POST", path, &[], body).await
    }

    /// One request with `Connection: close`, answered as (status, body).
    pub async fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        self.raw(method, path, &[], body).await
    }

    /// One request with extra header lines; status 0 when no answer could be read.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &[u8],
    ) -> (u16, String) {
        let exchange = async {
            let mut stream = TcpStream::connect(self.addr).await.unwrap();
            let mut head = format!(
                "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
                body.len()
            );
            for h in headers {
                head.push_str(h);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            // The server may answer (413) before reading the whole body; ignore a reset here.
            let _ = stream.write_all(body).await;
            let mut out = Vec::new();
            let _ = stream.read_to_end(&mut out).await;
            out
        };
        let out = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("answer in time");
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Graceful shutdown; panics if the server does not stop within 15 s.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}
