//! Prometheus metrics of the extender process.
//!
//! One `prometheus::Registry` is built by the caller and each subsystem registers its own
//! metrics on it. Sizes of the cluster view are computed at scrape time by a `Collector`, so the
//! hot paths never update them. Label values come from bounded sets only (verb, status code,
//! resource name, state), never from object names.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts,
    Registry, TextEncoder,
};

use crate::read::view::ClusterView;

/// Request counters and latency of the extender verbs.
#[derive(Clone, Debug)]
pub struct ExtenderMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    answer_bytes: HistogramVec,
    cpu: CounterVec,
}

impl ExtenderMetrics {
    /// Creates and registers `rota_extender_requests_total{verb,code}`,
    /// `rota_extender_request_duration_seconds{verb}` and
    /// `rota_extender_response_size_bytes{verb}` (kube-scheduler decodes every answer in its
    /// serial scheduling cycle, so answer size is part of the extender's cost) and
    /// `rota_extender_cpu_seconds_total{verb}` (CPU spent answering: against the duration's
    /// sum it tells rota's own work from time spent waiting for a core, as under a CPU limit).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "rota_extender_requests_total",
                "Extender HTTP requests by verb and HTTP status code.",
            ),
            &["verb", "code"],
        )?;
        // From 25 µs (a small filter) to 5 s (kube-scheduler's default extender timeout).
        let buckets = vec![
            0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "rota_extender_request_duration_seconds",
                "Time to answer an extender request, body parsing included.",
            )
            .buckets(buckets),
            &["verb"],
        )?;
        // From an empty list to a 5,000-node answer with full objects.
        let answer_bytes = HistogramVec::new(
            HistogramOpts::new(
                "rota_extender_response_size_bytes",
                "Size of the answer body, by verb.",
            )
            .buckets(prometheus::exponential_buckets(64.0, 4.0, 10)?),
            &["verb"],
        )?;
        let cpu = CounterVec::new(
            Opts::new(
                "rota_extender_cpu_seconds_total",
                "CPU time spent answering extender requests, by verb (body parsing included).",
            ),
            &["verb"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(answer_bytes.clone()))?;
        registry.register(Box::new(cpu.clone()))?;
        Ok(Self {
            requests,
            duration,
            answer_bytes,
            cpu,
        })
    }

    /// Records one answered request and the size of its answer (`None`: a rejection the
    /// server answered before the handler, not counted in the sizes).
    pub fn observe(&self, verb: &str, status: u16, seconds: f64, bytes: Option<usize>) {
        let code = status.to_string();
        self.requests.with_label_values(&[verb, &code]).inc();
        self.duration.with_label_values(&[verb]).observe(seconds);
        if let Some(bytes) = bytes {
            self.answer_bytes
                .with_label_values(&[verb])
                .observe(bytes as f64);
        }
    }

    /// Adds the CPU time one answered request took.
    pub fn observe_cpu(&self, verb: &str, seconds: f64) {
        self.cpu.with_label_values(&[verb]).inc_by(seconds);
    }
}

/// Gauges describing the cluster view, computed from the view at scrape time.
pub struct ClusterCollector {
    view: Arc<ClusterView>,
    descs: Vec<Desc>,
}

impl ClusterCollector {
    /// Registers `rota_cluster_view_synced`, `rota_cluster_nodes` and
    /// `rota_cluster_gpus{resource,state}` (state: allocatable, used, free).
    pub fn register(registry: &Registry, view: Arc<ClusterView>) -> prometheus::Result<()> {
        let descs = Self::build(&view)
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        registry.register(Box::new(ClusterCollector { view, descs }))
    }

