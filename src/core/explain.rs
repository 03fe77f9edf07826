//! Why a pod waits: its place in the fair-share queue, its tenant's share, what is ahead of it
//! and a rough start estimate. The answer behind `GET /v1/explain/{namespace}/{pod}`.
//!
//! **Start estimate** (documented rule). With `needed` = the GPUs of the pod's workload plus
//! those of every workload ahead of it, and `available` = free GPUs of its resource minus
//! reservations, the deficit is `needed − available`. No deficit: it can start at its next
//! scheduling attempt (0 s). Otherwise the estimate is `deficit / release rate`, where the
//! release rate is the cluster's recent GPU releases per second (pods finishing or deleted,
//! averaged exponentially over 30 minutes, see `workloads::release_rate`). Without a release
//! rate (no releases observed yet) it is unknown. It ignores workloads that will arrive ahead
//! of it later (higher priority, a tenant further below its share) and rotations, so it is a
//! hint for people, never an input to a decision.
//!
//! For a running workload, [`rotation_status`] says whether the rotation loop may stop it:
//! protected until the end of its quantum, scheduled to stop at an announced time, or not a
//! candidate and why.
//!
//! Must not: change anything (read-only on a snapshot), or read a clock.

use serde::{Deserialize, Serialize};

use super::cluster::ClusterSnapshot;
use super::fairshare::SharePolicy;
use super::gate::primary_resource;
use super::gate::{turn_of, ClusterSupply, Step, Turn};
use super::model::GpuPod;
use super::rotation::RunningWorkload;

/// At most this many workloads ahead are listed.
pub const MAX_AHEAD: usize = 10;

/// Where a pod stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    /// Its workload waits in the fair-share queue.
    Waiting,
    /// Its workload was admitted; its pods are being placed.
    Admitted,
    /// It is bound to a node.
    Running,
    /// It has finished (Succeeded or Failed) and holds nothing.
    Finished,
    /// Not in the queue (nothing pending for its workload, or it wants no GPU).
    NotQueued,
}

/// The tenant's figures for the pod's resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantFigures {
    /// Configured weight among its siblings.
    pub weight: f64,
    /// GPUs held now.
    pub held: u64,
    /// GPUs its queued and admitted workloads still need.
    pub pending: u64,
    /// Its workloads queued or admitted and binding.
    pub pending_workloads: usize,
    /// GPUs it is entitled to at the last refresh (`null` before the first, or without demand).
    pub entitled: Option<f64>,
    /// Decayed GPU-seconds passed to the last refresh.
    pub usage_gpu_seconds: Option<f64>,
    /// `held / entitled` over all resources, as the queue orders it (`null` when infinite).
    pub standing: Option<f64>,
}

/// A workload ahead in the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AheadEntry {
    /// `kind/namespace/name`.
    pub workload: String,
    /// Its tenant.
    pub tenant: String,
    /// GPUs it waits for.
    pub gpus: u64,
    /// Its PriorityClass value.
    pub priority: i32,
}

/// When the pod may start (module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartEstimate {
    /// Seconds from now; `null` when unknown.
    pub seconds: Option<f64>,
    /// Unix seconds; `null` when unknown.
    pub at_unix_seconds: Option<f64>,
    /// How it was estimated, for a person.
    pub basis: String,
}

/// The whole answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// `namespace/name`.
    pub pod: String,
    /// `kind/namespace/name` of its workload.
    pub workload: String,
    /// Who is charged.
    pub tenant: String,
    /// Where it stands.
    pub state: PodState,
    /// The resource its workload waits for (its largest request).
    pub resource: Option<String>,
    /// GPUs its workload waits for (its queue demand), else the pod's request.
    pub gpus: u64,
    /// 1-based position in the resource's queue, when waiting.
    pub position: Option<usize>,
    /// Workloads in the resource's queue.
    pub queue_length: usize,
    /// Its tenant's share.
    pub tenant_share: TenantFigures,
    /// The first [`MAX_AHEAD`] workloads ahead of it, in order.
    pub ahead: Vec<AheadEntry>,
    /// All workloads ahead of it.
    pub ahead_count: usize,
    /// GPUs all workloads ahead of it wait for.
    pub gpus_ahead: u64,
    /// Free GPUs of the resource on ready, schedulable nodes.
    pub free_gpus: u64,
    /// GPUs reserved for admitted workloads still binding.
    pub reserved_gpus: u64,
    /// The gate's answer now, in words.
    pub gate: String,
    /// When it may start.
    pub estimated_start: StartEstimate,
    /// When entitlements were last computed (unix seconds).
    pub refreshed_at: Option<f64>,
    /// For a running workload: whether and when the rotation loop may stop it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
}

/// Where a running workload stands with the rotation loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationState {
    /// Never rotated out (opted out, or a protected PriorityClass).
    NotCandidate,
    /// Within its quantum: not stopped before `protected_until`.
    Protected,
    /// A stop is announced for `stop_at`.
    Scheduled,
    /// Past its quantum, but its tenant is not above its share: left running.
    Safe,
    /// Past its quantum with its tenant above its share: it may be stopped (after its warning)
    /// for a tenant below its share.
    Candidate,
}

