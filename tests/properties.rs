//! Cross-module properties over the shared generators (`tests/common/generators.rs`): random
//! heterogeneous clusters, tenants and workloads go through the extender's placement decisions
//! and the fair-share policy built from a config, as in production.

mod common;

use proptest::prelude::*;
use proptest::test_runner::Config;

use rota::config::{RotaConfig, TelemetryConfig};
use rota::core::fairshare::{entitlements, SharePolicy, TenantLoad};
use std::sync::Arc;

use rota::config::ScoringConfig;
use rota::core::gate::HeadRoom;
use rota::core::health::{self, Gate, HealthState, TelemetryRules};
use rota::core::telemetry::{GpuCondition, NodeTelemetry, TelemetrySource};
use rota::core::{
    placement, ClusterSnapshot, GpuNode, GpuPod, PlacementRules, WorkloadId, WorkloadKind,
};
use rota::read::view::{ClusterView, ViewSettings};

use common::generators::{self, cluster, tenant_name, tenants, workload, workloads, GPU, MODELS};

const NOW: f64 = 1_800_000_000.0;

fn seeded(cases: u32) -> Config {
    generators::seeded(cases, 0x9a0f_e7e5)
}

proptest! {
    #![proptest_config(seeded(128))]

    /// Filter judges every candidate exactly once and prioritize scores each in 0..=10, the
    /// same way twice, whatever the hardware mix and the model the pod asks for.
    #[test]
    fn placement_is_total_bounded_and_deterministic(
        nodes in cluster(1..12),
        w in workload(3),
        model in prop::option::of(prop::sample::select(MODELS.to_vec())),
    ) {
        let config = rota::config::ValidConfig::default();
        let view = ClusterView::new(ViewSettings::from_config(&config));
        view.replace_nodes(nodes.iter().cloned());
        let pod = GpuPod {
            uid: "u0".into(),
            namespace: "ns".into(),
            name: "w0-0".into(),
            tenant: tenant_name(w.tenant),
            workload: w.id(0),
            requests: [(GPU.to_string(), w.gpus)].into(),
            active: true,
            placement: PlacementRules {
                gpu_models: model.iter().map(|m| m.product.to_string()).collect(),
                ..PlacementRules::default()
            },
            ..GpuPod::default()
        };
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let telemetry = TelemetryConfig::default();
        let rules = TelemetryRules { config: &telemetry, now_unix_seconds: NOW };
        let snapshot = view.read();

        let out = placement::filter(&snapshot, &pod, &names, &rules);
        let mut judged: Vec<&str> = out.passed.clone();
        judged.extend(out.failed.iter().map(|(n, _)| *n));
        judged.extend(out.unresolvable.iter().map(|(n, _)| *n));
        judged.sort_unstable();
        let mut want = names.clone();
        want.sort_unstable();
        prop_assert_eq!(judged, want);
        // A passed node's product names the model asked for as whole words, case-insensitively
        // (the documented `rota.io/gpu-models` rule: "NVIDIA-A10" does not admit A100 nodes).
        if let Some(m) = model {
            for name in &out.passed {
                let node = snapshot.node(name).expect("candidate is in the view");
                let product = node.product.as_deref().unwrap_or("");
                prop_assert!(names_model(product, m.product), "{} on {}", m.product, product);
            }
        }

        let scores = placement::prioritize(&snapshot, &pod, &names, &config.scoring, &rules);
        prop_assert_eq!(scores.len(), names.len());
        prop_assert!(scores.iter().all(|s| (0..=10).contains(s)), "{:?}", scores);
        let again = placement::prioritize(&snapshot, &pod, &names, &config.scoring, &rules);
        prop_assert_eq!(scores, again);
    }

    /// Generated tenants form a valid config, and the policy it yields splits the cluster's
    /// GPUs over the tenants' workloads without handing out more than there is or than anyone
    /// asked for.
    #[test]
    fn config_tenants_share_the_cluster(
        tenant_list in tenants(1..6),
        nodes in cluster(1..10),
        jobs in workloads(6, 0..30),
    ) {
        let config = RotaConfig { tenants: tenant_list.clone(), ..RotaConfig::default() };
        let config = config.validate();
        prop_assert!(config.is_ok(), "{:?}", config.err());
        let policy = config.map(|c| SharePolicy::from_config(&c)).unwrap_or_else(|_| SharePolicy::flat(1.0));
        let capacity: u64 = nodes.iter().filter(|n| n.ready && !n.unschedulable).map(|n| n.free(GPU)).sum();
        let names: Vec<String> = (0..6).map(tenant_name).collect();
        let loads: Vec<TenantLoad<'_>> = names
            .iter()
            .enumerate()
            .map(|(t, name)| TenantLoad {
                tenant: name,
                held: 0.0,
                pending: jobs.iter().filter(|w| w.tenant == t).map(|w| w.gpus as f64).sum(),
                usage: 0.0,
            })
            .collect();
        let shares = entitlements(&policy, capacity as f64, &loads);
        let demand: f64 = loads.iter().map(|l| l.pending).sum();
        let total: f64 = shares.iter().map(|s| s.entitled).sum();
        prop_assert!((total - demand.min(capacity as f64)).abs() < 1e-6, "{} of {} for {}", total, capacity, demand);
        for (s, l) in shares.iter().zip(&loads) {
            prop_assert!(s.entitled >= 0.0 && s.entitled <= l.pending + 1e-9, "{:?} {:?}", s, l);
        }
    }
}

