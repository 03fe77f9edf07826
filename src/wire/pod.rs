//! The pod of a filter, prioritize or preempt request, decoded down to what rota reads.
//!
//! kube-scheduler sends the whole Pod (managed fields, volumes, probes, environment, status),
//! twice per scheduling cycle. Decoding all of it into `k8s_openapi` types was a large part of
//! a verb's time; [`RequestPod`] keeps only the fields `read::view::translate::gpu_pod` reads,
//! and skips the rest without building it. [`RequestPod::into_pod`] moves them into a `Pod`,
//! so translation stays one function for requests and watches. The field names and required
//! fields are those of `k8s_openapi`'s types, so a malformed pod is refused the same way.
//! Must not: drop a field that translation reads (`tests/wire.rs` compares both decodings).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::Deserialize;

/// A Pod with the fields GPU scheduling reads.
#[derive(Debug, Default, Deserialize)]
pub struct RequestPod {
    #[serde(default)]
    metadata: RequestMeta,
    #[serde(default)]
    spec: Option<RequestSpec>,
    #[serde(default)]
    status: Option<RequestStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerReference>>,
    #[serde(default)]
    creation_timestamp: Option<Time>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestSpec {
    containers: Vec<RequestContainer>,
    #[serde(default)]
    init_containers: Option<Vec<RequestContainer>>,
    #[serde(default)]
    overhead: Option<BTreeMap<String, Quantity>>,
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    priority_class_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestContainer {
    name: String,
    #[serde(default)]
    resources: Option<ResourceRequirements>,
    #[serde(default)]
    restart_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    start_time: Option<Time>,
}

impl RequestPod {
    /// The `Pod` holding these fields (every other field at its default).
    pub fn into_pod(self) -> Pod {
        let m = self.metadata;
        Pod {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                labels: m.labels,
                annotations: m.annotations,
                owner_references: m.owner_references,
                creation_timestamp: m.creation_timestamp,
                ..ObjectMeta::default()
            },
            spec: self.spec.map(|s| PodSpec {
                containers: s.containers.into_iter().map(container).collect(),
                init_containers: (s.init_containers)
                    .map(|cs| cs.into_iter().map(container).collect()),
                overhead: s.overhead,
                node_name: s.node_name,
                priority: s.priority,
                priority_class_name: s.priority_class_name,
                ..PodSpec::default()
            }),
            status: self.status.map(|s| PodStatus {
                phase: s.phase,
                start_time: s.start_time,
                ..PodStatus::default()
            }),
        }
    }
}

fn container(c: RequestContainer) -> Container {
    Container {
        name: c.name,
        resources: c.resources,
        restart_policy: c.restart_policy,
        ..Container::default()
    }
}