/// The rotation side of an explanation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotationStatus {
    /// Where it stands.
    pub state: RotationState,
    /// End of its quantum (unix seconds).
    pub protected_until: f64,
    /// The announced stop (unix seconds), when scheduled.
    pub stop_at: Option<f64>,
    /// The workload its GPUs are promised to, when scheduled.
    pub stop_for: Option<String>,
    /// Notice it gets before a stop, seconds.
    pub warning_seconds: f64,
    /// The same, in words.
    pub detail: String,
}

/// Where running workload `w` stands at `now`, given its tenant's `held` and `entitled` GPUs
/// (when known) and the rotation margin. Reads like the planner's victim rules (quantum from
/// its start only: a resume recorded in the leader's memory may protect it longer).
pub fn rotation_status(
    w: &RunningWorkload,
    share: Option<(f64, f64)>,
    margin: f64,
    now: f64,
) -> RotationStatus {
    let protected_until = w.started_at + w.quantum_seconds;
    let notice = format!("{:.0} s", w.warning_seconds);
    let (state, detail) = if let Some(n) = &w.stop {
        (
            RotationState::Scheduled,
            format!(
                "scheduled to stop at {} to free its GPUs for {}; annotate it \
                 rota.io/preemptible: \"false\" to keep it",
                crate::clock::rfc3339(n.stop_at),
                n.claim
            ),
        )
    } else if !w.preemptible {
        let why = "not a candidate: annotated rota.io/preemptible: \"false\"".to_owned();
        (RotationState::NotCandidate, why)
    } else if w.protected {
        let why =
            "not a candidate: its PriorityClass is protected (rotation.protectedPriorityClasses)";
        (RotationState::NotCandidate, why.to_owned())
    } else if now < protected_until {
        let why = format!(
            "protected until {}, the end of its {:.0} s quantum",
            crate::clock::rfc3339(protected_until),
            w.quantum_seconds
        );
        (RotationState::Protected, why)
    } else {
        match share {
            Some((held, entitled)) if held - entitled > margin => (
                RotationState::Candidate,
                format!(
                    "past its quantum and tenant {} holds {held:.0} GPUs, entitled to \
                     {entitled:.1}: it may be stopped for a tenant below its share, with \
                     {notice} of notice",
                    w.tenant
                ),
            ),
            _ => (
                RotationState::Safe,
                format!(
                    "past its quantum, but tenant {} is not above its share: it keeps running",
                    w.tenant
                ),
            ),
        }
    };
    RotationStatus {
        state,
        protected_until,
        stop_at: w.stop.as_ref().map(|n| n.stop_at),
        stop_for: w.stop.as_ref().map(|n| n.claim.to_string()),
        warning_seconds: w.warning_seconds,
        detail,
    }
}

/// Explains the pod `namespace/name`, or `None` when the snapshot does not know it.
/// O(pods) to find it by name plus O(n log n) in its queue: for people, not the hot path.
pub fn explain(
    cluster: &ClusterSnapshot,
    namespace: &str,
    name: &str,
    policy: &SharePolicy,
    now: f64,
) -> Option<Explanation> {
    let pod = find_pod(cluster, namespace, name)?;
    let state = cluster.workloads();
    let queue = state.queue();
    let key = &pod.workload;
    let entry = queue.get(key);
    let resource = entry
        .map(|e| e.resource.clone())
        .or_else(|| primary_resource(pod).map(|(r, _)| r.to_owned()));
    let r = resource.as_deref().unwrap_or("");
    let ahead: Vec<_> = queue.ahead_of(key).collect();
    let gpus = entry.map_or_else(|| pod.requests.get(r).copied().unwrap_or(0), |e| e.gpus);
    let mut supply = ClusterSupply::new(cluster, r);
    let available = supply.free_gpus();
    let turn = turn_of(queue, key, &mut supply);
    let gpus_ahead = turn.as_ref().map_or(0, |t| t.needed.saturating_sub(gpus));
    let pod_state = pod_state(cluster, pod);
    let estimate = match (&pod_state, &turn) {
        (
            PodState::Waiting,
            Some(Turn {
                step: Step::Never(why),
                ..
            }),
        ) => StartEstimate {
            seconds: None,
            at_unix_seconds: None,
            basis: format!("never: {why}"),
        },
        (PodState::Waiting, _) => {
            estimate(cluster, r, gpus.saturating_add(gpus_ahead), available, now)
        }
        (PodState::Admitted | PodState::Running, _) => StartEstimate {
            seconds: Some(0.0),
            at_unix_seconds: Some(now),
            basis: "admitted: it passes the gate".into(),
        },
        (PodState::Finished | PodState::NotQueued, _) => StartEstimate {
            seconds: None,
            at_unix_seconds: None,
            basis: "not waiting in the fair-share queue".into(),
        },
    };
    Some(Explanation {
        pod: pod.key(),
        workload: key.to_string(),
        tenant: pod.tenant.clone(),
        state: pod_state,
        gpus,
        position: queue.position(key).map(|(p, _)| p),
        queue_length: queue.len_for(r),
        tenant_share: figures(cluster, &pod.tenant, r, policy),
        ahead_count: ahead.len(),
        ahead: ahead
            .iter()
            .take(MAX_AHEAD)
            .map(|e| AheadEntry {
                workload: e.key.to_string(),
                tenant: e.tenant.clone(),
                gpus: e.gpus,
                priority: e.priority_class,
            })
            .collect(),
        gpus_ahead,
        free_gpus: state.free(r),
        reserved_gpus: state.reserved(r),
        gate: describe(&pod_state, turn.as_ref(), queue.len_for(r), available, gpus),
        estimated_start: estimate,
        refreshed_at: state.report().map(|r| r.at),
        rotation: None,
        resource,
    })
}

