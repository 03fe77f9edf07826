//! The cluster view on realistic `kubectl get -o json` objects (`tests/data/objects/`):
//! translation, GPU accounting per node through apply / delete / reset, and change notification.

use std::path::Path;

use k8s_openapi::api::core::v1::{Node, Pod};
use rota::core::model::{GpuCounts, WorkloadId, WorkloadKind};
use rota::read::view::translate::{gpu_node, gpu_pod};
use rota::read::view::{ClusterView, ViewSettings};
use serde::de::DeserializeOwned;

const GPU: &str = "nvidia.com/gpu";
const A10: &str = "nvidia.com/GA102GL_A10";

fn settings() -> ViewSettings {
    ViewSettings {
        gpu_resources: vec![GPU.into(), A10.into()],
        tenant_label: "rota.io/tenant".into(),
        within_tenant: Default::default(),
    }
}

fn load<T: DeserializeOwned>(name: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/objects")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn pod(name: &str) -> Pod {
    load(&format!("pod-{name}.json"))
}

fn node(name: &str) -> Node {
    load(&format!("node-{name}.json"))
}

fn counts(pairs: &[(&str, u64)]) -> GpuCounts {
    pairs.iter().map(|&(r, n)| (r.to_string(), n)).collect()
}

/// `(used, free)` of `resource` on `node`.
fn usage(view: &ClusterView, node: &str, resource: &str) -> (u64, u64) {
    view.with_snapshot(|s| {
        let n = s.node(node).expect("node is in the view");
        (n.used.get(resource).copied().unwrap_or(0), n.free(resource))
    })
}

/// The two nodes and every fixture pod.
fn full_view() -> ClusterView {
    let view = ClusterView::new(settings());
    view.reset_nodes(&[node("gpu-h100"), node("vm-a10")]);
    let pods: Vec<Pod> = [
        "job-train",
        "job-succeeded",
        "virt-launcher",
        "init-heavy",
        "sidecar",
        "limits-only",
        "bad-annotations",
    ]
    .iter()
    .map(|n| pod(n))
    .collect();
    view.reset_pods(&pods);
    view
}

#[test]
fn gfd_labelled_node_translates() {
    let h100 = gpu_node(&node("gpu-h100"), &settings());
    assert_eq!(h100.name, "gpu-h100-01");
    assert!(h100.ready && !h100.unschedulable);
    assert_eq!(h100.allocatable, counts(&[(GPU, 8)]));
    assert_eq!(h100.product.as_deref(), Some("NVIDIA-H100-80GB-HBM3"));
    assert_eq!(h100.gpu_memory_bytes, Some(81_559 * 1024 * 1024));

    // A passthrough node: the vendor resource counts, nvidia.com/gpu is zero, no GFD labels.
    let vm = gpu_node(&node("vm-a10"), &settings());
    assert_eq!(vm.allocatable, counts(&[(GPU, 0), (A10, 2)]));
    assert_eq!((vm.product, vm.gpu_memory_bytes), (None, None));
}

#[test]
fn cordoned_and_not_ready_nodes_are_flagged() {
    let mut n = node("gpu-h100");
    n.spec.get_or_insert_default().unschedulable = Some(true);
    for c in n.status.as_mut().unwrap().conditions.as_mut().unwrap() {
        if c.type_ == "Ready" {
            c.status = "Unknown".into();
        }
    }
    let t = gpu_node(&n, &settings());
    assert!(t.unschedulable && !t.ready);
}

