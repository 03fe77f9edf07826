//! Fuzz harnesses: one function per target, each feeding arbitrary bytes through the product's
//! own request-path entry points and checking the documented properties of what comes out.
//!
//! ```text
//!   fuzz/fuzz_targets/<target>.rs (libFuzzer, nightly) ─┐
//!                                                        ├─▶ check(target, bytes) ─▶ rota
//!   tests/fuzz_regressions.rs (stable, replays files)  ──┘
//! ```
//!
//! Invariants: a harness returns `Err(violation)` when an answer breaks a documented property,
//! and a panic inside rota is the other failure; both crash the fuzzer and fail the replay
//! test. Harnesses read no files, no network and (apart from the extender verbs' own clock
//! read) no clock, so an input that fails once fails again. Must not: depend on anything but
//! rota's own dependencies, because `tests/fuzz_regressions.rs` compiles this file with
//! `#[path]` on stable, where the fuzz crate's manifest is never seen.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use k8s_openapi::api::core::v1::{Node, Pod};
use prometheus::Registry;

use rota::config::{TelemetryConfig, ValidConfig};
use rota::core::fairshare::SharePolicy;
use rota::core::health::TelemetryRules;
use rota::core::placement;
use rota::core::telemetry::NodeTelemetry;
use rota::core::{GpuNode, GpuPod, WorkloadId, WorkloadKind};
use rota::extender::{Context, Extender};
use rota::http::{Handler, Request, Response};
use rota::read::telemetry::collector::{accept_agent, accept_dcgm};
use rota::read::telemetry::dcgm;
use rota::read::view::{translate, ClusterView, ViewSettings};
use rota::wire::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderFilterResult, ExtenderPreemptionArgs,
    ExtenderPreemptionResult, HostPriorityList, MAX_EXTENDER_PRIORITY, MIN_EXTENDER_PRIORITY,
};

/// What a harness concludes: `Err` names the broken property.
pub type Verdict = Result<(), String>;

/// Every target, by the name of its `fuzz_targets/<name>.rs` and its corpus folder.
pub const TARGETS: [&str; 5] = [
    "extender_verbs",
    "wire_decode",
    "config",
    "telemetry_json",
    "dcgm_text",
];

/// The node the telemetry harnesses poll (the agent seeds claim it).
pub const NODE: &str = "gpu-node-1";

/// The decision and receive time of the telemetry harnesses: fixed, so verdicts repeat. Just
/// after the seeds' `sampledAtUnixSeconds`, so they pass the future-clock check.
pub const NOW: f64 = 1_795_625_000.0;

/// The GPU resource every harness cluster offers.
const GPU: &str = "nvidia.com/gpu";

/// The extender's config in the harnesses: both GPU resources of the node fixtures and two
/// weighted tenants, so the fair-share gate has a queue to judge.
const CONFIG: &str = "gpuResources: [nvidia.com/gpu, nvidia.com/GA102GL_A10]
tenants:
  - {name: vision-lab, weight: 2}
  - {name: ml-course, weight: 1}
";

/// Runs the harness of `target` on `data`; `None` for an unknown target name.
pub fn check(target: &str, data: &[u8]) -> Option<Verdict> {
    Some(match target {
        "extender_verbs" => extender_verbs(data),
        "wire_decode" => wire_decode(data),
        "config" => config(data),
        "telemetry_json" => telemetry_json(data),
        "dcgm_text" => dcgm_text(data),
        _ => return None,
    })
}

// === extender_verbs ===

/// POSTs `data` to `/filter`, `/prioritize` and `/preempt` of an extender over a small cluster
/// and checks each answer: 200 with a well-formed answer to what was asked, or 400 with an
/// error message; never 5xx.
pub fn extender_verbs(data: &[u8]) -> Verdict {
    let extender = small_extender()?;
    let body = Bytes::copy_from_slice(data);
    for verb in ["filter", "prioritize", "preempt"] {
        let response = extender.handle(post(verb, body.clone()));
        check_answer(verb, &response, data).map_err(|e| format!("{verb}: {e}"))?;
    }
    Ok(())
}

