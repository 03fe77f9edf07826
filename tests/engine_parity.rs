//! One engine: the extender's path (filter calls over a `ClusterView`, pods bound as a
//! scheduler would bind them) and the simulator's `rota` policy admit the same workloads in the
//! same order, given the same arrivals and the releases that follow from them.
//!
//! The cluster is one node, so a pod and a simulated gang fit exactly when the same number of
//! GPUs is free, and fair-share refreshes are left out on both sides (every tenant's standing
//! stays 0), so the order is the queue's own: priority, least attained service, arrival.
//! Workloads larger than the node are in the mix: neither side may let them hold anyone up.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use rota::config::{RotaConfig, ValidConfig};
use rota::core::WorkloadKind;
use rota::extender::{verbs, Context};
use rota::read::view::{ClusterView, ViewSettings};
use rota::sim::engine::{self, JobId, JobStatus, Policy, Sim};
use rota::sim::policy::{Rota, RotaSettings};
use rota::sim::{ClusterSpec, EngineConfig, JobSpec, TenantSpec, Trace};
use serde_json::{json, Value};

const GPU: &str = "nvidia.com/gpu";
const NODE_GPUS: u32 = 16;
/// 2025-01-01T00:00:00Z: trace time zero on the extender's side.
const EPOCH: i64 = 1_735_689_600;

#[derive(Clone, Debug)]
struct Job {
    tenant: usize,
    gpus: u32,
    arrival: u32,
    duration: u32,
}

fn jobs() -> impl Strategy<Value = Vec<Job>> {
    let job = (
        0..3usize,
        prop::sample::select(vec![1u32, 1, 1, 2, 4, 8, 16, 20]),
        1..40u32,
        1..30u32,
    )
        .prop_map(|(tenant, gpus, gap, duration)| Job {
            tenant,
            gpus,
            arrival: gap,
            duration: duration * 10,
        });
    prop::collection::vec(job, 1..30).prop_map(|mut v| {
        // Distinct, increasing arrivals from 0 (the trace's origin; gaps of at least 1 s).
        let mut t = 0;
        for j in &mut v {
            let gap = j.arrival;
            j.arrival = t;
            t += gap;
        }
        v
    })
}

/// The admissions of each scheduling instant, as sets of job indexes, in time order.
type Admissions = Vec<(u32, BTreeSet<usize>)>;

/// Records which jobs each `schedule` call started.
struct Recorder {
    inner: Rota,
    seen: Vec<bool>,
    admissions: Admissions,
}

impl Policy for Recorder {
    fn name(&self) -> &str {
        "rota"
    }
    fn on_arrival(&mut self, sim: &Sim<'_>, job: JobId) {
        self.inner.on_arrival(sim, job);
    }
    fn on_finish(&mut self, sim: &Sim<'_>, job: JobId) {
        self.inner.on_finish(sim, job);
    }
    fn tick_seconds(&self) -> Option<f64> {
        None
    }
    fn schedule(&mut self, sim: &mut Sim<'_>) {
        self.inner.schedule(sim);
        let started: BTreeSet<usize> = (0..self.seen.len())
            .filter(|&j| !self.seen[j] && sim.job(j as JobId).status == JobStatus::Running)
            .collect();
        for &j in &started {
            self.seen[j] = true;
        }
        if !started.is_empty() {
            self.admissions.push((sim.now() as u32, started));
        }
    }
}

fn simulate(jobs: &[Job]) -> (Admissions, Vec<bool>) {
    let specs = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| JobSpec {
            name: format!("job-{i:04}"),
            tenant: j.tenant,
            gpus: j.gpus,
            duration: f64::from(j.duration),
            arrival: f64::from(j.arrival),
            priority: 0,
            kind: WorkloadKind::Job,
        })
        .collect();
    let tenants = (0..3)
        .map(|t| TenantSpec {
            name: format!("t{t}"),
            weight: 1.0,
        })
        .collect();
    let trace = Trace::from_unsorted(tenants, specs, None);
    let cluster = ClusterSpec::homogeneous(NODE_GPUS, NODE_GPUS);
    let config = EngineConfig {
        warmup_seconds: 0.0,
        restart_cost_seconds: 0.0,
    };
    let mut policy = Recorder {
        inner: Rota::new(&trace, RotaSettings::default()),
        seen: vec![false; jobs.len()],
        admissions: Vec::new(),
    };
    let out = engine::run(&trace, &cluster, &mut policy, &config);
    let unplaceable = out
        .jobs
        .iter()
        .map(|s| s.status == JobStatus::Unplaceable)
        .collect();
    (policy.admissions, unplaceable)
}

