//! The agent service: a sampler task that keeps the newest graded [`NodeSample`], and the HTTP
//! handler that serves it (`/v1/telemetry`, `/metrics`, `/healthz`).
//!
//! Invariants: the sampler is the only writer of the newest sample and of the metrics; the
//! source runs on a blocking thread, one sample at a time, and a panicking source costs one
//! sample, not the agent. XID history (what keeps a GPU unhealthy after its XID) lives here,
//! so every source behaves the same. Handlers never block on the sampler.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::time::{Instant, MissedTickBehavior};

use super::health::grade_sample;
use super::metrics::AgentMetrics;
use super::snapshot::NodeSample;
use super::source::GpuSource;
use crate::config::TelemetryConfig;
use crate::http::{self, Handler, Request, Response, ServerOptions};

/// Path of the JSON snapshot.
pub const TELEMETRY_PATH: &str = "/v1/telemetry";

/// Problems starting or running the agent service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metrics could not be registered (a duplicate name: a programming error).
    #[error("cannot register agent metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP server failed to start.
    #[error("agent HTTP server failed: {0}")]
    Http(#[from] http::Error),
}

impl Error {
    /// A short stable code for logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Metrics(_) => "metrics",
            Error::Http(_) => "http",
        }
    }
}

/// How the agent samples and serves.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Stamped into every sample and used as the `node` metric label.
    pub node_name: String,
    /// Time between samples; the first sample is taken at once. The CLI default is 5 s, the
    /// extender's default poll interval.
    pub interval: Duration,
    /// Health thresholds.
    pub thresholds: TelemetryConfig,
    /// HTTP transport options.
    pub server: ServerOptions,
}

/// What the sampler writes and the handler reads.
pub struct AgentState {
    latest: RwLock<Option<Arc<NodeSample>>>,
    metrics: AgentMetrics,
}

impl AgentState {
    /// Empty state: no sample yet, fresh metrics.
    pub fn new() -> Result<Self, Error> {
        Ok(Self {
            latest: RwLock::new(None),
            metrics: AgentMetrics::new()?,
        })
    }

    /// The newest sample, if one was taken.
    pub fn latest(&self) -> Option<Arc<NodeSample>> {
        self.latest.read().clone()
    }

    /// Publishes a finished (stamped and graded) sample and records its metrics.
    pub fn publish(&self, sample: NodeSample, duration_seconds: f64) {
        self.metrics.record(&sample, duration_seconds);
        *self.latest.write() = Some(Arc::new(sample));
    }
}

/// Distinct XID codes and counts per GPU since the agent started.
#[derive(Debug, Default)]
pub struct XidHistory {
    by_gpu: HashMap<String, (BTreeSet<u32>, u64)>,
}

impl XidHistory {
    /// Adds the sample's new XIDs to the history and writes each GPU's history into it.
    pub fn apply(&mut self, sample: &mut NodeSample) {
        for gpu in &mut sample.gpus {
            // The UUID survives re-enumeration; the index is the fallback when it is unreadable.
            let key = if gpu.uuid.is_empty() {
                format!("index:{}", gpu.index)
            } else {
                gpu.uuid.clone()
            };
            let (seen, total) = self.by_gpu.entry(key).or_default();
            if let Some(recent) = &gpu.xid_errors {
                seen.extend(recent);
                *total += recent.len() as u64;
            }
            gpu.xid_errors_seen = seen.iter().copied().collect();
            gpu.xid_errors_total = *total;
        }
    }
}

/// Stamps, adds XID history and grades a raw sample from a source.
pub fn finish(
    sample: &mut NodeSample,
    node_name: &str,
    now_unix_seconds: f64,
    history: &mut XidHistory,
    thresholds: &TelemetryConfig,
) {
    sample.node_name = node_name.to_string();
    sample.sampled_at_unix_seconds = now_unix_seconds;
    history.apply(sample);
    grade_sample(sample, thresholds);
}

/// The agent's endpoints.
pub struct AgentHandler {
    state: Arc<AgentState>,
}

impl AgentHandler {
    /// A handler reading the given state.
    pub fn new(state: Arc<AgentState>) -> Self {
        Self { state }
    }

