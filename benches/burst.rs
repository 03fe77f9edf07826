//! A 5,000-node burst on the extender's side: what one pending pod costs rota and the scheduler.
//!
//! The view holds 5,000 8-GPU nodes and 10,000 pending one-GPU pods of four tenants (the issue's
//! e2e shape). Each measured step takes the next pending pod, in the order kube-scheduler
//! would (creation time), and builds the request kube-scheduler 1.36 would send for it: the
//! captured body's shape (`../shared/fixtures/kube-scheduler-1.36/`, `nodeCacheCapable: true`)
//! with the pod's own metadata and `NodeNames` holding the nodes its `percentageOfNodesToScore`
//! search returns (adaptive default at 5,000 nodes: 10 %, 500 nodes, starting where the last
//! search stopped and skipping full nodes, as `findNodesThatPassFilters` does). After the answer,
//! the pod binds to the node the answer prefers, and the watch delivers the bind and then the
//! `Running` status: the view changes during the run as it does in the real burst.
//!
//! Benchmarks, all per pod, in the same run:
//! - `parse_request`: `serde_json::Value` parse of the filter request (the baseline);
//! - `filter_prioritize`: rota's handling of both verbs, bodies in, answer bytes out;
//! - `decode_answers`: decoding both answers into owned structs (a stand-in for the
//!   scheduler's `encoding/json` decode in `HTTPExtender.send`), sparse prioritize answer;
//! - `decode_answers_full`: the same with `scoring.answer: full`;
//! - `watch_events`: rota's CPU for the pod's two watch events (bound, then running).
//!
//! Bytes per pod (request, filter answer, prioritize answer sparse and full) are printed once
//! before measuring. Report times as ratios to `parse_request`; goal: `filter_prioritize` ≤
//! 0.3 ms. Run: `cargo bench --bench burst`; see benches/README.md.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use k8s_openapi::api::core::v1::{Node, Pod};
use rota::config::{RotaConfig, ScoreAnswer};
use rota::extender::{verbs, Context};
use rota::read::view::{ClusterView, ViewSettings};
use serde::Deserialize;
use serde_json::{json, Value};

/// The allocator the `rota` binary ships with (src/main.rs), so the figures are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 5_000;
const PODS: usize = 10_000;
const GPUS_PER_NODE: u64 = 8;
/// kube-scheduler's adaptive `percentageOfNodesToScore` at 5,000 nodes: 50 − 5000/125 = 10 %.
const SEARCHED: usize = NODES / 10;

fn node_name(i: usize) -> String {
    format!("gpu-node-{i}")
}

