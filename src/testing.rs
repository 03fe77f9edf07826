//! Builders shared by the crate's unit tests (compiled only for tests).

use crate::core::{GpuNode, GpuPod, WorkloadId, WorkloadKind};
use crate::read::view::ViewSettings;

/// The default managed GPU resource.
pub const GPU: &str = "nvidia.com/gpu";

/// A ready node with `gpus` allocatable `nvidia.com/gpu`.
pub fn node(name: &str, gpus: u64) -> GpuNode {
    GpuNode {
        name: name.into(),
        ready: true,
        allocatable: [(GPU.to_string(), gpus)].into(),
        ..GpuNode::default()
    }
}

/// An active bare pod in namespace (and tenant) `ns` requesting `gpus` (none when 0), bound to
/// `node` when given.
pub fn pod(uid: &str, node: Option<&str>, gpus: u64) -> GpuPod {
    GpuPod {
        uid: uid.into(),
        namespace: "ns".into(),
        name: uid.into(),
        tenant: "ns".into(),
        workload: WorkloadId {
            kind: WorkloadKind::Pod,
            namespace: "ns".into(),
            name: uid.into(),
        },
        requests: if gpus > 0 {
            [(GPU.to_string(), gpus)].into()
        } else {
            Default::default()
        },
        node_name: node.map(String::from),
        active: true,
        ..GpuPod::default()
    }
}

/// Translation settings with the default GPU resource and one passthrough resource.
pub fn settings() -> ViewSettings {
    ViewSettings {
        gpu_resources: vec![GPU.into(), "nvidia.com/GA102GL_A10".into()],
        tenant_label: crate::names::TENANT_LABEL.into(),
        within_tenant: Default::default(),
    }
}