#[test]
fn pods_translate_with_owner_tenant_and_requests() {
    struct Want {
        file: &'static str,
        tenant: &'static str,
        workload: (WorkloadKind, &'static str),
        requests: GpuCounts,
        node: Option<&'static str>,
        active: bool,
        priority: i32,
    }
    let cases = [
        Want {
            file: "job-train",
            tenant: "vision-lab",
            workload: (WorkloadKind::Job, "resnet-train"),
            requests: counts(&[(GPU, 2)]),
            node: Some("gpu-h100-01"),
            active: true,
            priority: 100,
        },
        Want {
            file: "virt-launcher",
            tenant: "course-cs231",
            workload: (WorkloadKind::VirtualMachine, "notebook-ana"),
            requests: counts(&[(A10, 1)]),
            node: Some("vm-a10-02"),
            active: true,
            priority: 0,
        },
        Want {
            file: "init-heavy",
            tenant: "nlp-group",
            workload: (WorkloadKind::Pod, "llm-finetune-0"),
            requests: counts(&[(GPU, 4)]),
            node: Some("gpu-h100-01"),
            active: true,
            priority: 0,
        },
        // 2 (agent) + 1 (sidecar) = 3 beats warmup 1 + sidecar 1 = 2.
        Want {
            file: "sidecar",
            tenant: "robotics",
            workload: (WorkloadKind::Pod, "rl-agent-with-simulator"),
            requests: counts(&[(GPU, 3)]),
            node: None,
            active: true,
            priority: 1000,
        },
        Want {
            file: "limits-only",
            tenant: "sandbox",
            workload: (WorkloadKind::Pod, "cuda-smoke"),
            requests: counts(&[(GPU, 1)]),
            node: None,
            active: true,
            priority: 0,
        },
        Want {
            file: "job-succeeded",
            tenant: "ml-research",
            workload: (WorkloadKind::Job, "eval-nightly"),
            requests: counts(&[(GPU, 1)]),
            node: Some("gpu-h100-01"),
            active: false,
            priority: 0,
        },
    ];
    for want in cases {
        let p = pod(want.file);
        let t = gpu_pod(&p, &settings()).unwrap();
        let ns = p.metadata.namespace.clone().unwrap();
        assert_eq!(t.uid, p.metadata.uid.clone().unwrap(), "{}", want.file);
        assert_eq!(t.tenant, want.tenant, "{}", want.file);
        let workload = WorkloadId {
            kind: want.workload.0,
            namespace: ns,
            name: want.workload.1.into(),
        };
        assert_eq!(t.workload, workload, "{}", want.file);
        assert_eq!(t.requests, want.requests, "{}", want.file);
        assert_eq!(t.node_name.as_deref(), want.node, "{}", want.file);
        assert_eq!(t.active, want.active, "{}", want.file);
        assert_eq!(t.priority, want.priority, "{}", want.file);
        assert!(t.placement.errors.is_empty(), "{}", want.file);
    }
}

#[test]
fn malformed_rota_annotations_become_placement_errors() {
    let t = gpu_pod(&pod("bad-annotations"), &settings()).unwrap();
    assert!(t.placement.gpu_models.is_empty());
    assert_eq!(t.placement.min_gpu_memory_bytes, None);
    assert_eq!(t.placement.errors.len(), 2, "{:?}", t.placement.errors);
    assert!(t
        .placement
        .errors
        .iter()
        .any(|e| e.starts_with("annotation rota.io/min-gpu-memory: \"lots\" is not a quantity (")));
    assert!(t
        .placement
        .errors
        .iter()
        .any(|e| e.starts_with("annotation rota.io/gpu-models:")));
}

#[test]
fn usage_per_node_counts_only_active_bound_pods() {
    let view = full_view();
    // resnet-train 2 + llm-finetune 4; the Succeeded eval pod and the pending pods hold nothing.
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (6, 2));
    assert_eq!(usage(&view, "vm-a10-02", A10), (1, 1));
    // Every GPU pod is indexed, bound or not (the queue needs the pending ones).
    assert_eq!(view.read().pod_count(), 7);
    assert_eq!(
        view.gpu_totals(),
        vec![(GPU.to_string(), 8, 6), (A10.to_string(), 2, 1)]
    );
}

#[test]
fn apply_and_delete_move_gpus() {
    let view = full_view();
    view.delete_pod(&pod("job-train"));
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (4, 4));

    // The pending sidecar pod gets bound to the H100 node.
    let mut bound = pod("sidecar");
    bound.spec.as_mut().unwrap().node_name = Some("gpu-h100-01".into());
    view.apply_pod(&bound);
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (7, 1));

    // Deleting a pod twice, or one the view never stored, changes nothing.
    view.delete_pod(&pod("job-train"));
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (7, 1));

    // The VM is stopped: its launcher pod goes away and the A10 is free.
    view.delete_pod(&pod("virt-launcher"));
    assert_eq!(usage(&view, "vm-a10-02", A10), (0, 2));
}

