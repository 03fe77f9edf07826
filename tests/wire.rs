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
        let pod = args.pod.expect("pod present");
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
