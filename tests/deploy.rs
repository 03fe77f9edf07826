//! The deployment in `deploy/`: it renders with kustomize, every object carries the wiring and
//! hardening rota relies on, RBAC grants exactly the verbs rota uses, the scheduler
//! configurations call the extender the way docs/extender-protocol.md §2 asks, and the
//! dashboard and alerts name only metrics rota exports.
//!
//! Rendering needs `kubectl` (its built-in kustomize); without it those tests print why and
//! pass. The checks that read files directly (scheduler configurations, alerts, dashboard,
//! Dockerfile) always run. Schema validation of the rendered objects is `deploy/validate.sh`.

#[path = "deploy/support.rs"]
mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::*;

const NS: &str = "rota-system";

// === rendering and object shape ===

#[test]
fn every_rendered_object_is_named_and_placed() {
    let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"];
    for dir in ["deploy", "deploy/monitoring", "deploy/examples"] {
        let Some(objects) = render(dir) else { return };
        for o in objects {
            let who = name_of(o);
            for field in ["/apiVersion", "/kind", "/metadata/name"] {
                let value = at(o, field).as_str().unwrap_or("");
                assert!(!value.is_empty(), "{dir}: {who} lacks {field}");
            }
            // No namespace transformer: every namespaced object says where it goes.
            if !cluster_scoped.contains(&text(o, "/kind")) {
                let ns = at(o, "/metadata/namespace").as_str().unwrap_or("");
                assert!(!ns.is_empty(), "{dir}: {who} has no namespace");
            }
        }
    }
    let Some(objects) = render("deploy") else {
        return;
    };
    for (kind, name) in [
        ("Namespace", NS),
        ("Deployment", "rota-extender"),
        ("Service", "rota-extender"),
        ("PodDisruptionBudget", "rota-extender"),
        ("DaemonSet", "rota-agent"),
        ("DaemonSet", "rota-agent-vfio"),
        ("NetworkPolicy", "rota-extender"),
        ("Deployment", "rota-scheduler"),
    ] {
        find(objects, kind, name);
    }
}

#[test]
fn extender_deployment_is_hardened_probed_and_configured() {
    let Some(objects) = render("deploy") else {
        return;
    };
    let deployment = find(objects, "Deployment", "rota-extender");
    assert_eq!(at(deployment, "/spec/replicas"), 2);
    assert_hardened(deployment);
    let pod = at(deployment, "/spec/template/spec");
    assert_eq!(at(pod, "/serviceAccountName"), "rota-extender");
    assert!(!list(pod, "/topologySpreadConstraints").is_empty());
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
        ]
    );
    assert_eq!(env_field_path(container, "POD_NAME"), Some("metadata.name"));
    assert_eq!(named_port(container, "http"), Some(8888));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(text(container, &format!("/{probe}/httpGet/path")), path);
        assert_eq!(at(container, &format!("/{probe}/httpGet/port")), "http");
    }
    // --config points into the mounted ConfigMap, which holds the example RotaConfig.
    let mount = list(container, "/volumeMounts")
        .iter()
        .find(|m| at(m, "/name") == "config")
        .expect("config mount");
    assert_eq!(at(mount, "/mountPath"), "/etc/rota");
    let config_map = mounted_config_map(objects, deployment, "config");
    assert!(
        text(config_map, "/metadata/name").starts_with("rota-config-"),
        "the RotaConfig ConfigMap should be generated (hash suffix rolls the Deployment)"
    );
    assert_eq!(
        text(config_map, "/data/rota-config.yaml"),
        read("deploy/config/rota-config.yaml")
    );

    let labels = at(deployment, "/spec/template/metadata/labels");
    let pdb = find(objects, "PodDisruptionBudget", "rota-extender");
    assert_eq!(at(pdb, "/spec/minAvailable"), 1);
    assert!(selects(at(pdb, "/spec/selector/matchLabels"), labels));
    let service = find(objects, "Service", "rota-extender");
    assert!(selects(at(service, "/spec/selector"), labels));
    let port = &list(service, "/spec/ports")[0];
    assert_eq!(at(port, "/name"), "http");
    assert_eq!(at(port, "/port"), 8888);
}

#[test]
fn agents_run_on_gpu_nodes_where_the_extender_looks_for_them() {
    let Some(objects) = render("deploy") else {
        return;
    };
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
        assert_hardened(ds);
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
}

