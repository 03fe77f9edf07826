//! The cluster as the policy sees it: GPU nodes and GPU pods, with per-node usage kept in step.
//!
//! Invariant: for every node, `used` equals the sum of the requests of the active pods bound to
//! it. `upsert_pod` / `remove_pod` maintain it incrementally (O(resources) per event), so a pod
//! event never rescans the cluster. Pods bound to a node the snapshot does not know yet are
//! counted as soon as that node arrives. A node's telemetry summary survives updates and
//! re-lists of the node (only [`ClusterSnapshot::set_telemetry`] and removal change it). Every
//! node's [`NodeBrief`] (the extender's per-name view) is refreshed by the same events.
//! The fair-share state ([`Workloads`]: held GPUs per tenant, capacity, the queue) is kept in
//! step by the same events.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::model::{GpuCounts, GpuNode, GpuPod};
use super::node_brief::{BriefIndex, NodeBrief};
use super::queue::WithinTenant;
use super::telemetry::NodeTelemetry;
use super::workloads::Workloads;

/// Nodes and GPU pods, indexed by node name and pod UID.
#[derive(Clone, Debug, Default)]
pub struct ClusterSnapshot {
    nodes: FxHashMap<String, GpuNode>,
    pods: FxHashMap<String, GpuPod>,
    /// GPUs held per node name by active bound pods, known nodes or not: a node that arrives
    /// or changes reads its usage here in O(1) instead of a pass over every pod.
    usage: FxHashMap<String, GpuCounts>,
    briefs: BriefIndex,
    workloads: Workloads,
}

impl ClusterSnapshot {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty snapshot whose queue orders each tenant's workloads by `within`.
    pub fn with_queue_order(within: WithinTenant) -> Self {
        Self {
            workloads: Workloads::with_queue_order(within),
            ..Self::default()
        }
    }

    /// Looks a node up by name.
    pub fn node(&self, name: &str) -> Option<&GpuNode> {
        self.nodes.get(name)
    }

    /// The compact view of a node that filter and prioritize read per candidate name.
    pub fn brief(&self, name: &str) -> Option<&NodeBrief> {
        self.briefs.get(name)
    }

    /// Every node's brief, with the resource slots and hardware kinds they use.
    pub fn briefs(&self) -> &BriefIndex {
        &self.briefs
    }

    /// Looks a pod up by UID.
    pub fn pod(&self, uid: &str) -> Option<&GpuPod> {
        self.pods.get(uid)
    }

    /// All nodes, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &GpuNode> {
        self.nodes.values()
    }

    /// All GPU pods, in no particular order.
    pub fn pods(&self) -> impl Iterator<Item = &GpuPod> {
        self.pods.values()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of GPU pods.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// The fair-share state derived from the nodes and pods.
    pub fn workloads(&self) -> &Workloads {
        &self.workloads
    }

    /// The fair-share state, for admissions and refreshes (its pod and node hooks stay private).
    pub fn workloads_mut(&mut self) -> &mut Workloads {
        &mut self.workloads
    }

    /// Inserts or replaces a node. Its `used` counts are recomputed from the pods bound to it,
    /// whatever the caller put there; a node given without telemetry keeps the stored one
    /// (Node objects carry none, so an update must not forget it).
    pub fn upsert_node(&mut self, mut node: GpuNode) {
        node.used = self.usage_on(&node.name);
        if node.telemetry.is_none() {
            node.telemetry = self.nodes.get(&node.name).and_then(|n| n.telemetry.clone());
        }
        if let Some(old) = self.nodes.get(&node.name) {
            self.workloads.node_out(old);
        }
        self.workloads.node_in(&node);
        self.briefs.update(&node);
        self.nodes.insert(node.name.clone(), node);
    }

    /// Sets (or, with `None`, clears) a node's telemetry summary. Returns whether it changed;
    /// an unknown node is no change (the collector sets it again on its next round).
    pub fn set_telemetry(&mut self, name: &str, telemetry: Option<Arc<NodeTelemetry>>) -> bool {
        let Some(node) = self.nodes.get_mut(name) else {
            return false;
        };
        if node.telemetry == telemetry {
            return false;
        }
        node.telemetry = telemetry;
        self.briefs.update(node);
        true
    }

    /// Removes a node; its pods stay (they are still in the API until they are deleted).
    pub fn remove_node(&mut self, name: &str) -> Option<GpuNode> {
        let old = self.nodes.remove(name)?;
        self.workloads.node_out(&old);
        self.briefs.remove(name);
        Some(old)
    }

    /// Inserts or replaces a pod, moving its GPU usage between nodes as needed.
    /// Pods that request no managed GPU are not stored.
    pub fn upsert_pod(&mut self, pod: GpuPod) {
        let old = self.pods.remove(&pod.uid);
        if let Some(old) = &old {
            self.charge(old, false);
        }
        let stored = pod.wants_gpus().then_some(&pod);
        self.workloads.pod_changed(old.as_ref(), stored);
        if !pod.wants_gpus() {
            return;
        }
        self.charge(&pod, true);
        self.pods.insert(pod.uid.clone(), pod);
    }

    /// Removes a pod and releases what it held.
    pub fn remove_pod(&mut self, uid: &str) -> Option<GpuPod> {
        let old = self.pods.remove(uid)?;
        self.charge(&old, false);
        self.workloads.pod_changed(Some(&old), None);
        Some(old)
    }

    /// Replaces all nodes at once (after a re-list). Nodes that are listed again keep their
    /// telemetry.
    pub fn reset_nodes(&mut self, nodes: impl IntoIterator<Item = GpuNode>) {
        let mut old = std::mem::take(&mut self.nodes);
        self.workloads.clear_nodes();
        self.briefs.clear();
        for mut node in nodes {
            if node.telemetry.is_none() {
                node.telemetry = old.remove(&node.name).and_then(|n| n.telemetry);
            }
            self.upsert_node(node);
        }
    }

    /// Replaces all pods at once (after a re-list).
    pub fn reset_pods(&mut self, pods: impl IntoIterator<Item = GpuPod>) {
        self.pods.clear();
        self.usage.clear();
        let carried = self.workloads.begin_pod_reset();
        self.workloads.clear_nodes();
        for node in self.nodes.values_mut() {
            node.used.clear();
            self.workloads.node_in(node);
            self.briefs.update(node);
        }
        for pod in pods {
            self.upsert_pod(pod);
        }
        self.workloads.end_pod_reset(carried);
    }

    /// Adds (or, with `add == false`, releases) a pod's requests on its node.
    fn charge(&mut self, pod: &GpuPod, add: bool) {
        if !pod.holds_gpus() {
            return;
        }
        let Some(name) = pod.node_name.as_deref() else {
            return;
        };
        match self.usage.get_mut(name) {
            Some(used) => adjust(used, &pod.requests, add),
            None if add => {
                let mut used = GpuCounts::new();
                adjust(&mut used, &pod.requests, add);
                self.usage.insert(name.to_owned(), used);
            }
            None => {}
        }
        if self.usage.get(name).is_some_and(GpuCounts::is_empty) {
            self.usage.remove(name);
        }
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        self.workloads.node_out(node);
        adjust(&mut node.used, &pod.requests, add);
        self.workloads.node_in(node);
        self.briefs.update(node);
    }

    /// Sum of the requests of active pods bound to `node`.
    fn usage_on(&self, node: &str) -> GpuCounts {
        self.usage.get(node).cloned().unwrap_or_default()
    }
}

