//! The telemetry collector: polls every known reporter each interval and stores a per-node
//! summary on the cluster view.
//!
//! ```text
//!   AgentDirectory.targets() ─▶ GET (≤ max_in_flight at once, timeout each) ─▶ validate ─▶ grade
//!        ─▶ NodeTelemetry per node ─▶ ClusterView::set_telemetry_many (one lock, one bump per round)
//! ```
//!
//! Invariants: a failed poll never erases earlier data and never makes a node look healthy: the
//! earlier summary is kept with the error and turns unknown once stale (decided at decision
//! time from `now`); a node whose reporter never answered properly is stored as
//! "never reported", which reads as unknown. Answers are trusted only after validation: the
//! right `apiVersion`/`kind`, the node name the reporter was found on, and a sample time not in
//! the future; GPUs are re-graded with the extender's own thresholds. One slow or dead reporter
//! costs one in-flight slot for at most the timeout, never the round.
//! Must not: decide placement (core does), or read the cluster beyond the view.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::agents::{AgentDirectory, Target};
use super::dcgm;
use crate::config::TelemetryConfig;
use crate::core::health::{grade_sample, MAX_CLOCK_AHEAD_SECONDS};
use crate::core::telemetry::{NodeSample, NodeTelemetry, TelemetrySource, API_VERSION, KIND};
use crate::metrics::TelemetryMetrics;
use crate::read::view::ClusterView;

/// Why one poll failed. Every variant leaves the node's earlier data in place (to go stale).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PollError {
    /// No complete answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection or request failed (refused, reset, unreachable).
    #[error("request failed: {0}")]
    Connect(String),
    /// The reporter answered with a non-200 status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body exceeded the size cap.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// The body is not a telemetry document.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// A document of another version or kind.
    #[error("unexpected document {api_version}/{kind}")]
    WrongKind {
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
    },
    /// The reporter claims to be another node: its data is discarded.
    #[error("the reporter claims to be node {claimed:?}")]
    WrongNode {
        /// The node name in the answer.
        claimed: String,
    },
    /// The sample is stamped in the future: the reporter's clock is wrong, so is its data.
    #[error("sample stamped {ahead_seconds:.0} s in the future")]
    FutureClock {
        /// How far ahead of the extender's clock.
        ahead_seconds: f64,
    },
    /// A dcgm-exporter page without usable GPU series.
    #[error("dcgm-exporter page unusable: {0}")]
    Dcgm(#[from] dcgm::Error),
}

impl PollError {
    /// A short, bounded label for `rota_telemetry_polls_total{result}` and logs.
    pub fn code(&self) -> &'static str {
        match self {
            PollError::Timeout(_) => "timeout",
            PollError::Connect(_) => "connect",
            PollError::Status(_) => "http_status",
            PollError::TooLarge(_) => "too_large",
            PollError::Malformed(_) | PollError::Dcgm(_) => "malformed",
            PollError::WrongKind { .. } => "wrong_kind",
            PollError::WrongNode { .. } => "wrong_node",
            PollError::FutureClock { .. } => "future_clock",
        }
    }

    /// The reporter may answer properly next round (true for transport trouble; a lying or
    /// wrong reporter keeps lying until someone fixes it).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PollError::Timeout(_) | PollError::Connect(_) | PollError::Status(_)
        )
    }
}

/// Every value of the `result` label: `ok` plus each [`PollError::code`].
pub const POLL_RESULTS: [&str; 9] = [
    "ok",
    "timeout",
    "connect",
    "http_status",
    "too_large",
    "malformed",
    "wrong_kind",
    "wrong_node",
    "future_clock",
];

