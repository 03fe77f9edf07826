//! Extender verbs against the cost of merely parsing their request.
//!
//! For 100, 1,000 and 5,000 candidate nodes (`nodeCacheCapable: true`, names only) against a
//! cluster view of that many 8-GPU nodes, this measures, in the same run:
//! - `parse_value`: parsing the request body into `serde_json::Value` (the baseline);
//! - `filter` and `prioritize`: the whole verb, body in, response bytes out.
//!
//! Report handling time as a multiple of `parse_value` (target: at most 1.5×).
//!
//! `filter_telemetry` and `prioritize_telemetry` run the same requests with every node carrying
//! a fresh 8-GPU telemetry summary (every tenth node with one unhealthy GPU, every seventh with
//! a degraded one); target: within 1.2× of `filter` and `prioritize`.
//!
//! `filter_gated` runs the same request with the fair-share gate in the path: the view also
//! holds 1,000 pending 1-GPU workloads of 20 tenants queued ahead of the request's own pod,
//! which is admitted by backfill (free GPUs cover it and everyone ahead); target: within 1.2×
//! of `filter`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use k8s_openapi::api::core::v1::{Node, Pod};
use rota::config::ValidConfig;
use rota::core::health::HealthState;
use rota::core::telemetry::{GpuCondition, NodeTelemetry, TelemetrySource};
use rota::extender::{verbs, Context};
use rota::read::view::{ClusterView, ViewSettings};
use serde_json::json;

const SIZES: [usize; 3] = [100, 1_000, 5_000];

fn node(i: usize) -> Node {
    let product = if i % 3 == 0 {
        "NVIDIA-A100-SXM4-80GB"
    } else {
        "NVIDIA-H100-80GB-HBM3"
    };
    serde_json::from_value(json!({
        "metadata": {"name": format!("gpu-node-{i:05}"), "labels": {
            "nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": "81920"}},
        "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "64"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .expect("static node")
}

fn running_pod(i: usize, gpus: u64) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("busy-{i}"), "namespace": "team-a", "uid": format!("uid-busy-{i}")},
        "spec": {"nodeName": format!("gpu-node-{i:05}"), "containers": [{"name": "main",
                 "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
        "status": {"phase": "Running"}
    }))
    .expect("static pod")
}

fn context(nodes: usize) -> Context {
    let config = ValidConfig::default();
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(&config)));
    for i in 0..nodes {
        view.apply_node(&node(i));
        if i % 2 == 0 {
            view.apply_pod(&running_pod(i, (i % 8) as u64));
        }
    }
    view.set_synced(true);
    Context {
        view,
        config: Arc::new(config),
        learn_nodes: false,
        held_events: None,
        rotation_marks: None,
    }
}

/// A pending 1-GPU pod of `tenant`, created `i` seconds after a fixed instant.
fn pending_pod(i: usize, tenant: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("wait-{i}"), "namespace": tenant, "uid": format!("uid-wait-{i}"),
                     "creationTimestamp": format!("2026-11-23T18:{:02}:{:02}Z", (i / 60) % 60, i % 60)},
        "spec": {"containers": [{"name": "main",
                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
        "status": {"phase": "Pending"}
    }))
    .expect("static pod")
}

/// `context(nodes)` plus a queue of 1,000 pending workloads and the request's own pod pending
/// behind them, with entitlements refreshed.
fn gated_context(nodes: usize, body: &[u8]) -> Context {
    let ctx = context(nodes);
    for i in 0..1_000 {
        ctx.view
            .apply_pod(&pending_pod(i, &format!("tenant-{:02}", i % 20)));
    }
    let args: serde_json::Value = serde_json::from_slice(body).expect("body is JSON");
    let own: Pod = serde_json::from_value(args["Pod"].clone()).expect("request pod");
    ctx.view.apply_pod(&own);
    let policy = rota::core::fairshare::SharePolicy::from_config(&ctx.config);
    ctx.view.refresh_fair_share(&policy, |_| 0.0, now());
    let settings = ctx.view.settings().clone();
    let key = rota::read::view::translate::gpu_pod(&own, &settings)
        .expect("translates")
        .workload;
    let queued = ctx.view.read().workloads().queue().position(&key);
    assert_eq!(
        queued,
        Some((1_001, 1_001)),
        "the request's pod waits behind the queue"
    );
    ctx
}

fn now() -> f64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0.0, |d| d.as_secs_f64())
}

/// Gives every node a telemetry summary sampled now (call right before measuring: the data
/// must stay fresh for the length of one benchmark).
fn stamp_telemetry(ctx: &Context, nodes: usize) {
    let at = now();
    let updates = (0..nodes).map(|i| {
        let gpus = (0..8)
            .map(|g| GpuCondition {
                index: g,
                uuid: format!("GPU-{i:08}-{g}"),
                state: match (i % 10, i % 7, g) {
                    (0, _, 3) => HealthState::Unhealthy,
                    (_, 0, 5) => HealthState::Degraded,
                    _ => HealthState::Healthy,
                },
                reasons: Vec::new(),
                temperature_celsius: Some(40.0 + (i % 40) as f64),
                utilization_gpu_ratio: Some(0.5),
                memory_used_bytes: Some(1 << 30),
                memory_total_bytes: Some(80 << 30),
            })
            .collect();
        let telemetry = NodeTelemetry::new(TelemetrySource::Agent, at, at, true, gpus);
        (format!("gpu-node-{i:05}"), Some(Arc::new(telemetry)))
    });
    ctx.view.set_telemetry_many(updates);
}

fn body(nodes: usize) -> Vec<u8> {
    let fixture =
        std::fs::read("../shared/fixtures/kube-scheduler-1.36/filter-node-names.request.json");
    let mut args: serde_json::Value = match fixture {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("fixture is JSON"),
        Err(_) => json!({"Pod": {"metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}},
            "Nodes": null}),
    };
    let names: Vec<String> = (0..nodes).map(|i| format!("gpu-node-{i:05}")).collect();
    args["NodeNames"] = json!(names);
    args["Pod"]["metadata"]["annotations"]["rota.io/gpu-models"] = json!("H100");
    serde_json::to_vec(&args).expect("encodes")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("extender");
    for &n in &SIZES {
        let ctx = context(n);
        let body = body(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("parse_value", n), &body, |b, body| {
            b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(body).expect("parses")))
        });
        group.bench_with_input(BenchmarkId::new("filter", n), &body, |b, body| {
            b.iter(|| black_box(verbs::filter(&ctx, body).expect("answers")))
        });
        group.bench_with_input(BenchmarkId::new("prioritize", n), &body, |b, body| {
            b.iter(|| black_box(verbs::prioritize(&ctx, body).expect("answers")))
        });
        let gated = gated_context(n, &body);
        group.bench_with_input(BenchmarkId::new("filter_gated", n), &body, |b, body| {
            b.iter(|| black_box(verbs::filter(&gated, body).expect("answers")))
        });
        let with_telemetry = context(n);
        stamp_telemetry(&with_telemetry, n);
        group.bench_with_input(BenchmarkId::new("filter_telemetry", n), &body, |b, body| {
            stamp_telemetry(&with_telemetry, n);
            b.iter(|| black_box(verbs::filter(&with_telemetry, body).expect("answers")))
        });
        group.bench_with_input(
            BenchmarkId::new("prioritize_telemetry", n),
            &body,
            |b, body| {
                stamp_telemetry(&with_telemetry, n);
                b.iter(|| black_box(verbs::prioritize(&with_telemetry, body).expect("answers")))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
