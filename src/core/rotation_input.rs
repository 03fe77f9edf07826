//! Builds the rotation planner's [`PlanInput`] from the cluster view: running workloads from
//! bound GPU pods, waiting workloads from the fair-share queue, and each resource's held,
//! entitled and free GPUs. A workload rota already rotated out whose pods are still shutting
//! down is neither running nor held (its GPUs are on their way), though its GPUs stay not free.
//!
//! ```text
//!   ClusterSnapshot (after refresh_fair_share) ─┐
//!   rotated-out index (read-side feeds) ────────┼─▶ build_plan_input(.., now) ─▶ PlanInput
//!   ValidConfig (quanta, protected classes) ────┘
//! ```
//!
//! Invariants: one [`RunningWorkload`] per workload (on its *primary* resource, the one it holds
//! most of, ties to the smaller name, as the queue does), so a plan never names a workload
//! twice; output order is deterministic (workload id, resource and node names sorted); a
//! rotated-out workload that has pods again (resumed by rota or by hand) is not offered for
//! resume; tenants without a known entitlement are left out of [`ResourceState`] (the planner
//! then never acts for or against them).
//! Must not: read a clock (`now` is an argument), or look at Kubernetes objects.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::ValidConfig;

use super::cluster::ClusterSnapshot;
use super::model::{GpuPod, WorkloadId};
use super::quantity::saturating_sum;
use super::rotation::{
    Limits, PlanInput, ResourceState, RotatedOutWorkload, RunningWorkload, Spread, StopNotice,
    TenantShare, WaitingWorkload,
};
use super::workloads::counts_capacity;

/// What a workload's object (a Job or VM; a bare pod carries them itself) says about its
/// rotation, read from its annotations: the stop rota announced, the notice the owner asks
/// for, and whether it opted out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadMarks {
    /// `rota.io/stop-at` with `rota.io/stop-for`.
    pub stop: Option<StopNotice>,
    /// `rota.io/stop-warning-seconds`.
    pub warning_seconds: Option<u64>,
    /// `rota.io/preemptible: "false"`.
    pub non_preemptible: bool,
}

