//! Request bodies for the load generator, built once and shared as [`Bytes`].
//!
//! The shapes follow what kube-scheduler sends (see the captured requests in
//! `shared/fixtures/kube-scheduler-1.36`): `ExtenderArgs` with a full Pod, and either full Nodes
//! (`nodeCacheCapable: false`, the warm-up that teaches a `--cluster none` extender its nodes)
//! or only `NodeNames` (`nodeCacheCapable: true`, the measured requests). Nodes carry the GPU
//! feature discovery labels rota reads and 8 `nvidia.com/gpu`; pods belong to a Job, carry the
//! `rota.io/tenant` label, ask for 1–8 GPUs and sometimes for a GPU model or memory.
//!
//! Invariants: the same `(nodes, seed)` gives byte-identical bodies; names are
//! `gpu-node-0001`, `gpu-node-0002`, … (zero-padded to at least four digits).
//! Must not: build anything per request (the generator must never be the bottleneck).

use bytes::Bytes;
use serde_json::{json, Value};

use crate::names;

/// How many distinct pods the measured requests cycle through.
pub const POD_VARIANTS: usize = 16;

/// GPU hardware kinds of the generated nodes: GFD product label, memory in MiB, family.
const HARDWARE: [(&str, u64, &str); 6] = [
    ("NVIDIA-H100-80GB-HBM3", 81_559, "hopper"),
    ("NVIDIA-A100-SXM4-80GB", 81_920, "ampere"),
    ("NVIDIA-A100-PCIE-40GB", 40_960, "ampere"),
    ("NVIDIA-L40S", 46_068, "ada-lovelace"),
    ("NVIDIA-A10", 23_028, "ampere"),
    ("Tesla-T4", 15_360, "turing"),
];

/// Tenants of the generated pods (the `rota.io/tenant` label; namespace `team-<tenant>`).
const TENANTS: [&str; 8] = [
    "vision",
    "nlp",
    "speech",
    "robotics",
    "genomics",
    "physics",
    "course-ml101",
    "course-cv201",
];

/// GPU counts the pods ask for, drawn uniformly: mostly small, sometimes a whole node.
const GPU_COUNTS: [u64; 10] = [1, 1, 1, 1, 2, 2, 3, 4, 4, 8];

/// Every body the load generator sends, built once.
#[derive(Clone, Debug)]
pub struct Bodies {
    /// Node names in request order.
    pub node_names: Vec<String>,
    /// The warm-up filter request: all Nodes in full, `NodeNames: null`.
    pub warmup: Bytes,
    /// Measured requests (`Nodes: null`, all names in `NodeNames`), one per pod variant. Filter
    /// and prioritize take the same `ExtenderArgs`, so both verbs send these.
    pub requests: Vec<Bytes>,
}