    fn telemetry(&self) -> Response {
        let Some(sample) = self.state.latest() else {
            let why = "no GPU sample taken yet";
            return Response::error(StatusCode::SERVICE_UNAVAILABLE, why);
        };
        match serde_json::to_vec(&*sample) {
            Ok(body) => Response::json(StatusCode::OK, body),
            Err(err) => Response::error(StatusCode::INTERNAL_SERVER_ERROR, err),
        }
    }

    fn metrics(&self) -> Response {
        match self.state.metrics.encode() {
            Ok(text) => Response::with_type(StatusCode::OK, http::PROMETHEUS_TEXT, text),
            Err(err) => Response::error(StatusCode::INTERNAL_SERVER_ERROR, err),
        }
    }
}

impl Handler for AgentHandler {
    fn handle(&self, request: Request) -> Response {
        let route: fn(&Self) -> Response = match request.path.as_str() {
            TELEMETRY_PATH => Self::telemetry,
            "/metrics" => Self::metrics,
            "/healthz" => |_| Response::with_type(StatusCode::OK, http::TEXT, "ok"),
            _ => return Response::error(StatusCode::NOT_FOUND, "no such endpoint"),
        };
        if request.method != Method::GET {
            return Response::error(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed");
        }
        route(self)
    }
}

/// Serves the agent on an already bound listener until `shutdown` resolves: samples `source`
/// every `options.interval` (the first at once) and answers HTTP. The sampler stops with the
/// server.
pub async fn serve_agent(
    listener: TcpListener,
    source: Box<dyn GpuSource>,
    options: AgentOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let state = Arc::new(AgentState::new()?);
    let sampler = tokio::spawn(sample_loop(state.clone(), source, options.clone()));
    let handler = Arc::new(AgentHandler::new(state));
    let served = http::serve(listener, handler, options.server, shutdown).await;
    sampler.abort();
    Ok(served?)
}

/// Samples forever at `options.interval`; slow samples delay the next tick rather than
/// bunching up.
async fn sample_loop(
    state: Arc<AgentState>,
    mut source: Box<dyn GpuSource>,
    options: AgentOptions,
) {
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut history = XidHistory::default();
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let (back, raw) = match sample_blocking(source).await {
            Ok(done) => done,
            Err(err) => {
                tracing::error!(error = %err, "GPU sampler thread failed; sampling stops.");
                return;
            }
        };
        source = back;
        let Some(mut sample) = raw else {
            tracing::error!("GPU source panicked; keeping the previous sample.");
            continue;
        };
        let now = crate::clock::now_seconds();
        finish(
            &mut sample,
            &options.node_name,
            now,
            &mut history,
            &options.thresholds,
        );
        state.publish(sample, started.elapsed().as_secs_f64());
    }
}

