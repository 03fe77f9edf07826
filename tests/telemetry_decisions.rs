//! Filter and prioritize with GPU telemetry, one case per health rule: unhealthy GPUs shrink a
//! node, busy healthy GPUs are a resolvable rejection, stale and future-stamped data is
//! unknown (allowed but scored lower, or rejected by policy), degraded and hot nodes score
//! lower, shared GPUs prefer measured idle capacity, and nodes without telemetry score exactly
//! as before.

use std::sync::Arc;

use rota::config::{ScoringConfig, TelemetryConfig, UnknownTelemetryPolicy};
use rota::core::health::{self, HealthState, Reading, TelemetryRules};
use rota::core::model::{PlacementRules, WorkloadId, WorkloadKind};
use rota::core::placement::{self, combine, packing};
use rota::core::telemetry::{GpuCondition, NodeTelemetry, TelemetrySource};
use rota::core::{ClusterSnapshot, GpuNode, GpuPod};

const GPU: &str = "nvidia.com/gpu";
const NOW: f64 = 1_700_000_000.0;

fn node(name: &str, allocatable: u64) -> GpuNode {
    GpuNode {
        name: name.into(),
        ready: true,
        allocatable: [(GPU.to_string(), allocatable)].into(),
        ..GpuNode::default()
    }
}

fn pod(uid: &str, gpus: u64, on: Option<&str>) -> GpuPod {
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
        requests: [(GPU.to_string(), gpus)].into(),
        node_name: on.map(String::from),
        active: true,
        priority: 0,
        placement: PlacementRules::default(),
        ..GpuPod::default()
    }
}

fn gpu(index: u32, state: HealthState) -> GpuCondition {
    let reasons = match state {
        HealthState::Unhealthy => vec!["XID 79".to_string()],
        HealthState::Degraded => vec!["throttled: hardware thermal slowdown".to_string()],
        _ => Vec::new(),
    };
    GpuCondition {
        index,
        uuid: format!("GPU-5d1c7a52-8a7f-4b0e-9d3c-00000000000{index}"),
        state,
        reasons,
        temperature_celsius: Some(50.0),
        utilization_gpu_ratio: None,
        memory_used_bytes: None,
        memory_total_bytes: None,
    }
}

fn report(sampled_at: f64, gpus: Vec<GpuCondition>) -> Arc<NodeTelemetry> {
    Arc::new(NodeTelemetry::new(
        TelemetrySource::Agent,
        sampled_at,
        sampled_at,
        true,
        gpus,
    ))
}

fn healthy(n: u32) -> Vec<GpuCondition> {
    (0..n).map(|i| gpu(i, HealthState::Healthy)).collect()
}

fn cluster(nodes: Vec<(GpuNode, Option<Arc<NodeTelemetry>>)>) -> ClusterSnapshot {
    let mut c = ClusterSnapshot::new();
    for (n, t) in nodes {
        let name = n.name.clone();
        c.upsert_node(n);
        c.set_telemetry(&name, t);
    }
    c
}

fn rules(config: &TelemetryConfig) -> TelemetryRules<'_> {
    TelemetryRules {
        config,
        now_unix_seconds: NOW,
    }
}

fn scores(c: &ClusterSnapshot, p: &GpuPod, names: &[&str]) -> Vec<i64> {
    let config = TelemetryConfig::default();
    placement::prioritize(c, p, names, &ScoringConfig::default(), &rules(&config))
}

#[test]
fn an_unhealthy_gpu_makes_the_node_too_small_with_a_reason_naming_it() {
    let mut gpus = healthy(4);
    gpus[3] = gpu(3, HealthState::Unhealthy);
    let c = cluster(vec![(node("n1", 4), Some(report(NOW, gpus)))]);
    let config = TelemetryConfig::default();
    let fits = placement::filter(&c, &pod("p", 3, None), &["n1"], &rules(&config));
    assert_eq!(fits.passed, ["n1"]);
    let out = placement::filter(&c, &pod("p", 4, None), &["n1"], &rules(&config));
    assert!(out.passed.is_empty());
    let (name, reason) = &out.unresolvable[0];
    assert_eq!(*name, "n1");
    assert_eq!(
        reason.as_ref(),
        "rota: node has 3 usable free GPUs, the pod needs 4: \
         GPU 3 (GPU-5d1c7a52…) unhealthy: XID 79"
    );
}