fn node(i: usize) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": node_name(i), "labels": {
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81920"}},
        "status": {"allocatable": {"nvidia.com/gpu": GPUS_PER_NODE.to_string(), "cpu": "64"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .expect("static node")
}

/// The captured pod (or a stand-in without the fixtures), renamed as burst pod `i`, bound to
/// `node` in `phase` when given.
fn pod_json(template: &Value, i: usize, node: Option<&str>, phase: &str) -> Value {
    let mut pod = template.clone();
    let meta = &mut pod["metadata"];
    meta["name"] = json!(format!("burst-{i}"));
    meta["uid"] = json!(format!("00000000-0000-0000-0000-{i:012}"));
    meta["namespace"] = json!(format!("team-{}", i % 4));
    meta["labels"]["rota.io/tenant"] = json!(format!("team-{}", i % 4));
    meta["creationTimestamp"] = json!(format!("2026-11-23T19:{:02}:{:02}Z", (i / 60) % 60, i % 60));
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod["status"] = json!({"phase": phase});
    pod
}

fn template() -> Value {
    let fixture =
        std::fs::read("../shared/fixtures/kube-scheduler-1.36/filter-node-names.request.json");
    match fixture {
        Ok(bytes) => {
            let args: Value = serde_json::from_slice(&bytes).expect("fixture is JSON");
            args["Pod"].clone()
        }
        Err(_) => json!({"metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"schedulerName": "rota-scheduler", "containers": [{"name": "main",
                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}),
    }
}

/// The burst: the view, the pods' JSON, and kube-scheduler's side of the state (GPUs used per
/// node, where the next search starts, the next pod).
struct Burst {
    ctx: Context,
    full: Context,
    template: Value,
    used: Vec<u64>,
    next_start: usize,
    next_pod: usize,
}

impl Burst {
    fn new() -> Self {
        let config = RotaConfig::default().validate().expect("valid");
        let view = Arc::new(ClusterView::new(ViewSettings::from_config(&config)));
        for i in 0..NODES {
            view.apply_node(&node(i));
        }
        let template = template();
        for i in 0..PODS {
            let pod: Pod =
                serde_json::from_value(pod_json(&template, i, None, "Pending")).expect("a pod");
            view.apply_pod(&pod);
        }
        view.set_synced(true);
        let policy = rota::core::fairshare::SharePolicy::from_config(&config);
        view.refresh_fair_share(&policy, |_| 0.0, 0.0);
        let mut full_config: RotaConfig = (*config).clone();
        full_config.scoring.answer = ScoreAnswer::Full;
        let ctx = Context {
            view: view.clone(),
            config: Arc::new(config),
            learn_nodes: false,
            held_events: None,
            rotation_marks: None,
        };
        let full = Context {
            config: Arc::new(full_config.validate().expect("valid")),
            ..ctx.clone()
        };
        Self {
            ctx,
            full,
            template,
            used: vec![0; NODES],
            next_start: 0,
            next_pod: 0,
        }
    }

    /// The next pod's request body (the same for filter and prioritize) and its index. When
    /// every pod has bound, they are all deleted and created again (outside any timing).
    fn next_request(&mut self) -> (usize, Vec<u8>) {
        if self.next_pod == PODS {
            self.restart();
        }
        let i = self.next_pod;
        self.next_pod += 1;
        let mut names = Vec::with_capacity(SEARCHED);
        let mut looked = 0;
        while names.len() < SEARCHED && looked < NODES {
            let n = (self.next_start + looked) % NODES;
            if self.used[n] < GPUS_PER_NODE {
                names.push(node_name(n));
            }
            looked += 1;
        }
        self.next_start = (self.next_start + looked) % NODES;
        let pod = pod_json(&self.template, i, None, "Pending");
        let body = json!({"Pod": pod, "Nodes": null, "NodeNames": names});
        (i, serde_json::to_vec(&body).expect("encodes"))
    }

    /// The node kube-scheduler would pick from rota's answers alone: the highest extender
    /// score among the passed nodes, the first passed node when none is scored.
    fn choose(filter: &[u8], prioritize: &[u8]) -> Option<String> {
        let passed: FilterAnswer = serde_json::from_slice(filter).ok()?;
        let scores: Vec<HostScore> = serde_json::from_slice(prioritize).ok()?;
        let names = passed.node_names?;
        let best = scores
            .iter()
            .max_by_key(|h| h.score)
            .map(|h| h.host.clone());
        best.filter(|b| names.contains(b))
            .or_else(|| names.first().cloned())
    }

    fn bind_event(&mut self, i: usize, node: &str) -> Pod {
        if let Some(n) = node
            .strip_prefix("gpu-node-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            self.used[n] += 1;
        }
        serde_json::from_value(pod_json(&self.template, i, Some(node), "Pending")).expect("pod")
    }

    fn running_event(&self, i: usize, node: &str) -> Pod {
        serde_json::from_value(pod_json(&self.template, i, Some(node), "Running")).expect("pod")
    }

    fn restart(&mut self) {
        for i in 0..PODS {
            let pod: Pod =
                serde_json::from_value(pod_json(&self.template, i, None, "Pending")).expect("pod");
            self.ctx.view.delete_pod(&pod);
            self.ctx.view.apply_pod(&pod);
        }
        self.used.fill(0);
        self.next_pod = 0;
    }

    /// One pod through both verbs and its watch events; returns the time of the verbs and the
    /// time of the events.
    fn step(&mut self) -> (Duration, Duration) {
        let (i, body) = self.next_request();
        let started = Instant::now();
        let filtered = verbs::filter(&self.ctx, &body).expect("filter answers");
        let scored = verbs::prioritize(&self.ctx, &body).expect("prioritize answers");
        let verbs_time = started.elapsed();
        let Some(node) = Self::choose(&filtered, &scored) else {
            return (verbs_time, Duration::ZERO);
        };
        let bound = self.bind_event(i, &node);
        let running = self.running_event(i, &node);
        let started = Instant::now();
        self.ctx.view.apply_pod(&bound);
        self.ctx.view.apply_pod(&running);
        (verbs_time, started.elapsed())
    }
}

/// The scheduler's `ExtenderFilterResult`, owned (its decoder allocates every string).
#[derive(Deserialize)]
#[allow(dead_code)]
struct FilterAnswer {
    #[serde(rename = "Nodes")]
    nodes: Option<Value>,
    #[serde(rename = "NodeNames")]
    node_names: Option<Vec<String>>,
    #[serde(rename = "FailedNodes")]
    failed_nodes: Option<HashMap<String, String>>,
    #[serde(rename = "FailedAndUnresolvableNodes")]
    failed_and_unresolvable_nodes: Option<HashMap<String, String>>,
    #[serde(rename = "Error")]
    error: String,
}

/// The scheduler's `HostPriority`, owned.
#[derive(Deserialize)]
struct HostScore {
    #[serde(rename = "Host")]
    host: String,
    #[serde(rename = "Score")]
    score: i64,
}

fn decode(filter: &[u8], prioritize: &[u8]) -> (FilterAnswer, Vec<HostScore>) {
    (
        serde_json::from_slice(filter).expect("filter answer decodes"),
        serde_json::from_slice(prioritize).expect("prioritize answer decodes"),
    )
}

/// Bytes per pod over the first `pods` pods of a fresh burst, printed once.
fn report_bytes(pods: usize) {
    let mut burst = Burst::new();
    let (mut request, mut filter, mut sparse, mut full) = (0usize, 0usize, 0usize, 0usize);
    for _ in 0..pods {
        let (i, body) = burst.next_request();
        let filtered = verbs::filter(&burst.ctx, &body).expect("filter");
        let scored = verbs::prioritize(&burst.ctx, &body).expect("prioritize");
        let scored_full = verbs::prioritize(&burst.full, &body).expect("prioritize");
        request += body.len();
        filter += filtered.len();
        sparse += scored.len();
        full += scored_full.len();
        if let Some(node) = Burst::choose(&filtered, &scored) {
            let bound = burst.bind_event(i, &node);
            burst.ctx.view.apply_pod(&bound);
        }
    }
    let per = |b: usize| b / pods;
    eprintln!(
        "burst bytes per pod over {pods} pods: request {} (sent twice), filter answer {}, prioritize answer sparse {} / full {}",
        per(request),
        per(filter),
        per(sparse),
        per(full)
    );
}

fn bench(c: &mut Criterion) {
    report_bytes(2_000);
    let mut group = c.benchmark_group("burst");
    group.sample_size(20);
    let burst = RefCell::new(Burst::new());
    let (_, sample) = burst.borrow_mut().next_request();
    group.bench_function("parse_request", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Value>(&sample).expect("parses")))
    });
    group.bench_function("filter_prioritize", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| burst.borrow_mut().step().0).sum())
    });
    group.bench_function("watch_events", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| burst.borrow_mut().step().1).sum())
    });
    let (filtered, scored, scored_full) = {
        let mut burst = burst.borrow_mut();
        let (_, body) = burst.next_request();
        (
            verbs::filter(&burst.ctx, &body).expect("filter"),
            verbs::prioritize(&burst.ctx, &body).expect("prioritize"),
            verbs::prioritize(&burst.full, &body).expect("prioritize"),
        )
    };
    group.bench_function("decode_answers", |b| {
        b.iter(|| black_box(decode(&filtered, &scored)))
    });
    group.bench_function("decode_answers_full", |b| {
        b.iter(|| black_box(decode(&filtered, &scored_full)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