    /// Builds the gauges from the view's current state. The metric definitions are static, so
    /// the `expect`s cannot fail.
    fn build(view: &ClusterView) -> Vec<Box<dyn Collector>> {
        let synced = Gauge::new(
            "rota_cluster_view_synced",
            "1 once the cluster view has listed Nodes and Pods, else 0.",
        )
        .expect("static metric definition");
        let nodes = Gauge::new("rota_cluster_nodes", "Nodes in the cluster view.")
            .expect("static metric definition");
        let gpus = GaugeVec::new(
            Opts::new(
                "rota_cluster_gpus",
                "GPUs in the cluster view by managed resource and state (allocatable, used, free).",
            ),
            &["resource", "state"],
        )
        .expect("static metric definition");

        synced.set(if view.is_synced() { 1.0 } else { 0.0 });
        let snapshot = view.read();
        nodes.set(snapshot.node_count() as f64);
        for resource in &view.settings().gpu_resources {
            let (mut allocatable, mut used) = (0u64, 0u64);
            for node in snapshot.nodes() {
                let count =
                    |c: &crate::core::model::GpuCounts| c.get(resource).copied().unwrap_or(0);
                allocatable = allocatable.saturating_add(count(&node.allocatable));
                used = used.saturating_add(count(&node.used));
            }
            for (state, value) in [
                ("allocatable", allocatable),
                ("used", used),
                ("free", allocatable.saturating_sub(used)),
            ] {
                gpus.with_label_values(&[resource.as_str(), state])
                    .set(value as f64);
            }
        }
        vec![Box::new(synced), Box::new(nodes), Box::new(gpus)]
    }
}

impl Collector for ClusterCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        Self::build(&self.view)
            .iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}

/// Counters of the telemetry collector.
#[derive(Clone, Debug)]
pub struct TelemetryMetrics {
    polls: IntCounterVec,
}

impl TelemetryMetrics {
    /// Creates and registers `rota_telemetry_polls_total{result}`, with every result in
    /// `results` (a bounded set of codes) present from the start at 0.
    pub fn register(registry: &Registry, results: &[&str]) -> prometheus::Result<Self> {
        let polls = IntCounterVec::new(
            Opts::new(
                "rota_telemetry_polls_total",
                "Polls of GPU telemetry reporters by result (ok or an error code).",
            ),
            &["result"],
        )?;
        for result in results {
            polls.with_label_values(&[*result]);
        }
        registry.register(Box::new(polls.clone()))?;
        Ok(Self { polls })
    }

    /// Counts one poll with its result code.
    pub fn observe_poll(&self, result: &str) {
        self.polls.with_label_values(&[result]).inc();
    }
}

/// `rota_telemetry_age_seconds{node}`: the age of each node's newest valid telemetry sample,
/// computed from the view at scrape time. `+Inf` for a node whose reporter never sent valid
/// data, so an alert on age catches it too. Node names are the label: bounded by the cluster's
/// node count, as the issue asks.
pub struct TelemetryAgeCollector {
    view: Arc<ClusterView>,
    desc: Desc,
}

impl TelemetryAgeCollector {
    /// Registers the age gauge on `registry`.
    pub fn register(registry: &Registry, view: Arc<ClusterView>) -> prometheus::Result<()> {
        let desc = Self::gauge()?.desc()[0].clone();
        registry.register(Box::new(Self { view, desc }))
    }

    fn gauge() -> prometheus::Result<GaugeVec> {
        GaugeVec::new(
            Opts::new(
                "rota_telemetry_age_seconds",
                "Seconds since the newest valid GPU telemetry sample of each node (+Inf: none yet).",
            ),
            &["node"],
        )
    }
}

impl Collector for TelemetryAgeCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(gauge) = Self::gauge() else {
            return Vec::new();
        };
        let now = crate::clock::now_seconds();
        for (node, age) in self.view.telemetry_ages(now) {
            // A reporter clock slightly ahead reads as age 0, not a negative age.
            let value = age.map_or(f64::INFINITY, |a| a.max(0.0));
            gauge.with_label_values(&[node.as_str()]).set(value);
        }
        gauge.collect()
    }
}