#[test]
fn terminated_pods_release_gpus() {
    let view = full_view();
    // Seen as an update with a terminal phase (unfiltered watch).
    let mut done = pod("init-heavy");
    done.status.as_mut().unwrap().phase = Some("Failed".into());
    view.apply_pod(&done);
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (2, 6));

    // Seen as a Delete carrying the terminal object (watch filtered on phase).
    let mut done = pod("job-train");
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    view.delete_pod(&done);
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (0, 8));
    assert!(view
        .read()
        .pod(&done.metadata.uid.clone().unwrap())
        .is_none());
}

#[test]
fn terminating_pod_keeps_its_gpus_until_terminal() {
    let view = full_view();
    let mut p = pod("job-train");
    let deleted: k8s_openapi::jiff::Timestamp = "2026-03-14T11:00:00Z".parse().unwrap();
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        deleted,
    ));
    view.apply_pod(&p);
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (6, 2));
}

#[test]
fn resets_recompute_usage() {
    let view = full_view();
    view.reset_pods(&[pod("job-train"), pod("virt-launcher")]);
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (2, 6));
    assert_eq!(view.read().pod_count(), 2);

    // A node re-list keeps the usage of the pods bound to the nodes that remain.
    view.reset_nodes(&[node("gpu-h100")]);
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (2, 6));
    assert!(view.read().node("vm-a10-02").is_none());
    assert_eq!(view.gpu_totals()[1], (A10.to_string(), 0, 0));

    // The node comes back: its launcher pod is counted again.
    view.apply_node(&node("vm-a10"));
    assert_eq!(usage(&view, "vm-a10-02", A10), (1, 1));
    view.delete_node("vm-a10-02");
    assert_eq!(view.gpu_totals()[1], (A10.to_string(), 0, 0));
}

#[test]
fn pods_seen_before_their_node_are_counted() {
    let view = ClusterView::new(settings());
    view.apply_pod(&pod("job-train"));
    view.apply_node(&node("gpu-h100"));
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (2, 6));
}

#[test]
fn hand_written_pod_without_uid_or_namespace_round_trips() {
    let view = ClusterView::new(settings());
    view.apply_node(&node("gpu-h100"));
    let mut p = pod("job-train");
    p.metadata.uid = None;
    p.metadata.namespace = None;
    view.apply_pod(&p);
    assert!(view.read().pod("default/resnet-train-x7k2p").is_some());
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (2, 6));
    view.delete_pod(&p);
    assert_eq!(usage(&view, "gpu-h100-01", GPU), (0, 8));

    // A pod with no name is skipped, not stored under an empty key.
    p.metadata.name = None;
    view.apply_pod(&p);
    assert_eq!(view.read().pod_count(), 0);
}

#[test]
fn subscribers_see_changes_and_only_changes() {
    let view = ClusterView::new(settings());
    let mut rx = view.subscribe();
    assert!(!rx.has_changed().unwrap());

    view.apply_node(&node("gpu-h100"));
    assert!(rx.has_changed().unwrap());
    let first = *rx.borrow_and_update();

    // The same node again (a heartbeat) and a CPU-only pod are no change.
    view.apply_node(&node("gpu-h100"));
    let mut cpu = pod("job-train");
    cpu.spec.as_mut().unwrap().containers[0].resources = None;
    view.apply_pod(&cpu);
    view.delete_pod(&cpu);
    assert!(!rx.has_changed().unwrap());

    view.apply_pod(&pod("job-train"));
    assert!(rx.has_changed().unwrap());
    assert!(*rx.borrow_and_update() > first);
    view.apply_pod(&pod("job-train"));
    assert!(!rx.has_changed().unwrap());

    assert!(!view.is_synced());
    view.set_synced(true);
    assert!(view.is_synced());
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), view.generation());
}
