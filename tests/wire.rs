//! The extender wire types against the protocol: Go field names, `null` everywhere, unknown keys,
//! lower-case keys (Go decodes case-insensitively), and the captured kube-scheduler bodies.

use std::path::PathBuf;

use rota::wire::*;
use serde_json::{json, Value};

fn fixtures() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/kube-scheduler-1.36");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: {} is absent", dir.display());
        None
    }
}

#[test]
fn every_captured_request_decodes() {
    let Some(dir) = fixtures() else { return };
    for (file, names, nodes) in [
        ("filter-full-nodes.request.json", false, 3),
        ("prioritize-full-nodes.request.json", false, 3),
        ("filter-node-names.request.json", true, 0),
        ("prioritize-node-names.request.json", true, 0),
    ] {
        let body = std::fs::read(dir.join(file)).expect("fixture readable");
        let args: ExtenderArgs = serde_json::from_slice(&body).expect(file);
        let pod = args.pod.expect("pod present").into_pod();
        assert!(
            pod.metadata
                .name
                .as_deref()
                .unwrap_or("")
                .starts_with("gpu-pod-"),
            "{file}"
        );
        assert_eq!(args.node_names.is_some(), names, "{file}");
        assert_eq!(
            args.nodes.map(|n| n.items.len()).unwrap_or(0),
            nodes,
            "{file}"
        );
    }
}

/// A pod with every field GPU translation reads, and many it does not.
fn rich_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "train-0", "namespace": "physics", "uid": "3f1c",
            "labels": {"rota.io/tenant": "hep", "app": "train"},
            "annotations": {
                "rota.io/gpu-models": "A100", "rota.io/min-gpu-memory": "40Gi",
                "rota.io/gang-size": "2", "rota.io/quantum-seconds": "600",
                "rota.io/preemptible": "false", "rota.io/stop-warning-seconds": "120",
                "rota.io/stop-at": "2026-12-07T12:00:00Z", "rota.io/stop-for": "job/bio/x",
                "rota.io/stop-reason": "fair share"
            },
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train",
                                 "uid": "9a", "controller": true}],
            "creationTimestamp": "2026-12-07T10:00:00Z",
            "resourceVersion": "42",
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "apiVersion": "v1", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}]
        },
        "spec": {
            "schedulerName": "rota-scheduler", "priorityClassName": "research", "priority": 100,
            "nodeName": "gpu-node-3",
            "overhead": {"nvidia.com/gpu": "1"},
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "initContainers": [
                {"name": "fetch", "image": "busybox",
                 "resources": {"limits": {"nvidia.com/gpu": "3"}}},
                {"name": "sidecar", "image": "envoy", "restartPolicy": "Always",
                 "resources": {"requests": {"nvidia.com/gpu": "1"}}}
            ],
            "containers": [
                {"name": "main", "image": "pytorch", "env": [{"name": "A", "value": "1"}],
                 "resources": {"requests": {"nvidia.com/gpu": "2", "cpu": "4"},
                               "limits": {"nvidia.com/gpu": "2"}}},
                {"name": "logger", "image": "fluent-bit"}
            ]
        },
        "status": {"phase": "Running", "startTime": "2026-12-07T10:01:00Z",
                   "conditions": [{"type": "PodScheduled", "status": "True"}]}
    })
}

/// The request pod keeps every field GPU translation reads: a pod decoded for a request
/// translates as the full `Pod` does, for the captured kube-scheduler pods and a rich one.
#[test]
fn request_pods_translate_as_full_pods() {
    use k8s_openapi::api::core::v1::Pod;
    use rota::config::ValidConfig;
    use rota::read::view::{translate, ViewSettings};

    let settings = ViewSettings::from_config(&ValidConfig::default());
    let mut pods = vec![rich_pod()];
    if let Some(dir) = fixtures() {
        for file in [
            "filter-node-names.request.json",
            "prioritize-full-nodes.request.json",
        ] {
            let body: Value =
                serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap();
            pods.push(body["Pod"].clone());
        }
    }
    for pod in pods {
        let full: Pod = serde_json::from_value(pod.clone()).expect("a Pod");
        let slim: RequestPod = serde_json::from_value(pod).expect("a request pod");
        let want = translate::gpu_pod(&full, &settings).expect("translates");
        let got = translate::gpu_pod(&slim.into_pod(), &settings).expect("translates");
        assert_eq!(got, want);
    }
    // The rich pod exercises what it should: sidecar and init peak, overhead, annotations.
    let full: Pod = serde_json::from_value(rich_pod()).unwrap();
    let gpu = translate::gpu_pod(&full, &settings).unwrap();
    // max(main 2 + sidecar 1, init peak 3) + overhead 1.
    assert_eq!(gpu.requests.get("nvidia.com/gpu"), Some(&4), "{gpu:?}");
    assert!(gpu.non_preemptible && gpu.stop.is_some() && gpu.gang_size == Some(2));
    assert_eq!(gpu.placement.gpu_models, ["A100"]);
}

