//! The fair-share gate in front of placement, and the head-room score that keeps space for the
//! head of the queue.
//!
//! **Gate.** A GPU pod whose workload is queued passes only when [`admit`] says so: its workload
//! heads its resource's queue, or the free GPUs (net of reservations of admitted workloads) cover
//! it and every workload ahead of it. Otherwise every candidate node is rejected, unresolvably,
//! with one shared reason that names no node (kube-scheduler aggregates it):
//!
//! ```text
//!   rota: waiting for fair share: position 3 of 7 for nvidia.com/gpu; tenant physics holds 12
//!   GPUs, entitled to 8; 2 GPUs free, 14 needed by it and the workloads ahead
//! ```
//!
//! Pods that want no GPU, pods whose workload the view does not know (no API server, or the
//! watch has not delivered it yet) and pods of a workload with nothing queued are not gated:
//! rota must not block what it cannot judge. Admission is per workload, so a gang's pods pass
//! together; the caller records it with [`Workloads::admit`](super::workloads::Workloads::admit).
//!
//! **Head room** (documented rule). Let H head the queue of the pod's primary resource r, with
//! per-pod request g and m = ⌈H's GPUs / g⌉ pods left to place. The nodes where one of H's pods
//! fits are the ready, schedulable nodes with `free(r) ≥ g`. When there are at most m of them
//! (H needs every one), a node among them scores 0 on the `headRoom` component if placing the
//! scored pod would leave `free(r) − request < g`, and every other node scores 1. When nothing is
//! at stake (empty queue, the pod belongs to H, or such nodes are plentiful or absent) the
//! component is left out, so scores are exactly those without it.
//!
//! Must not: mutate the queue (the caller admits under a write lock), or read a clock.

use std::fmt::Write as _;
use std::sync::Arc;

use super::cluster::ClusterSnapshot;
use super::model::{GpuNode, GpuPod};
use super::placement::FilterOutcome;
use super::queue::{admit, Admission, AdmitReason, QueueEntry};
use super::workloads::counts_capacity;

/// The gate's answer for one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateVerdict {
    /// Not subject to the gate (see the module docs); placement decides alone.
    NotGated,
    /// Its workload was admitted before: pass.
    Admitted,
    /// Its workload may be admitted now: the caller admits it, then places the pod.
    Admit(AdmitReason),
    /// Not its turn: reject every node with this reason.
    Hold(Arc<str>),
}

/// Judges `pod` against the queue. `enabled` is `gate.enabled` from the config.
///
/// One refinement of [`admit`]: while GPUs of the resource are reserved for admitted workloads
/// that are still binding, the head is treated like any other workload (those workloads are
/// ahead of it), so it passes only if the free GPUs net of reservations cover it. Otherwise
/// the next head could take a gang's reserved GPUs between the binds of its pods.
pub fn check(cluster: &ClusterSnapshot, pod: &GpuPod, enabled: bool) -> GateVerdict {
    if !enabled || !pod.wants_gpus() {
        return GateVerdict::NotGated;
    }
    let state = cluster.workloads();
    if state.workload(&pod.workload).is_none() {
        return GateVerdict::NotGated;
    }
    let queue = state.queue();
    let free = state.free_for_admission();
    let Some(entry) = queue.get(&pod.workload) else {
        return match admit(queue, &pod.workload, &free) {
            Admission::Admit(AdmitReason::AlreadyAdmitted) => GateVerdict::Admitted,
            _ => GateVerdict::NotGated,
        };
    };
    let net = free.get(&entry.resource).copied().unwrap_or(0);
    match admit(queue, &pod.workload, &free) {
        Admission::Admit(AdmitReason::Head)
            if state.reserved(&entry.resource) > 0 && entry.gpus > net =>
        {
            let total = queue.len_for(&entry.resource);
            GateVerdict::Hold(hold_reason(cluster, entry, 1, total, net, entry.gpus))
        }
        Admission::Admit(AdmitReason::AlreadyAdmitted) => GateVerdict::Admitted,
        Admission::Admit(reason) => GateVerdict::Admit(reason),
        Admission::NotQueued => GateVerdict::NotGated,
        Admission::Wait {
            position,
            total,
            free,
            needed,
        } => GateVerdict::Hold(hold_reason(cluster, entry, position, total, free, needed)),
    }
}