/// How the collector polls.
#[derive(Clone, Debug)]
pub struct CollectorOptions {
    /// Time between rounds (`telemetry.pollIntervalSeconds`, default 5 s).
    pub interval: Duration,
    /// Limit for one poll, connect included (`telemetry.pollTimeoutSeconds`, default 2 s,
    /// never above the interval).
    pub timeout: Duration,
    /// Polls in flight at once. Default 64: a round of 1,000 local agents then takes a few
    /// milliseconds of real work while a few dead ones cannot hold up the rest.
    pub max_in_flight: usize,
    /// Largest answer accepted. Default 4 MiB (an 8-GPU agent answer is a few KiB, a
    /// dcgm-exporter page tens of KiB).
    pub max_body_bytes: usize,
    /// Grading thresholds (the extender's, not the agent's).
    pub thresholds: TelemetryConfig,
}

impl CollectorOptions {
    /// The options a config asks for.
    pub fn from_config(config: &TelemetryConfig) -> Self {
        let interval = Duration::from_secs(config.poll_interval_seconds.max(1));
        let timeout = Duration::from_secs(config.poll_timeout_seconds.max(1)).min(interval);
        Self {
            interval,
            timeout,
            max_in_flight: 64,
            max_body_bytes: 4 << 20,
            thresholds: config.clone(),
        }
    }
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Reporters polled.
    pub polled: usize,
    /// Polls that produced fresh data.
    pub ok: usize,
    /// Polls that failed (see the logs and `rota_telemetry_polls_total`).
    pub failed: usize,
    /// Wall time of the round.
    pub elapsed: Duration,
}

/// Polls reporters and keeps the newest summary per node.
pub struct Collector {
    client: Client<HttpConnector, Empty<Bytes>>,
    view: Arc<ClusterView>,
    directory: Arc<AgentDirectory>,
    options: CollectorOptions,
    metrics: Option<TelemetryMetrics>,
    latest: HashMap<String, Arc<NodeTelemetry>>,
}

impl Collector {
    /// A collector writing into `view`; `metrics` is optional so benches and tests can skip it.
    pub fn new(
        view: Arc<ClusterView>,
        directory: Arc<AgentDirectory>,
        options: CollectorOptions,
        metrics: Option<TelemetryMetrics>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(options.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            // Keep connections across rounds: one TCP handshake per agent, not per poll.
            .pool_idle_timeout(options.interval.saturating_mul(3))
            .pool_max_idle_per_host(1)
            .build(connector);
        Self {
            client,
            view,
            directory,
            options,
            metrics,
            latest: HashMap::new(),
        }
    }

    /// Polls forever, one round per interval (a slow round delays the next, never overlaps it).
    pub async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.options.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let report = self.poll_round().await;
            tracing::debug!(
                polled = report.polled,
                ok = report.ok,
                failed = report.failed,
                elapsed_ms = report.elapsed.as_millis() as u64,
                "Telemetry poll round done."
            );
        }
    }

    /// Polls every target once, concurrently, and stores the results on the view.
    pub async fn poll_round(&mut self) -> RoundReport {
        let started = Instant::now();
        let targets = self.directory.targets();
        let client = &self.client;
        let options = &self.options;
        let results: Vec<(Target, Result<NodeTelemetry, PollError>)> =
            futures::stream::iter(targets)
                .map(|target| async move {
                    let result = poll(client, &target, options).await;
                    (target, result)
                })
                .buffer_unordered(self.options.max_in_flight.max(1))
                .collect()
                .await;
        let mut report = RoundReport {
            polled: results.len(),
            ..RoundReport::default()
        };
        let mut updates = Vec::with_capacity(results.len());
        for (target, result) in results {
            if result.is_ok() {
                report.ok += 1;
            } else {
                report.failed += 1;
            }
            let stored = Arc::new(self.record(&target, result));
            self.latest.insert(target.node.clone(), stored.clone());
            updates.push((target.node, Some(stored)));
        }
        self.view.set_telemetry_many(updates);
        self.forget_vanished();
        report.elapsed = started.elapsed();
        report
    }

    /// The summary to store for one poll result; counts and logs failures.
    fn record(&self, target: &Target, result: Result<NodeTelemetry, PollError>) -> NodeTelemetry {
        let code = result.as_ref().map_or_else(PollError::code, |_| "ok");
        if let Some(metrics) = &self.metrics {
            metrics.observe_poll(code);
        }
        let err = match result {
            Ok(fresh) => return fresh,
            Err(err) => err,
        };
        let previous = self.latest.get(&target.node);
        // Warn when a node starts failing or fails differently; repeats are debug noise.
        let message = err.to_string();
        let repeated = previous.is_some_and(|p| p.last_error.as_deref() == Some(&message));
        if repeated {
            tracing::debug!(node = %target.node, code, error = %err, "Telemetry poll failed again.");
        } else {
            tracing::warn!(
                node = %target.node,
                url = %target.url,
                code,
                error = %err,
                "Telemetry poll failed; the node's data is kept until stale, then unknown."
            );
        }
        match previous {
            Some(p) if p.sampled_at_unix_seconds.is_some() => p.with_error(message),
            _ => NodeTelemetry::never_reported(target.source, message),
        }
    }

    /// Drops kept summaries of nodes that neither have a reporter nor exist any more.
    fn forget_vanished(&mut self) {
        let polled: std::collections::HashSet<String> = self
            .directory
            .targets()
            .into_iter()
            .map(|t| t.node)
            .collect();
        let latest = &mut self.latest;
        self.view.with_snapshot(|snapshot| {
            latest.retain(|node, _| polled.contains(node) || snapshot.node(node).is_some());
        });
    }
}

