//! Where a GPU pod may go and how good each node is: the answers behind `filter` and
//! `prioritize`.
//!
//! The filter applies what kube-scheduler cannot check itself (rota's placement annotations
//! against GPU Feature Discovery labels). The score is a weighted mean of components in 0..1,
//! scaled to the extender range 0..10. Nodes the snapshot has never seen pass the filter and get
//! score 0 ("unscored"): kube-scheduler already checked them, and rota must not block what it
//! cannot judge. Pods that request no managed GPU pass everywhere with equal scores.

use std::sync::Arc;

use crate::config::ScoringConfig;

use super::cluster::ClusterSnapshot;
use super::gate::HeadRoom;
use super::health::{self, Gate, TelemetryRules};
use super::model::{GpuCounts, GpuNode, GpuPod};

/// The extender's score range (`MaxExtenderPriority`).
pub const MAX_SCORE: i64 = 10;

/// The filter's answer for a list of candidate nodes, in input order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FilterOutcome<'n> {
    /// Nodes the pod may go to.
    pub passed: Vec<&'n str>,
    /// Nodes rejected for good (no preemption can change them), with a reason for a person.
    /// Reasons do not repeat the node name (the answer is keyed by it), so kube-scheduler can
    /// aggregate identical reasons into "N node(s) …" in the pod's events; nodes with the same
    /// reason share one string.
    pub unresolvable: Vec<(&'n str, Arc<str>)>,
    /// Nodes rejected for now (preempting running pods could make room: their healthy GPUs
    /// are busy while unhealthy ones are free), with a reason.
    pub failed: Vec<(&'n str, Arc<str>)>,
}

/// Decides which of `candidates` the pod may run on.
pub fn filter<'n>(
    cluster: &ClusterSnapshot,
    pod: &GpuPod,
    candidates: &[&'n str],
    telemetry: &TelemetryRules<'_>,
) -> FilterOutcome<'n> {
    let mut out = FilterOutcome {
        passed: Vec::with_capacity(candidates.len()),
        unresolvable: Vec::new(),
        failed: Vec::new(),
    };
    if !pod.wants_gpus() {
        out.passed.extend_from_slice(candidates);
        return out;
    }
    if !pod.placement.errors.is_empty() {
        let reason: Arc<str> = format!("rota: {}", pod.placement.errors.join("; ")).into();
        out.unresolvable = candidates.iter().map(|&n| (n, reason.clone())).collect();
        return out;
    }
    let briefs = cluster.briefs();
    let rules = &pod.placement;
    let no_rules = rules.gpu_models.is_empty() && rules.min_gpu_memory_bytes.is_none();
    if no_rules && briefs.with_telemetry() == 0 {
        // No rule to judge and no telemetry to gate on: every candidate passes.
        out.passed.extend_from_slice(candidates);
        return out;
    }
    let mut verdicts = Verdicts::new(briefs.hardware_kinds());
    for &name in candidates {
        let Some(brief) = cluster.brief(name) else {
            out.passed.push(name);
            continue;
        };
        let node = || cluster.node(name);
        match verdicts.get(brief.hardware, || {
            node().and_then(|n| placement_problem(n, pod))
        }) {
            Some(reason) => out.unresolvable.push((name, reason.clone())),
            None if !brief.telemetry => out.passed.push(name),
            None => match node().map_or(Gate::Pass, |n| health::gate(n, pod, telemetry)) {
                Gate::Pass => out.passed.push(name),
                Gate::Hold(reason) => out.failed.push((name, reason.into())),
                Gate::Reject(reason) => out.unresolvable.push((name, reason.into())),
            },
        }
    }
    out
}

/// Placement verdicts by hardware kind ([`NodeBrief::hardware`](super::node_brief::NodeBrief)).
/// The verdict depends only on the node's product and GPU memory, so each kind is judged once,
/// on the first candidate of that kind (thousands of nodes, a handful of kinds).
struct Verdicts(Vec<Option<Option<Arc<str>>>>);

impl Verdicts {
    fn new(kinds: usize) -> Self {
        Self(vec![None; kinds])
    }

    fn get(&mut self, kind: u32, judge: impl FnOnce() -> Option<String>) -> &Option<Arc<str>> {
        let i = kind as usize;
        if i >= self.0.len() {
            self.0.resize(i + 1, None);
        }
        self.0[i].get_or_insert_with(|| judge().map(Arc::from))
    }
}

