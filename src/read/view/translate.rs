//! Translation of Kubernetes Nodes and Pods into core types, done once at the edge.
//!
//! Pure functions: no I/O, no clock, no locks. Everything that comes from the API server (or from
//! a human with curl) is treated as untrusted: garbage quantities and labels are logged with
//! `tracing::warn!` and ignored, malformed rota annotations become `placement.errors` so that the
//! filter can explain them, and the only hard error is a pod without a name.
//! Must not: keep references to the Kubernetes objects, or decide anything about placement.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::ViewSettings;
use crate::core::model::{GpuCounts, GpuNode, GpuPod, PlacementRules, WorkloadId, WorkloadKind};
use crate::core::quantity::{parse_bytes, parse_quantity};
use crate::core::rotation::StopNotice;
use crate::core::rotation_input::WorkloadMarks;
use crate::names::{
    GANG_SIZE_ANNOTATION, GPU_MODELS_ANNOTATION, MIN_GPU_MEMORY_ANNOTATION, PREEMPTIBLE_ANNOTATION,
    QUANTUM_ANNOTATION, STOP_AT, STOP_FOR, STOP_WARNING_ANNOTATION,
};

/// GFD label with the GPU product name (`NVIDIA-H100-80GB-HBM3`).
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// GFD label with the memory of one GPU, in MiB (`81559`).
pub const GPU_MEMORY_LABEL: &str = "nvidia.com/gpu.memory";
/// Namespace assumed for a pod that names none (a hand-written request).
pub const DEFAULT_NAMESPACE: &str = "default";

const MIB: u64 = 1024 * 1024;

/// Why a pod could not be translated.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TranslateError {
    /// `metadata.name` is missing or empty; without it the pod cannot be named or charged.
    #[error("pod has no metadata.name")]
    MissingName,
}

impl TranslateError {
    /// A short, bounded label for metrics and API answers.
    pub fn code(&self) -> &'static str {
        match self {
            TranslateError::MissingName => "missing_name",
        }
    }
}

/// Translates a Node: allocatable GPUs per managed resource (floored: a node cannot lend half a
/// GPU), readiness, cordon state and the GFD product and memory labels.
pub fn gpu_node(node: &Node, settings: &ViewSettings) -> GpuNode {
    let name = node.metadata.name.clone().unwrap_or_default();
    let status = node.status.as_ref();
    let allocatable = status
        .and_then(|s| s.allocatable.as_ref())
        .map(|a| managed_counts(a, settings, Rounding::Floor, &name))
        .unwrap_or_default();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let labels = node.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    GpuNode {
        unschedulable: node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        allocatable,
        used: GpuCounts::new(),
        product: label(GPU_PRODUCT_LABEL)
            .filter(|p| !p.is_empty())
            .map(String::from),
        gpu_memory_bytes: label(GPU_MEMORY_LABEL).and_then(|m| gpu_memory(m, &name)),
        telemetry: None,
        ready,
        name,
    }
}

/// GFD's memory label is a whole number of MiB.
fn gpu_memory(mib: &str, node: &str) -> Option<u64> {
    match mib.trim().parse::<u64>() {
        Ok(n) => n.checked_mul(MIB),
        Err(err) => {
            tracing::warn!(node, value = mib, error = %err, "Ignoring a malformed nvidia.com/gpu.memory label.");
            None
        }
    }
}

/// The key a pod is indexed by: its UID, else `namespace/name` (hand-written pods may lack a
/// UID). `None` only when the pod has neither a UID nor a name.
pub fn pod_key(pod: &Pod) -> Option<String> {
    let meta = &pod.metadata;
    if let Some(uid) = meta.uid.as_deref().filter(|u| !u.is_empty()) {
        return Some(uid.to_string());
    }
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    Some(format!("{}/{name}", namespace_of(pod)))
}

