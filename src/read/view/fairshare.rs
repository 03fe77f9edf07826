//! The cluster view's fair-share side: the filter gate under the view's lock, the periodic
//! entitlement refresh, and explain.
//!
//! ```text
//!   filter ─▶ gate_pod ─▶ read lock: gate::check ─▶ Admit? ─▶ write lock: check again, admit
//!   FairShareRefresher::tick(now) ── every 2 s, only if the view's generation changed or the
//!        ledger ticked ─▶ write lock: refresh_fair_share(policy, ledger usage, now)
//!                     └─▶ queue waits of workloads that bound ─▶ rota_queue_wait_seconds
//! ```
//!
//! Invariants: admission re-checks under the write lock, so two concurrent filters cannot both
//! take the same free GPUs; the ledger lock is never held while the view's lock is taken.
//! Must not: talk to the API server, or decide anything itself (`core::gate`, `core::workloads`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::GateConfig;
use crate::core::explain::{self, Explanation};
use crate::core::fairshare::SharePolicy;
use crate::core::feasibility::NeverFit;
use crate::core::gate::{self, GateVerdict};
use crate::core::ledger::Ledger;
use crate::core::model::GpuCounts;
use crate::core::GpuPod;

use super::fairshare_metrics::QueueWaitMetrics;
use super::ClusterView;

/// The usage ledger shared by the refresh (reads decayed usage), the metrics (reads both
/// figures) and the ledger keeper (advances and persists it).
pub type SharedLedger = Arc<parking_lot::Mutex<Ledger>>;

/// How often the refresher looks for changes: 2 s keeps standings at most one scheduling
/// cycle or two behind, at a cost of O(T log T) per resource when something changed.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(2);

/// A pod the gate holds back: the reason for every node, and, when it can never fit, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The rejection reason sent to kube-scheduler.
    pub reason: Arc<str>,
    /// Set when the workload can never fit (a Warning Event, not a wait).
    pub unplaceable: Option<NeverFit>,
}

/// What the gate lets placement do with one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateDecision {
    /// Placement decides alone.
    Pass,
    /// Placement decides, but these nodes are kept for the reservation holder: reject them
    /// with `reason`.
    PassExcept {
        /// The reserved nodes.
        nodes: Vec<String>,
        /// Why, for the scheduler.
        reason: Arc<str>,
    },
    /// Reject every node.
    Hold(Held),
}

impl ClusterView {
    /// The fair-share gate for `pod` (see `core::gate`). Admits the pod's workload when its
    /// turn has come (a short write lock; the decision is re-checked under it).
    pub fn gate_pod(&self, pod: &GpuPod, config: &GateConfig) -> GateDecision {
        let verdict = gate::check(&self.read(), pod, config.enabled);
        let verdict = match verdict {
            GateVerdict::Admit(_) | GateVerdict::Backfill { .. } => {
                let mut snapshot = self.snapshot.write();
                let again = gate::check(&snapshot, pod, config.enabled);
                let admitted = match &again {
                    GateVerdict::Admit(_) | GateVerdict::Backfill { .. } => {
                        tracing::debug!(workload = %pod.workload, verdict = ?again, "Admitted a workload.");
                        snapshot.workloads_mut().admit(&pod.workload)
                    }
                    _ => false,
                };
                drop(snapshot);
                self.bump_if(admitted);
                again
            }
            other => other,
        };
        match verdict {
            GateVerdict::Hold(reason) => GateDecision::Hold(Held {
                reason,
                unplaceable: None,
            }),
            GateVerdict::Unplaceable(why, reason) => GateDecision::Hold(Held {
                reason,
                unplaceable: Some(why),
            }),
            GateVerdict::Backfill {
                reserved_nodes,
                holder,
            } if !reserved_nodes.is_empty() => GateDecision::PassExcept {
                nodes: reserved_nodes,
                reason: format!(
                    "rota: node reserved for {holder}, the workload ahead in the fair-share queue"
                )
                .into(),
            },
            _ => GateDecision::Pass,
        }
    }