/// What happens to the cluster between two requests in [`briefs_answer_as_full_nodes_do`].
#[derive(Clone, Debug)]
enum Event {
    /// Pod `i` (of `gpus` of `resource` 0 or 1) binds to node `node`, or waits when `None`.
    Pod {
        i: usize,
        node: Option<usize>,
        gpus: u64,
        resource: usize,
    },
    /// Pod `i` goes away.
    Gone(usize),
    /// Node `node` reports telemetry: healthy, one unhealthy GPU, or stale; or loses it.
    Telemetry { node: usize, kind: u8 },
    /// Node `node` is relabelled with model `model` and a second GPU resource.
    Relabel { node: usize, model: usize },
}

const RESOURCES: [&str; 2] = [GPU, "nvidia.com/mig-3g.40gb"];

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0..24usize, prop::option::of(0..14usize), 1..5u64, 0..2usize)
            .prop_map(|(i, node, gpus, resource)| Event::Pod { i, node, gpus, resource }),
        1 => (0..24usize).prop_map(Event::Gone),
        1 => (0..14usize, 0..4u8).prop_map(|(node, kind)| Event::Telemetry { node, kind }),
        1 => (0..14usize, 0..MODELS.len()).prop_map(|(node, model)| Event::Relabel { node, model }),
    ]
}

fn test_pod(i: usize, node: Option<usize>, requests: &[(&str, u64)]) -> GpuPod {
    GpuPod {
        uid: format!("p{i}"),
        namespace: "ns".into(),
        name: format!("p{i}"),
        tenant: tenant_name(i % 3),
        workload: WorkloadId {
            kind: WorkloadKind::Pod,
            namespace: "ns".into(),
            name: format!("p{i}"),
        },
        requests: requests.iter().map(|&(r, n)| (r.to_string(), n)).collect(),
        node_name: node.map(generators::node_name),
        active: true,
        ..GpuPod::default()
    }
}

fn apply(c: &mut ClusterSnapshot, event: &Event, nodes: &[GpuNode]) {
    let node_at = |i: usize| nodes.get(i % nodes.len().max(1));
    match *event {
        Event::Pod {
            i,
            node,
            gpus,
            resource,
        } => {
            let bound = node.and_then(node_at).map(|n| n.name.clone());
            let mut pod = test_pod(i, None, &[(RESOURCES[resource], gpus)]);
            pod.node_name = bound;
            c.upsert_pod(pod);
        }
        Event::Gone(i) => {
            c.remove_pod(&format!("p{i}"));
        }
        Event::Telemetry { node, kind } => {
            let Some(n) = node_at(node) else { return };
            let gpus = |unhealthy: u32| {
                (0..4)
                    .map(|g| GpuCondition {
                        index: g,
                        uuid: format!("GPU-{g}"),
                        state: if g < unhealthy {
                            HealthState::Unhealthy
                        } else {
                            HealthState::Healthy
                        },
                        reasons: Vec::new(),
                        temperature_celsius: Some(40.0 + 10.0 * f64::from(g)),
                        utilization_gpu_ratio: Some(0.25 * f64::from(g)),
                        memory_used_bytes: None,
                        memory_total_bytes: None,
                    })
                    .collect()
            };
            let at = |age: f64, unhealthy| {
                Arc::new(NodeTelemetry::new(
                    TelemetrySource::Agent,
                    NOW - age,
                    NOW - age,
                    true,
                    gpus(unhealthy),
                ))
            };
            let t = match kind {
                0 => None,
                1 => Some(at(1.0, 0)),
                2 => Some(at(1.0, 1)),
                _ => Some(at(1e6, 0)),
            };
            c.set_telemetry(&n.name, t);
        }
        Event::Relabel { node, model } => {
            let Some(n) = node_at(node) else { return };
            let mut n = n.clone();
            n.product = Some(MODELS[model].product.to_string());
            n.gpu_memory_bytes = Some(MODELS[model].memory_bytes);
            n.allocatable.insert(RESOURCES[1].to_string(), 2);
            c.upsert_node(n);
        }
    }
}