/// Why `pod` cannot use `node` under its placement annotations, if it cannot.
pub fn placement_problem(node: &GpuNode, pod: &GpuPod) -> Option<String> {
    let rules = &pod.placement;
    if !rules.gpu_models.is_empty() {
        let Some(product) = node.product.as_deref() else {
            return Some(format!(
                "rota: node has no nvidia.com/gpu.product label; the pod asks for GPU model {}",
                rules.gpu_models.join(" or ")
            ));
        };
        if !rules.gpu_models.iter().any(|m| contains_model(product, m)) {
            return Some(format!(
                "rota: node has GPU model {product}; the pod asks for {}",
                rules.gpu_models.join(" or ")
            ));
        }
    }
    if let Some(min) = rules.min_gpu_memory_bytes {
        match node.gpu_memory_bytes {
            None => {
                return Some(format!(
                    "rota: node has no nvidia.com/gpu.memory label; the pod needs {} per GPU",
                    human_bytes(min)
                ))
            }
            Some(have) if have < min => {
                return Some(format!(
                    "rota: node has {} per GPU; the pod needs {}",
                    human_bytes(have),
                    human_bytes(min)
                ))
            }
            Some(_) => {}
        }
    }
    None
}

/// Scores each candidate 0..=10, in input order.
pub fn prioritize(
    cluster: &ClusterSnapshot,
    pod: &GpuPod,
    candidates: &[&str],
    weights: &ScoringConfig,
    telemetry: &TelemetryRules<'_>,
) -> Vec<i64> {
    if !pod.wants_gpus() {
        return vec![0; candidates.len()];
    }
    let room = HeadRoom::for_pod(cluster, pod);
    let requests: Vec<(&str, u64)> = pod.requests.iter().map(|(r, &n)| (r.as_str(), n)).collect();
    // The same requests by brief slot, and the head room's resource slot: looked up once.
    let briefs = cluster.briefs();
    let slots: Vec<(Option<usize>, u64)> =
        requests.iter().map(|&(r, n)| (briefs.slot(r), n)).collect();
    let room_slot = room.as_ref().and_then(|r| briefs.slot(r.resource()));
    let optional = |w: f64, v: Option<f64>| v.map_or((0.0, 0.0), |v| (w, v));
    candidates
        .iter()
        .map(|&name| match cluster.brief(name) {
            None => 0,
            Some(brief) if brief.telemetry || !brief.complete => {
                let Some(node) = cluster.node(name) else {
                    return 0;
                };
                let head_room = room.as_ref().map(|r| r.score(node));
                score_of(node, pod, &requests, weights, telemetry, head_room)
            }
            // Without telemetry the reading is `Absent` and the health, thermal and
            // utilisation components are left out (weight 0): [`score`] reduces to this, to
            // the bit, read from the brief alone.
            Some(brief) => {
                let head_room = room.as_ref().map(|r| {
                    let (allocatable, used) = brief.counts(room_slot);
                    r.score_free(allocatable.saturating_sub(used), brief.counts_capacity)
                });
                let packing = packing_from(slots.iter().map(|&(slot, n)| (brief.counts(slot), n)));
                combine(&[
                    (weights.packing, packing),
                    optional(weights.head_room, head_room),
                ])
            }
        })
        .collect()
}

/// The sparse answer of `scores` ([`ScoreAnswer::Sparse`](crate::config::ScoreAnswer)):
/// `(index, score − lowest)` for each candidate above the lowest score, in input order.
/// kube-scheduler gives a host left out of the answer no extender score, so every node's total
/// drops by the same `lowest × weight × 10` and no node's rank changes.
pub fn above_lowest(scores: &[i64]) -> impl Iterator<Item = (usize, i64)> + '_ {
    let lowest = scores.iter().copied().min().unwrap_or(0);
    (scores.iter().enumerate())
        .filter(move |&(_, &s)| s > lowest)
        .map(move |(i, &s)| (i, s - lowest))
}

/// One node's score: packing, plus health, thermal headroom and (on shared GPUs) measured idle
/// capacity where telemetry provides them. A component without data is left out of the mean
/// (weight 0), so a node without telemetry scores on packing alone, as before telemetry.
/// `head_room` is the room-for-the-queue-head component ([`HeadRoom`]), `None` when nothing is
/// at stake.
pub fn score(
    node: &GpuNode,
    pod: &GpuPod,
    weights: &ScoringConfig,
    telemetry: &TelemetryRules<'_>,
    head_room: Option<f64>,
) -> i64 {
    let requests: Vec<(&str, u64)> = pod.requests.iter().map(|(r, &n)| (r.as_str(), n)).collect();
    score_of(node, pod, &requests, weights, telemetry, head_room)
}