#[test]
fn busy_healthy_gpus_beside_an_unhealthy_one_are_a_resolvable_rejection() {
    let mut gpus = healthy(4);
    gpus[0] = gpu(0, HealthState::Unhealthy);
    let mut c = cluster(vec![(node("n1", 4), Some(report(NOW, gpus)))]);
    c.upsert_pod(pod("running", 2, Some("n1")));
    let config = TelemetryConfig::default();
    let out = placement::filter(&c, &pod("p", 2, None), &["n1"], &rules(&config));
    assert!(out.unresolvable.is_empty(), "{out:?}");
    assert_eq!(out.failed.len(), 1);
    assert!(out.failed[0]
        .1
        .contains("1 usable free GPU, the pod needs 2"));
}

#[test]
fn usable_slots_follow_time_slicing_and_never_count_a_withdrawn_gpu_twice() {
    let mut gpus = healthy(2);
    gpus[1] = gpu(1, HealthState::Unhealthy);
    let t = report(NOW, gpus);
    // Time-slicing: 4 replicas per GPU; the unhealthy GPU takes 4 slots with it.
    assert_eq!(health::usable(&node("n", 8), GPU, &t), 4);
    // The device plugin already withdrew the unhealthy GPU from allocatable.
    assert_eq!(health::usable(&node("n", 1), GPU, &t), 1);
}

#[test]
fn degraded_gpus_stay_usable_but_score_lower() {
    let mut gpus = healthy(2);
    gpus[0] = gpu(0, HealthState::Degraded);
    let c = cluster(vec![
        (node("ok", 2), Some(report(NOW, healthy(2)))),
        (node("degraded", 2), Some(report(NOW, gpus))),
    ]);
    let config = TelemetryConfig::default();
    let p = pod("p", 2, None);
    let out = placement::filter(&c, &p, &["ok", "degraded"], &rules(&config));
    assert_eq!(out.passed, ["ok", "degraded"]);
    let s = scores(&c, &p, &["ok", "degraded"]);
    assert!(s[0] > s[1], "{s:?}");
}

#[test]
fn hot_gpus_score_lower() {
    let mut hot = healthy(2);
    hot[1].temperature_celsius = Some(84.0);
    let c = cluster(vec![
        (node("cool", 2), Some(report(NOW, healthy(2)))),
        (node("hot", 2), Some(report(NOW, hot))),
    ]);
    let s = scores(&c, &pod("p", 1, None), &["cool", "hot"]);
    assert!(s[0] > s[1], "{s:?}");
    let reading = Reading::Fresh(c.node("hot").and_then(|n| n.telemetry.as_deref()).unwrap());
    let thermal = health::thermal_score(&reading, 85.0).unwrap();
    assert!((thermal - 1.0 / 85.0).abs() < 1e-9, "{thermal}");
}

#[test]
fn stale_and_future_data_is_unknown_allowed_but_scored_lower() {
    let config = TelemetryConfig::default();
    let limit = config.stale_after_seconds as f64;
    let c = cluster(vec![
        (node("fresh", 2), Some(report(NOW - limit, healthy(2)))),
        (
            node("stale", 2),
            Some(report(NOW - limit - 1.0, healthy(2))),
        ),
        (node("future", 2), Some(report(NOW + 60.0, healthy(2)))),
    ]);
    let r = rules(&config);
    for (name, unknown) in [("fresh", false), ("stale", true), ("future", true)] {
        let reading = health::reading(c.node(name).unwrap(), &r);
        assert_eq!(
            matches!(reading, Reading::Unknown(_)),
            unknown,
            "{name}: {reading:?}"
        );
    }
    let p = pod("p", 1, None);
    let names = ["fresh", "stale", "future"];
    assert_eq!(placement::filter(&c, &p, &names, &r).passed, names);
    let s = scores(&c, &p, &names);
    assert!(s[0] > s[1] && s[1] == s[2], "{s:?}");

    let reject = TelemetryConfig {
        unknown_policy: UnknownTelemetryPolicy::Reject,
        ..TelemetryConfig::default()
    };
    let out = placement::filter(&c, &p, &names, &rules(&reject));
    assert_eq!(out.passed, ["fresh"]);
    assert!(out.unresolvable[0].1.contains("old, limit 30 s"), "{out:?}");
    assert!(out.unresolvable[1].1.contains("in the future"), "{out:?}");
}