/// A fresh extender per input (the filter learns Nodes, so a shared one would carry state
/// from one input to the next), over two fixture nodes and their pods.
fn small_extender() -> Result<Extender, String> {
    let (config, nodes, pods) = fixtures();
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(config)));
    view.replace_nodes(nodes.iter().cloned());
    view.replace_pods(pods.iter().cloned());
    view.refresh_fair_share(&SharePolicy::from_config(config), |_| 0.0, NOW);
    view.set_synced(true);
    let ctx = Context {
        rotation_marks: None,
        view,
        config: Arc::new(config.clone()),
        learn_nodes: true,
        held_events: None,
    };
    Extender::new(ctx, Registry::new()).map_err(|e| format!("setup: {e}"))
}

/// The config, nodes and pods of the small cluster, translated once.
fn fixtures() -> &'static (ValidConfig, Vec<GpuNode>, Vec<GpuPod>) {
    static FIXTURES: OnceLock<(ValidConfig, Vec<GpuNode>, Vec<GpuPod>)> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        // A broken fixture is a bug in this file, found on the first input: panicking is right.
        let config = rota::config::parse(CONFIG).expect("harness config");
        let settings = ViewSettings::from_config(&config);
        let nodes = [
            &include_bytes!("../../tests/data/objects/node-gpu-h100.json")[..],
            include_bytes!("../../tests/data/objects/node-vm-a10.json"),
        ]
        .iter()
        .map(|raw| serde_json::from_slice::<Node>(raw).expect("node fixture"))
        .map(|node| translate::gpu_node(&node, &settings))
        .collect();
        let pods = [
            &include_bytes!("../../tests/data/objects/pod-job-train.json")[..],
            include_bytes!("../../tests/data/objects/pod-virt-launcher.json"),
            include_bytes!("../../tests/data/objects/pod-sidecar.json"),
        ]
        .iter()
        .map(|raw| serde_json::from_slice::<Pod>(raw).expect("pod fixture"))
        .filter_map(|pod| translate::gpu_pod(&pod, &settings).ok())
        .collect();
        (config, nodes, pods)
    })
}

fn post(verb: &str, body: Bytes) -> Request {
    Request {
        method: Method::POST,
        path: format!("/gpu-fairshare/{verb}"),
        query: None,
        headers: HeaderMap::new(),
        body,
        remote: None,
    }
}

/// Checks one verb's answer to `request`: 200 with a well-formed answer (every candidate
/// judged once, scores in 0..=10, only proposed victims), or 400 with an error message.
pub fn check_answer(verb: &str, response: &Response, request: &[u8]) -> Verdict {
    match response.status {
        StatusCode::OK => match verb {
            "filter" => check_filter(&response.body, request),
            "prioritize" => check_prioritize(&response.body, request),
            _ => check_preempt(&response.body, request),
        },
        StatusCode::BAD_REQUEST => check_error(&response.body),
        other => Err(format!("status {other}: {}", lossy(&response.body))),
    }
}

/// A 400 carries `{"error": "<non-empty message>"}`.
fn check_error(body: &[u8]) -> Verdict {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("400 body is not JSON: {e}"))?;
    match value.get("error").and_then(|e| e.as_str()) {
        Some(message) if !message.is_empty() => Ok(()),
        _ => Err(format!("400 body has no error message: {value}")),
    }
}

/// The candidate node names of a request the extender accepted, in request order.
fn candidates(request: &[u8]) -> Result<Vec<String>, String> {
    let args: ExtenderArgs = serde_json::from_slice(request)
        .map_err(|e| format!("accepted an undecodable body: {e}"))?;
    if let Some(names) = args.node_names {
        return Ok(names.into_iter().map(Cow::into_owned).collect());
    }
    let items = args.nodes.map(|n| n.items).unwrap_or_default();
    let name = |raw: &serde_json::value::RawValue| -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
        Some(value.get("metadata")?.get("name")?.as_str()?.to_owned())
    };
    items
        .iter()
        .map(|raw| name(raw).ok_or_else(|| format!("accepted a nameless node {}", raw.get())))
        .collect()
}