#[test]
fn network_policy_admits_only_the_scheduler_and_prometheus_to_the_extender() {
    let Some(objects) = render("deploy") else {
        return;
    };
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

/// One line per verb granted by every Role and ClusterRole: `kind role namespace group
/// resource resourceNames verb`, `-` for an empty field (the format of [`EXPECTED_GRANTS`]).
fn grants(objects: &[Value]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let roles = objects.iter().filter(|o| {
        let kind = at(o, "/kind");
        kind == "ClusterRole" || kind == "Role"
    });
    let word = |v: &Value| match v.as_str() {
        Some("") | None => "-".to_owned(),
        Some(s) => s.to_owned(),
    };
    for role in roles {
        let (kind, name) = (text(role, "/kind"), text(role, "/metadata/name"));
        let ns = word(at(role, "/metadata/namespace"));
        for rule in list(role, "/rules") {
            let names = at(rule, "/resourceNames")
                .as_array()
                .map_or("-".into(), |n| {
                    n.iter().map(word).collect::<Vec<_>>().join(",")
                });
            for group in list(rule, "/apiGroups") {
                for resource in list(rule, "/resources") {
                    for verb in list(rule, "/verbs") {
                        let (group, resource, verb) = (word(group), word(resource), word(verb));
                        out.insert(format!(
                            "{kind} {name} {ns} {group} {resource} {names} {verb}"
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Every permission rota's pods hold, one rule per line: role kind, role, namespace, API group,
/// resource, resourceNames, verbs (`-` = empty). The extender: reflectors on Nodes and Pods,
/// eviction, Job suspend, VM stop/start, Events; the ledger ConfigMap and the leader Lease in
/// its own namespace only. The second scheduler: its own leader-election Lease (the rest is
/// built-in roles).
const EXPECTED_GRANTS: &str = "
ClusterRole rota-extender - - nodes - get,list,watch
ClusterRole rota-extender - - pods - get,list,watch,patch
ClusterRole rota-extender - - pods/eviction - create
ClusterRole rota-extender - batch jobs - get,list,watch,patch
ClusterRole rota-extender - kubevirt.io virtualmachines - get,list,watch,patch
ClusterRole rota-extender - kubevirt.io virtualmachineinstances - get,list,watch
ClusterRole rota-extender - events.k8s.io events - create,patch
Role rota-extender rota-system - configmaps - get,create,update
Role rota-extender rota-system coordination.k8s.io leases - get,create,update
Role rota-scheduler-leader-election rota-system coordination.k8s.io leases rota-scheduler get,update
";

#[test]
fn rbac_grants_exactly_the_verbs_rota_uses() {
    let Some(objects) = render("deploy") else {
        return;
    };
    let expected: BTreeSet<String> = EXPECTED_GRANTS
        .lines()
        .filter_map(|line| line.rsplit_once(' '))
        .flat_map(|(rule, verbs)| verbs.split(',').map(move |verb| format!("{rule} {verb}")))
        .collect();
    let actual = grants(objects);
    let extra: Vec<_> = actual.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&actual).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "RBAC drifted from what rota uses.\n  granted, not expected: {extra:#?}\n  expected, not granted: {missing:#?}"
    );

    // The bindings give those roles to the right ServiceAccounts, and the pods run as them.
    let binding = find(objects, "ClusterRoleBinding", "rota-extender");
    assert_eq!(at(binding, "/roleRef/name"), "rota-extender");
    let role_binding = find(objects, "RoleBinding", "rota-extender");
    assert_eq!(at(role_binding, "/metadata/namespace"), NS);
    for b in [binding, role_binding] {
        let subject = &list(b, "/subjects")[0];
        assert_eq!(at(subject, "/name"), "rota-extender", "{}", name_of(b));
        assert_eq!(at(subject, "/namespace"), NS, "{}", name_of(b));
    }
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
    let second = yaml_file("deploy/scheduler/scheduler-config.yaml");
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

#[test]
fn second_scheduler_runs_the_rendered_configuration() {
    let Some(objects) = render("deploy") else {
        return;
    };
    let deployment = find(objects, "Deployment", "rota-scheduler");
    assert_hardened(deployment);
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
    let embedded = text(config_map, "/data/scheduler-config.yaml");
    assert_eq!(embedded, read("deploy/scheduler/scheduler-config.yaml"));
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
    let extender = extender_block(&yaml_docs(embedded, "embedded")[0], "embedded");
    let service = find(objects, "Service", "rota-extender");
    let port = at(&list(service, "/spec/ports")[0], "/port");
    let url = format!(
        "http://rota-extender.{}.svc:{port}",
        text(service, "/metadata/namespace")
    );
    assert_eq!(at(&extender, "/urlPrefix"), url.as_str());
}

// === CRD-based objects and examples ===

#[test]
fn monitors_and_rules_have_what_prometheus_needs() {
    let (Some(monitoring), Some(objects)) = (render("deploy/monitoring"), render("deploy")) else {
        return;
    };
    let workloads: Vec<&Value> = all_of(objects, "Deployment")
        .chain(all_of(objects, "DaemonSet"))
        .collect();
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
        }
    }
    for wanted in [
        "RotaTenantStarved",
        "RotaTelemetryStale",
        "RotaGpuUnhealthy",
    ] {
        assert!(alerts.contains(wanted), "missing alert {wanted}");
    }
    for wanted in [
        "RotaExtenderErrors",
        "RotaExtenderSlow",
        "RotaAgentNvmlUnavailable",
    ] {
        assert!(alerts.contains(wanted), "missing alert {wanted}");
    }
}

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

    let rule = yaml_file("deploy/monitoring/prometheusrule.yaml");
    let rule_exprs: Vec<String> = list(&rule, "/spec/groups")
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
fn dockerfile_builds_the_locked_binary_and_runs_it_as_non_root() {
    let dockerfile = read("Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    assert!(lines
        .iter()
        .any(|l| l.contains("cargo build --release --locked")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("FROM gcr.io/distroless/cc-debian12:nonroot")));
    assert!(lines.contains(&"USER 65532:65532"));
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
        assert!(
            lines.contains(&format!("COPY {dir} ./{dir}").as_str()),
            "Dockerfile: {dir}"
        );
        assert!(
            ignore.lines().any(|l| l.trim() == format!("!{dir}")),
            ".dockerignore: {dir}"
        );
    }
}
