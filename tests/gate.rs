//! The fair-share gate, head-room scoring and preemption narrowing, end to end: Kubernetes
//! Nodes and Pods applied to a `ClusterView`, requests answered by the extender verbs.

use std::sync::Arc;

use rota::config::{RotaConfig, ValidConfig};
use rota::core::fairshare::{water_fill, SharePolicy};
use rota::core::gate::gpus;
use rota::core::model::{WorkloadId, WorkloadKind};
use rota::core::placement::{combine, packing};
use rota::extender::{verbs, Context};
use rota::read::view::{ClusterView, ViewSettings};
use serde_json::{json, Value};

const GPU: &str = "nvidia.com/gpu";

fn context(config: ValidConfig) -> Context {
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(&config)));
    view.set_synced(true);
    Context {
        view,
        config: Arc::new(config),
        learn_nodes: false,
        held_events: None,
        rotation_marks: None,
    }
}

fn node(name: &str, gpus: u64) -> k8s_openapi::api::core::v1::Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"allocatable": {GPU: gpus.to_string()},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

/// A pod as the API server shows it.
struct PodSpec<'a> {
    name: &'a str,
    tenant: &'a str,
    gpus: u64,
    node: Option<&'a str>,
    created: &'a str,
    priority: i32,
    job: Option<&'a str>,
    gang: Option<u32>,
    started: Option<&'a str>,
}

impl<'a> PodSpec<'a> {
    fn new(name: &'a str, tenant: &'a str, gpus: u64) -> Self {
        Self {
            name,
            tenant,
            gpus,
            node: None,
            created: "2025-01-01T00:00:00Z",
            priority: 0,
            job: None,
            gang: None,
            started: None,
        }
    }

    fn json(&self) -> Value {
        let mut meta = json!({
            "name": self.name, "namespace": "lab", "uid": format!("uid-{}", self.name),
            "labels": {"rota.io/tenant": self.tenant},
            "creationTimestamp": self.created,
        });
        if let Some(job) = self.job {
            meta["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job",
                "name": job, "uid": format!("job-{job}"), "controller": true}]);
        }
        if let Some(gang) = self.gang {
            meta["annotations"] = json!({"rota.io/gang-size": gang.to_string()});
        }
        let mut spec = json!({"priority": self.priority, "containers": [
            {"name": "main", "resources": {"requests": {GPU: self.gpus.to_string()}}}]});
        if let Some(node) = self.node {
            spec["nodeName"] = json!(node);
        }
        let mut status = json!({"phase": if self.node.is_some() { "Running" } else { "Pending" }});
        if let Some(started) = self.started {
            status["startTime"] = json!(started);
        }
        json!({"metadata": meta, "spec": spec, "status": status})
    }

    fn apply(&self, ctx: &Context) {
        ctx.view
            .apply_pod(&serde_json::from_value(self.json()).unwrap());
    }
}

fn filter(ctx: &Context, pod: &PodSpec<'_>, nodes: &[&str]) -> Value {
    let body = json!({"Pod": pod.json(), "NodeNames": nodes}).to_string();
    serde_json::from_slice(&verbs::filter(ctx, body.as_bytes()).unwrap()).unwrap()
}

fn held_reason(answer: &Value, nodes: &[&str]) -> String {
    assert_eq!(answer["NodeNames"], json!([]), "{answer}");
    let failed = &answer["FailedAndUnresolvableNodes"];
    let reason = failed[nodes[0]].as_str().unwrap().to_string();
    for n in nodes {
        assert_eq!(
            failed[*n].as_str(),
            Some(reason.as_str()),
            "one shared reason"
        );
        assert!(!reason.contains(n), "no node name in {reason:?}");
    }
    reason
}

fn passed(answer: &Value, nodes: &[&str]) {
    assert_eq!(answer["NodeNames"], json!(nodes), "{answer}");
}

fn refresh(ctx: &Context) {
    ctx.view.refresh_fair_share(
        &SharePolicy::from_config(&ctx.config),
        |_| 0.0,
        1_735_700_000.0,
    );
}

fn job(name: &str) -> WorkloadId {
    WorkloadId {
        kind: WorkloadKind::Job,
        namespace: "lab".into(),
        name: name.into(),
    }
}