/// Every candidate is judged exactly once, and the echoed Nodes match the passed names.
fn check_filter(body: &[u8], request: &[u8]) -> Verdict {
    let want = candidates(request)?;
    let result: ExtenderFilterResult =
        serde_json::from_slice(body).map_err(|e| format!("answer does not decode: {e}"))?;
    let passed = result.node_names.unwrap_or_default();
    let mut judged: Vec<&str> = passed.iter().map(|n| n.as_ref()).collect();
    judged.extend(result.failed_nodes.0.iter().map(|(n, _)| n.as_ref()));
    judged.extend(
        result
            .failed_and_unresolvable_nodes
            .0
            .iter()
            .map(|(n, _)| n.as_ref()),
    );
    // Compared as sets: the failed-node maps are JSON objects, so a name the request repeats
    // (kube-scheduler never does) is judged once. Without repeats, nobody is judged twice.
    let judged_set: BTreeSet<&str> = judged.iter().copied().collect();
    let want_set: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    if judged_set != want_set || (want_set.len() == want.len() && judged.len() != want.len()) {
        return Err(format!("judged {judged:?}, asked about {want:?}"));
    }
    if !result.error.is_empty() {
        return Err(format!("Error is set: {}", result.error));
    }
    match result.nodes {
        Some(nodes) if nodes.items.len() != passed.len() => Err(format!(
            "{} Nodes echoed for {} passed names",
            nodes.items.len(),
            passed.len()
        )),
        _ => Ok(()),
    }
}

/// At most one score per candidate, in request order (the sparse answer leaves hosts out),
/// each within the protocol's bounds.
fn check_prioritize(body: &[u8], request: &[u8]) -> Verdict {
    let want = candidates(request)?;
    let list: HostPriorityList =
        serde_json::from_slice(body).map_err(|e| format!("answer does not decode: {e}"))?;
    let hosts: Vec<&str> = list.iter().map(|h| h.host.as_ref()).collect();
    let mut asked = want.iter();
    if !hosts.iter().all(|h| asked.any(|w| w.as_str() == *h)) {
        return Err(format!("scored {hosts:?}, asked about {want:?}"));
    }
    let range = MIN_EXTENDER_PRIORITY..=MAX_EXTENDER_PRIORITY;
    match list.iter().find(|h| !range.contains(&h.score)) {
        Some(h) => Err(format!("score {} for {} is out of range", h.score, h.host)),
        None => Ok(()),
    }
}

/// The answer narrows the proposal: only proposed nodes, only proposed victims, and never a
/// node without victims.
fn check_preempt(body: &[u8], request: &[u8]) -> Verdict {
    let args: ExtenderPreemptionArgs = serde_json::from_slice(request)
        .map_err(|e| format!("accepted an undecodable body: {e}"))?;
    let mut proposed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (node, victims) in args.node_name_to_meta_victims.unwrap_or_default() {
        let uids = victims.pods.into_iter().map(|p| p.uid);
        proposed.entry(node).or_default().extend(uids);
    }
    for (node, victims) in args.node_name_to_victims.unwrap_or_default() {
        let uids = victims.pods.into_iter().filter_map(|p| p.metadata.uid);
        proposed.entry(node).or_default().extend(uids);
    }
    let result: ExtenderPreemptionResult =
        serde_json::from_slice(body).map_err(|e| format!("answer does not decode: {e}"))?;
    for (node, victims) in &result.node_name_to_meta_victims {
        let allowed = proposed
            .get(node)
            .ok_or_else(|| format!("node {node:?} was not proposed"))?;
        if victims.pods.is_empty() {
            return Err(format!("node {node:?} is returned without victims"));
        }
        if let Some(p) = victims.pods.iter().find(|p| !allowed.contains(&p.uid)) {
            return Err(format!("victim {:?} on {node:?} was not proposed", p.uid));
        }
    }
    Ok(())
}

