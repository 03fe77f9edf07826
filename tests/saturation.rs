//! Resource quantities come from the API server and may be absurd: sums saturate at
//! `u64::MAX` instead of wrapping (two nodes reporting 1e20 GPUs each and one with 8 used to
//! add up to 6), and nothing panics on the way (debug builds trap overflow).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use rota::config::ValidConfig;
use rota::core::quantity::saturating_sum;
use rota::metrics::{render, ClusterCollector};
use rota::read::view::{ClusterView, ViewSettings};
use serde_json::json;

const GPU: &str = "nvidia.com/gpu";

fn node(name: &str, gpus: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"allocatable": {GPU: gpus},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

fn pod(name: &str, node: &str, gpus: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "physics", "uid": format!("uid-{name}")},
        "spec": {"nodeName": node, "containers": [{"name": "c",
                 "resources": {"requests": {GPU: gpus}, "limits": {GPU: gpus}}}]},
        "status": {"phase": "Running"}
    }))
    .unwrap()
}

fn view() -> Arc<ClusterView> {
    let config = ValidConfig::default();
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(&config)));
    view.apply_node(&node("huge-1", "1e20"));
    view.apply_node(&node("huge-2", "1e20"));
    view.apply_node(&node("small", "8"));
    view.set_synced(true);
    view
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

#[test]
fn saturating_sum_stops_at_the_maximum() {
    assert_eq!(saturating_sum([u64::MAX, u64::MAX, 8]), u64::MAX);
    assert_eq!(saturating_sum([1, 2, 3]), 6);
    assert_eq!(saturating_sum(std::iter::empty()), 0);
}

#[test]
fn cluster_gpus_saturate_instead_of_wrapping() {
    let view = view();
    let registry = prometheus::Registry::new();
    ClusterCollector::register(&registry, view.clone()).unwrap();
    let text = String::from_utf8(render(&registry)).unwrap();
    let allocatable = metric(
        &text,
        "rota_cluster_gpus{resource=\"nvidia.com/gpu\",state=\"allocatable\"}",
    );
    assert!(allocatable >= 1.8e19, "summed to {allocatable}");
    for name in ["huge-1", "huge-2"] {
        let total = view.read().node(name).unwrap().total_allocatable();
        assert!(total >= 1 << 63, "{name}: {total}");
    }
}

#[test]
fn absurd_pods_charge_saturated_usage_without_panicking() {
    let view = view();
    // Two pods on one node whose requests overflow when added.
    view.apply_pod(&pod("a", "huge-1", "1e20"));
    view.apply_pod(&pod("b", "huge-1", "1e20"));
    view.apply_pod(&pod("c", "small", "2"));
    let used = view.read().node("huge-1").unwrap().used.get(GPU).copied();
    assert_eq!(used, Some(u64::MAX));
    let config = ValidConfig::default();
    let charges = view.with_snapshot(|s| rota::write::usage::charges(s, &config));
    let (weighted, _) = charges["physics"];
    assert!(weighted >= 1.8e19, "charged {weighted}");
    // The rotation input over the same snapshot sums without overflow too.
    let input = view.with_snapshot(|s| {
        rota::core::rotation_input::build_plan_input(s, &[], &Default::default(), &config, 1_000.0)
    });
    assert!(input.running.iter().all(|w| w.gpus() > 0));
}