fn gang_pod<'a>(name: &'a str, job: &'a str, tenant: &'a str, gpus: u64, size: u32) -> PodSpec<'a> {
    PodSpec {
        job: Some(job),
        gang: Some(size),
        created: "2025-01-01T00:01:00Z",
        ..PodSpec::new(name, tenant, gpus)
    }
}

/// Two 8-GPU nodes; physics runs 12 GPUs (4 free); bio's 2×4-GPU gang waits, created first;
/// chem's 2-GPU pod waits behind it.
fn busy_cluster(ctx: &Context) {
    ctx.view.apply_node(&node("n1", 8));
    ctx.view.apply_node(&node("n2", 8));
    PodSpec {
        node: Some("n1"),
        ..PodSpec::new("phys-a", "physics", 8)
    }
    .apply(ctx);
    PodSpec {
        node: Some("n2"),
        ..PodSpec::new("phys-b", "physics", 4)
    }
    .apply(ctx);
    gang_pod("bio-0", "bio-train", "bio", 4, 2).apply(ctx);
    PodSpec {
        created: "2025-01-01T00:02:00Z",
        ..PodSpec::new("chem", "chem", 2)
    }
    .apply(ctx);
    refresh(ctx);
}

const NODES: [&str; 2] = ["n1", "n2"];

#[test]
fn a_gang_that_fits_only_later_holds_the_reservation_and_a_pod_behind_it_waits() {
    let ctx = context(ValidConfig::default());
    busy_cluster(&ctx);
    // The gang counts whole (2 × 4 GPUs) although only one of its pods exists yet.
    let state = ctx.view.read();
    let entry = state
        .workloads()
        .queue()
        .get(&job("bio-train"))
        .cloned()
        .unwrap();
    assert_eq!(entry.gpus, 8);
    drop(state);

    // 4 GPUs are free: the gang waits, whole, and holds the reservation (n2, the node with
    // the free GPUs, is kept for it).
    let gang = gang_pod("bio-0", "bio-train", "bio", 4, 2);
    let reason = held_reason(&filter(&ctx, &gang, &NODES), &NODES);
    assert!(
        reason.contains("position 1 of 2")
            && reason.contains("4 GPUs free, it needs 8: it holds the reservation"),
        "{reason}"
    );
    let chem = PodSpec {
        created: "2025-01-01T00:02:00Z",
        ..PodSpec::new("chem", "chem", 2)
    };
    let reason = held_reason(&filter(&ctx, &chem, &NODES), &NODES);
    // Capacity 16 over demands chem 2, physics 12, bio 8, equal weights.
    let shares = water_fill(16.0, &[2.0, 12.0, 8.0], &[1.0, 1.0, 1.0]);
    assert_eq!(
        reason,
        format!(
            "rota: waiting for fair share: position 2 of 2 for {GPU}; tenant chem holds 0 GPUs, entitled to {}; 4 GPUs free, 10 needed by it and the workloads ahead; job/lab/bio-train holds the reservation for 8",
            gpus(shares[0])
        )
    );

    // Physics releases 8 GPUs: the gang fits now and is admitted whole.
    ctx.view.delete_pod_key("uid-phys-a");
    passed(&filter(&ctx, &gang, &NODES), &NODES);
    assert!(ctx
        .view
        .read()
        .workloads()
        .queue()
        .is_admitted(&job("bio-train")));
}

#[test]
fn an_over_share_tenant_is_told_its_holding_and_entitlement() {
    let ctx = context(ValidConfig::default());
    busy_cluster(&ctx);
    let more = PodSpec {
        created: "2024-12-31T00:00:00Z",
        ..PodSpec::new("phys-c", "physics", 1)
    };
    more.apply(&ctx);
    refresh(&ctx);
    // Physics arrived first but stands above its share, so it queues last.
    let reason = held_reason(&filter(&ctx, &more, &NODES), &NODES);
    let shares = water_fill(16.0, &[13.0, 8.0, 2.0], &[1.0, 1.0, 1.0]);
    assert!(
        reason.contains(&format!(
            "position 3 of 3 for {GPU}; tenant physics holds 12 GPUs, entitled to {}",
            gpus(shares[0])
        )),
        "{reason}"
    );
}