    /// Recomputes entitlements and standings from `usage` at `now` (no generation bump: the
    /// cluster did not change, and the refresher must not wake itself).
    pub fn refresh_fair_share(&self, policy: &SharePolicy, usage: impl Fn(&str) -> f64, now: f64) {
        self.snapshot.write().refresh_fair_share(policy, usage, now);
    }

    /// Why the pod `namespace/name` waits, or `None` when the view does not know it.
    pub fn explain(
        &self,
        namespace: &str,
        name: &str,
        policy: &SharePolicy,
        now: f64,
    ) -> Option<Explanation> {
        explain::explain(&self.read(), namespace, name, policy, now)
    }
}

/// Refreshes the view's entitlements when something changed; see the module docs.
pub struct FairShareRefresher {
    view: Arc<ClusterView>,
    policy: SharePolicy,
    ledger: SharedLedger,
    waits: Option<QueueWaitMetrics>,
    last_generation: Option<u64>,
    last_ledger: Option<f64>,
    dormant: Option<DormantDemand>,
    last_dormant: BTreeMap<String, GpuCounts>,
}

/// Reads the demand of rotated-out workloads: tenant → GPUs per resource.
pub type DormantDemand = Arc<dyn Fn() -> BTreeMap<String, GpuCounts> + Send + Sync>;

impl FairShareRefresher {
    /// A refresher of `view` under `policy`, reading usage from `ledger`, observing queue waits
    /// into `waits` when given.
    pub fn new(
        view: Arc<ClusterView>,
        policy: SharePolicy,
        ledger: SharedLedger,
        waits: Option<QueueWaitMetrics>,
    ) -> Self {
        Self {
            view,
            policy,
            ledger,
            waits,
            last_generation: None,
            last_ledger: None,
            dormant: None,
            last_dormant: BTreeMap::new(),
        }
    }

    /// Adds the demand of rotated-out workloads (tenant → GPUs per resource), read at each
    /// tick, so their tenants keep an entitlement and can be resumed.
    pub fn with_dormant(mut self, dormant: DormantDemand) -> Self {
        self.dormant = Some(dormant);
        self
    }

    /// One round at `now` (unix seconds): refreshes if the view's generation changed or the
    /// ledger was advanced since the last refresh, then observes the waits of workloads that
    /// bound. Returns whether it refreshed.
    pub fn tick(&mut self, now: f64) -> bool {
        let generation = self.view.generation();
        let ledger_at = self.ledger.lock().updated_at();
        let dormant = self.dormant.as_ref().map(|f| f()).unwrap_or_default();
        let changed = self.last_generation != Some(generation)
            || self.last_ledger != ledger_at
            || self.last_dormant != dormant;
        if changed {
            self.view
                .snapshot
                .write()
                .workloads_mut()
                .set_dormant(dormant.clone());
            self.last_dormant = dormant;
            // Copy the usage out first: the ledger lock is never held under the view's lock.
            let usage = self.usage_snapshot(now);
            self.view.refresh_fair_share(
                &self.policy,
                |t| usage.get(t).copied().unwrap_or(0.0),
                now,
            );
            self.last_generation = Some(generation);
            self.last_ledger = ledger_at;
        }
        let waits = self
            .view
            .snapshot
            .write()
            .workloads_mut()
            .drain_bound_waits();
        if let Some(metrics) = &self.waits {
            for w in waits {
                metrics.observe(&w.resource, (now - w.arrival).max(0.0));
            }
        }
        changed
    }

    fn usage_snapshot(&self, now: f64) -> rustc_hash::FxHashMap<String, f64> {
        let tenants: Vec<String> = self
            .view
            .read()
            .workloads()
            .tenants()
            .map(|(t, _)| t.to_owned())
            .collect();
        let ledger = self.ledger.lock();
        tenants
            .into_iter()
            .map(|t| {
                let u = ledger.usage(&t, now);
                (t, u)
            })
            .collect()
    }

    /// Ticks every [`REFRESH_PERIOD`] forever.
    pub async fn run(mut self) {
        let mut interval = tokio::time::interval(REFRESH_PERIOD);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.tick(crate::clock::now_seconds());
        }
    }
}
