//! Filter and prioritize answers pinned byte for byte.
//!
//! The answers in `tests/data/answers/` were recorded from the implementation before the
//! extender's hot path was optimised (hand-written encoders, borrowed node names, indexed
//! lookups); every case here must keep producing exactly those bytes. The cases cover the
//! benchmark's bodies (names only, with and without telemetry, gated), node names that need
//! JSON escaping, unknown nodes, lower-case and `null` keys, a pod without GPUs, malformed
//! annotations, full `Nodes` (learned or not), and the captured kube-scheduler requests when
//! `../shared/fixtures` is present.
//!
//! Run with `ROTA_RECORD_ANSWERS=1` to (re)write the files; only do that from an implementation
//! whose output is known to be right.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use rota::config::{RotaConfig, ScoreAnswer, ValidConfig};
use rota::core::health::HealthState;
use rota::core::telemetry::{GpuCondition, NodeTelemetry, TelemetrySource};
use rota::extender::{verbs, Context};
use rota::read::view::{ClusterView, ViewSettings};
use serde_json::{json, Value};

fn answers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/answers")
}

/// Compares `got` with the pinned file `name` (or records it under `ROTA_RECORD_ANSWERS`).
fn pin(name: &str, got: &[u8]) {
    let path = answers_dir().join(name);
    if std::env::var_os("ROTA_RECORD_ANSWERS").is_some() {
        std::fs::create_dir_all(answers_dir()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        want == got,
        "{name} differs from the pinned answer:\n want {}\n  got {}",
        String::from_utf8_lossy(&want),
        String::from_utf8_lossy(got)
    );
}

/// Pins both verbs' answers to `body` under `ctx`: the full prioritize list (`scoring.answer:
/// full`, the answers recorded before the sparse form existed) and the default sparse one,
/// which must be the full list less its lowest score, hosts at 0 left out.
fn pin_both(ctx: &Context, case: &str, body: &[u8]) {
    let filtered = verbs::filter(ctx, body).expect("filter answers");
    pin(&format!("{case}.filter.json"), &filtered);
    let full = verbs::prioritize(&with_answer(ctx, ScoreAnswer::Full), body).expect("full");
    pin(&format!("{case}.prioritize.json"), &full);
    let sparse = verbs::prioritize(ctx, body).expect("prioritize answers");
    pin(&format!("{case}.prioritize-sparse.json"), &sparse);
    assert_eq!(
        decode_scores(&sparse),
        sparse_of(&decode_scores(&full)),
        "{case}"
    );
}

/// `ctx` with `scoring.answer` set to `answer`.
fn with_answer(ctx: &Context, answer: ScoreAnswer) -> Context {
    let mut config: RotaConfig = (**ctx.config).clone();
    config.scoring.answer = answer;
    Context {
        config: Arc::new(config.validate().expect("valid")),
        ..ctx.clone()
    }
}

fn decode_scores(answer: &[u8]) -> Vec<(String, i64)> {
    let list: Vec<Value> = serde_json::from_slice(answer).expect("a JSON array");
    list.iter()
        .map(|h| {
            (
                h["Host"].as_str().unwrap().to_owned(),
                h["Score"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn sparse_of(full: &[(String, i64)]) -> Vec<(String, i64)> {
    let lowest = full.iter().map(|(_, s)| *s).min().unwrap_or(0);
    (full.iter())
        .filter(|(_, s)| *s > lowest)
        .map(|(h, s)| (h.clone(), s - lowest))
        .collect()
}

fn node(name: &str, i: usize) -> Node {
    let product = if i % 3 == 0 {
        "NVIDIA-A100-SXM4-80GB"
    } else {
        "NVIDIA-H100-80GB-HBM3"
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": "81920"}},
        "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "64"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

fn running_pod(i: usize, on: &str, gpus: u64) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("busy-{i}"), "namespace": "team-a", "uid": format!("uid-busy-{i}")},
        "spec": {"nodeName": on, "containers": [{"name": "main",
                 "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
        "status": {"phase": "Running"}
    }))
    .unwrap()
}

fn bench_name(i: usize) -> String {
    format!("gpu-node-{i:05}")
}

/// The benchmark's view: `names` as 8-GPU nodes, every other one partly busy.
fn context(names: &[String], learn_nodes: bool) -> Context {
    let config = ValidConfig::default();
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(&config)));
    for (i, name) in names.iter().enumerate() {
        view.apply_node(&node(name, i));
        if i % 2 == 0 {
            view.apply_pod(&running_pod(i, name, (i % 8) as u64));
        }
    }
    view.set_synced(true);
    Context {
        view,
        config: Arc::new(config),
        learn_nodes,
        held_events: None,
        rotation_marks: None,
    }
}

fn now() -> f64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0.0, |d| d.as_secs_f64())
}

/// The benchmark's telemetry: every tenth node with an unhealthy GPU 3, every seventh with a
/// degraded GPU 5, all sampled now.
fn stamp_telemetry(ctx: &Context, names: &[String]) {
    let at = now();
    let updates = names.iter().enumerate().map(|(i, name)| {
        let gpus = (0..8)
            .map(|g| GpuCondition {
                index: g,
                uuid: format!("GPU-{i:08}-{g}"),
                state: match (i % 10, i % 7, g) {
                    (0, _, 3) => HealthState::Unhealthy,
                    (_, 0, 5) => HealthState::Degraded,
                    _ => HealthState::Healthy,
                },
                reasons: if (i % 10, g) == (0, 3) {
                    vec!["XID 79".into(), "\"quoted\"\tcause".into()]
                } else {
                    Vec::new()
                },
                temperature_celsius: Some(40.0 + (i % 40) as f64),
                utilization_gpu_ratio: Some(0.5),
                memory_used_bytes: Some(1 << 30),
                memory_total_bytes: Some(80 << 30),
            })
            .collect();
        let telemetry = NodeTelemetry::new(TelemetrySource::Agent, at, at, true, gpus);
        (name.clone(), Some(Arc::new(telemetry)))
    });
    ctx.view.set_telemetry_many(updates);
}

fn gpu_pod(annotations: Value, gpus: &str) -> Value {
    json!({"metadata": {"name": "p", "namespace": "default", "uid": "u", "annotations": annotations},
           "spec": {"containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}})
}

fn names_body(pod: Value, names: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({"Pod": pod, "Nodes": null, "NodeNames": names})).unwrap()
}

#[test]
fn bench_bodies_keep_their_answers() {
    let names: Vec<String> = (0..100).map(bench_name).collect();
    let ctx = context(&names, false);
    let body = names_body(gpu_pod(json!({"rota.io/gpu-models": "H100"}), "1"), &names);
    pin_both(&ctx, "bench-100", &body);
    stamp_telemetry(&ctx, &names);
    pin_both(&ctx, "bench-100-telemetry", &body);
    // Seven GPUs: nodes with an unhealthy GPU are held or rejected with per-node reasons.
    let big = names_body(gpu_pod(json!({"rota.io/gpu-models": "H100"}), "7"), &names);
    pin_both(&ctx, "bench-100-telemetry-big", &big);
    let any_model = names_body(gpu_pod(json!({}), "2"), &names);
    pin_both(&ctx, "bench-100-any-model", &any_model);
}

#[test]
fn names_that_need_escaping_keep_their_answers() {
    let odd: Vec<String> = [
        "quote\"d",
        "back\\slash",
        "tab\there",
        "nl\nx",
        "ctl\u{1}\u{1f}",
        "ünïcödé-ノード",
        "slash/ok",
        "",
        "plain",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ctx = context(&odd, false);
    let mut asked = odd.clone();
    asked.push("unknown\"node".into());
    asked.push("plain".into());
    let body = names_body(gpu_pod(json!({"rota.io/gpu-models": "H100"}), "1"), &asked);
    pin_both(&ctx, "escaping", &body);
    stamp_telemetry(&ctx, &odd);
    pin_both(&ctx, "escaping-telemetry", &body);
}

#[test]
fn odd_requests_keep_their_answers() {
    let names: Vec<String> = (0..12).map(bench_name).collect();
    let ctx = context(&names, false);
    let no_gpu = json!({"metadata": {"name": "cpu", "namespace": "default", "uid": "c"},
                        "spec": {"containers": [{"name": "m"}]}});
    pin_both(&ctx, "no-gpu", &names_body(no_gpu, &names));
    let bad = gpu_pod(json!({"rota.io/min-gpu-memory": "\"lots\""}), "1");
    pin_both(&ctx, "bad-annotations", &names_body(bad, &names));
    let memory = gpu_pod(json!({"rota.io/min-gpu-memory": "100Gi"}), "1");
    pin_both(&ctx, "min-memory", &names_body(memory, &names));
    let lower = json!({"pod": gpu_pod(json!({}), "3"), "nodes": null, "nodenames": names});
    pin_both(
        &ctx,
        "lower-case-keys",
        &serde_json::to_vec(&lower).unwrap(),
    );
    let empty = json!({"Pod": gpu_pod(json!({}), "1"), "NodeNames": []});
    pin_both(&ctx, "empty", &serde_json::to_vec(&empty).unwrap());
}

#[test]
fn full_nodes_keep_their_answers() {
    let names: Vec<String> = (0..6).map(bench_name).collect();
    let items: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| serde_json::to_value(node(n, i)).unwrap())
        .collect();
    let body = serde_json::to_vec(&json!({
        "Pod": gpu_pod(json!({"rota.io/gpu-models": "h100"}), "1"),
        "Nodes": {"metadata": {}, "items": items},
        "NodeNames": null
    }))
    .unwrap();
    let known = context(&names[..3], false);
    pin_both(&known, "full-nodes", &body);
    let learning = context(&[], true);
    pin_both(&learning, "full-nodes-learned", &body);
}

#[test]
fn captured_requests_keep_their_answers() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/kube-scheduler-1.36");
    if !dir.is_dir() {
        eprintln!("skipping: {} is absent", dir.display());
        return;
    }
    // One learning view: the full-node requests teach it the nodes the name-only ones list.
    let ctx = context(&[], true);
    for file in [
        "filter-full-nodes.request.json",
        "filter-node-names.request.json",
        "prioritize-full-nodes.request.json",
        "prioritize-node-names.request.json",
    ] {
        let body = std::fs::read(dir.join(file)).unwrap();
        let case = file.trim_end_matches(".request.json");
        pin_both(&ctx, &format!("captured-{case}"), &body);
    }
}