#[test]
fn a_gang_is_all_or_nothing_and_its_reservation_is_not_backfilled() {
    let ctx = context(ValidConfig::default());
    busy_cluster(&ctx);
    // Physics releases n1: the gang (2 × 4) fits and is admitted whole.
    ctx.view.delete_pod_key("uid-phys-a");
    passed(
        &filter(&ctx, &gang_pod("bio-0", "bio-train", "bio", 4, 2), &NODES),
        &NODES,
    );
    // The gang's first pod binds on n2's 4 free GPUs; its second pod appears. Physics
    // takes n1 back meanwhile, leaving 4 free there.
    PodSpec {
        node: Some("n2"),
        ..gang_pod("bio-0", "bio-train", "bio", 4, 2)
    }
    .apply(&ctx);
    PodSpec {
        node: Some("n1"),
        ..PodSpec::new("phys-a", "physics", 4)
    }
    .apply(&ctx);
    let second = gang_pod("bio-1", "bio-train", "bio", 4, 2);
    second.apply(&ctx);
    assert_eq!(ctx.view.read().workloads().reserved(GPU), 4);
    // Its second pod passes: the gang was admitted whole.
    passed(&filter(&ctx, &second, &NODES), &NODES);
    // chem now heads the queue but cannot take what the gang still needs.
    let chem = PodSpec {
        created: "2025-01-01T00:02:00Z",
        ..PodSpec::new("chem", "chem", 2)
    };
    let reason = held_reason(&filter(&ctx, &chem, &NODES), &NODES);
    assert!(reason.contains("position 1 of 1"), "{reason}");
    assert!(reason.contains("0 GPUs free, it needs 2"), "{reason}");
    // Once the gang's last pod binds (n1 then holds 8), physics releases 4: chem's turn.
    PodSpec {
        node: Some("n1"),
        ..second
    }
    .apply(&ctx);
    assert_eq!(ctx.view.read().workloads().reserved(GPU), 0);
    ctx.view.delete_pod_key("uid-phys-b");
    passed(&filter(&ctx, &chem, &NODES), &NODES);
}

#[test]
fn a_small_pod_backfills_only_when_it_delays_no_one_ahead() {
    // 4 free: chem (2) would delay the 8-GPU gang ahead of it (busy_cluster: held above).
    // 12 free: the gang and chem both fit, so chem backfills before the gang is placed.
    let ctx = context(ValidConfig::default());
    ctx.view.apply_node(&node("n1", 8));
    ctx.view.apply_node(&node("n2", 8));
    PodSpec {
        node: Some("n2"),
        ..PodSpec::new("phys-b", "physics", 4)
    }
    .apply(&ctx);
    gang_pod("bio-0", "bio-train", "bio", 4, 2).apply(&ctx);
    let chem = PodSpec {
        created: "2025-01-01T00:02:00Z",
        ..PodSpec::new("chem", "chem", 2)
    };
    chem.apply(&ctx);
    refresh(&ctx);
    passed(&filter(&ctx, &chem, &NODES), &NODES);
    let state = ctx.view.read();
    assert!(state.workloads().queue().is_admitted(&WorkloadId {
        kind: WorkloadKind::Pod,
        namespace: "lab".into(),
        name: "chem".into(),
    }));
    // The gang keeps its turn: 12 free minus chem's reservation of 2 still covers its 8.
    assert_eq!(state.workloads().free_for_admission()[GPU], 10);
    drop(state);
    passed(
        &filter(&ctx, &gang_pod("bio-0", "bio-train", "bio", 4, 2), &NODES),
        &NODES,
    );
}

#[test]
fn the_gate_switched_off_lets_everything_through() {
    let mut config = RotaConfig::default();
    config.gate.enabled = false;
    let ctx = context(config.validate().unwrap());
    busy_cluster(&ctx);
    let chem = PodSpec {
        created: "2025-01-01T00:02:00Z",
        ..PodSpec::new("chem", "chem", 2)
    };
    passed(&filter(&ctx, &chem, &NODES), &NODES);
    assert!(!ctx
        .view
        .read()
        .workloads()
        .queue()
        .is_admitted(&job("bio-train")));
}

