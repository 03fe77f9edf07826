//! Fair-share metrics: per-tenant shares computed from the view and the ledger at scrape time,
//! and the queue-wait histogram observed by the refresher.
//!
//! | metric | labels | source |
//! |---|---|---|
//! | `rota_tenant_weight` | tenant | config weight among its siblings |
//! | `rota_tenant_entitled_gpus` | tenant, resource | last refresh |
//! | `rota_tenant_allocated_gpus` | tenant, resource | live view |
//! | `rota_tenant_share_gap_gpus` | tenant, resource | allocated − entitled |
//! | `rota_tenant_pending_workloads` | tenant | live view |
//! | `rota_tenant_usage_gpu_seconds` | tenant, kind (allocated, measured) | ledger, as of its last tick |
//! | `rota_fairness_jain_index` | resource | last refresh, `held / entitled` over tenants |
//! | `rota_unplaceable_workloads` | tenant, reason | queued workloads that can never fit |
//! | `rota_tenant_received_gpu_seconds_total` | tenant | GPU-seconds held while it had work waiting |
//! | `rota_tenant_entitled_gpu_seconds_total` | tenant | GPU-seconds entitled (weights and demand, no usage correction) while it had work waiting |
//!
//! The two `_total` counters define the long-run fairness figure exactly as the simulator's
//! `received_over_entitled` does: their ratio per tenant (1 is its fair share).
//! | `rota_queue_wait_seconds` | resource | histogram, when a queued workload binds |
//!
//! Tenants are those that hold or wait for GPUs, were in the last refresh, or are in the ledger:
//! bounded by the cluster's tenants. Resources come from the config.
//! Must not: take the ledger lock and the view's lock at the same time.

use std::collections::BTreeSet;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{CounterVec, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry};

use crate::core::fairshare::SharePolicy;

use super::fairshare::SharedLedger;
use super::ClusterView;

/// `rota_queue_wait_seconds{resource}`: how long workloads waited in the fair-share queue.
#[derive(Clone, Debug)]
pub struct QueueWaitMetrics {
    wait: HistogramVec,
}

impl QueueWaitMetrics {
    /// Creates and registers the histogram (buckets from 1 s to 1 week).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let buckets = vec![
            1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14_400.0, 28_800.0,
            86_400.0, 172_800.0, 604_800.0,
        ];
        let wait = HistogramVec::new(
            HistogramOpts::new(
                "rota_queue_wait_seconds",
                "Time from a workload's creation to the bind of its pods, for workloads that waited in the fair-share queue (measured to the next refresh, at most 2 s late).",
            )
            .buckets(buckets),
            &["resource"],
        )?;
        registry.register(Box::new(wait.clone()))?;
        Ok(Self { wait })
    }

    /// Records one wait.
    pub fn observe(&self, resource: &str, seconds: f64) {
        self.wait.with_label_values(&[resource]).observe(seconds);
    }
}

/// The per-tenant gauges, built from the view and the ledger at scrape time.
pub struct FairShareCollector {
    view: Arc<ClusterView>,
    ledger: SharedLedger,
    policy: SharePolicy,
    descs: Vec<Desc>,
}

struct Gauges {
    weight: GaugeVec,
    entitled: GaugeVec,
    allocated: GaugeVec,
    gap: GaugeVec,
    pending: GaugeVec,
    usage: GaugeVec,
    jain: GaugeVec,
    unplaceable: GaugeVec,
    received: CounterVec,
    entitled_total: CounterVec,
}

impl Gauges {
    fn new() -> prometheus::Result<Self> {
        let vec =
            |name: &str, help: &str, labels: &[&str]| GaugeVec::new(Opts::new(name, help), labels);
        Ok(Self {
            weight: vec(
                "rota_tenant_weight",
                "Configured fair-share weight of the tenant among its siblings.",
                &["tenant"],
            )?,
            entitled: vec(
                "rota_tenant_entitled_gpus",
                "GPUs the tenant is entitled to at the last fair-share refresh.",
                &["tenant", "resource"],
            )?,
            allocated: vec(
                "rota_tenant_allocated_gpus",
                "GPUs held by the tenant's bound, running pods.",
                &["tenant", "resource"],
            )?,
            gap: vec(
                "rota_tenant_share_gap_gpus",
                "Allocated minus entitled GPUs: positive above the fair share, negative below.",
                &["tenant", "resource"],
            )?,
            pending: vec(
                "rota_tenant_pending_workloads",
                "The tenant's workloads waiting in the fair-share queue or admitted and binding.",
                &["tenant"],
            )?,
            usage: vec(
                "rota_tenant_usage_gpu_seconds",
                "Decayed GPU-seconds charged to the tenant: allocated (held, device-weighted) and measured (busy per telemetry).",
                &["tenant", "kind"],
            )?,
            jain: vec(
                "rota_fairness_jain_index",
                "Jain's fairness index of allocated/entitled over tenants with an entitlement (1 is fair, 1/n the worst).",
                &["resource"],
            )?,
            unplaceable: vec(
                "rota_unplaceable_workloads",
                "Queued workloads that can never fit any node they may use (they hold no one up), by reason.",
                &["tenant", "reason"],
            )?,
            received: CounterVec::new(
                Opts::new(
                    "rota_tenant_received_gpu_seconds_total",
                    "GPU-seconds the tenant held while it had work waiting.",
                ),
                &["tenant"],
            )?,
            entitled_total: CounterVec::new(
                Opts::new(
                    "rota_tenant_entitled_gpu_seconds_total",
                    "GPU-seconds the tenant was entitled to by weight and demand while it had work waiting.",
                ),
                &["tenant"],
            )?,
        })
    }

