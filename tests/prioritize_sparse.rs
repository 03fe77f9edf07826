//! The sparse prioritize answer (`scoring.answer: sparse`, the default) picks the same nodes as
//! the full one on kube-scheduler's side, checked on a captured kube-scheduler 1.36 request.
//!
//! What kube-scheduler does with a `HostPriorityList` (kubernetes/kubernetes
//! `pkg/scheduler/schedule_one.go`, `prioritizeNodes`, at 003b4460edb5, 1.36):
//!
//! ```go
//! for i := range *prioritizedList {
//!     nodename := (*prioritizedList)[i].Host
//!     score := (*prioritizedList)[i].Score
//!     finalscore := score * weight * (fwk.MaxNodeScore / extenderv1.MaxExtenderPriority)
//!     ... allNodeExtendersScores[nodename].TotalScore += finalscore
//! }
//! ...
//! for i := range nodesScores {
//!     if score, ok := allNodeExtendersScores[nodes[i].Node().Name]; ok {
//!         nodesScores[i].TotalScore += score.TotalScore
//!         nodesScores[i].Randomizer = rand.Int()
//!     }
//! }
//! ```
//!
//! So a host left out of the answer gets no extender score (0), and the node with the highest
//! `TotalScore` wins (`nodeScoreHeap.Less`). [`scheduler_totals`] is that arithmetic; the test
//! checks that the sparse answer changes every total by the same amount, so the set of best
//! nodes is the same for any in-tree scores. (Only the tie-break among equal totals differs:
//! a host in the answer gets a random `Randomizer`, a host left out keeps 0, so among equal
//! totals the scheduler prefers a host rota scored above the lowest; see benches/README.md.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use rota::config::{RotaConfig, ScoreAnswer, ValidConfig};
use rota::extender::{verbs, Context};
use rota::read::view::{ClusterView, ViewSettings};
use serde_json::{json, Value};

fn fixture(name: &str) -> Option<Vec<u8>> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/kube-scheduler-1.36");
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(body) => Some(body),
        Err(_) => {
            eprintln!("skipping: {} is absent", path.display());
            None
        }
    }
}

fn context(answer: ScoreAnswer, view: Arc<ClusterView>) -> Context {
    let mut config = RotaConfig::default();
    config.scoring.answer = answer;
    Context {
        view,
        config: Arc::new(config.validate().expect("valid")),
        learn_nodes: true,
        held_events: None,
        rotation_marks: None,
    }
}

fn running_pod(name: &str, node: &str, gpus: u64) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}")},
        "spec": {"nodeName": node, "containers": [{"name": "main",
                 "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
        "status": {"phase": "Running"}
    }))
    .expect("a pod")
}

/// `prioritizeNodes`' sum for one extender of `weight`: the in-tree total of each node plus
/// `score × weight × 10` for the hosts in `answer`; hosts left out add nothing.
fn scheduler_totals(nodes: &[&str], in_tree: &[i64], answer: &[u8], weight: i64) -> Vec<i64> {
    let list: Vec<Value> = serde_json::from_slice(answer).expect("a HostPriorityList");
    let mut extender: HashMap<String, i64> = HashMap::new();
    for hp in &list {
        let host = hp["Host"].as_str().expect("Host").to_owned();
        let score = hp["Score"].as_i64().expect("Score");
        *extender.entry(host).or_default() += score * weight * (100 / 10);
    }
    (nodes.iter().zip(in_tree))
        .map(|(n, t)| t + extender.get(*n).copied().unwrap_or(0))
        .collect()
}

fn best(totals: &[i64]) -> Vec<usize> {
    let max = totals.iter().copied().max().unwrap_or(0);
    (0..totals.len()).filter(|&i| totals[i] == max).collect()
}

#[test]
fn the_sparse_answer_ranks_the_captured_nodes_as_the_full_one() {
    let (Some(full_nodes), Some(names)) = (
        fixture("prioritize-full-nodes.request.json"),
        fixture("prioritize-node-names.request.json"),
    ) else {
        return;
    };
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(
        &ValidConfig::default(),
    )));
    let full = context(ScoreAnswer::Full, view.clone());
    let sparse = context(ScoreAnswer::Sparse, view.clone());
    // The full-node request teaches the view the three 8-GPU nodes, all empty: every score is
    // the same, so the sparse answer is empty.
    verbs::prioritize(&full, &full_nodes).expect("learns the nodes");
    assert_eq!(verbs::prioritize(&sparse, &names).expect("answers"), b"[]");

    // Load the nodes differently: 6, 2 and 0 GPUs used.
    view.apply_pod(&running_pod("a", "gpu-node-1", 6));
    view.apply_pod(&running_pod("b", "gpu-node-2", 2));
    let request: Value = serde_json::from_slice(&names).expect("JSON");
    let nodes: Vec<&str> = (request["NodeNames"].as_array().expect("NodeNames").iter())
        .map(|n| n.as_str().expect("a name"))
        .collect();
    let full_answer = verbs::prioritize(&full, &names).expect("answers");
    let sparse_answer = verbs::prioritize(&sparse, &names).expect("answers");
    assert!(sparse_answer.len() < full_answer.len());
    assert!(!String::from_utf8_lossy(&sparse_answer).contains("gpu-node-3"));

    // Any in-tree scores (0..=100 per plugin, a few plugins), any extender weight: the totals
    // differ by one constant, so the best nodes are the same.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for weight in [1, 2, 5] {
        for _ in 0..200 {
            let in_tree: Vec<i64> = (0..nodes.len())
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 301) as i64
                })
                .collect();
            let a = scheduler_totals(&nodes, &in_tree, &full_answer, weight);
            let b = scheduler_totals(&nodes, &in_tree, &sparse_answer, weight);
            let shift = a[0] - b[0];
            assert!(a.iter().zip(&b).all(|(x, y)| x - y == shift), "{a:?} {b:?}");
            assert_eq!(best(&a), best(&b));
        }
    }
}