impl WorkloadMarks {
    /// Nothing marked: such entries need not be kept.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Marks by workload, for the Jobs and VMs that have any.
pub type MarksById = BTreeMap<WorkloadId, WorkloadMarks>;

/// The planner's input at `now` (unix seconds) from `snapshot` (whose fair share was refreshed
/// recently: entitlements come from its last report), the workloads rota holds rotated out,
/// the marks on Job and VM objects, and the config.
pub fn build_plan_input(
    snapshot: &ClusterSnapshot,
    rotated_out: &[RotatedOutWorkload],
    marks: &MarksById,
    config: &ValidConfig,
    now: f64,
) -> PlanInput {
    let mut running = running(snapshot, config, now);
    for w in &mut running {
        if let Some(m) = marks.get(&w.id) {
            apply_marks(w, m, config);
        }
    }
    let stopping = stopping(&mut running, rotated_out);
    PlanInput {
        now,
        running,
        waiting: waiting(snapshot),
        rotated_out: still_out(snapshot, rotated_out),
        resources: resources(snapshot, config, &stopping),
        limits: Limits::from_config(&config.rotation),
    }
}

/// Takes the workloads rota already rotated out but whose pods still hold GPUs (a VM's launcher
/// or a Job's pods shutting down) out of `running`, and returns their GPUs per (tenant,
/// resource). Those GPUs are already on their way to the tenants owed them: counting them as
/// held would make the next tick rotate out another workload for the same claim.
fn stopping(
    running: &mut Vec<RunningWorkload>,
    rotated_out: &[RotatedOutWorkload],
) -> BTreeMap<(String, String), u64> {
    let out: std::collections::BTreeSet<&WorkloadId> =
        rotated_out.iter().map(|r| &r.workload.id).collect();
    let mut leaving = BTreeMap::new();
    running.retain(|w| {
        if !out.contains(&w.id) {
            return true;
        }
        let slot = leaving
            .entry((w.tenant.clone(), w.resource.clone()))
            .or_insert(0);
        *slot = u64::saturating_add(*slot, w.gpus());
        false
    });
    leaving
}

/// The object's marks win over its pods': the object is where rota writes its notices, and
/// where an owner opts out or asks for notice.
fn apply_marks(w: &mut RunningWorkload, marks: &WorkloadMarks, config: &ValidConfig) {
    if marks.stop.is_some() {
        w.stop.clone_from(&marks.stop);
    }
    if let Some(asked) = marks.warning_seconds {
        w.warning_seconds = config.warning_for(w.id.kind, Some(asked)) as f64;
    }
    w.preemptible &= !marks.non_preemptible;
}

/// What the bound pods of one workload add up to.
#[derive(Default)]
struct Running {
    tenant: String,
    /// resource → node → GPUs.
    held: BTreeMap<String, BTreeMap<String, u64>>,
    started_at: Option<f64>,
    quantum: Option<u64>,
    priority: Option<i32>,
    protected: bool,
    non_preemptible: bool,
    warning: Option<u64>,
    stop: Option<StopNotice>,
}

impl Running {
    fn add(&mut self, pod: &GpuPod, node: &str, config: &ValidConfig) {
        if self.tenant.is_empty() {
            self.tenant.clone_from(&pod.tenant);
        }
        for (resource, &gpus) in &pod.requests {
            let slot = self
                .held
                .entry(resource.clone())
                .or_default()
                .entry(node.to_owned())
                .or_insert(0);
            *slot = slot.saturating_add(gpus);
        }
        // A pod not yet started (no startTime) counts from its creation.
        if let Some(t) = pod.started_at.or(pod.created_at) {
            self.started_at = Some(self.started_at.map_or(t, |s| s.min(t)));
        }
        self.quantum = self.quantum.max(pod.quantum_seconds);
        self.priority = self.priority.max(Some(pod.priority));
        self.protected |= config.is_protected_priority_class(pod.priority_class.as_deref());
        self.non_preemptible |= pod.non_preemptible;
        self.warning = self.warning.max(pod.stop_warning_seconds);
        if self.stop.is_none() {
            self.stop.clone_from(&pod.stop);
        }
    }