/// Runs one sample on a blocking thread, handing the source back even when it panics.
async fn sample_blocking(
    mut source: Box<dyn GpuSource>,
) -> Result<(Box<dyn GpuSource>, Option<NodeSample>), tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let sample = catch_unwind(AssertUnwindSafe(|| source.sample())).ok();
        (source, sample)
    })
    .await
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use hyper::HeaderMap;

    use super::*;
    use crate::agent::health::HealthState;
    use crate::agent::snapshot::GpuSample;

    fn get(handler: &AgentHandler, method: Method, path: &str) -> Response {
        handler.handle(Request {
            method,
            path: path.into(),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            remote: None,
        })
    }

    fn raw_sample(xids: Vec<u32>) -> NodeSample {
        let gpu = GpuSample {
            index: 0,
            uuid: "GPU-a".into(),
            name: Some("NVIDIA H100".into()),
            temperature_celsius: Some(40.0),
            xid_errors: Some(xids),
            ..GpuSample::default()
        };
        NodeSample {
            gpus: vec![gpu],
            ..NodeSample::new()
        }
    }

    fn finished(history: &mut XidHistory, xids: Vec<u32>) -> NodeSample {
        let mut s = raw_sample(xids);
        finish(
            &mut s,
            "node-a",
            1_700_000_000.0,
            history,
            &TelemetryConfig::default(),
        );
        s
    }

    #[test]
    fn telemetry_is_503_until_the_first_sample_then_round_trips() {
        let state = Arc::new(AgentState::new().unwrap());
        let handler = AgentHandler::new(state.clone());
        let before = get(&handler, Method::GET, TELEMETRY_PATH);
        assert_eq!(before.status, StatusCode::SERVICE_UNAVAILABLE);
        let error: serde_json::Value = serde_json::from_slice(&before.body).unwrap();
        assert!(error["error"].as_str().unwrap().contains("no GPU sample"));

        let sample = finished(&mut XidHistory::default(), vec![]);
        state.publish(sample.clone(), 0.002);
        let after = get(&handler, Method::GET, TELEMETRY_PATH);
        assert_eq!(after.status, StatusCode::OK);
        assert_eq!(after.content_type, http::JSON);
        let decoded: NodeSample = serde_json::from_slice(&after.body).unwrap();
        assert_eq!(decoded, sample);
        let json: serde_json::Value = serde_json::from_slice(&after.body).unwrap();
        assert_eq!(json["apiVersion"], "rota.io/v1alpha1");
        assert_eq!(json["kind"], "GpuTelemetry");
        assert_eq!(json["nodeName"], "node-a");
        assert_eq!(json["gpus"][0]["health"]["state"], "healthy");
    }

    #[test]
    fn other_routes_and_methods() {
        let handler = AgentHandler::new(Arc::new(AgentState::new().unwrap()));
        let ok = get(&handler, Method::GET, "/healthz");
        assert_eq!((ok.status, ok.body.as_ref()), (StatusCode::OK, &b"ok"[..]));
        let metrics = get(&handler, Method::GET, "/metrics");
        assert_eq!(metrics.status, StatusCode::OK);
        assert_eq!(metrics.content_type, http::PROMETHEUS_TEXT);
        let missing = get(&handler, Method::GET, "/v2/telemetry");
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        let post = get(&handler, Method::POST, TELEMETRY_PATH);
        assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn metrics_endpoint_shows_graded_gpus() {
        let state = Arc::new(AgentState::new().unwrap());
        state.publish(finished(&mut XidHistory::default(), vec![79]), 0.002);
        let text = get(&AgentHandler::new(state), Method::GET, "/metrics").body;
        let text = String::from_utf8(text.to_vec()).unwrap();
        let labels = r#"{gpu="0",model="NVIDIA H100",node="node-a",uuid="GPU-a"}"#;
        assert!(
            text.contains(&format!("rota_gpu_health{labels} 2")),
            "{text}"
        );
        assert!(
            text.contains(&format!("rota_gpu_xid_errors_total{labels} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("rota_gpu_temperature_celsius{labels} 40")),
            "{text}"
        );
    }

    #[test]
    fn finish_stamps_and_keeps_fatal_xids_sticky() {
        let mut history = XidHistory::default();
        let first = finished(&mut history, vec![79, 13]);
        assert_eq!(first.node_name, "node-a");
        assert_eq!(first.sampled_at_unix_seconds, 1_700_000_000.0);
        assert_eq!(first.gpus[0].health.state, HealthState::Unhealthy);
        let later = finished(&mut history, vec![13]);
        assert_eq!(later.gpus[0].xid_errors_seen, vec![13, 79]);
        assert_eq!(later.gpus[0].xid_errors_total, 3);
        assert_eq!(later.gpus[0].health.state, HealthState::Unhealthy);
        assert_eq!(later.health.state, HealthState::Unhealthy);
        // A fresh agent (new history) forgets, as after a node reboot.
        let fresh = finished(&mut XidHistory::default(), vec![]);
        assert_eq!(fresh.gpus[0].health.state, HealthState::Healthy);
    }

    /// A source that panics on its first call, then works.
    struct Flaky(u32);

    impl GpuSource for Flaky {
        fn sample(&mut self) -> NodeSample {
            self.0 += 1;
            assert!(self.0 > 1, "first sample fails");
            raw_sample(vec![])
        }
    }

    #[tokio::test]
    async fn a_panicking_source_costs_one_sample() {
        let (source, first) = sample_blocking(Box::new(Flaky(0))).await.unwrap();
        assert!(first.is_none());
        let (_, second) = sample_blocking(source).await.unwrap();
        assert_eq!(second.unwrap().gpus.len(), 1);
    }
}