/// A malformed pod is refused as `k8s_openapi` refuses it: a spec without containers.
#[test]
fn request_pods_refuse_what_pods_refuse() {
    let body = json!({"Pod": {"metadata": {"name": "p"}, "spec": {}}, "NodeNames": ["n1"]});
    let body = serde_json::to_vec(&body).unwrap();
    let err = serde_json::from_slice::<ExtenderArgs>(&body).unwrap_err();
    assert!(err.to_string().contains("containers"), "{err}");
}

#[test]
fn nulls_and_missing_keys_are_absent_values() {
    let args: ExtenderArgs =
        serde_json::from_str(r#"{"Pod": null, "Nodes": null, "NodeNames": null}"#).unwrap();
    assert!(args.pod.is_none() && args.nodes.is_none() && args.node_names.is_none());
    let args: ExtenderArgs = serde_json::from_str("{}").unwrap();
    assert!(args.pod.is_none());

    let pre: ExtenderPreemptionArgs = serde_json::from_str(
        r#"{"Pod": null, "NodeNameToVictims": null, "NodeNameToMetaVictims": {"n1": {"Pods": null, "NumPDBViolations": 0}}}"#,
    )
    .unwrap();
    assert!(pre.node_name_to_victims.is_none());
    assert!(pre.node_name_to_meta_victims.unwrap()["n1"].pods.is_empty());
}

#[test]
fn acronym_keys_are_exact_and_lower_case_is_accepted() {
    let meta: MetaVictims =
        serde_json::from_str(r#"{"Pods": [{"UID": "a"}, {"uid": "b"}], "NumPDBViolations": 3}"#)
            .unwrap();
    assert_eq!(
        meta.pods,
        vec![MetaPod { uid: "a".into() }, MetaPod { uid: "b".into() }]
    );
    assert_eq!(meta.num_pdb_violations, 3);
    let out = serde_json::to_value(&meta).unwrap();
    assert_eq!(
        out,
        json!({"Pods": [{"UID": "a"}, {"UID": "b"}], "NumPDBViolations": 3})
    );

    let bind: ExtenderBindingArgs = serde_json::from_str(
        r#"{"PodName": "p", "PodNamespace": "ns", "PodUID": "u", "Node": "n", "Extra": 1}"#,
    )
    .unwrap();
    assert_eq!((bind.pod_uid.as_str(), bind.node.as_str()), ("u", "n"));

    let args: ExtenderArgs =
        serde_json::from_str(r#"{"pod": {"metadata": {"name": "x"}}, "nodenames": ["a"]}"#)
            .unwrap();
    assert_eq!(args.node_names.unwrap(), vec!["a"]);
}

#[test]
fn unknown_keys_are_ignored() {
    let args: ExtenderArgs =
        serde_json::from_str(r#"{"NodeNames": ["a"], "FutureField": {"x": [1, 2]}}"#).unwrap();
    assert_eq!(args.node_names.unwrap(), vec!["a"]);
}

#[test]
fn results_use_go_field_names() {
    let filter = ExtenderFilterResult {
        node_names: Some(vec![]),
        ..Default::default()
    };
    let v = serde_json::to_value(&filter).unwrap();
    assert_eq!(
        v,
        json!({"Nodes": null, "NodeNames": [], "FailedNodes": {}, "FailedAndUnresolvableNodes": {}, "Error": ""})
    );

    let list: HostPriorityList = vec![HostPriority {
        host: "n1".into(),
        score: 7,
    }];
    assert_eq!(
        serde_json::to_value(&list).unwrap(),
        json!([{"Host": "n1", "Score": 7}])
    );

    let binding = ExtenderBindingResult::default();
    assert_eq!(
        serde_json::to_value(&binding).unwrap(),
        json!({"Error": ""})
    );
    let preempt = ExtenderPreemptionResult::default();
    assert_eq!(
        serde_json::to_value(&preempt).unwrap(),
        json!({"NodeNameToMetaVictims": {}})
    );
}

#[test]
fn node_items_are_kept_byte_for_byte() {
    let body =
        r#"{"Nodes": {"metadata": {}, "items": [{"metadata": {"name": "n1"}, "x": [1,2]}]}}"#;
    let args: ExtenderArgs = serde_json::from_str(body).unwrap();
    let items = args.nodes.unwrap().items;
    assert_eq!(
        items[0].get(),
        r#"{"metadata": {"name": "n1"}, "x": [1,2]}"#
    );
    let v: Value = serde_json::from_str(items[0].get()).unwrap();
    assert_eq!(v["metadata"]["name"], "n1");
}
