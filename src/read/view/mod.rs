//! The cluster view: a synchronous index of GPU nodes and pods, fed by watch events.
//!
//! ```text
//!   read::cluster ── apply/delete/reset(Node|Pod) ──▶ translate ──▶ ClusterSnapshot (RwLock)
//!                                                                  │ generation += 1
//!   extender, rotation loop, metrics ◀── read() / subscribe() ─────┘
//! ```
//!
//! Kubernetes objects are translated into core types once, here (`translate`), and applied to a
//! [`ClusterSnapshot`] behind a read-write lock; the snapshot keeps per-node GPU usage in step.
//! Readers take a consistent snapshot with [`ClusterView::read`]; each change that alters the
//! snapshot (or the synced flag) bumps a generation on a `tokio::sync::watch` channel, so node
//! heartbeats and CPU-only pods wake nobody.
//! Invariants: the lock is never held while the generation is published; pods are keyed by UID
//! (or `namespace/name` when a hand-written pod has none).
//! Must not: talk to the API server (the feeds in `read` do), or make policy decisions (`core`).

pub mod fairshare;
pub mod fairshare_metrics;
pub mod translate;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use tokio::sync::watch;

use crate::config::ValidConfig;
use crate::core::model::GpuCounts;
use crate::core::queue::WithinTenant;
use crate::core::telemetry::NodeTelemetry;
use crate::core::{ClusterSnapshot, GpuNode, GpuPod};

/// What the translation needs from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewSettings {
    /// Managed GPU resource names.
    pub gpu_resources: Vec<String>,
    /// Pod label naming the tenant.
    pub tenant_label: String,
    /// Order of a tenant's own waiting workloads (`queue.withinTenant`).
    pub within_tenant: WithinTenant,
}

impl ViewSettings {
    /// Takes the relevant fields of the config.
    pub fn from_config(config: &ValidConfig) -> Self {
        Self {
            gpu_resources: config.gpu_resources.clone(),
            tenant_label: config.tenant_label.clone(),
            within_tenant: config.queue.within_tenant,
        }
    }
}

/// The live cluster view shared by the extender, the feeds, the write-side loops and the metrics.
#[derive(Debug)]
pub struct ClusterView {
    settings: ViewSettings,
    snapshot: parking_lot::RwLock<ClusterSnapshot>,
    synced: AtomicBool,
    generation: watch::Sender<u64>,
}

impl ClusterView {
    /// An empty, not yet synced view at generation 0.
    pub fn new(settings: ViewSettings) -> Self {
        Self {
            snapshot: parking_lot::RwLock::new(ClusterSnapshot::with_queue_order(
                settings.within_tenant,
            )),
            synced: AtomicBool::new(false),
            generation: watch::Sender::new(0),
            settings,
        }
    }

    /// The translation settings.
    pub fn settings(&self) -> &ViewSettings {
        &self.settings
    }

    /// A consistent read-only snapshot; hold it only for the length of one decision.
    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, ClusterSnapshot> {
        self.snapshot.read()
    }

