//! Which of kube-scheduler's candidate victims rota lets it preempt: the answer behind `preempt`.
//!
//! Invariants of the answer: a node is returned only with at least one victim; every victim is
//! one kube-scheduler proposed for that node and, where the cluster view knows the pod, is
//! actually bound there; victims are ordered by decreasing priority (then UID, for determinism).

use std::collections::BTreeMap;

use super::cluster::ClusterSnapshot;
use super::model::GpuPod;

/// A candidate victim as proposed by kube-scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Pod UID.
    pub uid: String,
    /// Priority, when the request carried the full pod.
    pub priority: Option<i32>,
}

/// The victims kube-scheduler proposed on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCandidates {
    /// Proposed victims.
    pub pods: Vec<Candidate>,
    /// PodDisruptionBudget violations, passed through unchanged.
    pub num_pdb_violations: i64,
}

/// Narrows kube-scheduler's candidates to the victims rota accepts, per node.
pub fn select_victims(
    cluster: &ClusterSnapshot,
    _preemptor: &GpuPod,
    candidates: BTreeMap<String, NodeCandidates>,
) -> BTreeMap<String, NodeCandidates> {
    let mut out = BTreeMap::new();
    for (node, mut proposed) in candidates {
        proposed
            .pods
            .retain(|c| bound_elsewhere(cluster, &c.uid, &node).is_none());
        if proposed.pods.is_empty() {
            continue;
        }
        for c in &mut proposed.pods {
            if c.priority.is_none() {
                c.priority = cluster.pod(&c.uid).map(|p| p.priority);
            }
        }
        proposed.pods.sort_by(|a, b| {
            b.priority
                .unwrap_or(0)
                .cmp(&a.priority.unwrap_or(0))
                .then_with(|| a.uid.cmp(&b.uid))
        });
        out.insert(node, proposed);
    }
    out
}

/// The node a known pod is bound to, when that is not `node`.
fn bound_elsewhere<'c>(cluster: &'c ClusterSnapshot, uid: &str, node: &str) -> Option<&'c str> {
    let bound = cluster.pod(uid)?.node_name.as_deref()?;
    (bound != node).then_some(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{GpuNode, PlacementRules, WorkloadId, WorkloadKind};

    fn pod(uid: &str, node: &str, priority: i32) -> GpuPod {
        GpuPod {
            uid: uid.into(),
            namespace: "ns".into(),
            name: uid.into(),
            tenant: "ns".into(),
            workload: WorkloadId {
                kind: WorkloadKind::Pod,
                namespace: "ns".into(),
                name: uid.into(),
            },
            requests: [("nvidia.com/gpu".to_string(), 1)].into(),
            node_name: Some(node.into()),
            active: true,
            priority,
            placement: PlacementRules::default(),
            ..GpuPod::default()
        }
    }

    fn cand(uid: &str) -> Candidate {
        Candidate {
            uid: uid.into(),
            priority: None,
        }
    }

    #[test]
    fn drops_empty_nodes_and_pods_bound_elsewhere_and_orders_by_priority() {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(GpuNode {
            name: "n1".into(),
            ..GpuNode::default()
        });
        c.upsert_pod(pod("low", "n1", 1));
        c.upsert_pod(pod("high", "n1", 100));
        c.upsert_pod(pod("other", "n2", 5));
        let preemptor = pod("me", "n1", 1000);
        let candidates = BTreeMap::from([
            (
                "n1".to_string(),
                NodeCandidates {
                    pods: vec![cand("low"), cand("other"), cand("high"), cand("unknown")],
                    num_pdb_violations: 2,
                },
            ),
            ("n2".to_string(), NodeCandidates::default()),
            (
                "n3".to_string(),
                NodeCandidates {
                    pods: vec![cand("other")],
                    num_pdb_violations: 0,
                },
            ),
        ]);
        let out = select_victims(&c, &preemptor, candidates);
        assert_eq!(out.keys().collect::<Vec<_>>(), vec!["n1"]);
        let uids: Vec<_> = out["n1"].pods.iter().map(|p| p.uid.as_str()).collect();
        assert_eq!(uids, vec!["high", "low", "unknown"]);
        assert_eq!(out["n1"].num_pdb_violations, 2);
    }
}
