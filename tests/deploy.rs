//! The deployment in `deploy/`: the Helm chart `deploy/helm/rota` and its default render
//! `deploy/rota.yaml` (what `kubectl apply -k deploy/` installs). Every object carries the
//! wiring and hardening rota relies on (pinned image, resources, probes, non-root, priority
//! class, one replica per node, a PodDisruptionBudget per multi-replica Deployment); RBAC grants
//! exactly the API calls the code makes (deploy/rbac-uses.tsv, checked against a scan of src/);
//! the scheduler configurations call the extender the way docs/extender-protocol.md §2 asks;
//! the dashboard and alerts name only metrics rota exports.
//!
//! The generated files are parsed directly, so these tests need no tool. That they equal the
//! chart's render is checked by `deploy/helm/render.py --check` and the chart itself (two more
//! value sets, lint, schema) by `deploy/helm/test_chart.py`, both in .ci/run (they need
//! helm-python-sdk). `kubectl kustomize` renders (skipped without kubectl) check that the
//! kustomizations wrap the generated files; schema validation is `deploy/validate.sh`.

#[path = "deploy/support.rs"]
mod support;

#[path = "deploy/rbac.rs"]
mod rbac;

use std::collections::BTreeSet;

use serde_json::Value;
use support::*;

const NS: &str = "rota-system";

// === objects and shape ===

#[test]
fn every_generated_object_is_named_and_placed() {
    let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"];
    for rel in ["deploy/rota.yaml", "deploy/monitoring/rota-monitoring.yaml"] {
        for o in manifest(rel) {
            let who = name_of(o);
            for field in ["/apiVersion", "/kind", "/metadata/name"] {
                let value = at(o, field).as_str().unwrap_or("");
                assert!(!value.is_empty(), "{rel}: {who} lacks {field}");
            }
            if !cluster_scoped.contains(&text(o, "/kind")) {
                let ns = at(o, "/metadata/namespace").as_str().unwrap_or("");
                assert!(!ns.is_empty(), "{rel}: {who} has no namespace");
            }
            assert_eq!(
                at(o, "/metadata/labels/app.kubernetes.io~1part-of"),
                "rota",
                "{rel}: {who}"
            );
        }
    }
    let objects = installed();
    for (kind, name) in [
        ("Namespace", NS),
        ("ConfigMap", "rota-config"),
        ("Deployment", "rota-extender"),
        ("Service", "rota-extender"),
        ("PodDisruptionBudget", "rota-extender"),
        ("DaemonSet", "rota-agent"),
        ("DaemonSet", "rota-agent-vfio"),
        ("NetworkPolicy", "rota-extender"),
        ("NetworkPolicy", "rota-agent"),
        ("Deployment", "rota-scheduler"),
        ("PodDisruptionBudget", "rota-scheduler"),
        ("ConfigMap", "rota-scheduler-config"),
    ] {
        find(objects, kind, name);
    }
    let namespace = find(objects, "Namespace", NS);
    assert_eq!(
        at(
            namespace,
            "/metadata/labels/pod-security.kubernetes.io~1enforce"
        ),
        "restricted"
    );
}

#[test]
fn kustomizations_wrap_the_generated_files() {
    for (dir, file) in [
        ("deploy", "deploy/rota.yaml"),
        (
            "deploy/monitoring",
            "deploy/monitoring/rota-monitoring.yaml",
        ),
    ] {
        let Some(rendered) = render(dir) else { return };
        let mut generated = manifest(file).to_vec();
        let mut rendered = rendered.to_vec();
        // The one transformation: deploy/'s `images:` (none set beyond the chart's tag).
        let key = |o: &Value| {
            (
                text(o, "/kind").to_owned(),
                text(o, "/metadata/name").to_owned(),
            )
        };
        generated.sort_by_key(key);
        rendered.sort_by_key(key);
        assert_eq!(
            rendered, generated,
            "kubectl kustomize {dir} should be exactly {file}"
        );
    }
}

#[test]
fn chart_version_runs_this_crate_and_the_plain_install_pins_it() {
    let chart = yaml_file("deploy/helm/rota/Chart.yaml");
    let cargo = read("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim_matches('"'))
        .expect("Cargo.toml version");
    assert_eq!(at(&chart, "/appVersion"), version, "Chart.yaml appVersion");
    assert!(read("deploy/kustomization.yaml").contains(&format!("newTag: \"{version}\"")));
    for o in workloads(installed()) {
        for c in containers(o) {
            let image = text(c, "/image");
            if text(c, "/name") != "kube-scheduler" {
                assert_eq!(image, format!("rota:{version}"), "{}", name_of(o));
            }
        }
    }
}

/// Deployments and DaemonSets.
fn workloads(objects: &[Value]) -> Vec<&Value> {
    all_of(objects, "Deployment")
        .chain(all_of(objects, "DaemonSet"))
        .collect()
}

fn containers(workload: &Value) -> &Vec<Value> {
    list(workload, "/spec/template/spec/containers")
}

#[test]
fn every_workload_is_pinned_sized_probed_hardened_and_prioritised() {
    let objects = installed();
    let workloads = workloads(objects);
    assert_eq!(workloads.len(), 4, "extender, scheduler, two agents");
    for w in workloads {
        let who = name_of(w);
        assert_hardened(w);
        let pod = at(w, "/spec/template/spec");
        assert_eq!(at(pod, "/securityContext/runAsUser"), 65532, "{who}");
        for c in containers(w) {
            let image = text(c, "/image");
            let (_, tag) = image
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("{who}: image {image} has no tag"));
            assert!(
                !tag.is_empty() && tag != "latest" && !tag.contains('/'),
                "{who}: image {image} must pin a tag"
            );
            // The API server defaults fieldRef.apiVersion inside an atomic struct: left out, a
            // switch from client-side to server-side apply conflicts on it
            // (tests/e2e/deploy-apply.sh saw it on a real API server).
            for env in at(c, "/env").as_array().into_iter().flatten() {
                if let Some(field_ref) = at(env, "/valueFrom/fieldRef").as_object() {
                    assert_eq!(
                        field_ref.get("apiVersion").and_then(Value::as_str),
                        Some("v1"),
                        "{who}: env {} fieldRef.apiVersion",
                        at(env, "/name")
                    );
                }
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                let get = at(c, &format!("/{probe}/httpGet"));
                assert!(get.is_object(), "{who}: {probe} missing");
                let port = text(get, "/port");
                assert!(named_port(c, port).is_some(), "{who}: {probe} port {port}");
            }
        }
        let class = text(pod, "/priorityClassName");
        let wanted = if text(w, "/kind") == "DaemonSet" {
            "system-node-critical"
        } else {
            "system-cluster-critical"
        };
        assert_eq!(class, wanted, "{who}: priorityClassName");
    }
}