    /// Runs `f` on a consistent snapshot and releases the lock before returning.
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&ClusterSnapshot) -> R) -> R {
        f(&self.snapshot.read())
    }

    /// A receiver of the generation, bumped on every change; `changed()` wakes on the next one.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The current generation (0 until the first change).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Both watchers have delivered their first full list. Until then, decisions would be made
    /// on a partial cluster (`/readyz` reports not ready).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Marks the view synced or not; a change bumps the generation.
    pub fn set_synced(&self, synced: bool) {
        if self.synced.swap(synced, Ordering::AcqRel) != synced {
            self.bump();
        }
    }

    // === nodes ===

    /// Adds or updates a node.
    pub fn apply_node(&self, node: &Node) {
        self.apply_gpu_node(translate::gpu_node(node, &self.settings));
    }

    /// Adds or updates an already translated node; a node equal to the stored one (apart from
    /// the usage the snapshot maintains) is no change. A nameless node is logged and skipped.
    pub fn apply_gpu_node(&self, mut node: GpuNode) {
        if node.name.is_empty() {
            tracing::warn!("Skipping a node without a name.");
            return;
        }
        let changed = {
            let mut snapshot = self.snapshot.write();
            if let Some(old) = snapshot.node(&node.name) {
                node.used.clone_from(&old.used);
                if node.telemetry.is_none() {
                    node.telemetry.clone_from(&old.telemetry);
                }
            }
            let changed = snapshot.node(&node.name) != Some(&node);
            if changed {
                snapshot.upsert_node(node);
            }
            changed
        };
        self.bump_if(changed);
    }

    /// Removes a node by name.
    pub fn delete_node(&self, name: &str) {
        let changed = self.snapshot.write().remove_node(name).is_some();
        self.bump_if(changed);
    }

    /// Replaces every node with `nodes` (after a full list).
    pub fn reset_nodes(&self, nodes: &[Node]) {
        self.replace_nodes(nodes.iter().map(|n| translate::gpu_node(n, &self.settings)));
    }

    /// Replaces every node with already translated ones.
    pub fn replace_nodes(&self, nodes: impl IntoIterator<Item = GpuNode>) {
        self.snapshot.write().reset_nodes(nodes);
        self.bump();
    }

    // === telemetry ===

    /// Sets (or clears) one node's telemetry summary; kept across `apply_node` and re-lists
    /// like `used`. A change bumps the generation; an unknown node is ignored.
    pub fn set_telemetry(&self, node: &str, telemetry: Option<Arc<NodeTelemetry>>) {
        let changed = self.snapshot.write().set_telemetry(node, telemetry);
        self.bump_if(changed);
    }

    /// Sets many nodes' telemetry under one write lock with at most one generation bump (the
    /// collector's end of a poll round).
    pub fn set_telemetry_many(
        &self,
        updates: impl IntoIterator<Item = (String, Option<Arc<NodeTelemetry>>)>,
    ) {
        let changed = {
            let mut snapshot = self.snapshot.write();
            let mut changed = false;
            for (node, telemetry) in updates {
                changed |= snapshot.set_telemetry(&node, telemetry);
            }
            changed
        };
        self.bump_if(changed);
    }

    /// `(node, sample age in seconds at now)` of every node with telemetry, sorted by node;
    /// the age is `None` when no valid sample ever arrived. Computed at call time (metrics).
    pub fn telemetry_ages(&self, now_unix_seconds: f64) -> Vec<(String, Option<f64>)> {
        let snapshot = self.snapshot.read();
        let mut ages: Vec<(String, Option<f64>)> = snapshot
            .nodes()
            .filter_map(|n| {
                let t = n.telemetry.as_ref()?;
                Some((n.name.clone(), t.age_seconds(now_unix_seconds)))
            })
            .collect();
        ages.sort_by(|a, b| a.0.cmp(&b.0));
        ages
    }

    // === pods ===

    /// Adds or updates a pod. A pod that cannot be translated is logged and skipped; one that
    /// requests no managed GPU is not stored.
    pub fn apply_pod(&self, pod: &Pod) {
        match translate::gpu_pod(pod, &self.settings) {
            Ok(gpu_pod) => self.apply_gpu_pod(gpu_pod),
            Err(err) => tracing::warn!(
                uid = pod.metadata.uid.as_deref().unwrap_or(""),
                error = %err,
                "Skipping a pod that cannot be translated."
            ),
        }
    }

    /// Adds or updates an already translated pod.
    pub fn apply_gpu_pod(&self, pod: GpuPod) {
        let changed = {
            let mut snapshot = self.snapshot.write();
            let stored = snapshot.pod(&pod.uid);
            let changed = match stored {
                Some(old) => *old != pod,
                None => pod.wants_gpus(),
            };
            if changed {
                snapshot.upsert_pod(pod);
            }
            changed
        };
        self.bump_if(changed);
    }

    /// Removes a pod (found by UID, else `namespace/name`) and releases the GPUs it held,
    /// whatever state the deleted object shows: a pod that went terminal arrives here as a
    /// delete when the watch filters terminal phases out.
    pub fn delete_pod(&self, pod: &Pod) {
        if let Some(key) = translate::pod_key(pod) {
            self.delete_pod_key(&key);
        }
    }

    /// Removes a pod by its key (UID, else `namespace/name`).
    pub fn delete_pod_key(&self, key: &str) {
        let changed = self.snapshot.write().remove_pod(key).is_some();
        self.bump_if(changed);
    }

    /// Replaces every pod with `pods` (after a full list); untranslatable ones are skipped.
    pub fn reset_pods(&self, pods: &[Pod]) {
        let translated: Vec<GpuPod> = pods
            .iter()
            .filter_map(|p| match translate::gpu_pod(p, &self.settings) {
                Ok(p) => Some(p),
                Err(err) => {
                    tracing::warn!(error = %err, "Skipping a pod that cannot be translated.");
                    None
                }
            })
            .collect();
        self.replace_pods(translated);
    }

    /// Replaces every pod with already translated ones.
    pub fn replace_pods(&self, pods: impl IntoIterator<Item = GpuPod>) {
        self.snapshot.write().reset_pods(pods);
        self.bump();
    }

    // === metrics ===

    /// `(resource, allocatable, used)` for each managed resource, summed over all nodes, in
    /// config order. Computed at call time (metrics scrape it). Every managed resource is
    /// listed, even at zero, so metric series never vanish; resource names come from the
    /// config, so they are a bounded label set.
    pub fn gpu_totals(&self) -> Vec<(String, u64, u64)> {
        let snapshot = self.snapshot.read();
        self.settings
            .gpu_resources
            .iter()
            .map(|resource| {
                let get = |m: &GpuCounts| m.get(resource).copied().unwrap_or(0);
                let (allocatable, used) = snapshot.nodes().fold((0u64, 0u64), |(a, u), n| {
                    (
                        a.saturating_add(get(&n.allocatable)),
                        u.saturating_add(get(&n.used)),
                    )
                });
                (resource.clone(), allocatable, used)
            })
            .collect()
    }

    fn bump_if(&self, changed: bool) {
        if changed {
            self.bump();
        }
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::telemetry::TelemetrySource;

    fn node(gpus: u64) -> GpuNode {
        GpuNode {
            name: "n1".into(),
            ready: true,
            allocatable: [("nvidia.com/gpu".to_string(), gpus)].into(),
            ..GpuNode::default()
        }
    }

    #[test]
    fn telemetry_is_kept_across_node_updates_and_bumps_once_per_batch() {
        let view = ClusterView::new(ViewSettings::from_config(&ValidConfig::default()));
        view.apply_gpu_node(node(8));
        let t = Arc::new(NodeTelemetry::never_reported(TelemetrySource::Agent, "x"));
        let before = view.generation();
        view.set_telemetry_many(vec![
            ("n1".to_string(), Some(t.clone())),
            ("ghost".to_string(), Some(t.clone())),
        ]);
        assert_eq!(view.generation(), before + 1);
        // The same Node again (no telemetry on it) is no change and keeps the telemetry.
        view.apply_gpu_node(node(8));
        assert_eq!(view.generation(), before + 1);
        view.apply_gpu_node(node(4));
        assert_eq!(view.read().node("n1").unwrap().telemetry, Some(t));
        assert_eq!(view.telemetry_ages(0.0), vec![("n1".to_string(), None)]);
        view.set_telemetry("n1", None);
        assert_eq!(view.read().node("n1").unwrap().telemetry, None);
    }
}