#[test]
fn pods_the_view_does_not_know_are_not_gated() {
    let ctx = context(ValidConfig::default());
    busy_cluster(&ctx);
    let stranger = PodSpec::new("stranger", "chem", 8);
    passed(&filter(&ctx, &stranger, &NODES), &NODES);
}

#[test]
fn queue_positions_follow_priority_then_standing_then_arrival() {
    let ctx = context(ValidConfig::default());
    ctx.view.apply_node(&node("n1", 4));
    PodSpec {
        node: Some("n1"),
        ..PodSpec::new("rich-run", "rich", 4)
    }
    .apply(&ctx);
    let pods = [
        PodSpec {
            created: "2025-01-01T00:00:00Z",
            ..PodSpec::new("rich-early", "rich", 1)
        },
        PodSpec {
            created: "2025-01-01T03:00:00Z",
            ..PodSpec::new("poor-later", "poor", 1)
        },
        PodSpec {
            created: "2025-01-01T02:00:00Z",
            ..PodSpec::new("poor-first", "poor", 1)
        },
        PodSpec {
            created: "2025-01-01T05:00:00Z",
            priority: 100,
            ..PodSpec::new("urgent", "rich", 1)
        },
    ];
    for p in &pods {
        p.apply(&ctx);
    }
    refresh(&ctx);
    let order: Vec<String> = ctx
        .view
        .read()
        .workloads()
        .queue()
        .in_order(GPU)
        .map(|e| e.key.name.clone())
        .collect();
    assert_eq!(order, ["urgent", "poor-first", "poor-later", "rich-early"]);
    let reason = held_reason(&filter(&ctx, &pods[1], &["n1"]), &["n1"]);
    assert!(reason.contains("position 3 of 4"), "{reason}");
}

fn prioritize(ctx: &Context, pod: &PodSpec<'_>, nodes: &[&str]) -> Vec<i64> {
    let body = json!({"Pod": pod.json(), "NodeNames": nodes}).to_string();
    let answer: Value =
        serde_json::from_slice(&verbs::prioritize(ctx, body.as_bytes()).unwrap()).unwrap();
    answer
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["Score"].as_i64().unwrap())
        .collect()
}

#[test]
fn head_room_steers_a_small_pod_off_the_only_node_where_the_waiting_gang_fits() {
    // Absolute scores (`scoring.answer: full`), compared with packing alone below.
    let mut config = RotaConfig::default();
    config.scoring.answer = rota::config::ScoreAnswer::Full;
    let ctx = context(config.validate().unwrap());
    // "roomy": 16 GPUs, 8 free (the 8-GPU gang fits only here); "tight": 8 GPUs, 7 free.
    ctx.view.apply_node(&node("roomy", 16));
    ctx.view.apply_node(&node("tight", 8));
    PodSpec {
        node: Some("roomy"),
        ..PodSpec::new("run-a", "physics", 8)
    }
    .apply(&ctx);
    PodSpec {
        node: Some("tight"),
        ..PodSpec::new("run-b", "physics", 1)
    }
    .apply(&ctx);
    let gang = PodSpec {
        job: Some("big"),
        ..PodSpec::new("big-0", "bio", 8)
    };
    gang.apply(&ctx);
    let small = PodSpec {
        created: "2025-01-02T00:00:00Z",
        ..PodSpec::new("small", "chem", 1)
    };
    small.apply(&ctx);
    refresh(&ctx);
    let nodes = ["roomy", "tight"];

    let with_gang = prioritize(&ctx, &small, &nodes);
    assert!(
        with_gang[1] > with_gang[0],
        "tight preferred: {with_gang:?}"
    );
    // The gang itself is not steered away from its node.
    let for_gang = prioritize(&ctx, &gang, &nodes);
    assert!(for_gang[0] > for_gang[1], "{for_gang:?}");

    // With the queue empty, scores are packing alone, exactly as without head room (and
    // packing alone would put the small pod on roomy).
    ctx.view.delete_pod_key("uid-big-0");
    let alone = prioritize(&ctx, &small, &nodes);
    let snapshot = ctx.view.read();
    let small_pod = snapshot
        .pods()
        .find(|p| p.name == "small")
        .cloned()
        .unwrap();
    let expected: Vec<i64> = nodes
        .iter()
        .map(|n| combine(&[(1.0, packing(snapshot.node(n).unwrap(), &small_pod))]))
        .collect();
    assert_eq!(alone, expected);
    assert!(alone[0] > alone[1], "{alone:?}");
}