#[test]
fn replicas_survive_a_node_and_each_multi_replica_deployment_has_a_pdb() {
    let objects = installed();
    for d in all_of(objects, "Deployment") {
        let who = name_of(d);
        let replicas = at(d, "/spec/replicas").as_u64().unwrap_or(1);
        assert!(replicas >= 2, "{who}: at least two replicas");
        let labels = at(d, "/spec/template/metadata/labels");
        let pod = at(d, "/spec/template/spec");
        // Hard: never two replicas on one node.
        let required = list(
            pod,
            "/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution",
        );
        assert!(
            required.iter().any(|term| {
                at(term, "/topologyKey") == "kubernetes.io/hostname"
                    && selects(at(term, "/labelSelector/matchLabels"), labels)
            }),
            "{who}: required anti-affinity on kubernetes.io/hostname"
        );
        // Soft: spread over zones where there are zones.
        let zone = list(pod, "/topologySpreadConstraints")
            .iter()
            .find(|c| at(c, "/topologyKey") == "topology.kubernetes.io/zone")
            .unwrap_or_else(|| panic!("{who}: no zone spread"));
        assert_eq!(at(zone, "/whenUnsatisfiable"), "ScheduleAnyway", "{who}");
        assert!(selects(at(zone, "/labelSelector/matchLabels"), labels));
        // A rolling update that needs no spare node: surge 0 (a surge pod could not be placed
        // when every node already holds a replica).
        assert_eq!(at(d, "/spec/strategy/rollingUpdate/maxSurge"), 0, "{who}");
        assert_eq!(
            at(d, "/spec/strategy/rollingUpdate/maxUnavailable"),
            1,
            "{who}"
        );

        let pdbs: Vec<&Value> = all_of(objects, "PodDisruptionBudget")
            .filter(|p| selects(at(p, "/spec/selector/matchLabels"), labels))
            .collect();
        assert_eq!(pdbs.len(), 1, "{who}: one PodDisruptionBudget");
        assert_eq!(at(pdbs[0], "/spec/minAvailable"), 1, "{who}");
        assert_eq!(
            at(pdbs[0], "/spec/selector/matchLabels"),
            at(d, "/spec/selector/matchLabels"),
            "{who}: the PDB selects what the Deployment selects"
        );
    }
}

#[test]
fn extender_deployment_is_probed_and_configured() {
    let objects = installed();
    let deployment = find(objects, "Deployment", "rota-extender");
    let pod = at(deployment, "/spec/template/spec");
    assert_eq!(at(pod, "/serviceAccountName"), "rota-extender");
    let container = &list(pod, "/containers")[0];
    let args: Vec<&str> = list(container, "/args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "extender",
            "--listen",
            "0.0.0.0:8888",
            "--config",
            "/etc/rota/rota-config.yaml"
        ],
        "no --max-inflight-body-bytes: derived from the memory limit at start"
    );
    assert_eq!(env_field_path(container, "POD_NAME"), Some("metadata.name"));
    assert_eq!(named_port(container, "http"), Some(8888));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(text(container, &format!("/{probe}/httpGet/path")), path);
        assert_eq!(at(container, &format!("/{probe}/httpGet/port")), "http");
    }
    let mount = list(container, "/volumeMounts")
        .iter()
        .find(|m| at(m, "/name") == "config")
        .expect("config mount");
    assert_eq!(at(mount, "/mountPath"), "/etc/rota");
    let config_map = mounted_config_map(objects, deployment, "config");
    assert_eq!(text(config_map, "/metadata/name"), "rota-config");
    // The default install runs the chart's commented example RotaConfig.
    let example = "deploy/helm/rota/files/rota-config.yaml";
    let example = rota::config::load(&repo_file(example)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rota_config(), example);
    // Editing the config rolls the pods: the template carries its checksum.
    let checksum = at(
        deployment,
        "/spec/template/metadata/annotations/checksum~1config",
    );
    assert_eq!(checksum.as_str().map(str::len), Some(64), "sha256 hex");

    let labels = at(deployment, "/spec/template/metadata/labels");
    let service = find(objects, "Service", "rota-extender");
    assert!(selects(at(service, "/spec/selector"), labels));
    let port = &list(service, "/spec/ports")[0];
    assert_eq!(at(port, "/name"), "http");
    assert_eq!(at(port, "/port"), 8888);
}