// === wire_decode ===

/// If `$data` decodes as `$ty`, encoding, decoding and encoding again gives the same bytes. A
/// macro, not a function: the wire types borrow from their input, and the two decodes borrow
/// from different buffers.
macro_rules! fixed_point {
    ($ty:ident, $data:expr) => {{
        let name = stringify!($ty);
        match serde_json::from_slice::<$ty>($data) {
            Err(_) => Ok(()),
            Ok(value) => match serde_json::to_vec(&value) {
                Err(e) => Err(format!("{name} does not encode: {e}")),
                Ok(first) => match serde_json::from_slice::<$ty>(&first) {
                    Err(e) => Err(format!("{name} does not decode {}: {e}", lossy(&first))),
                    Ok(again) => match serde_json::to_vec(&again) {
                        Ok(second) if second == first => Ok(()),
                        Ok(second) => Err(format!(
                            "{name} drifts: {} then {}",
                            lossy(&first),
                            lossy(&second)
                        )),
                        Err(e) => Err(format!("{name} does not re-encode: {e}")),
                    },
                },
            },
        }
    }};
}

/// Decodes `data` as every extender wire type, translates what decoded as the verbs do, and
/// checks that each answer type re-encodes to a fixed point (what rota writes, it reads back).
pub fn wire_decode(data: &[u8]) -> Verdict {
    let settings = &ViewSettings::from_config(&fixtures().0);
    if let Ok(args) = serde_json::from_slice::<ExtenderArgs>(data) {
        if let Some(pod) = args.pod {
            translate_pod(&pod.into_pod(), settings)?;
        }
        for raw in args.nodes.map(|n| n.items).unwrap_or_default() {
            if let Ok(node) = serde_json::from_str::<Node>(raw.get()) {
                translate_node(&node, settings)?;
            }
        }
    } else {
        // The verbs decode a second time with path tracking to name the bad field.
        let mut de = serde_json::Deserializer::from_slice(data);
        let _ = serde_path_to_error::deserialize::<_, ExtenderArgs>(&mut de);
    }
    if let Ok(args) = serde_json::from_slice::<ExtenderPreemptionArgs>(data) {
        if let Some(pod) = args.pod {
            translate_pod(&pod.into_pod(), settings)?;
        }
        for victims in args.node_name_to_victims.unwrap_or_default().values() {
            victims
                .pods
                .iter()
                .try_for_each(|p| translate_pod(p, settings))?;
        }
    }
    let _ = serde_json::from_slice::<ExtenderBindingArgs>(data);
    fixed_point!(ExtenderFilterResult, data)?;
    fixed_point!(HostPriorityList, data)?;
    fixed_point!(ExtenderPreemptionResult, data)
}

/// A translated pod's requests are what `pod_requests` reports, and its key is stable.
fn translate_pod(pod: &Pod, settings: &ViewSettings) -> Verdict {
    let requests = translate::pod_requests(pod, settings);
    let _ = translate::pod_key(pod);
    match translate::gpu_pod(pod, settings) {
        Ok(gpu) if gpu.requests != requests => Err(format!(
            "gpu_pod requests {:?} but pod_requests {requests:?}",
            gpu.requests
        )),
        _ => Ok(()),
    }
}

/// A translated node never reports more free GPUs than it can allocate.
fn translate_node(node: &Node, settings: &ViewSettings) -> Verdict {
    let gpu = translate::gpu_node(node, settings);
    for (resource, &allocatable) in &gpu.allocatable {
        if gpu.free(resource) > allocatable {
            return Err(format!(
                "node {} has more free {resource} than allocatable",
                gpu.name
            ));
        }
    }
    Ok(())
}

// === config ===