/// Renders every metric of `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::error!(error = %err, "Failed to encode metrics.");
    }
    out
}

/// The HTTP transport's load, read from [`crate::http::ServerStats`] at scrape time:
/// `rota_http_open_connections`, `rota_http_shed_connections_total` (answered 503 and closed at
/// the connection limit), `rota_http_reserve_connections_total` (served from the probe reserve),
/// `rota_http_body_budget_bytes`, `rota_http_body_reserved_bytes`,
/// `rota_http_body_budget_waits_total` and `rota_http_body_budget_rejections_total` (503).
pub struct HttpServerCollector {
    stats: crate::http::ServerStats,
    descs: Vec<Desc>,
}

/// Name, help, and whether the series is a counter (else a gauge).
const HTTP_SERIES: [(&str, &str, bool); 7] = [
    ("rota_http_open_connections", "Connections open now.", false),
    (
        "rota_http_shed_connections_total",
        "Connections answered 503 and closed at the connection limit.",
        true,
    ),
    (
        "rota_http_reserve_connections_total",
        "Connections served from the reserve kept for body-less requests.",
        true,
    ),
    (
        "rota_http_body_budget_bytes",
        "Request body bytes all requests together may buffer.",
        false,
    ),
    (
        "rota_http_body_reserved_bytes",
        "Request body bytes reserved by requests in flight now.",
        false,
    ),
    (
        "rota_http_body_budget_waits_total",
        "Requests that waited for body budget.",
        true,
    ),
    (
        "rota_http_body_budget_rejections_total",
        "Requests answered 503 because no body budget freed in time.",
        true,
    ),
];

impl HttpServerCollector {
    /// Registers the transport's series on `registry`.
    pub fn register(
        registry: &Registry,
        stats: crate::http::ServerStats,
    ) -> prometheus::Result<()> {
        let descs = Self::families(&stats)?
            .iter()
            .map(|c| c.desc()[0].clone())
            .collect();
        registry.register(Box::new(Self { stats, descs }))
    }

    fn families(stats: &crate::http::ServerStats) -> prometheus::Result<Vec<Box<dyn Collector>>> {
        let s = stats.snapshot();
        let values = [
            s.open_connections as f64,
            s.shed_connections_total as f64,
            s.reserve_lane_connections_total as f64,
            s.body_budget_bytes as f64,
            s.reserved_body_bytes as f64,
            s.budget_waits_total as f64,
            s.budget_rejections_total as f64,
        ];
        HTTP_SERIES
            .iter()
            .zip(values)
            .map(
                |(&(name, help, counter), value)| -> prometheus::Result<Box<dyn Collector>> {
                    if counter {
                        let c = prometheus::Counter::new(name, help)?;
                        c.inc_by(value);
                        Ok(Box::new(c))
                    } else {
                        let g = prometheus::Gauge::new(name, help)?;
                        g.set(value);
                        Ok(Box::new(g))
                    }
                },
            )
            .collect()
    }
}

impl Collector for HttpServerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match Self::families(&self.stats) {
            Ok(families) => families.iter().flat_map(|c| c.collect()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_server_series_follow_the_stats_at_scrape_time() {
        let registry = Registry::new();
        let stats = crate::http::ServerStats::new();
        HttpServerCollector::register(&registry, stats.clone()).expect("register");
        let text = String::from_utf8(render(&registry)).expect("utf-8");
        for (name, _, counter) in HTTP_SERIES {
            let kind = if counter { "counter" } else { "gauge" };
            assert!(
                text.contains(&format!("# TYPE {name} {kind}")),
                "{name} in {text}"
            );
            assert!(
                text.contains(&format!("\n{name} 0\n")),
                "{name} starts at 0"
            );
        }
        // A second registration of the same names is refused, as for every rota collector.
        assert!(HttpServerCollector::register(&registry, stats).is_err());
    }
}