/// [`score`] with the pod's requests already flattened (once per request, not per node).
fn score_of(
    node: &GpuNode,
    pod: &GpuPod,
    requests: &[(&str, u64)],
    weights: &ScoringConfig,
    telemetry: &TelemetryRules<'_>,
    head_room: Option<f64>,
) -> i64 {
    let reading = health::reading(node, telemetry);
    let max_celsius = telemetry.config.max_temperature_celsius;
    let optional = |weight: f64, value: Option<f64>| value.map_or((0.0, 0.0), |v| (weight, v));
    combine(&[
        (weights.packing, packing_of(node, requests)),
        optional(weights.health, health::health_score(&reading)),
        optional(
            weights.thermal,
            health::thermal_score(&reading, max_celsius),
        ),
        optional(
            weights.utilisation,
            health::shared_idle_score(&reading, node, pod),
        ),
        optional(weights.head_room, head_room),
    ])
}

/// Best fit: the fuller the node is after placement, the better, so whole nodes stay free for
/// multi-GPU gangs. 0 when the pod does not fit on the node's free GPUs at all.
pub fn packing(node: &GpuNode, pod: &GpuPod) -> f64 {
    let requests: Vec<(&str, u64)> = pod.requests.iter().map(|(r, &n)| (r.as_str(), n)).collect();
    packing_of(node, &requests)
}

/// [`packing`] for requests already flattened (once per request, not per node).
fn packing_of(node: &GpuNode, requests: &[(&str, u64)]) -> f64 {
    packing_from(requests.iter().map(|&(resource, wanted)| {
        let counts = (
            count(&node.allocatable, resource),
            count(&node.used, resource),
        );
        (counts, wanted)
    }))
}

/// The packing component from `((allocatable, used), wanted)` per requested resource.
fn packing_from(requests: impl Iterator<Item = ((u64, u64), u64)>) -> f64 {
    let (mut total, mut n) = (0.0, 0usize);
    for ((allocatable, used), wanted) in requests {
        let free = allocatable.saturating_sub(used);
        if allocatable == 0 || free < wanted {
            return 0.0;
        }
        total += 1.0 - (free - wanted) as f64 / allocatable as f64;
        n += 1;
    }
    total / n.max(1) as f64
}

/// `counts[resource]` or 0. Most nodes advertise one GPU resource, so a one-entry map is
/// checked by equality instead of a tree search.
fn count(counts: &GpuCounts, resource: &str) -> u64 {
    if counts.len() == 1 {
        return match counts.first_key_value() {
            Some((key, &n)) if key == resource => n,
            _ => 0,
        };
    }
    counts.get(resource).copied().unwrap_or(0)
}

/// Weighted mean of `(weight, component in 0..1)` pairs, scaled to 0..=10 and rounded.
pub fn combine(components: &[(f64, f64)]) -> i64 {
    let weight: f64 = components.iter().map(|(w, _)| w.max(0.0)).sum();
    if weight <= 0.0 {
        return 0;
    }
    let sum: f64 = components
        .iter()
        .map(|(w, c)| w.max(0.0) * c.clamp(0.0, 1.0))
        .sum();
    ((sum / weight) * MAX_SCORE as f64)
        .round()
        .clamp(0.0, MAX_SCORE as f64) as i64
}

/// Whether `product` names `model`: a case-insensitive match that starts and ends at a word
/// boundary (the ends, or a character other than a letter or digit), so `A100` and
/// `a100-sxm4` match `NVIDIA-A100-SXM4-80GB` but `A10` does not, nor `L4` an `L40S`. Does not
/// allocate: this runs once per candidate node.
fn contains_model(product: &str, model: &str) -> bool {
    let (h, n) = (product.as_bytes(), model.as_bytes());
    if n.is_empty() {
        return true;
    }
    if n.len() > h.len() {
        return false;
    }
    let boundary = |i: Option<&u8>| i.is_none_or(|c| !c.is_ascii_alphanumeric());
    (0..=h.len() - n.len()).any(|at| {
        h[at..at + n.len()].eq_ignore_ascii_case(n)
            && (at == 0 || boundary(h.get(at - 1)))
            && boundary(h.get(at + n.len()))
    })
}