/// Memory limit and in-flight body budget agree: unset, the budget is derived at start as half
/// the limit (at most 512 MiB), so the limit must leave room for the default budget and one
/// body at the cap twice over (src/http/memory_limit.rs).
#[test]
fn extender_memory_limit_holds_the_default_body_budget() {
    use rota::http::memory_limit::{inflight_budget, DEFAULT_INFLIGHT_BODY_BYTES};
    let deployment = find(installed(), "Deployment", "rota-extender");
    let container = &containers(deployment)[0];
    let limit = quantity_bytes(text(container, "/resources/limits/memory"));
    let budget = inflight_budget(
        None,
        rota::http::ServerOptions::default().max_body_bytes,
        Some(limit),
    )
    .unwrap_or_else(|e| panic!("the extender would not start: {e}"));
    assert_eq!(
        budget, DEFAULT_INFLIGHT_BODY_BYTES,
        "a {limit}-byte limit shrinks the default budget to {budget}"
    );
    let readme = read("README.md");
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        readme.contains("half the container's memory limit, at most 512 MiB"),
        "README states how the budget is derived"
    );
    assert!(
        !readme.contains("share `--max-inflight-body-bytes` (512 MiB)"),
        "README: the old fixed default"
    );
}

/// A Kubernetes memory quantity in bytes (binary and decimal suffixes).
fn quantity_bytes(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().expect("quantity") * factor;
        }
    }
    q.parse().expect("quantity")
}