    fn all(&self) -> [&dyn Collector; 10] {
        [
            &self.weight,
            &self.entitled,
            &self.allocated,
            &self.gap,
            &self.pending,
            &self.usage,
            &self.jain,
            &self.unplaceable,
            &self.received,
            &self.entitled_total,
        ]
    }
}

impl FairShareCollector {
    /// Registers the per-tenant gauges on `registry`.
    pub fn register(
        registry: &Registry,
        view: Arc<ClusterView>,
        ledger: SharedLedger,
        policy: SharePolicy,
    ) -> prometheus::Result<()> {
        let gauges = Gauges::new()?;
        let descs = gauges
            .all()
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .collect();
        registry.register(Box::new(Self {
            view,
            ledger,
            policy,
            descs,
        }))
    }

    fn fill(&self, g: &Gauges) {
        let mut tenants: BTreeSet<String> =
            self.ledger.lock().tenants().map(String::from).collect();
        let ledger_tenants = tenants.clone();
        {
            let snapshot = self.view.read();
            let state = snapshot.workloads();
            let report = state.report();
            for (tenant, book) in state.tenants() {
                tenants.insert(tenant.to_owned());
                g.pending
                    .with_label_values(&[tenant])
                    .set(book.pending_workloads as f64);
            }
            for (entry, why) in state.unplaceable() {
                g.unplaceable
                    .with_label_values(&[entry.tenant.as_str(), why.code()])
                    .inc();
            }
            for (tenant, totals) in state.backlog_totals() {
                g.received
                    .with_label_values(&[tenant.as_str()])
                    .inc_by(totals.received.max(0.0));
                g.entitled_total
                    .with_label_values(&[tenant.as_str()])
                    .inc_by(totals.entitled.max(0.0));
            }
            for resource in &self.view.settings().gpu_resources {
                let shares = report.and_then(|r| r.resources.get(resource));
                g.jain
                    .with_label_values(&[resource.as_str()])
                    .set(shares.map_or(1.0, |s| s.jain_index));
                let mut names: BTreeSet<&str> = shares
                    .map(|s| s.tenants.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                names.extend(state.tenants().map(|(t, _)| t));
                for tenant in names {
                    tenants.insert(tenant.to_owned());
                    let held = state.held(tenant, resource) as f64;
                    let entitled = state.entitled(tenant, resource).unwrap_or(0.0);
                    let labels = [tenant, resource.as_str()];
                    g.allocated.with_label_values(&labels).set(held);
                    g.entitled.with_label_values(&labels).set(entitled);
                    g.gap.with_label_values(&labels).set(held - entitled);
                }
            }
        }
        for tenant in &tenants {
            g.weight
                .with_label_values(&[tenant.as_str()])
                .set(self.policy.weight(tenant));
        }
        // As of the ledger's last tick (the keeper ticks every few seconds), so a scrape reads
        // the same figures the refresh used and needs no clock.
        let ledger = self.ledger.lock();
        let at = ledger.updated_at().unwrap_or(f64::NEG_INFINITY);
        for tenant in &ledger_tenants {
            let u = ledger.tenant_usage(tenant, at);
            g.usage
                .with_label_values(&[tenant.as_str(), "allocated"])
                .set(u.allocated);
            g.usage
                .with_label_values(&[tenant.as_str(), "measured"])
                .set(u.measured);
        }
    }
}

impl Collector for FairShareCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(gauges) = Gauges::new() else {
            return Vec::new();
        };
        self.fill(&gauges);
        gauges.all().iter().flat_map(|g| g.collect()).collect()
    }
}