fn namespace_of(pod: &Pod) -> &str {
    pod.metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// Translates a Pod. Fails only when the pod has no name.
///
/// A pod with a `deletionTimestamp` stays active until its phase is terminal or it is gone:
/// its containers may still run through the grace period and the device plugin has not yet
/// released its GPUs.
pub fn gpu_pod(pod: &Pod, settings: &ViewSettings) -> Result<GpuPod, TranslateError> {
    let meta = &pod.metadata;
    let name = meta
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(TranslateError::MissingName)?;
    let namespace = namespace_of(pod).to_string();
    let uid = pod_key(pod).ok_or(TranslateError::MissingName)?;
    let tenant = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(&settings.tenant_label))
        .filter(|t| !t.is_empty())
        .cloned()
        .unwrap_or_else(|| namespace.clone());
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    let mut placement = placement_rules(meta.annotations.as_ref());
    let mut number = |key: &str, min: u64| {
        annotation_number(meta.annotations.as_ref(), key, min).unwrap_or_else(|message| {
            placement.errors.push(message);
            None
        })
    };
    let gang_size = number(GANG_SIZE_ANNOTATION, 1).and_then(|n| u32::try_from(n).ok());
    let quantum_seconds = number(QUANTUM_ANNOTATION, 0);
    let marks = workload_marks(meta.annotations.as_ref());
    Ok(GpuPod {
        stop_warning_seconds: marks.warning_seconds,
        stop: marks.stop,
        created_at: meta.creation_timestamp.as_ref().map(|t| unix_seconds(&t.0)),
        started_at: status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| unix_seconds(&t.0)),
        priority_class: spec
            .and_then(|s| s.priority_class_name.clone())
            .filter(|c| !c.is_empty()),
        gang_size,
        quantum_seconds,
        non_preemptible: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(PREEMPTIBLE_ANNOTATION))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false")),
        workload: workload_of(meta.owner_references.as_deref(), &namespace, name),
        requests: pod_requests(pod, settings),
        node_name: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        active: !matches!(phase, Some("Succeeded" | "Failed")),
        priority: spec.and_then(|s| s.priority).unwrap_or(0),
        placement,
        uid,
        namespace,
        name: name.to_string(),
        tenant,
    })
}