/// One GET with the timeout, validated and graded.
async fn poll(
    client: &Client<HttpConnector, Empty<Bytes>>,
    target: &Target,
    options: &CollectorOptions,
) -> Result<NodeTelemetry, PollError> {
    let fetch = fetch(client, &target.url, options.max_body_bytes);
    let body = tokio::time::timeout(options.timeout, fetch)
        .await
        .map_err(|_| PollError::Timeout(options.timeout))??;
    let received_at = crate::clock::now_seconds();
    match target.source {
        TelemetrySource::Agent => {
            accept_agent(&body, &target.node, received_at, &options.thresholds)
        }
        TelemetrySource::DcgmExporter => {
            accept_dcgm(&body, &target.node, received_at, &options.thresholds)
        }
    }
}

async fn fetch(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    max_body_bytes: usize,
) -> Result<Bytes, PollError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| PollError::Connect(format!("bad URL {url}: {e}")))?;
    let response = client
        .get(uri)
        .await
        .map_err(|e| PollError::Connect(error_chain(&e)))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(PollError::Status(response.status().as_u16()));
    }
    let body = Limited::new(response.into_body(), max_body_bytes);
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(PollError::TooLarge(max_body_bytes))
        }
        Err(e) => Err(PollError::Connect(error_chain(e.as_ref()))),
    }
}

/// Validates an agent's `/v1/telemetry` answer for `node` and summarises it.
pub fn accept_agent(
    body: &[u8],
    node: &str,
    received_at_unix_seconds: f64,
    thresholds: &TelemetryConfig,
) -> Result<NodeTelemetry, PollError> {
    let mut sample: NodeSample =
        serde_json::from_slice(body).map_err(|e| PollError::Malformed(e.to_string()))?;
    if sample.api_version != API_VERSION || sample.kind != KIND {
        return Err(PollError::WrongKind {
            api_version: sample.api_version,
            kind: sample.kind,
        });
    }
    if sample.node_name != node {
        return Err(PollError::WrongNode {
            claimed: sample.node_name,
        });
    }
    let at = sample.sampled_at_unix_seconds;
    if !(at.is_finite() && at > 0.0) {
        return Err(PollError::Malformed(format!(
            "sampledAtUnixSeconds is {at}"
        )));
    }
    let ahead_seconds = at - received_at_unix_seconds;
    if ahead_seconds > MAX_CLOCK_AHEAD_SECONDS {
        return Err(PollError::FutureClock { ahead_seconds });
    }
    grade_sample(&mut sample, thresholds);
    let source = TelemetrySource::Agent;
    Ok(NodeTelemetry::from_sample(
        &sample,
        source,
        received_at_unix_seconds,
    ))
}