    fn into_workload(
        self,
        id: WorkloadId,
        config: &ValidConfig,
        now: f64,
    ) -> Option<RunningWorkload> {
        let (resource, nodes) = self.held.into_iter().max_by(|a, b| {
            let sum = |m: &BTreeMap<String, u64>| saturating_sum(m.values().copied());
            sum(&a.1).cmp(&sum(&b.1)).then_with(|| b.0.cmp(&a.0))
        })?;
        let nodes: Vec<(String, u64)> = nodes.into_iter().filter(|&(_, g)| g > 0).collect();
        let gpus: u64 = saturating_sum(nodes.iter().map(|&(_, g)| g));
        // Unknown start: `now`, so the workload is not past its quantum (the safe reading).
        let started_at = self.started_at.unwrap_or(now);
        let quantum = match self.quantum {
            Some(asked) => config.clamp_quantum(Duration::from_secs(asked)),
            None => config.quantum_for(id.kind),
        };
        Some(RunningWorkload {
            tenant: self.tenant,
            resource,
            nodes,
            started_at,
            attained_gpu_seconds: gpus as f64 * (now - started_at).max(0.0),
            quantum_seconds: quantum.as_secs_f64(),
            preemptible: !self.non_preemptible,
            protected: self.protected,
            priority: self.priority.unwrap_or(0),
            warning_seconds: config.warning_for(id.kind, self.warning) as f64,
            stop: self.stop,
            id,
        })
    }
}

/// The running workload `id` as the planner would see it (its object's `marks` applied), or
/// `None` when it holds no GPU. O(pods): for `explain`, not for the planner.
pub fn running_workload(
    snapshot: &ClusterSnapshot,
    id: &WorkloadId,
    marks: Option<&WorkloadMarks>,
    config: &ValidConfig,
    now: f64,
) -> Option<RunningWorkload> {
    let mut acc = Running::default();
    let pods = snapshot
        .pods()
        .filter(|p| &p.workload == id && p.holds_gpus());
    for pod in pods {
        if let Some(node) = pod.node_name.as_deref() {
            acc.add(pod, node, config);
        }
    }
    if let Some(w) = snapshot.workloads().workload(id) {
        acc.tenant = w.tenant().to_owned();
    }
    let mut w = acc.into_workload(id.clone(), config, now)?;
    if let Some(m) = marks {
        apply_marks(&mut w, m, config);
    }
    (w.gpus() > 0).then_some(w)
}

/// Running workloads: bound, active GPU pods grouped by workload, sorted by id.
fn running(snapshot: &ClusterSnapshot, config: &ValidConfig, now: f64) -> Vec<RunningWorkload> {
    let mut by_workload: BTreeMap<&WorkloadId, Running> = BTreeMap::new();
    for pod in snapshot.pods().filter(|p| p.holds_gpus()) {
        if let Some(node) = pod.node_name.as_deref() {
            by_workload
                .entry(&pod.workload)
                .or_default()
                .add(pod, node, config);
        }
    }
    by_workload
        .into_iter()
        .filter_map(|(id, mut acc)| {
            // The tenant the fair-share state charges, when it knows the workload.
            if let Some(w) = snapshot.workloads().workload(id) {
                acc.tenant = w.tenant().to_owned();
            }
            acc.into_workload(id.clone(), config, now)
        })
        .filter(|w| w.gpus() > 0)
        .collect()
}

/// Waiting workloads: the fair-share queue of each resource, in queue order (resources by
/// name; the planner looks at one resource at a time). Workloads that can never fit
/// (`core::feasibility`) are left out: no rotation can make room for them.
fn waiting(snapshot: &ClusterSnapshot) -> Vec<WaitingWorkload> {
    let workloads = snapshot.workloads();
    let queue = workloads.queue();
    let mut resources: Vec<&str> = queue.resources().collect();
    resources.sort_unstable();
    resources.dedup();
    let mut out = Vec::new();
    for resource in resources {
        let capacity = workloads.capacity_pool(resource);
        for entry in queue.in_order(resource) {
            let demand = workloads.demand(entry);
            if capacity.check(demand).is_err() {
                continue;
            }
            // One pod's request covers the whole demand: it must fit on one node.
            let spread = if demand.per_pod >= demand.gpus {
                Spread::OneNode
            } else {
                Spread::AnyNodes
            };
            out.push(WaitingWorkload {
                id: entry.key.clone(),
                tenant: entry.tenant.clone(),
                resource: entry.resource.clone(),
                gpus: entry.gpus,
                spread,
                priority: entry.priority_class,
            });
        }
    }
    out
}

/// The rotated-out workloads that have no pods now (those with pods are running or queued).
fn still_out(
    snapshot: &ClusterSnapshot,
    rotated_out: &[RotatedOutWorkload],
) -> Vec<RotatedOutWorkload> {
    let workloads = snapshot.workloads();
    rotated_out
        .iter()
        .filter(|r| {
            workloads
                .workload(&r.workload.id)
                .is_none_or(|w| w.pod_count() == 0)
        })
        .cloned()
        .collect()
}

/// Per managed resource: tenants with a known entitlement (held now, entitled at the last
/// refresh) and free GPUs per ready, schedulable node.
fn resources(
    snapshot: &ClusterSnapshot,
    config: &ValidConfig,
    stopping: &BTreeMap<(String, String), u64>,
) -> Vec<ResourceState> {
    let workloads = snapshot.workloads();
    let report = workloads.report();
    let mut names: Vec<&String> = config.gpu_resources.iter().collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|resource| {
            let tenants = report
                .and_then(|r| r.resources.get(resource))
                .map(|shares| {
                    shares
                        .tenants
                        .iter()
                        .map(|(tenant, share)| TenantShare {
                            tenant: tenant.clone(),
                            held: workloads.held(tenant, resource).saturating_sub(
                                stopping
                                    .get(&(tenant.clone(), resource.clone()))
                                    .copied()
                                    .unwrap_or(0),
                            ) as f64,
                            entitled: share.entitled,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut free: Vec<(String, u64)> = snapshot
                .nodes()
                .filter(|n| counts_capacity(n))
                .map(|n| (n.name.clone(), n.free(resource)))
                .filter(|&(_, f)| f > 0)
                .collect();
            free.sort_unstable();
            ResourceState {
                resource: resource.clone(),
                tenants,
                free,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fairshare::SharePolicy;
    use crate::core::model::{GpuNode, WorkloadKind};
    use crate::core::rotation::RotationHistory;

    const GPU: &str = "nvidia.com/gpu";
    const NOW: f64 = 100_000.0;

    fn node(name: &str, gpus: u64) -> GpuNode {
        GpuNode {
            name: name.into(),
            ready: true,
            allocatable: [(GPU.to_string(), gpus)].into(),
            ..GpuNode::default()
        }
    }

    fn id(kind: WorkloadKind, name: &str) -> WorkloadId {
        WorkloadId {
            kind,
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn pod(uid: &str, w: &WorkloadId, tenant: &str, gpus: u64, on: Option<&str>) -> GpuPod {
        GpuPod {
            uid: uid.into(),
            namespace: "ns".into(),
            name: uid.into(),
            tenant: tenant.into(),
            workload: w.clone(),
            requests: [(GPU.to_string(), gpus)].into(),
            node_name: on.map(Into::into),
            active: true,
            created_at: Some(NOW - 5000.0),
            started_at: on.map(|_| NOW - 4000.0),
            ..GpuPod::default()
        }
    }

    /// The input at [`NOW`] with no marks on Job or VM objects.
    fn unmarked(
        snap: &ClusterSnapshot,
        rotated: &[RotatedOutWorkload],
        config: &ValidConfig,
    ) -> PlanInput {
        build_plan_input(snap, rotated, &MarksById::new(), config, NOW)
    }

    fn refreshed(mut snap: ClusterSnapshot, config: &ValidConfig) -> ClusterSnapshot {
        snap.refresh_fair_share(&SharePolicy::from_config(config), |_| 0.0, NOW);
        snap
    }

    #[test]
    fn running_pods_are_grouped_per_workload_with_their_earliest_start() {
        let config = ValidConfig::default();
        let mut snap = ClusterSnapshot::new();
        snap.upsert_node(node("n1", 8));
        snap.upsert_node(node("n2", 8));
        let job = id(WorkloadKind::Job, "train");
        let mut first = pod("a", &job, "physics", 2, Some("n1"));
        first.started_at = Some(NOW - 900.0);
        snap.upsert_pod(first);
        snap.upsert_pod(pod("b", &job, "physics", 2, Some("n2")));
        snap.upsert_pod(pod("c", &job, "physics", 2, Some("n2")));
        // Pending and finished pods hold nothing.
        snap.upsert_pod(pod("d", &job, "physics", 2, None));
        let mut done = pod("e", &job, "physics", 2, Some("n1"));
        done.active = false;
        snap.upsert_pod(done);
        let input = unmarked(&refreshed(snap, &config), &[], &config);
        assert_eq!(input.running.len(), 1);
        let w = &input.running[0];
        assert_eq!(w.id, job);
        assert_eq!(w.tenant, "physics");
        assert_eq!(w.nodes, vec![("n1".into(), 2), ("n2".into(), 4)]);
        assert_eq!(w.started_at, NOW - 4000.0);
        assert_eq!(w.attained_gpu_seconds, 6.0 * 4000.0);
        assert_eq!(w.quantum_seconds, config.quantum.job_seconds as f64);
        assert!(w.preemptible && !w.protected);
        // The node capacity left: n1 has 8 − 2, n2 has 8 − 4.
        let gpu = input.resources.iter().find(|r| r.resource == GPU).unwrap();
        assert_eq!(gpu.free, vec![("n1".into(), 6), ("n2".into(), 4)]);
        let physics = gpu.tenants.iter().find(|t| t.tenant == "physics").unwrap();
        assert_eq!(physics.held, 6.0);
    }

    #[test]
    fn a_rotated_out_workload_whose_pods_linger_is_neither_running_nor_held() {
        let config = ValidConfig::default();
        let mut snap = ClusterSnapshot::new();
        snap.upsert_node(node("n1", 8));
        let (first, second) = (id(WorkloadKind::Job, "w1"), id(WorkloadKind::Job, "w2"));
        snap.upsert_pod(pod("p1", &first, "a", 4, Some("n1")));
        snap.upsert_pod(pod("p2", &second, "a", 4, Some("n1")));
        snap.upsert_pod(pod("q", &id(WorkloadKind::Job, "wait"), "b", 4, None));
        let snap = refreshed(snap, &config);
        let plan_for = |rotated: &[RotatedOutWorkload]| {
            let input = unmarked(&snap, rotated, &config);
            let plan = crate::core::rotation::plan(&input, &RotationHistory::new());
            (input, plan)
        };
        // Nothing rotated out yet: `a` holds all 8 GPUs and one of its Jobs goes for `b`.
        let (_, plan) = plan_for(&[]);
        assert_eq!(plan.rotate_out.len(), 1, "{plan:?}");
        // That Job was rotated out but its pods still shut down: the claim is being served.
        let leaving = RotatedOutWorkload {
            workload: WaitingWorkload {
                id: plan.rotate_out[0].workload.clone(),
                tenant: "a".into(),
                resource: GPU.into(),
                gpus: 4,
                spread: Spread::OneNode,
                priority: 0,
            },
            rotated_out_at: NOW - 30.0,
        };
        let (input, plan) = plan_for(std::slice::from_ref(&leaving));
        let ids: Vec<&WorkloadId> = input.running.iter().map(|w| &w.id).collect();
        assert!(!ids.contains(&&leaving.workload.id), "{ids:?}");
        let gpu = input.resources.iter().find(|r| r.resource == GPU).unwrap();
        let a = gpu.tenants.iter().find(|t| t.tenant == "a").unwrap();
        assert_eq!(a.held, 4.0);
        assert!(gpu.free.is_empty(), "its GPUs are not free yet");
        assert!(plan.rotate_out.is_empty(), "no second victim: {plan:?}");
    }

    #[test]
    fn quantum_annotations_are_clamped_and_flags_follow_the_pods() {
        let mut raw = crate::config::RotaConfig::default();
        raw.rotation.protected_priority_classes = vec!["critical".into()];
        let config = raw.validate().unwrap();
        let mut snap = ClusterSnapshot::new();
        snap.upsert_node(node("n1", 8));
        let (short, long, vm, pinned, guarded) = (
            id(WorkloadKind::Job, "short"),
            id(WorkloadKind::Job, "long"),
            id(WorkloadKind::VirtualMachine, "vm"),
            id(WorkloadKind::Pod, "pinned"),
            id(WorkloadKind::Job, "guarded"),
        );
        let mut p = pod("1", &short, "t", 1, Some("n1"));
        p.quantum_seconds = Some(1);
        snap.upsert_pod(p);
        let mut p = pod("2", &long, "t", 1, Some("n1"));
        p.quantum_seconds = Some(u64::from(u32::MAX));
        snap.upsert_pod(p);
        snap.upsert_pod(pod("3", &vm, "t", 1, Some("n1")));
        let mut p = pod("4", &pinned, "t", 1, Some("n1"));
        p.non_preemptible = true;
        snap.upsert_pod(p);
        let mut p = pod("5", &guarded, "t", 1, Some("n1"));
        p.priority_class = Some("critical".into());
        snap.upsert_pod(p);
        let input = unmarked(&refreshed(snap, &config), &[], &config);
        let get = |i: &WorkloadId| input.running.iter().find(|w| &w.id == i).unwrap();
        let q = &config.quantum;
        assert_eq!(get(&short).quantum_seconds, q.min_seconds as f64);
        assert_eq!(get(&long).quantum_seconds, q.max_seconds as f64);
        assert_eq!(get(&vm).quantum_seconds, q.virtual_machine_seconds as f64);
        assert!(!get(&pinned).preemptible && !get(&pinned).protected);
        assert!(get(&guarded).protected && get(&guarded).preemptible);
        assert!(get(&short).preemptible && !get(&short).protected);
    }

    #[test]
    fn a_workload_that_can_never_fit_is_no_claim() {
        let config = ValidConfig::default();
        let mut snap = ClusterSnapshot::new();
        snap.upsert_node(node("n1", 4));
        let giant = id(WorkloadKind::Pod, "giant");
        let small = id(WorkloadKind::Pod, "small");
        snap.upsert_pod(pod("g", &giant, "a", 5, None));
        snap.upsert_pod(pod("s", &small, "b", 1, None));
        let snap = refreshed(snap, &config);
        let claims: Vec<WorkloadId> = waiting(&snap).into_iter().map(|w| w.id).collect();
        assert_eq!(claims, vec![small]);
    }

    #[test]
    fn waiting_follows_the_queue_and_rotated_out_with_pods_are_dropped() {
        let config = ValidConfig::default();
        let mut snap = ClusterSnapshot::new();
        snap.upsert_node(node("n1", 4));
        let early = id(WorkloadKind::Job, "early");
        let late = id(WorkloadKind::Job, "late");
        let gang = id(WorkloadKind::Job, "gang");
        let mut p = pod("l", &late, "b", 2, None);
        p.created_at = Some(NOW - 10.0);
        snap.upsert_pod(p);
        snap.upsert_pod(pod("e", &early, "a", 1, None));
        let mut p = pod("g1", &gang, "c", 1, None);
        p.gang_size = Some(3);
        snap.upsert_pod(p);
        let snap = refreshed(snap, &config);
        let expected: Vec<WorkloadId> = snap
            .workloads()
            .queue()
            .in_order(GPU)
            .map(|e| e.key.clone())
            .collect();
        assert_eq!(expected.len(), 3);
        let out = |w: &WorkloadId| RotatedOutWorkload {
            workload: WaitingWorkload {
                id: w.clone(),
                tenant: "a".into(),
                resource: GPU.into(),
                gpus: 1,
                spread: Spread::OneNode,
                priority: 0,
            },
            rotated_out_at: NOW - 60.0,
        };
        let suspended = id(WorkloadKind::Job, "suspended");
        let rotated = [out(&early), out(&suspended)];
        let input = unmarked(&snap, &rotated, &config);
        let order: Vec<WorkloadId> = input.waiting.iter().map(|w| w.id.clone()).collect();
        assert_eq!(order, expected);
        let g = input.waiting.iter().find(|w| w.id == gang).unwrap();
        assert_eq!((g.gpus, g.spread), (3, Spread::AnyNodes));
        let e = input.waiting.iter().find(|w| w.id == early).unwrap();
        assert_eq!(
            (e.gpus, e.spread, e.tenant.as_str()),
            (1, Spread::OneNode, "a")
        );
        // `early` has pods again: only the still-suspended workload is offered for resume.
        let ids: Vec<&WorkloadId> = input.rotated_out.iter().map(|r| &r.workload.id).collect();
        assert_eq!(ids, [&suspended]);
        assert_eq!(input.limits, Limits::from_config(&config.rotation));
    }
}