impl Bodies {
    /// Builds the bodies for `nodes` nodes from `seed`.
    pub fn build(nodes: usize, seed: u64) -> Result<Bodies, serde_json::Error> {
        let mut rng = SplitMix64::new(seed);
        let node_names = node_names(nodes);
        let node_objects: Vec<Value> = node_names
            .iter()
            .enumerate()
            .map(|(i, name)| node(i, name, &mut rng))
            .collect();
        let pods: Vec<Value> = (0..POD_VARIANTS).map(|k| pod(k, &mut rng)).collect();
        let warmup = json!({
            "Pod": pods[0],
            "Nodes": {"metadata": {}, "items": node_objects},
            "NodeNames": null,
        });
        let requests = pods
            .iter()
            .map(|pod| {
                let args = json!({"Pod": pod, "Nodes": null, "NodeNames": node_names});
                serde_json::to_vec(&args).map(Bytes::from)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Bodies {
            warmup: Bytes::from(serde_json::to_vec(&warmup)?),
            node_names,
            requests,
        })
    }

    /// Sizes of the measured request bodies: (smallest, largest) in bytes; (0, 0) when none.
    pub fn request_size_range(&self) -> (usize, usize) {
        let sizes = self.requests.iter().map(Bytes::len);
        let min = sizes.clone().min().unwrap_or(0);
        (min, sizes.max().unwrap_or(0))
    }
}

/// `gpu-node-0001` … `gpu-node-NNNN`, padded to the width of the largest number (at least 4).
pub fn node_names(nodes: usize) -> Vec<String> {
    let width = nodes.to_string().len().max(4);
    (1..=nodes)
        .map(|i| format!("gpu-node-{i:0width$}"))
        .collect()
}

/// A Node as the API server stores it, with GPU feature discovery labels and 8 GPUs.
fn node(index: usize, name: &str, rng: &mut SplitMix64) -> Value {
    let (product, memory_mib, family) = HARDWARE[rng.below(HARDWARE.len() as u64) as usize];
    let zone = format!("zone-{}", (b'a' + (index % 3) as u8) as char);
    let ip = format!(
        "10.{}.{}.{}",
        20 + index / 65_536,
        (index / 256) % 256,
        index % 256
    );
    let since = "2026-11-20T08:00:00Z";
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "lastHeartbeatTime": "2026-11-23T19:28:00Z",
               "lastTransitionTime": since, "reason": reason, "message": message})
    };
    let resources = json!({
        "cpu": "64", "ephemeral-storage": "1844615340Ki", "hugepages-1Gi": "0",
        "hugepages-2Mi": "0", "memory": "528012340Ki", "nvidia.com/gpu": "8", "pods": "110",
    });
    json!({
        "metadata": {
            "name": name,
            "uid": rng.uuid(),
            "resourceVersion": (100_000 + index).to_string(),
            "creationTimestamp": since,
            "labels": {
                "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "gpu-8x",
                "topology.kubernetes.io/zone": zone,
                "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.memory": memory_mib.to_string(), "nvidia.com/gpu.count": "8",
                "nvidia.com/gpu.family": family, "nvidia.com/cuda.driver.major": "550",
                "nvidia.com/gpu.deploy.device-plugin": "true",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": format!("10.244.{}.0/24", index % 256),
            "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        },
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": rng.hex(32), "systemUUID": rng.uuid(), "bootID": rng.uuid(),
                "kernelVersion": "6.8.0-49-generic", "osImage": "Ubuntu 24.04.1 LTS",
                "containerRuntimeVersion": "containerd://1.7.24", "kubeletVersion": "v1.33.5",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    })
}

/// A pending pod of a training Job, shaped like the captured kube-scheduler request.
fn pod(variant: usize, rng: &mut SplitMix64) -> Value {
    let tenant = TENANTS[variant % TENANTS.len()];
    let namespace = format!("team-{tenant}");
    let gpus = GPU_COUNTS[rng.below(GPU_COUNTS.len() as u64) as usize];
    let job = format!("train-{tenant}-{variant}");
    let name = format!("{job}-{}", rng.hex(5));
    let mut annotations = serde_json::Map::new();
    // Some pods narrow their hardware: rota then rejects part of the nodes with a reason.
    if variant % 4 == 1 {
        annotations.insert(names::GPU_MODELS_ANNOTATION.into(), "H100,A100".into());
    }
    if variant % 5 == 2 {
        annotations.insert(names::MIN_GPU_MEMORY_ANNOTATION.into(), "40Gi".into());
    }
    let quantity = |per_gpu: u64, unit: &str| format!("{}{unit}", per_gpu * gpus);
    json!({
        "metadata": {
            "name": name,
            "generateName": format!("{job}-"),
            "namespace": namespace,
            "uid": rng.uuid(),
            "resourceVersion": (500_000 + variant).to_string(),
            "creationTimestamp": "2026-11-23T19:23:00Z",
            "labels": {
                names::TENANT_LABEL: tenant,
                "batch.kubernetes.io/job-name": job,
                "job-name": job,
                "batch.kubernetes.io/controller-uid": rng.uuid(),
            },
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                                 "uid": rng.uuid(), "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ], "defaultMode": 420}}],
            "containers": [{
                "name": "trainer",
                "image": "registry.invalid/train:2026.11",
                "resources": {
                    "limits": {"nvidia.com/gpu": gpus.to_string(), "memory": quantity(32, "Gi")},
                    "requests": {"cpu": quantity(4, ""), "memory": quantity(32, "Gi"), "nvidia.com/gpu": gpus.to_string()},
                },
                "volumeMounts": [{"name": "kube-api-access", "readOnly": true,
                                  "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    })
}

/// A small seeded generator (SplitMix64): deterministic bodies without a `rand` dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound` > 0; the modulo bias is irrelevant for test data).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// `len` lowercase hex digits.
    fn hex(&mut self, len: usize) -> String {
        let mut out = String::with_capacity(len);
        while out.len() < len {
            let chunk = format!("{:016x}", self.next_u64());
            out.push_str(&chunk[..(len - out.len()).min(16)]);
        }
        out
    }

    /// A version-4-shaped UUID.
    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};

    #[test]
    fn names_are_padded_and_ordered() {
        assert_eq!(
            node_names(3),
            ["gpu-node-0001", "gpu-node-0002", "gpu-node-0003"]
        );
        let many = node_names(12_000);
        assert_eq!(many[0], "gpu-node-00001");
        assert_eq!(many[11_999], "gpu-node-12000");
    }

    #[test]
    fn bodies_are_deterministic_per_seed() {
        let a = Bodies::build(50, 7).unwrap();
        let b = Bodies::build(50, 7).unwrap();
        let c = Bodies::build(50, 8).unwrap();
        assert_eq!(a.warmup, b.warmup);
        assert_eq!(a.requests, b.requests);
        assert_ne!(a.warmup, c.warmup);
    }

    #[test]
    fn bodies_decode_as_kubernetes_objects_with_rota_labels() {
        let bodies = Bodies::build(20, 1).unwrap();
        let warmup: Value = serde_json::from_slice(&bodies.warmup).unwrap();
        assert!(warmup["NodeNames"].is_null());
        let items = warmup["Nodes"]["items"].as_array().unwrap();
        assert_eq!(items.len(), 20);
        for item in items {
            let node: Node = serde_json::from_value(item.clone()).unwrap();
            let labels = node.metadata.labels.unwrap();
            assert!(labels["nvidia.com/gpu.memory"].parse::<u64>().is_ok());
            let gpus = &node.status.unwrap().allocatable.unwrap()["nvidia.com/gpu"];
            assert_eq!(gpus.0, "8");
        }
        assert_eq!(bodies.requests.len(), POD_VARIANTS);
        let mut gpu_counts = std::collections::BTreeSet::new();
        for body in &bodies.requests {
            let args: Value = serde_json::from_slice(body).unwrap();
            assert!(args["Nodes"].is_null());
            assert_eq!(args["NodeNames"].as_array().unwrap().len(), 20);
            let pod: Pod = serde_json::from_value(args["Pod"].clone()).unwrap();
            assert!(pod.metadata.labels.unwrap().contains_key("rota.io/tenant"));
            let limits = pod.spec.unwrap().containers[0]
                .resources
                .clone()
                .unwrap()
                .limits
                .unwrap();
            let n: u64 = limits["nvidia.com/gpu"].0.parse().unwrap();
            assert!((1..=8).contains(&n));
            gpu_counts.insert(n);
        }
        assert!(gpu_counts.len() > 1, "pods vary: {gpu_counts:?}");
        let (min, max) = bodies.request_size_range();
        assert!(min > 0 && min <= max);
    }

    #[test]
    fn uuids_have_the_canonical_shape() {
        let mut rng = SplitMix64::new(3);
        let id = rng.uuid();
        let parts: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{id}");
    }
}