fn pod(i: usize, j: &Job, node: Option<&str>) -> k8s_openapi::api::core::v1::Pod {
    let created = k8s_openapi::jiff::Timestamp::from_second(EPOCH + i64::from(j.arrival))
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut spec = json!({"containers": [
        {"name": "main", "resources": {"requests": {GPU: j.gpus.to_string()}}}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("job-{i:04}"), "namespace": "lab", "uid": format!("uid-{i}"),
                     "labels": {"rota.io/tenant": format!("t{}", j.tenant)},
                     "creationTimestamp": created},
        "spec": spec,
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }},
    }))
    .expect("a pod")
}

/// Replays the same trace through the extender: at each instant, pods that end are deleted,
/// new pods are created, then kube-scheduler's loop tries every pending pod in creation order
/// (filter, bind on success) until a round binds nothing.
fn extend(jobs: &[Job]) -> Admissions {
    let config = ValidConfig::default();
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(&config)));
    view.set_synced(true);
    let ctx = Context {
        view,
        config: Arc::new(config),
        learn_nodes: false,
        held_events: None,
        rotation_marks: None,
    };
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "status": {"allocatable": {GPU: NODE_GPUS.to_string()},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .expect("a node");
    ctx.view.apply_node(&node);
    let mut ends: Vec<Option<u32>> = vec![None; jobs.len()];
    let mut pending: Vec<usize> = Vec::new();
    let mut admissions = Admissions::new();
    let mut next = 0;
    loop {
        let now = [
            jobs.get(next).map(|j| j.arrival),
            ends.iter().flatten().copied().min(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(now) = now else { break };
        for (i, end) in ends.iter_mut().enumerate() {
            if *end == Some(now) {
                ctx.view.delete_pod_key(&format!("uid-{i}"));
                *end = None;
            }
        }
        while jobs.get(next).is_some_and(|j| j.arrival == now) {
            ctx.view.apply_pod(&pod(next, &jobs[next], None));
            pending.push(next);
            next += 1;
        }
        let mut started = BTreeSet::new();
        loop {
            let mut bound = false;
            for &i in &pending {
                let body = json!({"Pod": serde_json::to_value(pod(i, &jobs[i], None)).unwrap(),
                                  "NodeNames": ["n1"]})
                .to_string();
                let answer: Value =
                    serde_json::from_slice(&verbs::filter(&ctx, body.as_bytes()).unwrap()).unwrap();
                if answer["NodeNames"] == json!(["n1"]) {
                    ctx.view.apply_pod(&pod(i, &jobs[i], Some("n1")));
                    ends[i] = Some(now + jobs[i].duration);
                    started.insert(i);
                    bound = true;
                }
            }
            pending.retain(|i| !started.contains(i));
            if !bound {
                break;
            }
        }
        if !started.is_empty() {
            admissions.push((now, started));
        }
    }
    admissions
}

proptest! {
    #![proptest_config(common::generators::seeded(48, 0x0e_e61e))]

    #[test]
    fn the_extender_and_the_simulator_admit_alike(jobs in jobs()) {
        let (simulated, unplaceable) = simulate(&jobs);
        let extended = extend(&jobs);
        prop_assert_eq!(&extended, &simulated);
        // Every job that can fit was admitted; those that cannot are reported, never run.
        let admitted: BTreeSet<usize> = simulated.iter().flat_map(|(_, s)| s.iter().copied()).collect();
        for (i, j) in jobs.iter().enumerate() {
            prop_assert_eq!(admitted.contains(&i), j.gpus <= NODE_GPUS);
            prop_assert_eq!(unplaceable[i], j.gpus > NODE_GPUS);
        }
    }
}

#[test]
fn the_default_config_is_what_the_simulator_runs() {
    // The simulator's `rota` settings come from the same RotaConfig the extender loads.
    let settings = RotaSettings::default();
    let config = RotaConfig::default();
    assert_eq!(settings.half_life_seconds, config.usage.half_life_seconds);
    assert_eq!(settings.within, config.queue.within_tenant);
    assert_eq!(settings.limits.margin_gpus, config.rotation.margin_gpus);
}