/// Unix seconds of a Kubernetes timestamp (millisecond precision is plenty for waits).
fn unix_seconds(t: &k8s_openapi::jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// A whole-number annotation `key`, at least `min`: `Ok(None)` when absent, `Err(message)`
/// when malformed (the filter then explains it, as for the placement annotations).
fn annotation_number(
    annotations: Option<&BTreeMap<String, String>>,
    key: &str,
    min: u64,
) -> Result<Option<u64>, String> {
    let Some(raw) = annotations.and_then(|a| a.get(key)) else {
        return Ok(None);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if n >= min && n <= u64::from(u32::MAX) => Ok(Some(n)),
        _ => Err(format!(
            "annotation {key}: {raw:?} is not a whole number between {min} and {}",
            u32::MAX
        )),
    }
}

/// What an object's annotations say about its rotation: an announced stop (`rota.io/stop-at`
/// with `rota.io/stop-for`; unreadable ones count as none, so a new notice replaces them), the
/// warning it asks for, and whether it opted out. Jobs and VMs carry these on the object,
/// bare pods on themselves.
pub fn workload_marks(annotations: Option<&BTreeMap<String, String>>) -> WorkloadMarks {
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
    let stop_at = get(STOP_AT)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(crate::clock::seconds);
    let claim = get(STOP_FOR).and_then(WorkloadId::parse);
    WorkloadMarks {
        stop: stop_at
            .zip(claim)
            .map(|(stop_at, claim)| StopNotice { stop_at, claim }),
        warning_seconds: annotation_number(annotations, STOP_WARNING_ANNOTATION, 0)
            .ok()
            .flatten(),
        non_preemptible: get(PREEMPTIBLE_ANNOTATION)
            .is_some_and(|v| v.eq_ignore_ascii_case("false")),
    }
}

/// The controlling owner decides what is suspended or stopped as one unit.
fn workload_of(owners: Option<&[OwnerReference]>, namespace: &str, pod: &str) -> WorkloadId {
    let controller = owners
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true));
    let (kind, name) = match controller {
        Some(o) if o.kind == "Job" && api_group(&o.api_version) == "batch" => {
            (WorkloadKind::Job, o.name.as_str())
        }
        // KubeVirt names a VMI after the VirtualMachine that created it.
        Some(o)
            if o.kind == "VirtualMachineInstance" && api_group(&o.api_version) == "kubevirt.io" =>
        {
            (WorkloadKind::VirtualMachine, o.name.as_str())
        }
        _ => (WorkloadKind::Pod, pod),
    };
    WorkloadId {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// `batch/v1` → `batch`; the core group (`v1`) → `""`.
fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// The effective request per managed resource, as kube-scheduler computes it
/// (`k8s.io/component-helpers/resource` `PodRequests`): the containers summed, restartable
/// sidecar init containers added to that sum, the maximum taken with each regular init
/// container plus the sidecars started before it, then `spec.overhead` added.
pub fn pod_requests(pod: &Pod, settings: &ViewSettings) -> GpuCounts {
    let Some(spec) = pod.spec.as_ref() else {
        return GpuCounts::new();
    };
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    let mut requests = GpuCounts::new();
    for c in &spec.containers {
        add(&mut requests, &container_requests(c, settings, pod_name));
    }
    let mut sidecars = GpuCounts::new();
    let mut init_peak = GpuCounts::new();
    for c in spec.init_containers.as_deref().unwrap_or_default() {
        let own = container_requests(c, settings, pod_name);
        let during = if c.restart_policy.as_deref() == Some("Always") {
            add(&mut requests, &own);
            add(&mut sidecars, &own);
            sidecars.clone()
        } else {
            let mut during = own;
            add(&mut during, &sidecars);
            during
        };
        max_into(&mut init_peak, &during);
    }
    max_into(&mut requests, &init_peak);
    if let Some(overhead) = spec.overhead.as_ref() {
        add(
            &mut requests,
            &managed_counts(overhead, settings, Rounding::Ceil, pod_name),
        );
    }
    requests.retain(|_, n| *n > 0);
    requests
}

/// A container's request: `requests[r]`, else `limits[r]` (extended resources may be given in
/// limits only; the API server then copies them to requests).
fn container_requests(c: &Container, settings: &ViewSettings, pod: &str) -> GpuCounts {
    let resources = c.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let mut out = GpuCounts::new();
    for resource in &settings.gpu_resources {
        let quantity = requests
            .and_then(|r| r.get(resource))
            .or_else(|| limits.and_then(|l| l.get(resource)));
        if let Some(n) = quantity.and_then(|q| whole(q, Rounding::Ceil, resource, pod)) {
            out.insert(resource.clone(), n);
        }
    }
    out
}

/// How a fractional count becomes whole GPUs.
#[derive(Clone, Copy)]
enum Rounding {
    /// Capacity: never promise a GPU that is not all there.
    Floor,
    /// Requests: never under-count what a pod holds.
    Ceil,
}

fn managed_counts(
    list: &BTreeMap<String, Quantity>,
    settings: &ViewSettings,
    rounding: Rounding,
    object: &str,
) -> GpuCounts {
    settings
        .gpu_resources
        .iter()
        .filter_map(|r| {
            let n = whole(list.get(r)?, rounding, r, object)?;
            Some((r.clone(), n))
        })
        .collect()
}

/// Parses a count; garbage and negative values are logged and ignored.
fn whole(q: &Quantity, rounding: Rounding, resource: &str, object: &str) -> Option<u64> {
    let value = match parse_quantity(&q.0) {
        Ok(v) if v >= 0.0 => v,
        Ok(_) => {
            tracing::warn!(object, resource, value = %q.0, "Ignoring a negative GPU quantity.");
            return None;
        }
        Err(err) => {
            tracing::warn!(object, resource, error = %err, "Ignoring a malformed GPU quantity.");
            return None;
        }
    };
    let rounded = match rounding {
        Rounding::Floor => value.floor(),
        Rounding::Ceil => value.ceil(),
    };
    // `as` saturates; GPU counts never come near u64::MAX.
    Some(rounded as u64)
}

fn add(into: &mut GpuCounts, other: &GpuCounts) {
    for (r, &n) in other {
        let slot = into.entry(r.clone()).or_insert(0);
        *slot = slot.saturating_add(n);
    }
}

fn max_into(into: &mut GpuCounts, other: &GpuCounts) {
    for (r, &n) in other {
        let slot = into.entry(r.clone()).or_insert(0);
        *slot = (*slot).max(n);
    }
}

/// Reads rota's placement annotations; every malformed one becomes a message in `errors`.
pub fn placement_rules(annotations: Option<&BTreeMap<String, String>>) -> PlacementRules {
    let mut rules = PlacementRules::default();
    let Some(annotations) = annotations else {
        return rules;
    };
    if let Some(raw) = annotations.get(GPU_MODELS_ANNOTATION) {
        rules.gpu_models = raw
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(String::from)
            .collect();
        if rules.gpu_models.is_empty() {
            rules.errors.push(format!(
                "annotation {GPU_MODELS_ANNOTATION}: {raw:?} names no GPU model"
            ));
        }
    }
    if let Some(raw) = annotations.get(MIN_GPU_MEMORY_ANNOTATION) {
        match parse_bytes(raw) {
            Ok(bytes) => rules.min_gpu_memory_bytes = Some(bytes),
            Err(err) => rules.errors.push(format!(
                "annotation {MIN_GPU_MEMORY_ANNOTATION}: {raw:?} is not a quantity ({err})"
            )),
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::testing::settings;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn preemptible_false_opts_the_workload_out_of_rotation() {
        let with = |value: &str| {
            let p = pod(json!({"metadata": {"name": "p", "namespace": "ns",
                "annotations": {PREEMPTIBLE_ANNOTATION: value}}}));
            gpu_pod(&p, &settings()).unwrap().non_preemptible
        };
        assert!(with("false") && with(" False "));
        assert!(!with("true") && !with("no"));
        let bare = pod(json!({"metadata": {"name": "p", "namespace": "ns"}}));
        assert!(!gpu_pod(&bare, &settings()).unwrap().non_preemptible);
    }

    fn gpus(n: &str) -> serde_json::Value {
        json!({"resources": {"requests": {"nvidia.com/gpu": n}}})
    }

    #[test]
    fn requests_follow_kubernetes_arithmetic() {
        let ctr = |name: &str, n: &str| {
            let mut c = gpus(n);
            c["name"] = json!(name);
            c
        };
        let mut sidecar = ctr("side", "1");
        sidecar["restartPolicy"] = json!("Always");
        let cases = [
            // containers summed
            (json!([ctr("a", "1"), ctr("b", "2")]), json!([]), 3),
            // a regular init container larger than the sum wins
            (json!([ctr("a", "1")]), json!([ctr("i", "4")]), 4),
            // a sidecar adds to the sum and to later init containers
            (json!([ctr("a", "2")]), json!([sidecar.clone()]), 3),
            (json!([ctr("a", "1")]), json!([sidecar, ctr("i", "4")]), 5),
        ];
        for (containers, init, want) in cases {
            let p = pod(json!({"metadata": {"name": "p"},
                "spec": {"containers": containers, "initContainers": init}}));
            let got = pod_requests(&p, &settings());
            assert_eq!(got.get("nvidia.com/gpu").copied(), Some(want), "{p:?}");
        }
    }

    #[test]
    fn garbage_quantities_are_ignored_and_overhead_added() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "a", "resources": {"requests": {"nvidia.com/gpu": "many"},
                                                       "limits": {"nvidia.com/GA102GL_A10": "1"}}}],
            "overhead": {"nvidia.com/GA102GL_A10": "1", "cpu": "250m"}}}));
        let got = pod_requests(&p, &settings());
        assert_eq!(got, GpuCounts::from([("nvidia.com/GA102GL_A10".into(), 2)]));
    }

    #[test]
    fn missing_uid_and_namespace_fall_back() {
        let p = pod(json!({"metadata": {"name": "curl"}, "spec": {"containers": []}}));
        let t = gpu_pod(&p, &settings()).unwrap();
        assert_eq!(
            (t.uid.as_str(), t.namespace.as_str(), t.tenant.as_str()),
            ("default/curl", "default", "default")
        );
        let nameless = pod(json!({"metadata": {"uid": "u"}}));
        assert_eq!(
            gpu_pod(&nameless, &settings()),
            Err(TranslateError::MissingName)
        );
    }

    #[test]
    fn owner_must_be_the_controller_and_of_the_right_group() {
        let owners: Vec<OwnerReference> = serde_json::from_value(json!([
            {"apiVersion": "batch/v1", "kind": "Job", "name": "not-ctl", "uid": "1"},
            {"apiVersion": "example.com/v1", "kind": "Job", "name": "other", "uid": "2",
             "controller": true}
        ]))
        .unwrap();
        let w = workload_of(Some(&owners), "ns", "pod-x");
        assert_eq!((w.kind, w.name.as_str()), (WorkloadKind::Pod, "pod-x"));
    }

    #[test]
    fn placement_annotations_are_validated() {
        let ann = BTreeMap::from([
            (
                GPU_MODELS_ANNOTATION.to_string(),
                " A100 , ,H100 ".to_string(),
            ),
            (MIN_GPU_MEMORY_ANNOTATION.to_string(), "40Gi".to_string()),
        ]);
        let r = placement_rules(Some(&ann));
        assert_eq!(r.gpu_models, ["A100", "H100"]);
        assert_eq!(r.min_gpu_memory_bytes, Some(40 << 30));
        assert!(r.errors.is_empty());

        let bad = BTreeMap::from([(GPU_MODELS_ANNOTATION.to_string(), " , ".to_string())]);
        let r = placement_rules(Some(&bad));
        assert!(r.gpu_models.is_empty());
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    }

    #[test]
    fn node_memory_label_is_mib_and_garbage_is_ignored() {
        let node = |mem: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n",
                "labels": {GPU_MEMORY_LABEL: mem}}}))
            .unwrap()
        };
        assert_eq!(
            gpu_node(&node("81559"), &settings()).gpu_memory_bytes,
            Some(81559 * MIB)
        );
        assert_eq!(gpu_node(&node("80GB"), &settings()).gpu_memory_bytes, None);
    }
}