/// Parses `data` as a config file; a config that validates prints (as `rota config check`
/// does) YAML that parses back to the same config.
pub fn config(data: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let _ = rota::config::parse_unvalidated(text);
    let valid = match rota::config::parse(text) {
        Ok(valid) => valid,
        Err(err) => {
            // Messages and codes are built from the input: render them.
            let _ = (err.code(), err.to_string());
            return Ok(());
        }
    };
    let _ = valid.warnings();
    let yaml = valid.to_yaml();
    match rota::config::parse(&yaml) {
        Ok(again) if again == valid => Ok(()),
        Ok(again) => Err(format!(
            "the effective config changes on a round trip:\n{yaml}\nbecomes\n{}",
            again.to_yaml()
        )),
        Err(err) => Err(format!(
            "the effective config does not parse: {err}\n{yaml}"
        )),
    }
}

// === telemetry_json and dcgm_text ===

/// Accepts `data` as an agent's `/v1/telemetry` answer for [`NODE`], as the collector does,
/// and makes placement decisions with what was accepted.
pub fn telemetry_json(data: &[u8]) -> Verdict {
    match accept_agent(data, NODE, NOW, &TelemetryConfig::default()) {
        Ok(telemetry) => decide_with(telemetry),
        Err(err) => {
            let _ = (err.code(), err.is_retryable(), err.to_string());
            Ok(())
        }
    }
}

/// Reads `data` as a dcgm-exporter page, line by line and whole, then accepts it as the
/// collector does and makes placement decisions with what was accepted.
pub fn dcgm_text(data: &[u8]) -> Verdict {
    if let Ok(text) = std::str::from_utf8(data) {
        for series in text.lines().filter_map(|l| dcgm::parse_line(l.trim())) {
            let _ = series.label("gpu");
        }
    }
    match accept_dcgm(data, NODE, NOW, &TelemetryConfig::default()) {
        Ok(telemetry) => decide_with(telemetry),
        Err(err) => {
            let _ = (err.code(), err.to_string());
            Ok(())
        }
    }
}

/// Puts accepted telemetry on a two-GPU node and asks filter and prioritize about it: the node
/// is judged exactly once and scored within bounds, whatever the numbers say.
fn decide_with(telemetry: NodeTelemetry) -> Verdict {
    let _ = (telemetry.summary(), telemetry.gpus().len());
    if let Some(age) = telemetry.age_seconds(NOW) {
        if age.is_nan() || age < 0.0 {
            return Err(format!("telemetry received at NOW has age {age}"));
        }
    }
    let config = TelemetryConfig::default();
    let view = ClusterView::new(ViewSettings::from_config(&ValidConfig::default()));
    view.replace_nodes([GpuNode {
        name: NODE.into(),
        ready: true,
        allocatable: [(GPU.to_string(), 2)].into(),
        product: Some("NVIDIA-A10".into()),
        gpu_memory_bytes: Some(24 << 30),
        ..GpuNode::default()
    }]);
    view.set_telemetry(NODE, Some(Arc::new(telemetry)));
    let pod = GpuPod {
        uid: "u1".into(),
        namespace: "ns".into(),
        name: "p".into(),
        tenant: "ns".into(),
        workload: WorkloadId {
            kind: WorkloadKind::Pod,
            namespace: "ns".into(),
            name: "p".into(),
        },
        requests: [(GPU.to_string(), 1)].into(),
        active: true,
        ..GpuPod::default()
    };
    let rules = TelemetryRules {
        config: &config,
        now_unix_seconds: NOW,
    };
    let snapshot = view.read();
    let out = placement::filter(&snapshot, &pod, &[NODE], &rules);
    let judged = out.passed.len() + out.failed.len() + out.unresolvable.len();
    if judged != 1 {
        return Err(format!("one node judged {judged} times"));
    }
    let scoring = ValidConfig::default().scoring.clone();
    let scores = placement::prioritize(&snapshot, &pod, &[NODE], &scoring, &rules);
    let range = MIN_EXTENDER_PRIORITY..=MAX_EXTENDER_PRIORITY;
    match scores.as_slice() {
        [score] if range.contains(score) => Ok(()),
        other => Err(format!("scores {other:?} for one node")),
    }
}

fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}
