//! Which of kube-scheduler's candidate victims rota lets it preempt: the answer behind `preempt`.
//!
//! rota keeps a proposed victim only when priority preemption cannot undo fairness by taking it:
//! the view knows the pod, it is bound to that node, its tenant holds more of the pod's primary
//! resource than it was entitled to at the last fair-share refresh, and it has run (since
//! `status.startTime`) at least its minimum quantum (`quantum` per kind, or its
//! `rota.io/quantum-seconds` annotation clamped to `quantum.minSeconds..=maxSeconds`). A pod
//! the view does not know, or whose tenant's entitlement or start time is unknown, cannot be
//! shown to be over share and past its quantum, so it is dropped: the safe reading.
//!
//! Invariants of the answer: a node is returned only with at least one victim; every victim is
//! one kube-scheduler proposed for that node; victims are ordered by decreasing priority (then
//! UID, for determinism).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::ValidConfig;

use super::cluster::ClusterSnapshot;
use super::gate::primary_resource;
use super::model::GpuPod;

/// What victims are judged against besides the cluster: the config's quanta and the time.
#[derive(Clone, Copy, Debug)]
pub struct VictimRules<'a> {
    /// The validated config (quanta per kind and their bounds).
    pub config: &'a ValidConfig,
    /// The decision time, unix seconds.
    pub now_unix_seconds: f64,
}

/// Why a proposed victim is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The view does not know the pod.
    Unknown,
    /// The pod is bound to another node (or to none).
    NotOnNode,
    /// Its tenant is within its entitlement, or the entitlement is unknown.
    NotOverShare,
    /// It has not run its minimum quantum, or its start time is unknown.
    WithinQuantum,
}

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