#[test]
fn agents_run_on_gpu_nodes_where_the_extender_looks_for_them() {
    let objects = installed();
    let config = rota_config();
    let selector: Value = config
        .telemetry
        .agent_selector
        .split(',')
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("agentSelector is k=v pairs");
            (k.trim().to_owned(), Value::from(v.trim()))
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let daemonsets: Vec<&Value> = all_of(objects, "DaemonSet").collect();
    assert_eq!(daemonsets.len(), 2, "an NVML agent and a vfio agent");
    for ds in daemonsets {
        let who = name_of(ds);
        let pod = at(ds, "/spec/template/spec");
        let labels = at(ds, "/spec/template/metadata/labels");
        assert!(selects(&selector, labels), "{who}: agentSelector misses it");
        assert_eq!(at(labels, "/app.kubernetes.io~1name"), "rota-agent");
        assert_eq!(at(pod, "/nodeSelector/nvidia.com~1gpu.present"), "true");
        let tolerates_gpu = list(pod, "/tolerations")
            .iter()
            .any(|t| at(t, "/key") == "nvidia.com/gpu" && at(t, "/operator") == "Exists");
        assert!(
            tolerates_gpu,
            "{who}: no toleration for nvidia.com/gpu taints"
        );
        assert_eq!(at(pod, "/automountServiceAccountToken"), false, "{who}");
        let container = &list(pod, "/containers")[0];
        assert_eq!(
            env_field_path(container, "NODE_NAME"),
            Some("spec.nodeName")
        );
        let port = u64::from(config.telemetry.agent_port);
        assert_eq!(named_port(container, "metrics"), Some(port), "{who}");
        let args: Vec<&str> = list(container, "/args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let listen = format!("0.0.0.0:{port}");
        assert_eq!(args[..3], ["agent", "--listen", listen.as_str()], "{who}");
    }
    let nvml = find(objects, "DaemonSet", "rota-agent");
    assert_eq!(at(nvml, "/spec/template/spec/runtimeClassName"), "nvidia");
    let vfio = find(objects, "DaemonSet", "rota-agent-vfio");
    assert_eq!(
        at(
            vfio,
            "/spec/template/spec/nodeSelector/nvidia.com~1gpu.workload.config"
        ),
        "vm-passthrough"
    );
}

#[test]
fn network_policy_admits_only_the_scheduler_and_prometheus_to_the_extender() {
    let objects = installed();
    let policy = find(objects, "NetworkPolicy", "rota-extender");
    let extender = find(objects, "Deployment", "rota-extender");
    let scheduler = find(objects, "Deployment", "rota-scheduler");
    assert!(selects(
        at(policy, "/spec/podSelector/matchLabels"),
        at(extender, "/spec/template/metadata/labels")
    ));
    assert_eq!(
        list(policy, "/spec/policyTypes"),
        &vec![Value::from("Ingress")]
    );
    let peers: Vec<&Value> = list(policy, "/spec/ingress")
        .iter()
        .flat_map(|rule| list(rule, "/from"))
        .collect();
    assert_eq!(peers.len(), 2, "the scheduler and Prometheus, nothing else");
    let scheduler_labels = at(scheduler, "/spec/template/metadata/labels");
    assert!(peers.iter().any(
        |p| selects(at(p, "/podSelector/matchLabels"), scheduler_labels)
            && at(p, "/namespaceSelector").is_null()
    ));
    assert!(peers.iter().any(
        |p| at(p, "/podSelector/matchLabels/app.kubernetes.io~1name") == "prometheus"
            && !at(p, "/namespaceSelector").is_null()
    ));
}

// === RBAC ===

/// `(group, resource, verb)` of every rule of one role (resourceNames must be absent).
fn role_grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in list(role, "/rules") {
        assert!(
            at(rule, "/resourceNames").is_null(),
            "{}: unexpected resourceNames",
            name_of(role)
        );
        for group in list(rule, "/apiGroups") {
            for resource in list(rule, "/resources") {
                for verb in list(rule, "/verbs") {
                    out.insert((
                        group.as_str().unwrap_or("").to_owned(),
                        resource.as_str().unwrap_or("").to_owned(),
                        verb.as_str().unwrap_or("").to_owned(),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_the_api_calls_in_the_table() {
    let objects = installed();
    let table = rbac::table();
    for (scope, kind) in [("cluster", "ClusterRole"), ("namespace", "Role")] {
        let role = find(objects, kind, "rota-extender");
        let granted = role_grants(role);
        let used: BTreeSet<(String, String, String)> = table
            .iter()
            .filter(|u| u.scope == scope)
            .map(|u| (u.group.clone(), u.resource.clone(), u.verb.clone()))
            .collect();
        let unused: Vec<_> = granted.difference(&used).collect();
        let ungranted: Vec<_> = used.difference(&granted).collect();
        assert!(
            unused.is_empty() && ungranted.is_empty(),
            "{kind} rota-extender vs deploy/rbac-uses.tsv ({scope} rows)\n  \
             granted, no use in the table: {unused:#?}\n  used, not granted: {ungranted:#?}"
        );
    }
    let role = find(objects, "Role", "rota-extender");
    assert_eq!(at(role, "/metadata/namespace"), NS);

    // The bindings give those roles to the ServiceAccount the extender runs as.
    let binding = find(objects, "ClusterRoleBinding", "rota-extender");
    assert_eq!(at(binding, "/roleRef/name"), "rota-extender");
    let role_binding = find(objects, "RoleBinding", "rota-extender");
    assert_eq!(at(role_binding, "/metadata/namespace"), NS);
    for b in [binding, role_binding] {
        let subject = &list(b, "/subjects")[0];
        assert_eq!(at(subject, "/name"), "rota-extender", "{}", name_of(b));
        assert_eq!(at(subject, "/namespace"), NS, "{}", name_of(b));
    }
    // Nothing else of rota's grants anything but the scheduler's own Lease.
    let roles: Vec<String> = all_of(objects, "ClusterRole")
        .chain(all_of(objects, "Role"))
        .map(name_of)
        .collect();
    assert_eq!(
        roles,
        [
            "ClusterRole/rota-extender",
            "Role/rota-extender",
            "Role/rota-scheduler-leader-election"
        ]
    );
    let lease = &list(
        find(objects, "Role", "rota-scheduler-leader-election"),
        "/rules",
    )[0];
    assert_eq!(
        list(lease, "/resourceNames"),
        &vec![Value::from("rota-scheduler")]
    );
    assert_eq!(
        list(lease, "/verbs"),
        &vec![Value::from("get"), Value::from("update")]
    );
    let scheduler_roles: BTreeSet<&str> = all_of(objects, "ClusterRoleBinding")
        .chain(all_of(objects, "RoleBinding"))
        .filter(|b| {
            list(b, "/subjects")
                .iter()
                .any(|s| at(s, "/name") == "rota-scheduler")
        })
        .map(|b| text(b, "/roleRef/name"))
        .collect();
    let wanted: BTreeSet<&str> = [
        "system:kube-scheduler",
        "system:volume-scheduler",
        "extension-apiserver-authentication-reader",
        "rota-scheduler-leader-election",
    ]
    .into();
    assert_eq!(scheduler_roles, wanted);
}

#[test]
fn rbac_table_rows_are_consistent() {
    for u in rbac::table() {
        let (group, plural) = rbac::resource_of(&u.kind)
            .unwrap_or_else(|| panic!("rbac-uses.tsv: unknown kind {}", u.kind));
        if u.call == "vm_subresource(" {
            let (group, resources) = rbac::VM_SUBRESOURCES;
            assert_eq!(u.group, group, "{u:?}");
            assert!(resources.contains(&u.resource.as_str()), "{u:?}");
            assert_eq!(
                (u.kind.as_str(), u.verb.as_str()),
                ("VirtualMachine", "update")
            );
            continue;
        }
        assert_eq!(u.group, group, "{u:?}");
        let resource = if rbac::SUBRESOURCE_CALLS.contains(&u.call.as_str()) {
            format!("{plural}/eviction")
        } else {
            plural.to_owned()
        };
        assert_eq!(u.resource, resource, "{u:?}");
        assert!(rbac::verbs_of(&u.call).contains(&u.verb.as_str()), "{u:?}");
        let scope = if ["ConfigMap", "Lease"].contains(&u.kind.as_str()) {
            "namespace"
        } else {
            "cluster"
        };
        assert_eq!(u.scope, scope, "{u:?}: rota's own objects are namespaced");
    }
}

#[test]
fn every_api_call_in_src_has_a_table_row_and_every_row_a_call() {
    let found = rbac::scan(&repo_file("src"));
    assert!(
        found.len() >= 10,
        "the scan found too little to be trusted: {found:#?}"
    );
    let table = rbac::table();
    // Each (kind, call) found in a file needs every verb the call stands for in the table.
    let mut missing = Vec::new();
    for (kind, call, file) in &found {
        assert!(
            rbac::resource_of(kind).is_some(),
            "{file}: Api of kind {kind}, unknown to the RBAC table (add it to \
             tests/deploy/rbac.rs resource_of and rows to deploy/rbac-uses.tsv)"
        );
        for verb in rbac::verbs_of(call) {
            if !table
                .iter()
                .any(|u| &u.kind == kind && &u.call == call && u.verb == *verb)
            {
                missing.push(format!("{file}: {kind} {call} → {verb}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "API calls without a row in deploy/rbac-uses.tsv (and so without a grant):\n{missing:#?}"
    );
    // Each row's (kind, call) is made somewhere.
    let seen: BTreeSet<(&str, &str)> = found
        .iter()
        .map(|(k, c, _)| (k.as_str(), c.as_str()))
        .collect();
    let stale: Vec<String> = table
        .iter()
        .filter(|u| !seen.contains(&(u.kind.as_str(), u.call.as_str())))
        .map(|u| {
            format!(
                "{} {} {} ({} {})",
                u.group, u.resource, u.verb, u.kind, u.call
            )
        })
        .collect();
    assert!(
        stale.is_empty(),
        "rows of deploy/rbac-uses.tsv with no such call under src/ (drop the row and the grant):\n{stale:#?}"
    );
    // The scan sees what the RBAC needs: the eviction and the VM stop.
    assert!(found
        .iter()
        .any(|(k, c, _)| k == "Pod" && c == "create_subresource"));
    assert!(found
        .iter()
        .any(|(k, c, _)| k == "VirtualMachine" && c == "read_decide_patch("));
}

#[test]
fn rbac_scan_catches_a_new_call_and_a_new_kind() {
    let dir = std::env::temp_dir().join(format!("rota-rbac-scan-{}", std::process::id()));
    let nested = dir.join("somewhere/else");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(
        nested.join("new.rs"),
        "use kube::Api;\n// api.evict( in a comment does not count\n\
         fn f(c: Client) { let api: Api<Service> = Api::all(c); api\n        .delete(\"x\"); }\n\
         fn g(c: Client) { let api = Api::<Node>::all(c); api.get_opt(\"n\"); }\n\
         fn h() { let r = ApiResource::from_gvk_with_plural(&gvk(\"kubevirt.io\", \"v1\", \"VirtualMachineInstance\"), \"vmis\"); \
         let a = Api::<DynamicObject>::all_with(c, &r); watcher(a, cfg); }\n",
    )
    .unwrap();
    let found = rbac::scan(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let pairs: BTreeSet<(&str, &str)> = found
        .iter()
        .map(|(k, c, _)| (k.as_str(), c.as_str()))
        .collect();
    assert!(pairs.contains(&("Node", "get_opt(")), "{pairs:?}");
    assert!(pairs.contains(&("Service", "api.delete(")), "{pairs:?}");
    assert!(
        pairs.contains(&("VirtualMachineInstance", "watcher(")),
        "{pairs:?}"
    );
    assert!(
        !pairs.iter().any(|(_, c)| *c == "api.evict("),
        "comments are skipped"
    );
    assert!(
        rbac::resource_of("Service").is_none(),
        "an unknown kind fails the real scan"
    );
    // Node get is not in the table: the real test would report it.
    assert!(!rbac::table()
        .iter()
        .any(|u| u.kind == "Node" && u.verb == "get"));
}

// === scheduler wiring ===

fn extender_block(config: &Value, what: &str) -> Value {
    assert_eq!(
        at(config, "/apiVersion"),
        "kubescheduler.config.k8s.io/v1",
        "{what}"
    );
    assert_eq!(at(config, "/kind"), "KubeSchedulerConfiguration", "{what}");
    let extenders = list(config, "/extenders");
    assert_eq!(extenders.len(), 1, "{what}: exactly one extender, rota");
    extenders[0].clone()
}

/// The fields docs/extender-protocol.md §2 asks for, with managedResources = the example
/// config's GPU resources.
fn assert_extender_fields(extender: &Value, what: &str) {
    assert_eq!(at(extender, "/filterVerb"), "filter", "{what}");
    assert_eq!(at(extender, "/prioritizeVerb"), "prioritize", "{what}");
    assert_eq!(at(extender, "/preemptVerb"), "preempt", "{what}");
    assert!(
        at(extender, "/bindVerb").is_null(),
        "{what}: rota does not bind"
    );
    assert_eq!(at(extender, "/nodeCacheCapable"), true, "{what}");
    let weight = at(extender, "/weight").as_i64().unwrap_or(0);
    assert!(
        weight > 0,
        "{what}: weight must be > 0 with a prioritizeVerb"
    );
    let timeout = text(extender, "/httpTimeout");
    let seconds: f64 = timeout
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: httpTimeout {timeout:?} should read like 3s"));
    assert!(
        seconds > 0.0 && seconds < 5.0,
        "{what}: httpTimeout {timeout}"
    );
    assert!(
        at(extender, "/ignorable").is_boolean(),
        "{what}: ignorable chosen explicitly"
    );
    let managed: Vec<(&str, &Value)> = list(extender, "/managedResources")
        .iter()
        .map(|r| (text(r, "/name"), at(r, "/ignoredByScheduler")))
        .collect();
    let config = rota_config();
    let wanted: Vec<(&str, &Value)> = config
        .gpu_resources
        .iter()
        .map(|r| (r.as_str(), &Value::Bool(false)))
        .collect();
    assert_eq!(managed, wanted, "{what}: managedResources = gpuResources");
}

#[test]
fn scheduler_configurations_share_one_extender_block() {
    let second = scheduler_config();
    let reference = extender_block(&second, "rota-scheduler");
    assert_extender_fields(&reference, "rota-scheduler");
    assert_eq!(
        at(&reference, "/urlPrefix"),
        "http://rota-extender.rota-system.svc:8888"
    );
    let profiles = list(&second, "/profiles");
    assert_eq!(at(&profiles[0], "/schedulerName"), "rota-scheduler");
    assert_eq!(at(&second, "/leaderElection/leaderElect"), true);
    assert_eq!(
        at(&second, "/leaderElection/resourceName"),
        "rota-scheduler"
    );
    assert_eq!(at(&second, "/leaderElection/resourceNamespace"), NS);

    for (rel, kubeconfig) in [
        (
            "deploy/default-scheduler/kubeadm/scheduler-config.yaml",
            "/etc/kubernetes/scheduler.conf",
        ),
        (
            "deploy/default-scheduler/rke2/scheduler-config.yaml",
            "/var/lib/rancher/rke2/server/cred/scheduler.kubeconfig",
        ),
    ] {
        let config = yaml_file(rel);
        assert_eq!(
            at(&config, "/clientConnection/kubeconfig"),
            kubeconfig,
            "{rel}"
        );
        assert!(
            at(&config, "/profiles").is_null(),
            "{rel}: keep the default profile"
        );
        let mut block = extender_block(&config, rel);
        assert_eq!(
            at(&block, "/urlPrefix"),
            "http://ROTA_EXTENDER_IP:8888",
            "{rel}"
        );
        block["urlPrefix"] = reference["urlPrefix"].clone();
        assert_eq!(
            block, reference,
            "{rel}: extender block differs from deploy/scheduler's"
        );
    }

    // kubeadm: the patch passes --config and mounts the very file it names.
    let patch = yaml_file("deploy/default-scheduler/kubeadm/kube-scheduler+json.yaml");
    let ops = patch
        .as_array()
        .expect("a JSON patch is a list of operations");
    let value_of = |path: &str| {
        ops.iter()
            .find(|op| at(op, "/op") == "add" && at(op, "/path") == path)
            .map(|op| at(op, "/value").clone())
            .unwrap_or_else(|| panic!("kubeadm patch lacks an add to {path}"))
    };
    let file = "/etc/kubernetes/scheduler-config.yaml";
    assert_eq!(
        value_of("/spec/containers/0/command/-"),
        format!("--config={file}").as_str()
    );
    assert_eq!(
        at(&value_of("/spec/containers/0/volumeMounts/-"), "/mountPath"),
        file
    );
    assert_eq!(at(&value_of("/spec/volumes/-"), "/hostPath/path"), file);

    // RKE2: the flag and the mount name the same file.
    let rke2 = yaml_file("deploy/default-scheduler/rke2/config.yaml");
    let arg = text(&list(&rke2, "/kube-scheduler-arg")[0], "").to_owned();
    let path = arg
        .strip_prefix("config=")
        .expect("kube-scheduler-arg config=PATH");
    let mount = text(&list(&rke2, "/kube-scheduler-extra-mount")[0], "");
    assert!(
        mount.starts_with(&format!("{path}:{path}")),
        "mount {mount} vs {path}"
    );
}

/// The KubeSchedulerConfiguration rota-scheduler runs (its ConfigMap in deploy/rota.yaml).
fn scheduler_config() -> Value {
    let config_map = find(installed(), "ConfigMap", "rota-scheduler-config");
    let docs = yaml_docs(
        text(config_map, "/data/scheduler-config.yaml"),
        "scheduler-config",
    );
    assert_eq!(docs.len(), 1);
    docs.into_iter().next().unwrap_or_default()
}

#[test]
fn second_scheduler_runs_the_rendered_configuration() {
    let objects = installed();
    let deployment = find(objects, "Deployment", "rota-scheduler");
    let container = &list(deployment, "/spec/template/spec/containers")[0];
    let image = text(container, "/image");
    let tag = image
        .strip_prefix("registry.k8s.io/kube-scheduler:v")
        .unwrap_or_else(|| panic!("stock kube-scheduler image expected, got {image}"));
    let version: Vec<u32> = tag.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    assert!(
        version.len() == 3 && version[0] == 1 && version[1] >= 33,
        "pinned v1.33+: {image}"
    );

    let config_map = mounted_config_map(objects, deployment, "config");
    assert_eq!(text(config_map, "/metadata/name"), "rota-scheduler-config");
    let mount = list(container, "/volumeMounts")
        .iter()
        .find(|m| at(m, "/name") == "config")
        .expect("config mount");
    let flag = format!(
        "--config={}/scheduler-config.yaml",
        text(mount, "/mountPath")
    );
    assert!(
        list(container, "/command").contains(&flag.into()),
        "kube-scheduler --config"
    );

    // The urlPrefix reaches the rendered Service.
    let extender = extender_block(&scheduler_config(), "embedded");
    let service = find(objects, "Service", "rota-extender");
    let port = at(&list(service, "/spec/ports")[0], "/port");
    let url = format!(
        "http://rota-extender.{}.svc:{port}",
        text(service, "/metadata/namespace")
    );
    assert_eq!(at(&extender, "/urlPrefix"), url.as_str());
    // The Lease it elects with is the one its Role names.
    let lease = &list(
        find(objects, "Role", "rota-scheduler-leader-election"),
        "/rules",
    )[0];
    assert_eq!(
        &list(lease, "/resourceNames")[0],
        at(&scheduler_config(), "/leaderElection/resourceName")
    );
}

// === monitoring ===

#[test]
fn monitors_and_rules_have_what_prometheus_needs() {
    let monitoring = manifest("deploy/monitoring/rota-monitoring.yaml");
    let workloads = workloads(installed());
    let monitors: Vec<&Value> = all_of(monitoring, "PodMonitor").collect();
    assert_eq!(monitors.len(), 2, "the extender and the agents");
    for monitor in monitors {
        let who = name_of(monitor);
        let selector = at(monitor, "/spec/selector/matchLabels");
        let targets: Vec<&&Value> = workloads
            .iter()
            .filter(|w| selects(selector, at(w, "/spec/template/metadata/labels")))
            .collect();
        assert!(!targets.is_empty(), "{who} selects no rendered pods");
        for endpoint in list(monitor, "/spec/podMetricsEndpoints") {
            let port = text(endpoint, "/port");
            assert_eq!(at(endpoint, "/path"), "/metrics", "{who}");
            for target in &targets {
                let container = &list(target, "/spec/template/spec/containers")[0];
                assert!(
                    named_port(container, port).is_some(),
                    "{who}: no port {port}"
                );
            }
        }
    }
    let rule = find(monitoring, "PrometheusRule", "rota");
    let mut alerts = BTreeSet::new();
    for group in list(rule, "/spec/groups") {
        for r in list(group, "/rules") {
            assert!(!text(r, "/expr").trim().is_empty(), "{} has no expr", r);
            assert!(at(r, "/labels/severity").is_string(), "{r}: no severity");
            alerts.insert(text(r, "/alert").to_owned());
            // Prometheus's own templates reach the rule untouched by Helm.
            if let Some(summary) = at(r, "/annotations/summary").as_str() {
                assert!(!summary.contains("<no value>"), "{summary}");
            }
        }
    }
    for wanted in [
        "RotaTenantStarved",
        "RotaTelemetryStale",
        "RotaGpuUnhealthy",
        "RotaExtenderErrors",
        "RotaExtenderSlow",
        "RotaAgentNvmlUnavailable",
        "RotaExtenderDown",
    ] {
        assert!(alerts.contains(wanted), "missing alert {wanted}");
    }
    let down = list(rule, "/spec/groups")
        .iter()
        .flat_map(|g| list(g, "/rules"))
        .find(|r| at(r, "/alert") == "RotaExtenderDown")
        .expect("RotaExtenderDown");
    assert!(
        text(down, "/expr").contains("job=\"rota-system/rota-extender\""),
        "the PodMonitor's job label is namespace/name"
    );
    let dashboard = find(monitoring, "ConfigMap", "rota-grafana-dashboard");
    assert_eq!(at(dashboard, "/metadata/labels/grafana_dashboard"), "1");
    let embedded: Value =
        serde_json::from_str(text(dashboard, "/data/rota.json")).expect("dashboard JSON");
    assert_eq!(embedded, support::dashboard());
}

// === examples ===

#[test]
fn examples_use_rota_scheduler_and_survive_rotation() {
    let Some(objects) = render("deploy/examples") else {
        return;
    };
    let config = rota_config();
    let tenants = rota::config::load(&repo_file("deploy/examples/rota-config-two-tenants.yaml"))
        .unwrap_or_else(|e| panic!("the two-tenant RotaConfig: {e}"));
    assert_eq!(tenants.tenants.len(), 2);
    assert_ne!(
        tenants.tenants[0].weight, tenants.tenants[1].weight,
        "weights should differ"
    );
    let namespaces: BTreeSet<&str> = all_of(objects, "Namespace")
        .map(|n| text(n, "/metadata/name"))
        .collect();
    let names: BTreeSet<&str> = tenants.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(namespaces, names, "one namespace per example tenant");
    let is_tenant = |labels: &Value| {
        let tenant = at(
            labels,
            &format!("/{}", config.tenant_label.replace('/', "~1")),
        );
        names.contains(tenant.as_str().unwrap_or(""))
    };

    let vm = find(objects, "VirtualMachine", "notebook-gpu");
    assert_eq!(at(vm, "/spec/runStrategy"), "Always");
    let vmi = at(vm, "/spec/template");
    assert_eq!(at(vmi, "/spec/schedulerName"), "rota-scheduler");
    assert_eq!(at(vmi, "/spec/evictionStrategy"), "None");
    assert!(
        is_tenant(at(vmi, "/metadata/labels")),
        "VM template needs a tenant label"
    );
    let gpus = list(vmi, "/spec/domain/devices/gpus");
    assert!(!gpus.is_empty());
    for gpu in gpus {
        let device = text(gpu, "/deviceName");
        assert!(
            config.manages_resource(device),
            "{device} is not a managed GPU resource"
        );
    }

    let jobs: Vec<&Value> = all_of(objects, "Job").collect();
    assert!(jobs.len() >= 2);
    let mut gangs = 0;
    for job in jobs {
        let who = name_of(job);
        let pod = at(job, "/spec/template/spec");
        assert_eq!(
            at(pod, "/restartPolicy"),
            "Never",
            "{who}: podFailurePolicy needs it"
        );
        assert_eq!(at(pod, "/schedulerName"), "rota-scheduler", "{who}");
        assert!(
            is_tenant(at(job, "/spec/template/metadata/labels")),
            "{who}: tenant label"
        );
        let ignores_disruption = list(job, "/spec/podFailurePolicy/rules").iter().any(|r| {
            at(r, "/action") == "Ignore"
                && list(r, "/onPodConditions")
                    .iter()
                    .any(|c| at(c, "/type") == "DisruptionTarget")
        });
        assert!(
            ignores_disruption,
            "{who}: podFailurePolicy must ignore DisruptionTarget"
        );
        let limits = at(&list(pod, "/containers")[0], "/resources/limits");
        let asks_gpu = limits
            .as_object()
            .is_some_and(|l| l.keys().any(|k| config.manages_resource(k)));
        assert!(asks_gpu, "{who}: requests no managed GPU resource");
        let gang = at(
            job,
            "/spec/template/metadata/annotations/rota.io~1gang-size",
        );
        if let Some(size) = gang.as_str() {
            let size: u64 = size
                .parse()
                .unwrap_or_else(|_| panic!("{who}: gang size {size}"));
            assert_eq!(at(job, "/spec/parallelism").as_u64(), Some(size), "{who}");
            gangs += 1;
        }
    }
    assert_eq!(gangs, 1, "one gang Job example");
}

// === metrics drift ===

#[test]
fn metric_name_scanner_finds_names_and_literals() {
    let found = metric_names(r#"sum(rate(rota_a_total[5m])) / x_rota_b + "rota_c" rota_d9"#);
    assert_eq!(
        found,
        [
            ("rota_a_total".to_owned(), false),
            ("rota_c".to_owned(), true)
        ]
    );
    let exported: BTreeSet<String> = ["rota_h".to_owned()].into();
    let exprs = ["rota_h_bucket + rota_h_count + rota_x_sum".to_owned()];
    let (unknown, found) = unknown_metrics(&exprs, &exported);
    assert_eq!(found, 3);
    assert_eq!(unknown.len(), 1);
    assert!(unknown[0].starts_with("rota_x_sum"));
}

#[test]
fn dashboard_and_alerts_name_only_exported_metrics() {
    let exported = exported_metrics();
    assert!(
        exported.contains("rota_extender_requests_total"),
        "scanner found {exported:?}"
    );

    let dash = dashboard();
    assert!(at(&dash, "/schemaVersion").as_u64().unwrap_or(0) >= 36);
    let datasource = list(&dash, "/templating/list")
        .iter()
        .find(|v| at(v, "/name") == "datasource")
        .expect("a ${datasource} variable");
    assert_eq!(at(datasource, "/type"), "datasource");
    assert_eq!(at(datasource, "/query"), "prometheus");
    let mut ids = BTreeSet::new();
    for panel in list(&dash, "/panels") {
        assert!(
            ids.insert(at(panel, "/id").as_u64()),
            "duplicate panel id in {panel}"
        );
        if at(panel, "/targets").is_array() {
            assert_eq!(
                at(panel, "/datasource/uid"),
                "${datasource}",
                "{}",
                at(panel, "/title")
            );
        }
    }
    let dash_exprs = dashboard_exprs(&dash);
    let (unknown, found) = unknown_metrics(&dash_exprs, &exported);
    assert!(
        found >= 20,
        "only {found} metric names found in the dashboard"
    );
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics rota does not export:\n{unknown:#?}"
    );
    let joined = dash_exprs.join("\n");
    for wanted in [
        "rota_fairness_jain_index",
        "rota_tenant_allocated_gpus",
        "rota_tenant_entitled_gpus",
        "rota_tenant_share_gap_gpus",
        "rota_tenant_pending_workloads",
        "rota_queue_wait_seconds_bucket",
        "rota_gpu_health",
        "rota_gpu_utilization_ratio",
        "rota_telemetry_age_seconds",
        "rota_extender_request_duration_seconds_bucket",
        "rota_extender_requests_total",
    ] {
        assert!(
            joined.contains(wanted),
            "the dashboard should chart {wanted}"
        );
    }

    let rule = find(
        manifest("deploy/monitoring/rota-monitoring.yaml"),
        "PrometheusRule",
        "rota",
    );
    let rule_exprs: Vec<String> = list(rule, "/spec/groups")
        .iter()
        .flat_map(|g| list(g, "/rules"))
        .map(|r| text(r, "/expr").to_owned())
        .collect();
    let (unknown, found) = unknown_metrics(&rule_exprs, &exported);
    assert!(found >= 6, "only {found} metric names found in the alerts");
    assert!(
        unknown.is_empty(),
        "alerts name metrics rota does not export:\n{unknown:#?}"
    );
}

// === container image ===

#[test]
fn containerfile_builds_the_locked_binary_non_root_on_distroless() {
    assert!(
        !repo_file("Dockerfile").exists(),
        "one image recipe: the Containerfile"
    );
    let file = read("Containerfile");
    let lines: Vec<&str> = file.lines().map(str::trim).collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 3, "multi-stage: {froms:?}");
    // The default target (the last stage) is the glibc build the agent needs for NVML; the
    // extender-static target is a musl binary on distroless/static.
    assert!(
        froms
            .last()
            .is_some_and(|l| l.starts_with("FROM gcr.io/distroless/cc-debian12:nonroot")),
        "{froms:?}"
    );
    assert!(
        froms
            .iter()
            .any(|l| l
                .starts_with("FROM gcr.io/distroless/static-debian12:nonroot AS extender-static")),
        "{froms:?}"
    );
    let builds: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("cargo build --release --locked"))
        .collect();
    assert_eq!(builds.len(), 2, "{builds:?}");
    assert!(builds
        .iter()
        .any(|l| l.contains("--target x86_64-unknown-linux-musl")));
    let users = lines.iter().filter(|l| **l == "USER 65532:65532").count();
    assert_eq!(users, 2, "both runtime stages run as non-root");
    assert!(lines.contains(&r#"ENTRYPOINT ["/rota"]"#));
    // Cargo refuses a manifest whose declared targets are missing: the build context must
    // carry every directory Cargo.toml's targets live in.
    let manifest = read("Cargo.toml");
    let ignore = read(".dockerignore");
    let mut needed = vec!["src"];
    if manifest.contains("[[bench]]") {
        needed.push("benches");
    }
    for dir in needed {
        let copies = lines
            .iter()
            .filter(|l| **l == format!("COPY {dir} ./{dir}"))
            .count();
        assert_eq!(copies, 2, "Containerfile: {dir} in both build stages");
        assert!(
            ignore.lines().any(|l| l.trim() == format!("!{dir}")),
            ".dockerignore: {dir}"
        );
    }
    // deploy/README.md says how to build and push it.
    let readme = read("deploy/README.md");
    assert!(
        readme.contains("build -f Containerfile"),
        "build command in deploy/README.md"
    );
    assert!(
        readme.contains(" push "),
        "push command in deploy/README.md"
    );
}