/// Adds (or takes away) `requests` from `used`, saturating; resources at 0 are dropped.
fn adjust(used: &mut GpuCounts, requests: &GpuCounts, add: bool) {
    for (resource, &count) in requests {
        let slot = used.entry(resource.clone()).or_insert(0);
        *slot = if add {
            slot.saturating_add(count)
        } else {
            slot.saturating_sub(count)
        };
    }
    used.retain(|_, n| *n > 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};

    #[test]
    fn usage_follows_pod_events() {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(node("n1", 8));
        c.upsert_pod(pod("a", Some("n1"), 2));
        c.upsert_pod(pod("b", None, 4));
        assert_eq!(c.node("n1").unwrap().free("nvidia.com/gpu"), 6);

        // b binds to n1, then a terminates.
        c.upsert_pod(pod("b", Some("n1"), 4));
        assert_eq!(c.node("n1").unwrap().free("nvidia.com/gpu"), 2);
        let mut done = pod("a", Some("n1"), 2);
        done.active = false;
        c.upsert_pod(done);
        assert_eq!(c.node("n1").unwrap().free("nvidia.com/gpu"), 4);
        c.remove_pod("b");
        assert_eq!(c.node("n1").unwrap().free("nvidia.com/gpu"), 8);
        assert!(c.node("n1").unwrap().used.is_empty());
    }

    #[test]
    fn pods_seen_before_their_node_are_counted() {
        let mut c = ClusterSnapshot::new();
        c.upsert_pod(pod("a", Some("late"), 3));
        c.upsert_node(node("late", 4));
        assert_eq!(c.node("late").unwrap().free("nvidia.com/gpu"), 1);
    }

    #[test]
    fn pods_without_gpus_are_not_stored() {
        let mut c = ClusterSnapshot::new();
        c.upsert_pod(pod("cpu", Some("n1"), 0));
        assert_eq!(c.pod_count(), 0);
    }

    fn telemetry() -> Arc<NodeTelemetry> {
        Arc::new(NodeTelemetry::never_reported(
            crate::core::telemetry::TelemetrySource::Agent,
            "connection refused",
        ))
    }

    #[test]
    fn telemetry_survives_node_updates_and_relists() {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(node("n1", 8));
        assert!(c.set_telemetry("n1", Some(telemetry())));
        assert!(
            !c.set_telemetry("n1", Some(telemetry())),
            "equal is no change"
        );
        assert!(!c.set_telemetry("ghost", Some(telemetry())));
        c.upsert_node(node("n1", 4));
        assert_eq!(c.node("n1").unwrap().telemetry, Some(telemetry()));
        c.reset_nodes(vec![node("n1", 4), node("n2", 2)]);
        assert_eq!(c.node("n1").unwrap().telemetry, Some(telemetry()));
        assert_eq!(c.node("n2").unwrap().telemetry, None);
        assert!(c.set_telemetry("n1", None));
        c.upsert_node(node("n1", 4));
        assert_eq!(c.node("n1").unwrap().telemetry, None);
        // A re-list without the node forgets it and its telemetry.
        c.set_telemetry("n1", Some(telemetry()));
        c.reset_nodes(vec![node("n2", 2)]);
        c.upsert_node(node("n1", 4));
        assert_eq!(c.node("n1").unwrap().telemetry, None);
    }

    #[test]
    fn reset_pods_recomputes_usage() {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(node("n1", 8));
        c.upsert_pod(pod("a", Some("n1"), 5));
        c.reset_pods(vec![pod("b", Some("n1"), 1)]);
        assert_eq!(c.node("n1").unwrap().free("nvidia.com/gpu"), 7);
        assert!(c.pod("a").is_none());
    }
}