/// Narrows kube-scheduler's candidates to the victims rota accepts, per node (module docs).
pub fn select_victims(
    cluster: &ClusterSnapshot,
    _preemptor: &GpuPod,
    candidates: BTreeMap<String, NodeCandidates>,
    rules: &VictimRules<'_>,
) -> BTreeMap<String, NodeCandidates> {
    let mut out = BTreeMap::new();
    for (node, mut proposed) in candidates {
        proposed
            .pods
            .retain(|c| refusal(cluster, &c.uid, &node, rules).is_none());
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

/// Why rota refuses victim `uid` on `node`, or `None` when it accepts it.
pub fn refusal(
    cluster: &ClusterSnapshot,
    uid: &str,
    node: &str,
    rules: &VictimRules<'_>,
) -> Option<Refusal> {
    let Some(pod) = cluster.pod(uid) else {
        return Some(Refusal::Unknown);
    };
    if pod.node_name.as_deref() != Some(node) {
        return Some(Refusal::NotOnNode);
    }
    if !over_share(cluster, pod) {
        return Some(Refusal::NotOverShare);
    }
    let quantum = quantum(pod, rules.config).as_secs_f64();
    let ran = pod.started_at.map(|t| rules.now_unix_seconds - t);
    if !ran.is_some_and(|ran| ran >= quantum) {
        return Some(Refusal::WithinQuantum);
    }
    None
}

/// The pod's tenant holds more of the pod's primary resource than it is entitled to.
fn over_share(cluster: &ClusterSnapshot, pod: &GpuPod) -> bool {
    let Some((resource, _)) = primary_resource(pod) else {
        return false;
    };
    let state = cluster.workloads();
    let held = state.held(&pod.tenant, resource) as f64;
    state
        .entitled(&pod.tenant, resource)
        .is_some_and(|entitled| held > entitled + 1e-9)
}

/// A workload's minimum run time: its annotation clamped to the config's bounds, else the
/// quantum of its kind.
pub fn quantum(pod: &GpuPod, config: &ValidConfig) -> Duration {
    match pod.quantum_seconds {
        Some(q) => config.clamp_quantum(Duration::from_secs(q)),
        None => config.quantum_for(pod.workload.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::GpuNode;

    fn pod(uid: &str, node: &str, priority: i32) -> GpuPod {
        GpuPod {
            priority,
            started_at: Some(0.0),
            ..crate::testing::pod(uid, Some(node), 1)
        }
    }

    fn cand(uid: &str) -> Candidate {
        Candidate {
            uid: uid.into(),
            priority: None,
        }
    }

    #[test]
    fn keeps_known_over_share_victims_past_their_quantum_in_priority_order() {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(GpuNode {
            name: "n1".into(),
            ready: true,
            allocatable: [("nvidia.com/gpu".to_string(), 3)].into(),
            ..GpuNode::default()
        });
        c.upsert_pod(pod("low", "n1", 1));
        c.upsert_pod(pod("high", "n1", 100));
        let mut fresh = pod("fresh", "n1", 50);
        fresh.started_at = Some(9_990.0);
        c.upsert_pod(fresh);
        c.upsert_pod(pod("other", "n2", 5));
        let mut waiting = pod("waiting", "n1", 0);
        waiting.node_name = None;
        waiting.tenant = "b".into();
        waiting.requests = [("nvidia.com/gpu".to_string(), 3)].into();
        c.upsert_pod(waiting);
        // 3 GPUs, ns holds 4 (one on an unknown node) and b waits for 3: 1.5 each.
        c.refresh_fair_share(
            &crate::core::fairshare::SharePolicy::default(),
            |_| 0.0,
            10_000.0,
        );
        assert_eq!(c.workloads().entitled("ns", "nvidia.com/gpu"), Some(1.5));

        let preemptor = pod("me", "n1", 1000);
        let candidates = BTreeMap::from([
            (
                "n1".to_string(),
                NodeCandidates {
                    pods: vec![
                        cand("low"),
                        cand("other"),
                        cand("fresh"),
                        cand("high"),
                        cand("unknown"),
                    ],
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
        let config = ValidConfig::default();
        let rules = VictimRules {
            config: &config,
            now_unix_seconds: 10_000.0,
        };
        let out = select_victims(&c, &preemptor, candidates, &rules);
        assert_eq!(out.keys().collect::<Vec<_>>(), vec!["n1"]);
        let uids: Vec<_> = out["n1"].pods.iter().map(|p| p.uid.as_str()).collect();
        assert_eq!(uids, vec!["high", "low"]);
        assert_eq!(out["n1"].num_pdb_violations, 2);
        assert_eq!(
            refusal(&c, "fresh", "n1", &rules),
            Some(Refusal::WithinQuantum)
        );
        assert_eq!(refusal(&c, "unknown", "n1", &rules), Some(Refusal::Unknown));
        assert_eq!(refusal(&c, "other", "n1", &rules), Some(Refusal::NotOnNode));
        assert_eq!(
            refusal(&c, "waiting", "n1", &rules),
            Some(Refusal::NotOnNode)
        );
    }

    #[test]
    fn a_tenant_within_its_share_or_without_a_refresh_loses_nothing() {
        let mut c = ClusterSnapshot::new();
        c.upsert_pod(pod("a", "n1", 1));
        let config = ValidConfig::default();
        let rules = VictimRules {
            config: &config,
            now_unix_seconds: 10_000.0,
        };
        assert_eq!(refusal(&c, "a", "n1", &rules), Some(Refusal::NotOverShare));
        c.upsert_node(GpuNode {
            name: "n1".into(),
            ready: true,
            allocatable: [("nvidia.com/gpu".to_string(), 4)].into(),
            ..GpuNode::default()
        });
        c.refresh_fair_share(
            &crate::core::fairshare::SharePolicy::default(),
            |_| 0.0,
            1.0,
        );
        assert_eq!(refusal(&c, "a", "n1", &rules), Some(Refusal::NotOverShare));
    }

    #[test]
    fn quantum_annotation_is_clamped() {
        let config = ValidConfig::default();
        let mut p = pod("a", "n1", 0);
        assert_eq!(quantum(&p, &config).as_secs(), config.quantum.pod_seconds);
        p.quantum_seconds = Some(1);
        assert_eq!(quantum(&p, &config).as_secs(), config.quantum.min_seconds);
        p.quantum_seconds = Some(u64::MAX);
        assert_eq!(quantum(&p, &config).as_secs(), config.quantum.max_seconds);
    }
}