#[test]
fn a_reporter_that_never_answered_is_unknown() {
    let never = NodeTelemetry::never_reported(TelemetrySource::Agent, "connection refused");
    let c = cluster(vec![(node("n1", 2), Some(Arc::new(never)))]);
    let config = TelemetryConfig::default();
    let reading = health::reading(c.node("n1").unwrap(), &rules(&config));
    assert!(matches!(reading, Reading::Unknown(_)));
    assert_eq!(
        health::health_score(&reading),
        Some(health::UNKNOWN_HEALTH_SCORE)
    );
}

#[test]
fn no_telemetry_scores_exactly_as_packing_alone() {
    let mut c = cluster(vec![
        (node("a", 8), None),
        (node("b", 4), None),
        (node("c", 2), None),
    ]);
    c.upsert_pod(pod("busy", 3, Some("a")));
    for gpus in 1..=4 {
        let p = pod("p", gpus, None);
        let names = ["a", "b", "c"];
        let expected: Vec<i64> = names
            .iter()
            .map(|n| combine(&[(1.0, packing(c.node(n).unwrap(), &p))]))
            .collect();
        assert_eq!(scores(&c, &p, &names), expected, "{gpus} GPUs");
        let config = TelemetryConfig::default();
        let out = placement::filter(&c, &p, &names, &rules(&config));
        assert_eq!(out.passed, names);
    }
}

#[test]
fn passthrough_only_nodes_fall_back_to_the_node_object_without_penalty() {
    let mut vfio = NodeTelemetry::from_sample(
        &rota::core::telemetry::NodeSample::nvml_unavailable("no driver"),
        TelemetrySource::Agent,
        NOW,
    );
    vfio.sampled_at_unix_seconds = Some(NOW);
    vfio.passthrough_gpus = 2;
    let c = cluster(vec![
        (node("vfio", 2), Some(Arc::new(vfio))),
        (node("plain", 2), None),
    ]);
    let config = TelemetryConfig::default();
    let reading = health::reading(c.node("vfio").unwrap(), &rules(&config));
    assert_eq!(reading, Reading::Unobserved);
    let s = scores(&c, &pod("p", 1, None), &["vfio", "plain"]);
    assert_eq!(s[0], s[1]);
}

#[test]
fn shared_gpus_prefer_measured_idle_capacity() {
    let shared = |util: f64, used: u64| {
        let mut gpus = healthy(2);
        for g in &mut gpus {
            g.utilization_gpu_ratio = Some(util);
            g.memory_total_bytes = Some(100);
            g.memory_used_bytes = Some(used);
        }
        report(NOW, gpus)
    };
    // 8 time-sliced slots on 2 GPUs each.
    let c = cluster(vec![
        (node("idle", 8), Some(shared(0.0, 0))),
        (node("busy", 8), Some(shared(0.9, 90))),
    ]);
    let p = pod("p", 1, None);
    let s = scores(&c, &p, &["idle", "busy"]);
    assert!(s[0] > s[1], "{s:?}");
    let reading = health::reading(c.node("busy").unwrap(), &rules(&TelemetryConfig::default()));
    let idle = health::shared_idle_score(&reading, c.node("busy").unwrap(), &p).unwrap();
    assert!((idle - 0.1).abs() < 1e-9, "{idle}");
    // Whole GPUs (allocatable equals the GPUs seen) have no utilisation component.
    let whole = cluster(vec![(node("w", 2), Some(shared(0.9, 90)))]);
    let r = health::reading(
        whole.node("w").unwrap(),
        &rules(&TelemetryConfig::default()),
    );
    assert_eq!(
        health::shared_idle_score(&r, whole.node("w").unwrap(), &p),
        None
    );
}