/// Reads a dcgm-exporter page for `node` (stamped with the receive time: the page carries
/// none) and summarises it.
pub fn accept_dcgm(
    body: &[u8],
    node: &str,
    received_at_unix_seconds: f64,
    thresholds: &TelemetryConfig,
) -> Result<NodeTelemetry, PollError> {
    let text = std::str::from_utf8(body).map_err(|e| PollError::Malformed(e.to_string()))?;
    let mut sample = dcgm::parse(text)?;
    sample.node_name = node.to_string();
    sample.sampled_at_unix_seconds = received_at_unix_seconds;
    grade_sample(&mut sample, thresholds);
    let source = TelemetrySource::DcgmExporter;
    Ok(NodeTelemetry::from_sample(
        &sample,
        source,
        received_at_unix_seconds,
    ))
}

/// An error with its sources, `a: b: c`, so "connection refused" is not hidden behind
/// "client error (Connect)".
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::health::HealthState;
    use crate::core::telemetry::GpuSample;

    const NOW: f64 = 1_700_000_000.0;

    fn answer(node: &str, at: f64, xids: Vec<u32>) -> Vec<u8> {
        let gpu = GpuSample {
            index: 0,
            uuid: "GPU-0".into(),
            xid_errors: Some(xids),
            ..GpuSample::default()
        };
        let sample = NodeSample {
            node_name: node.into(),
            sampled_at_unix_seconds: at,
            gpus: vec![gpu],
            ..NodeSample::new()
        };
        serde_json::to_vec(&sample).unwrap()
    }

    fn accept(body: &[u8]) -> Result<NodeTelemetry, PollError> {
        accept_agent(body, "n1", NOW, &TelemetryConfig::default())
    }

    #[test]
    fn a_valid_answer_is_regraded_with_the_extenders_thresholds() {
        let t = accept(&answer("n1", NOW - 1.0, vec![13])).unwrap();
        assert_eq!(t.gpus()[0].state, HealthState::Healthy);
        assert_eq!(t.sampled_at_unix_seconds, Some(NOW - 1.0));
        let mut strict = TelemetryConfig::default();
        strict.unhealthy_xids.push(13);
        let t = accept_agent(&answer("n1", NOW, vec![13]), "n1", NOW, &strict).unwrap();
        assert_eq!(t.gpus()[0].state, HealthState::Unhealthy);
    }

    #[test]
    fn lying_and_broken_answers_are_refused_with_bounded_codes() {
        let cases: [(Vec<u8>, &str); 5] = [
            (answer("n2", NOW, vec![]), "wrong_node"),
            (answer("n1", NOW + 3600.0, vec![]), "future_clock"),
            (answer("n1", f64::NAN, vec![]), "malformed"),
            (b"{\"apiVersion\":".to_vec(), "malformed"),
            (
                String::from_utf8(answer("n1", NOW, vec![]))
                    .unwrap()
                    .replace("GpuTelemetry", "Other")
                    .into_bytes(),
                "wrong_kind",
            ),
        ];
        for (body, code) in cases {
            let err = accept(&body).unwrap_err();
            assert_eq!(err.code(), code, "{err}");
            assert!(POLL_RESULTS.contains(&err.code()));
            assert!(!err.is_retryable());
        }
        // A little clock skew is tolerated.
        assert!(accept(&answer("n1", NOW + 1.0, vec![])).is_ok());
    }

    #[test]
    fn timeouts_are_capped_by_the_interval() {
        let config = TelemetryConfig {
            poll_interval_seconds: 1,
            poll_timeout_seconds: 30,
            ..TelemetryConfig::default()
        };
        let options = CollectorOptions::from_config(&config);
        assert_eq!(options.timeout, Duration::from_secs(1));
        assert_eq!(
            CollectorOptions::from_config(&TelemetryConfig::default()).timeout,
            Duration::from_secs(2)
        );
    }
}
