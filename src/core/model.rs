//! Domain types the policy reads: GPU nodes, GPU pods and the workloads they belong to.
//!
//! These are small, owned, kube-free types. Kubernetes objects are translated into them once, at
//! the edge (`state::translate`), so the core never sees a `k8s_openapi` type.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::telemetry::NodeTelemetry;

/// GPU counts keyed by managed resource name (`nvidia.com/gpu`, `nvidia.com/GA102GL_A10`, …).
///
/// A BTreeMap keeps iteration order deterministic, which keeps decisions and output stable.
pub type GpuCounts = BTreeMap<String, u64>;

/// One node as far as GPU scheduling is concerned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuNode {
    /// Node name (unique in the cluster).
    pub name: String,
    /// The node's `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Allocatable count of each managed GPU resource the node advertises.
    pub allocatable: GpuCounts,
    /// GPUs held by bound, non-terminal pods. Maintained by [`crate::core::ClusterSnapshot`].
    pub used: GpuCounts,
    /// GPU product from NVIDIA GPU Feature Discovery (`nvidia.com/gpu.product`).
    pub product: Option<String>,
    /// Memory of one GPU in bytes (GFD's `nvidia.com/gpu.memory` label is in MiB).
    pub gpu_memory_bytes: Option<u64>,
    /// The newest GPU telemetry summary, set by the collector; `None` when no agent or
    /// exporter is known for the node (decisions then use the Node object alone, as without
    /// telemetry). Kept across Node updates by [`crate::core::ClusterSnapshot`]. Shared, so a
    /// snapshot clone or a Node update does not copy the GPU list.
    pub telemetry: Option<Arc<NodeTelemetry>>,
}

impl GpuNode {
    /// Free GPUs of `resource`: allocatable minus used, never negative.
    pub fn free(&self, resource: &str) -> u64 {
        let allocatable = self.allocatable.get(resource).copied().unwrap_or(0);
        let used = self.used.get(resource).copied().unwrap_or(0);
        allocatable.saturating_sub(used)
    }

    /// Total allocatable GPUs over all managed resources.
    pub fn total_allocatable(&self) -> u64 {
        super::quantity::saturating_sum(self.allocatable.values().copied())
    }
}

/// What kind of object is admitted, suspended and resumed as one unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// A `batch/v1` Job (suspended with `spec.suspend`).
    Job,
    /// A KubeVirt `VirtualMachine` (stopped with `spec.runStrategy: Halted`).
    VirtualMachine,
    /// A pod with no controlling Job or VM (evicted). The default, for test builders.
    #[default]
    Pod,
}

impl WorkloadKind {
    /// Lower-case name used in metric labels and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Job => "job",
            WorkloadKind::VirtualMachine => "vm",
            WorkloadKind::Pod => "pod",
        }
    }
}

/// The identity of a workload: its kind, namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadId {
    /// Kind of the controlling object.
    pub kind: WorkloadKind,
    /// Namespace of the controlling object (always the pod's namespace).
    pub namespace: String,
    /// Name of the controlling object.
    pub name: String,
}

impl WorkloadId {
    /// Reads `kind/namespace/name` (the [`Display`](fmt::Display) form); `None` otherwise.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, '/');
        let kind = match parts.next()? {
            "job" => WorkloadKind::Job,
            "vm" => WorkloadKind::VirtualMachine,
            "pod" => WorkloadKind::Pod,
            _ => return None,
        };
        let (namespace, name) = (parts.next()?, parts.next()?);
        let ok = |s: &str| !s.is_empty() && !s.contains('/');
        (ok(namespace) && ok(name)).then(|| WorkloadId {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// Placement constraints a pod asks for through rota's annotations.
///
/// Malformed annotations are kept as `errors` so that the filter can say what is wrong instead
/// of silently ignoring the constraint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacementRules {
    /// `rota.io/gpu-models`: the node's GPU product must contain one of these as whole words
    /// (compared case-insensitively: `A100` matches `NVIDIA-A100-SXM4-80GB`, `A10` does not).
    /// Empty means any model.
    pub gpu_models: Vec<String>,
    /// `rota.io/min-gpu-memory`: minimum memory of one GPU, in bytes.
    pub min_gpu_memory_bytes: Option<u64>,
    /// One message per malformed annotation.
    pub errors: Vec<String>,
}

/// One pod as far as GPU scheduling is concerned.
///
/// `Default` is an inactive, unnamed pod requesting nothing: a base for test builders
/// (`GpuPod { uid: .., ..GpuPod::default() }`), never a real pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuPod {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Who is charged: the tenant label, else the namespace.
    pub tenant: String,
    /// The workload this pod belongs to.
    pub workload: WorkloadId,
    /// Effective request of each managed GPU resource (containers summed, init containers
    /// maxed, as Kubernetes computes it). Resources with a zero request are absent.
    pub requests: GpuCounts,
    /// `spec.nodeName`, once bound.
    pub node_name: Option<String>,
    /// Not yet Succeeded or Failed.
    pub active: bool,
    /// `spec.priority` (0 when absent).
    pub priority: i32,
    /// rota's placement annotations.
    pub placement: PlacementRules,
    /// `metadata.creationTimestamp` in unix seconds: when the workload started waiting.
    pub created_at: Option<f64>,
    /// `status.startTime` in unix seconds: when the kubelet accepted the pod (the start of its
    /// quantum).
    pub started_at: Option<f64>,
    /// `spec.priorityClassName`, for protected classes.
    pub priority_class: Option<String>,
    /// `rota.io/gang-size`: the number of pods the workload is admitted with, all or none.
    pub gang_size: Option<u32>,
    /// `rota.io/quantum-seconds`: the minimum run time the workload asks for (clamped to the
    /// config's bounds where it is used).
    pub quantum_seconds: Option<u64>,
    /// `rota.io/preemptible: "false"`: the rotation loop never rotates its workload out.
    /// Default false (the annotation opts out, so pods without it stay preemptible).
    pub non_preemptible: bool,
    /// `rota.io/stop-warning-seconds`: the notice the workload asks for before a stop.
    pub stop_warning_seconds: Option<u64>,
    /// The stop rota announced on a bare pod (`rota.io/stop-at` and `rota.io/stop-for`).
    pub stop: Option<crate::core::rotation::StopNotice>,
}

impl GpuPod {
    /// The pod requests at least one managed GPU.
    pub fn wants_gpus(&self) -> bool {
        self.requests.values().any(|&n| n > 0)
    }

    /// Holds GPUs on a node right now: bound, active and requesting GPUs.
    pub fn holds_gpus(&self) -> bool {
        self.active && self.node_name.is_some() && self.wants_gpus()
    }

    /// `namespace/name`, for messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}