/// The shared rejection reason (module docs).
fn hold_reason(
    cluster: &ClusterSnapshot,
    entry: &QueueEntry,
    position: usize,
    total: usize,
    free: u64,
    needed: u64,
) -> Arc<str> {
    let state = cluster.workloads();
    let held = state.held(&entry.tenant, &entry.resource);
    let mut reason = format!(
        "rota: waiting for fair share: position {position} of {total} for {}; tenant {} holds {held} GPUs, ",
        entry.resource, entry.tenant
    );
    match state.entitled(&entry.tenant, &entry.resource) {
        Some(e) => {
            let _ = write!(reason, "entitled to {}", gpus(e));
        }
        None => reason.push_str("entitlement not computed yet"),
    }
    let _ = write!(
        reason,
        "; {free} GPUs free, {needed} needed by it and the workloads ahead"
    );
    reason.into()
}

/// A filter answer that rejects every candidate, unresolvably, with one shared reason.
pub fn reject_all<'n>(candidates: &[&'n str], reason: Arc<str>) -> FilterOutcome<'n> {
    FilterOutcome {
        passed: Vec::new(),
        unresolvable: candidates.iter().map(|&n| (n, reason.clone())).collect(),
        failed: Vec::new(),
    }
}

/// `8` for whole numbers, `7.5` otherwise: entitlements are fractional, GPUs are not.
pub fn gpus(x: f64) -> String {
    if (x - x.round()).abs() < 0.05 {
        format!("{:.0}", x.round())
    } else {
        format!("{x:.1}")
    }
}

/// The primary resource of a pod: the one it requests most of (ties: the smaller name).
pub fn primary_resource(pod: &GpuPod) -> Option<(&str, u64)> {
    pod.requests
        .iter()
        .filter(|(_, &n)| n > 0)
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(r, &n)| (r.as_str(), n))
}

/// What the head of the queue needs kept free, for scoring one pod (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadRoom {
    resource: String,
    /// GPUs one of the head's pods needs on one node.
    per_pod: u64,
    /// The scored pod's request of `resource`.
    request: u64,
}

impl HeadRoom {
    /// The head room at stake for scoring `pod`, or `None` when nothing is (the component is
    /// then left out). O(nodes) when the queue has a head, O(1) otherwise.
    pub fn for_pod(cluster: &ClusterSnapshot, pod: &GpuPod) -> Option<Self> {
        let (resource, request) = primary_resource(pod)?;
        let state = cluster.workloads();
        let head = state.queue().head(resource)?;
        if head.key == pod.workload {
            return None;
        }
        let per_pod = state
            .workload(&head.key)
            .map_or(head.gpus, |w| w.per_pod(resource))
            .max(1);
        let pods_left = head.gpus.div_ceil(per_pod).max(1);
        let fitting = cluster
            .nodes()
            .filter(|n| counts_capacity(n) && n.free(resource) >= per_pod)
            .take(
                usize::try_from(pods_left)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
            )
            .count() as u64;
        if fitting == 0 || fitting > pods_left {
            return None;
        }
        Some(Self {
            resource: resource.to_owned(),
            per_pod,
            request,
        })
    }

    /// The `headRoom` component of `node`: 0 when placing the pod there would take a node the
    /// head needs, else 1.
    pub fn score(&self, node: &GpuNode) -> f64 {
        let free = node.free(&self.resource);
        let protected = counts_capacity(node) && free >= self.per_pod;
        if protected && free.saturating_sub(self.request) < self.per_pod {
            0.0
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_printed_whole_when_whole() {
        assert_eq!(gpus(8.0), "8");
        assert_eq!(gpus(7.98), "8");
        assert_eq!(gpus(7.5), "7.5");
        assert_eq!(gpus(0.0), "0");
    }

    #[test]
    fn primary_resource_is_the_largest_request() {
        let pod = GpuPod {
            requests: [
                ("b".to_string(), 2),
                ("a".to_string(), 2),
                ("c".to_string(), 1),
            ]
            .into(),
            ..GpuPod::default()
        };
        assert_eq!(primary_resource(&pod), Some(("a", 2)));
        assert_eq!(primary_resource(&GpuPod::default()), None);
    }
}