fn preempt(ctx: &Context, victims: &[(&str, &[&str])]) -> Value {
    let map: serde_json::Map<String, Value> = victims
        .iter()
        .map(|(node, uids)| {
            let pods: Vec<Value> = uids.iter().map(|u| json!({"UID": u})).collect();
            (
                node.to_string(),
                json!({"Pods": pods, "NumPDBViolations": 0}),
            )
        })
        .collect();
    let preemptor = PodSpec {
        priority: 1000,
        ..PodSpec::new("vip", "chem", 4)
    };
    let body = json!({"Pod": preemptor.json(), "NodeNameToMetaVictims": map}).to_string();
    serde_json::from_slice(&verbs::preempt(ctx, body.as_bytes()).unwrap()).unwrap()
}

#[test]
fn preempt_keeps_only_over_share_victims_past_their_quantum() {
    let ctx = context(ValidConfig::default());
    ctx.view.apply_node(&node("n1", 8));
    ctx.view.apply_node(&node("n2", 8));
    let long_ago = Some("2020-01-01T00:00:00Z");
    let just_now = k8s_openapi::jiff::Timestamp::now().to_string();
    // physics holds 12 of 16 while bio waits for 8: physics is over its share.
    PodSpec {
        node: Some("n1"),
        started: long_ago,
        priority: 5,
        ..PodSpec::new("phys-old", "physics", 4)
    }
    .apply(&ctx);
    PodSpec {
        node: Some("n1"),
        started: long_ago,
        priority: 9,
        ..PodSpec::new("phys-old2", "physics", 4)
    }
    .apply(&ctx);
    PodSpec {
        node: Some("n2"),
        started: Some(&just_now),
        ..PodSpec::new("phys-new", "physics", 4)
    }
    .apply(&ctx);
    // chem is within its share: its pods are never victims.
    PodSpec {
        node: Some("n2"),
        started: long_ago,
        ..PodSpec::new("chem-run", "chem", 2)
    }
    .apply(&ctx);
    gang_pod("bio-0", "bio-train", "bio", 4, 2).apply(&ctx);
    refresh(&ctx);

    let answer = preempt(
        &ctx,
        &[
            ("n1", &["uid-phys-old", "uid-phys-old2", "uid-unknown"]),
            ("n2", &["uid-phys-new", "uid-chem-run"]),
        ],
    );
    assert_eq!(
        answer,
        json!({"NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "uid-phys-old2"}, {"UID": "uid-phys-old"}],
                                                 "NumPDBViolations": 0}}})
    );
}

#[test]
fn pods_carry_their_times_class_gang_and_quantum_and_bad_annotations_are_explained() {
    let settings = ViewSettings::from_config(&ValidConfig::default());
    let mut pod = PodSpec {
        started: Some("2025-01-01T00:10:00.500Z"),
        node: Some("n1"),
        ..gang_pod("g-0", "g", "bio", 2, 4)
    }
    .json();
    pod["spec"]["priorityClassName"] = json!("research");
    pod["metadata"]["annotations"]["rota.io/quantum-seconds"] = json!("900");
    let translated = rota::read::view::translate::gpu_pod(
        &serde_json::from_value(pod.clone()).unwrap(),
        &settings,
    )
    .unwrap();
    assert_eq!(translated.created_at, Some(1_735_689_660.0));
    assert_eq!(translated.started_at, Some(1_735_690_200.5));
    assert_eq!(translated.priority_class.as_deref(), Some("research"));
    assert_eq!(
        (translated.gang_size, translated.quantum_seconds),
        (Some(4), Some(900))
    );
    assert!(translated.placement.errors.is_empty());

    pod["metadata"]["annotations"] =
        json!({"rota.io/gang-size": "0", "rota.io/quantum-seconds": "soon"});
    let bad = rota::read::view::translate::gpu_pod(
        &serde_json::from_value(pod.clone()).unwrap(),
        &settings,
    )
    .unwrap();
    assert_eq!((bad.gang_size, bad.quantum_seconds), (None, None));
    assert_eq!(bad.placement.errors.len(), 2, "{:?}", bad.placement.errors);

    // The filter says what is wrong instead of ignoring it.
    let ctx = context(ValidConfig::default());
    let body = json!({"Pod": pod, "NodeNames": ["n1"]}).to_string();
    let answer: Value =
        serde_json::from_slice(&verbs::filter(&ctx, body.as_bytes()).unwrap()).unwrap();
    let reason = answer["FailedAndUnresolvableNodes"]["n1"].as_str().unwrap();
    assert!(
        reason.contains("rota.io/gang-size") && reason.contains("soon"),
        "{reason}"
    );
}