/// The gate's answer now, in words.
fn describe(state: &PodState, turn: Option<&Turn>, total: usize, free: u64, gpus: u64) -> String {
    let Some(turn) = turn else {
        return match state {
            PodState::Admitted | PodState::Running => "admitted earlier".into(),
            _ => "not queued".into(),
        };
    };
    let holder = turn
        .holder
        .as_ref()
        .map(|(w, g)| format!("; {w} holds the reservation for {g} GPUs"))
        .unwrap_or_default();
    match &turn.step {
        Step::Admit { backfill: false } => {
            "admitted at its next scheduling attempt: it is its turn".into()
        }
        Step::Admit { backfill: true } => format!(
            "admitted at its next scheduling attempt as backfill{holder}; backfill is the first rotated out when that reservation is due"
        ),
        Step::Reserve => format!(
            "holds the reservation: {free} GPUs free, it needs {gpus}; GPUs released from now on are its first, and backfilled work leaves when they cover it"
        ),
        Step::Wait => format!(
            "waiting: position {} of {total}; {free} GPUs free, {} needed by it and the workloads ahead{holder}",
            turn.position, turn.needed
        ),
        Step::Never(why) => format!("can never fit: {why}; it holds no one up"),
    }
}

/// The pod `namespace/name`, else a pod of the workload (Job or VM) of that name: a bound,
/// active one first.
fn find_pod<'a>(cluster: &'a ClusterSnapshot, namespace: &str, name: &str) -> Option<&'a GpuPod> {
    let in_namespace = || cluster.pods().filter(move |p| p.namespace == namespace);
    in_namespace().find(|p| p.name == name).or_else(|| {
        in_namespace()
            .filter(|p| p.workload.name == name)
            .max_by_key(|p| (p.active, p.node_name.is_some()))
    })
}

fn pod_state(cluster: &ClusterSnapshot, pod: &GpuPod) -> PodState {
    let queue = cluster.workloads().queue();
    if !pod.active {
        PodState::Finished
    } else if pod.node_name.is_some() {
        PodState::Running
    } else if queue.is_admitted(&pod.workload) {
        PodState::Admitted
    } else if queue.get(&pod.workload).is_some() {
        PodState::Waiting
    } else {
        PodState::NotQueued
    }
}

fn figures(
    cluster: &ClusterSnapshot,
    tenant: &str,
    resource: &str,
    policy: &SharePolicy,
) -> TenantFigures {
    let state = cluster.workloads();
    let book = state.tenant(tenant);
    let get =
        |m: Option<&super::model::GpuCounts>| m.and_then(|m| m.get(resource)).copied().unwrap_or(0);
    let share = state
        .report()
        .and_then(|r| r.resources.get(resource))
        .and_then(|s| s.tenants.get(tenant));
    let standing = state
        .report()
        .and_then(|r| r.standings.get(tenant))
        .map(|s| s.value())
        .filter(|v| v.is_finite());
    TenantFigures {
        weight: policy.weight(tenant),
        held: get(book.map(|b| &b.held)),
        pending: get(book.map(|b| &b.pending)),
        pending_workloads: book.map_or(0, |b| b.pending_workloads),
        entitled: share.map(|s| s.entitled),
        usage_gpu_seconds: share.map(|s| s.usage),
        standing,
    }
}

fn estimate(
    cluster: &ClusterSnapshot,
    resource: &str,
    needed: u64,
    available: u64,
    now: f64,
) -> StartEstimate {
    let deficit = needed.saturating_sub(available);
    if deficit == 0 {
        return StartEstimate {
            seconds: Some(0.0),
            at_unix_seconds: Some(now),
            basis: format!(
                "{available} GPUs are free for admission and it and the workloads ahead need {needed}: it can start at its next scheduling attempt"
            ),
        };
    }
    match cluster
        .workloads()
        .release_rate(resource)
        .filter(|&r| r > 0.0)
    {
        Some(rate) => {
            let seconds = deficit as f64 / rate;
            StartEstimate {
                seconds: Some(seconds),
                at_unix_seconds: Some(now + seconds),
                basis: format!(
                    "{deficit} more GPUs must be released; the cluster released {:.1} GPUs per hour recently",
                    rate * 3600.0
                ),
            }
        }
        None => StartEstimate {
            seconds: None,
            at_unix_seconds: None,
            basis: format!(
                "unknown: {deficit} more GPUs must be released and no recent release rate is known"
            ),
        },
    }
}
