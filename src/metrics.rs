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
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};

use crate::state::ClusterView;

/// Request counters and latency of the extender verbs.
#[derive(Clone, Debug)]
pub struct ExtenderMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl ExtenderMetrics {
    /// Creates and registers `rota_extender_requests_total{verb,code}` and
    /// `rota_extender_request_duration_seconds{verb}`.
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
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }

    /// Records one answered request.
    pub fn observe(&self, verb: &str, status: u16, seconds: f64) {
        let code = status.to_string();
        self.requests.with_label_values(&[verb, &code]).inc();
        self.duration.with_label_values(&[verb]).observe(seconds);
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
                allocatable += node.allocatable.get(resource).copied().unwrap_or(0);
                used += node.used.get(resource).copied().unwrap_or(0);
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

/// Renders every metric of `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::error!(error = %err, "Failed to encode metrics.");
    }
    out
}