/// `24 GiB`-style rendering for messages.
fn human_bytes(bytes: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    static TELEMETRY: std::sync::LazyLock<crate::config::TelemetryConfig> =
        std::sync::LazyLock::new(Default::default);

    /// Nodes in these tests carry no telemetry, so the decision time does not matter.
    fn rules() -> TelemetryRules<'static> {
        TelemetryRules {
            config: &TELEMETRY,
            now_unix_seconds: 0.0,
        }
    }

    fn node(name: &str, gpus: u64, product: Option<&str>, mem_gib: Option<u64>) -> GpuNode {
        GpuNode {
            product: product.map(String::from),
            gpu_memory_bytes: mem_gib.map(|g| g << 30),
            ..testing::node(name, gpus)
        }
    }

    fn pod(uid: &str, gpus: u64, node: Option<&str>) -> GpuPod {
        testing::pod(uid, node, gpus)
    }

    fn cluster() -> ClusterSnapshot {
        let mut c = ClusterSnapshot::new();
        c.upsert_node(node("h100", 8, Some("NVIDIA-H100-80GB-HBM3"), Some(80)));
        c.upsert_node(node("t4", 4, Some("Tesla-T4"), Some(16)));
        c.upsert_node(node("bare", 2, None, None));
        c
    }

    #[test]
    fn gpu_models_match_whole_words_only() {
        let product = "NVIDIA-A100-SXM4-80GB";
        for model in [
            "A100",
            "a100-sxm4",
            "NVIDIA-A100-SXM4-80GB",
            "80gb",
            "nvidia",
        ] {
            assert!(contains_model(product, model), "{model}");
        }
        for model in [
            "A10",
            "100",
            "SXM",
            "A100-SXM4-80",
            "NVIDIA-A100-SXM4-80GB-X",
        ] {
            assert!(!contains_model(product, model), "{model}");
        }
        assert!(!contains_model("NVIDIA-L40S", "L4"));
        assert!(contains_model("NVIDIA-L4", "L4"));
        assert!(contains_model("Tesla T4", "t4"));
        assert!(contains_model("", ""));
        assert!(!contains_model("", "H100"));
    }

    #[test]
    fn gpu_model_annotation_filters_by_model() {
        let mut p = pod("p", 1, None);
        p.placement.gpu_models = vec!["h100".into(), "A100".into()];
        let out = filter(&cluster(), &p, &["h100", "t4", "bare", "unknown"], &rules());
        assert_eq!(out.passed, vec!["h100", "unknown"]);
        let reasons: Vec<_> = out.unresolvable.iter().map(|(n, _)| *n).collect();
        assert_eq!(reasons, vec!["t4", "bare"]);
        assert!(out.unresolvable[0].1.contains("Tesla-T4"));
        assert!(out.unresolvable[1].1.contains("no nvidia.com/gpu.product"));
    }

    #[test]
    fn min_memory_annotation_filters() {
        let mut p = pod("p", 1, None);
        p.placement.min_gpu_memory_bytes = Some(24 << 30);
        let out = filter(&cluster(), &p, &["h100", "t4", "bare"], &rules());
        assert_eq!(out.passed, vec!["h100"]);
        assert!(out.unresolvable[0].1.contains("16.0 GiB"));
    }

    #[test]
    fn malformed_annotations_reject_every_node_with_the_reason() {
        let mut p = pod("p", 1, None);
        p.placement.errors = vec!["rota.io/min-gpu-memory: \"lots\" is bad".into()];
        let out = filter(&cluster(), &p, &["h100", "t4"], &rules());
        assert!(out.passed.is_empty());
        assert!(out.unresolvable.iter().all(|(_, r)| r.contains("lots")));
    }

    #[test]
    fn pods_without_gpus_pass_untouched_with_equal_scores() {
        let p = pod("cpu", 0, None);
        let out = filter(&cluster(), &p, &["h100", "t4"], &rules());
        assert_eq!(out.passed, vec!["h100", "t4"]);
        let scores = prioritize(
            &cluster(),
            &p,
            &["h100", "t4"],
            &ScoringConfig::default(),
            &rules(),
        );
        assert_eq!(scores[0], scores[1]);
    }

    #[test]
    fn packing_prefers_the_fullest_node_that_fits() {
        let mut c = cluster();
        c.upsert_node(node("h100b", 8, Some("NVIDIA-H100-80GB-HBM3"), Some(80)));
        c.upsert_pod(pod("running", 6, Some("h100b")));
        let p = pod("p", 2, None);
        let scores = prioritize(
            &c,
            &p,
            &["h100", "h100b", "bare", "missing"],
            &ScoringConfig::default(),
            &rules(),
        );
        // h100b becomes full (10), bare becomes full (10), h100 keeps 6 of 8 free, missing is
        // unscored.
        assert_eq!(scores, vec![3, 10, 10, 0]);
        // A pod that does not fit scores 0.
        assert_eq!(
            prioritize(
                &c,
                &pod("big", 4, None),
                &["bare"],
                &ScoringConfig::default(),
                &rules()
            ),
            vec![0]
        );
    }

    #[test]
    fn many_hardware_kinds_are_each_judged_on_their_own() {
        // More kinds than the short list holds: the hash map takes over with the same verdicts.
        let mut c = ClusterSnapshot::new();
        let names: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            let product = if i % 2 == 0 { "H100" } else { "T4" };
            let model = format!("NVIDIA-{product}-rev{i}");
            c.upsert_node(node(name, 8, Some(&model), Some(80)));
        }
        let mut p = pod("p", 1, None);
        p.placement.gpu_models = vec!["h100".into()];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let out = filter(&c, &p, &refs, &rules());
        let even: Vec<&str> = refs.iter().copied().step_by(2).collect();
        assert_eq!(out.passed, even);
        assert_eq!(out.unresolvable.len(), 20);
        for (name, reason) in &out.unresolvable {
            let i: usize = name[1..].parse().unwrap();
            assert!(reason.contains(&format!("rev{i};")), "{name}: {reason}");
        }
    }

    #[test]
    fn prioritize_without_telemetry_equals_the_general_score() {
        // The short path for nodes without telemetry must give exactly `score`'s answer, for
        // any weights (negative ones included), head room or not, one resource or two.
        let mut c = cluster();
        c.upsert_node(GpuNode {
            allocatable: [("nvidia.com/gpu".into(), 8), ("nvidia.com/a10".into(), 4)].into(),
            ..node("two", 0, None, None)
        });
        for (i, used) in [1, 3, 5, 7].iter().enumerate() {
            c.upsert_pod(pod(
                &format!("r{i}"),
                *used,
                Some(["h100", "t4", "bare", "two"][i]),
            ));
        }
        let mut two = pod("p2", 1, None);
        two.requests.insert("nvidia.com/a10".into(), 2);
        let weights = [
            ScoringConfig::default(),
            ScoringConfig {
                packing: 0.3,
                head_room: 2.0,
                ..ScoringConfig::default()
            },
            ScoringConfig {
                packing: -1.0,
                ..ScoringConfig::default()
            },
        ];
        let names = ["h100", "t4", "bare", "two"];
        for w in &weights {
            for p in [pod("p", 1, None), pod("q", 3, None), two.clone()] {
                let got = prioritize(&c, &p, &names, w, &rules());
                let room = HeadRoom::for_pod(&c, &p);
                let want: Vec<i64> = names
                    .iter()
                    .map(|n| {
                        let node = c.node(n).unwrap();
                        let head_room = room.as_ref().map(|r| r.score(node));
                        score(node, &p, w, &rules(), head_room)
                    })
                    .collect();
                assert_eq!(got, want, "{w:?} {:?}", p.requests);
                for head_room in [Some(0.0), Some(1.0)] {
                    let node = c.node("t4").unwrap();
                    let flat: Vec<(&str, u64)> =
                        p.requests.iter().map(|(r, &n)| (r.as_str(), n)).collect();
                    let optional = |w: f64, v: Option<f64>| v.map_or((0.0, 0.0), |v| (w, v));
                    let short = combine(&[
                        (w.packing, packing_of(node, &flat)),
                        optional(w.head_room, head_room),
                    ]);
                    assert_eq!(short, score(node, &p, w, &rules(), head_room));
                }
            }
        }
    }

    #[test]
    fn the_sparse_answer_keeps_differences_and_drops_the_lowest() {
        assert_eq!(above_lowest(&[]).count(), 0);
        assert_eq!(above_lowest(&[1, 1, 1]).count(), 0);
        let sparse: Vec<_> = above_lowest(&[3, 1, 10, 1, 0, 4]).collect();
        assert_eq!(sparse, vec![(0, 3), (1, 1), (2, 10), (3, 1), (5, 4)]);
        let sparse: Vec<_> = above_lowest(&[3, 1, 10, 1]).collect();
        assert_eq!(sparse, vec![(0, 2), (2, 9)]);
    }

    #[test]
    fn combine_stays_in_range() {
        assert_eq!(combine(&[(1.0, 2.0)]), 10);
        assert_eq!(combine(&[(1.0, -1.0)]), 0);
        assert_eq!(combine(&[(0.0, 1.0)]), 0);
        assert_eq!(combine(&[(1.0, 1.0), (1.0, 0.0)]), 5);
    }
}