/// The case seen on a real kube-scheduler: two nodes of 4 GPUs, all 8 held by tenant a's
/// one-GPU pods; tenant c asks for one pod of 5 GPUs (no node can ever hold it), b queues four
/// one-GPU pods and a two more. Four of a's pods end: b gets all four GPUs, a waits for its
/// turn, and c is told, with a Warning Event, that it can never fit.
#[test]
fn a_pod_that_can_never_fit_blocks_no_one_and_is_told_why() {
    let (tx, mut rx) = rota::write::held_events::channel();
    let ctx = Context {
        held_events: Some(tx),
        rotation_marks: None,
        ..context(ValidConfig::default())
    };
    ctx.view.apply_node(&node("n1", 4));
    ctx.view.apply_node(&node("n2", 4));
    let running: Vec<String> = (0..8).map(|i| format!("a-run-{i}")).collect();
    for (i, name) in running.iter().enumerate() {
        PodSpec {
            node: Some(if i < 4 { "n1" } else { "n2" }),
            ..PodSpec::new(name, "a", 1)
        }
        .apply(&ctx);
    }
    let giant = PodSpec {
        created: "2024-12-31T00:00:00Z",
        ..PodSpec::new("c-giant", "c", 5)
    };
    giant.apply(&ctx);
    let b: Vec<String> = (0..4).map(|i| format!("b-{i}")).collect();
    let a_more: Vec<String> = (0..2).map(|i| format!("a-more-{i}")).collect();
    for name in &b {
        PodSpec::new(name, "b", 1).apply(&ctx);
    }
    for name in &a_more {
        PodSpec::new(name, "a", 1).apply(&ctx);
    }
    refresh(&ctx);
    // Four of a's pods end.
    for name in &running[..4] {
        ctx.view.delete_pod_key(&format!("uid-{name}"));
    }
    refresh(&ctx);

    // c's pod is rejected everywhere with a reason a person can act on.
    let reason = held_reason(&filter(&ctx, &giant, &NODES), &NODES);
    assert!(
        reason.starts_with(
            "rota: can never fit: one pod asks for 5 GPUs but the largest node it may use has 4"
        ),
        "{reason}"
    );
    let notice = rx.try_recv().expect("a notice for c's pod");
    assert!(notice.unplaceable && notice.name == "c-giant", "{notice:?}");

    // b's four pods pass one after another and bind on n1.
    for name in &b {
        let pod = PodSpec::new(name, "b", 1);
        passed(&filter(&ctx, &pod, &NODES), &NODES);
        PodSpec {
            node: Some("n1"),
            ..pod
        }
        .apply(&ctx);
    }
    assert_eq!(ctx.view.read().node("n1").unwrap().free(GPU), 0);
    // a's extra pods wait: no GPU is free, and c's pod is no one's obstacle.
    let reason = held_reason(
        &filter(&ctx, &PodSpec::new("a-more-0", "a", 1), &NODES),
        &NODES,
    );
    assert!(
        reason.contains("waiting for fair share") || reason.contains("holds the reservation"),
        "{reason}"
    );
    assert!(!reason.contains("c-giant"), "{reason}");
    let waiting = rx.try_recv().expect("a notice for a's pod");
    assert!(!waiting.unplaceable);
}