/// Filter as it was before node briefs: every known candidate judged from the full node.
fn full_filter(
    c: &ClusterSnapshot,
    pod: &GpuPod,
    names: &[&str],
    rules: &TelemetryRules<'_>,
) -> Vec<(String, &'static str, String)> {
    names
        .iter()
        .map(|&name| {
            let Some(node) = c.node(name) else {
                return (name.to_string(), "passed", String::new());
            };
            if let Some(problem) = placement::placement_problem(node, pod) {
                return (name.to_string(), "unresolvable", problem);
            }
            match health::gate(node, pod, rules) {
                Gate::Pass => (name.to_string(), "passed", String::new()),
                Gate::Hold(r) => (name.to_string(), "failed", r),
                Gate::Reject(r) => (name.to_string(), "unresolvable", r),
            }
        })
        .collect()
}

/// Prioritize as it was before node briefs: every known candidate scored from the full node.
fn full_scores(
    c: &ClusterSnapshot,
    pod: &GpuPod,
    names: &[&str],
    weights: &ScoringConfig,
    rules: &TelemetryRules<'_>,
) -> Vec<i64> {
    let room = HeadRoom::for_pod(c, pod);
    names
        .iter()
        .map(|&name| match c.node(name) {
            Some(node) => placement::score(
                node,
                pod,
                weights,
                rules,
                room.as_ref().map(|r| r.score(node)),
            ),
            None => 0,
        })
        .collect()
}

proptest! {
    #![proptest_config(seeded(96))]

    /// Filter and prioritize read each candidate from its node brief where they can: their
    /// answers equal those computed from the full nodes, after any mix of pod, telemetry and
    /// label events (telemetry, two GPU resources, changed hardware, unknown nodes, head room).
    #[test]
    fn briefs_answer_as_full_nodes_do(
        nodes in cluster(1..14),
        events in prop::collection::vec(event(), 0..60),
        gpus in 1..5u64,
        resource in 0..2usize,
        model in prop::option::of(0..MODELS.len()),
        min_memory in prop::option::of(prop::sample::select(vec![20u64 << 30, 60 << 30])),
    ) {
        let mut c = ClusterSnapshot::new();
        c.reset_nodes(nodes.iter().cloned());
        for e in &events {
            apply(&mut c, e, &nodes);
        }
        let mut pod = test_pod(99, None, &[(RESOURCES[resource], gpus)]);
        pod.placement = PlacementRules {
            gpu_models: model.iter().map(|&m| MODELS[m].product.to_string()).collect(),
            min_gpu_memory_bytes: min_memory,
            ..PlacementRules::default()
        };
        let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        names.push("not-in-the-view");
        let telemetry = TelemetryConfig::default();
        let rules = TelemetryRules { config: &telemetry, now_unix_seconds: NOW };
        let weights = ScoringConfig::default();

        let out = placement::filter(&c, &pod, &names, &rules);
        let mut got: Vec<(String, &str, String)> = out.passed.iter().map(|n| (n.to_string(), "passed", String::new())).collect();
        got.extend(out.failed.iter().map(|(n, r)| (n.to_string(), "failed", r.to_string())));
        got.extend(out.unresolvable.iter().map(|(n, r)| (n.to_string(), "unresolvable", r.to_string())));
        got.sort();
        let mut want = full_filter(&c, &pod, &names, &rules);
        want.sort();
        prop_assert_eq!(got, want);

        let scores = placement::prioritize(&c, &pod, &names, &weights, &rules);
        prop_assert_eq!(scores, full_scores(&c, &pod, &names, &weights, &rules));
    }
}

/// The model rule restated on words: the model's words appear, in order and adjacent, among the
/// product's words (words: runs of letters and digits, compared case-insensitively).
fn names_model(product: &str, model: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let (p, m) = (words(product), words(model));
    m.is_empty() || p.windows(m.len()).any(|w| w == m.as_slice())
}
