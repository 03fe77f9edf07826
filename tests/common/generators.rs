//! Shared proptest strategies for clusters, tenants and workloads, built on rota's public types
//! (`GpuNode`, `TenantConfig`, `WorkloadKind`, `Spread`), so every property test draws from the
//! same shapes of input.
//!
//! Invariants: every strategy is deterministic under a fixed [`seeded`] config; names are
//! stable and index-derived (`t3`, `n1`), so a failing case reads the same in every test.
//! Must not: hold policy knowledge (a strategy says what a cluster or workload can look like,
//! never what the policy should answer).

use std::ops::Range;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use rota::config::TenantConfig;
use rota::core::model::GpuCounts;
use rota::core::rotation::Spread;
use rota::core::{GpuNode, WorkloadId, WorkloadKind};

/// The whole-GPU resource of the NVIDIA device plugin, the one these strategies hand out.
pub const GPU: &str = "nvidia.com/gpu";

/// A proptest config with `cases` cases and a fixed seed: runs repeat exactly, and failures
/// are not persisted (a test's seed, not a file, decides what it sees).
pub fn seeded(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    }
}

// === tenants ===

/// Name of tenant `i`: `t0`, `t1`, ...
pub fn tenant_name(i: usize) -> String {
    format!("t{i}")
}

/// A tenant weight: 0.1 to 10, a hundredfold spread, wider than real configs use.
pub fn tenant_weight() -> impl Strategy<Value = f64> {
    0.1..10.0f64
}

/// `count` tenants `t0..` with random weights, in the default group.
pub fn tenants(count: Range<usize>) -> impl Strategy<Value = Vec<TenantConfig>> {
    prop::collection::vec(tenant_weight(), count).prop_map(|weights| {
        weights
            .into_iter()
            .enumerate()
            .map(|(i, weight)| TenantConfig {
                name: tenant_name(i),
                weight,
                group: None,
            })
            .collect()
    })
}

/// One tenant's load on a GPU pool: what it waits for, its weight and its decayed usage.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantRow {
    /// GPUs the tenant holds or waits for: 0 to 50.
    pub demand: f64,
    /// Its weight ([`tenant_weight`]).
    pub weight: f64,
    /// Decayed usage in GPU-seconds: 0 to 1000.
    pub usage: f64,
}

/// `count` tenant loads (tenant `i` is row `i`).
pub fn tenant_rows(count: Range<usize>) -> impl Strategy<Value = Vec<TenantRow>> {
    let row =
        (0.0..50.0f64, tenant_weight(), 0.0..1000.0f64).prop_map(|(demand, weight, usage)| {
            TenantRow {
                demand,
                weight,
                usage,
            }
        });
    prop::collection::vec(row, count)
}

// === clusters ===

/// A GPU model as GPU Feature Discovery labels it, with the memory of one GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuModel {
    /// `nvidia.com/gpu.product`.
    pub product: &'static str,
    /// Memory of one GPU in bytes.
    pub memory_bytes: u64,
}

/// The mixed, donated hardware rota is for: from T4s to H100s.
pub const MODELS: [GpuModel; 4] = [
    GpuModel {
        product: "Tesla-T4",
        memory_bytes: 16 << 30,
    },
    GpuModel {
        product: "NVIDIA-A10",
        memory_bytes: 24 << 30,
    },
    GpuModel {
        product: "NVIDIA-A100-SXM4-40GB",
        memory_bytes: 40 << 30,
    },
    GpuModel {
        product: "NVIDIA-H100-80GB-HBM3",
        memory_bytes: 80 << 30,
    },
];

/// Name of node `i`: `n0`, `n1`, ...
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

fn gpu_counts(gpus: u64) -> GpuCounts {
    GpuCounts::from([(GPU.to_string(), gpus)])
}

/// One node of `gpus` GPUs of `model`, ready and schedulable, with nothing running.
pub fn mk_node(i: usize, gpus: u64, model: GpuModel) -> GpuNode {
    GpuNode {
        name: node_name(i),
        ready: true,
        unschedulable: false,
        allocatable: gpu_counts(gpus),
        used: GpuCounts::new(),
        product: Some(model.product.to_string()),
        gpu_memory_bytes: Some(model.memory_bytes),
        telemetry: None,
    }
}

/// A heterogeneous cluster of `nodes` nodes: each has 1, 2, 4 or 8 GPUs of one [`MODELS`]
/// entry; about one node in twenty is not ready and one in twenty is cordoned.
pub fn cluster(nodes: Range<usize>) -> impl Strategy<Value = Vec<GpuNode>> {
    let node = (
        prop::sample::select(vec![1u64, 2, 4, 8]),
        prop::sample::select(MODELS.to_vec()),
        prop::bool::weighted(0.95),
        prop::bool::weighted(0.05),
    );
    prop::collection::vec(node, nodes).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (gpus, model, ready, cordoned))| GpuNode {
                ready,
                unschedulable: cordoned,
                ..mk_node(i, gpus, model)
            })
            .collect()
    })
}

/// A homogeneous cluster of `nodes` ready nodes with `gpus_per_node` A10s each.
pub fn uniform_cluster(
    nodes: Range<usize>,
    gpus_per_node: u64,
) -> impl Strategy<Value = Vec<GpuNode>> {
    nodes.prop_map(move |n| {
        (0..n)
            .map(|i| mk_node(i, gpus_per_node, MODELS[1]))
            .collect()
    })
}

// === workloads ===

/// A GPU workload as a test scenario sees it: who, what kind, how big, how long, and how it may
/// be rotated.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadSpec {
    /// Index of its tenant ([`tenant_name`]).
    pub tenant: usize,
    /// Job, VirtualMachine or bare Pod.
    pub kind: WorkloadKind,
    /// GPUs of the whole gang, admitted all or none: mostly 1, sometimes 2, 4 or 8.
    pub gpus: u64,
    /// How long it runs once started: 300 s to 20 000 s.
    pub duration_seconds: f64,
    /// The tick it arrives at: 0 to 11.
    pub arrival_tick: usize,
    /// Its minimum quantum: 60, 300 or 600 s.
    pub quantum_seconds: f64,
    /// May be rotated out (nine in ten).
    pub preemptible: bool,
    /// In a protected priority class (one in ten).
    pub protected: bool,
    /// Pod priority: mostly 0, sometimes 1.
    pub priority: i32,
    /// One node (four in five) or any nodes of the pool.
    pub spread: Spread,
}

impl WorkloadSpec {
    /// The workload id of the `i`-th spec of a scenario: `w<i>` in namespace `ns`.
    pub fn id(&self, i: usize) -> WorkloadId {
        WorkloadId {
            kind: self.kind,
            namespace: "ns".into(),
            name: format!("w{i}"),
        }
    }
}

/// A workload kind: Jobs are the common case, then VMs, then bare pods.
pub fn workload_kind() -> impl Strategy<Value = WorkloadKind> {
    prop_oneof![
        3 => Just(WorkloadKind::Job),
        2 => Just(WorkloadKind::VirtualMachine),
        1 => Just(WorkloadKind::Pod),
    ]
}

/// One workload of one of `tenants` tenants.
pub fn workload(tenants: usize) -> impl Strategy<Value = WorkloadSpec> {
    (
        (0..tenants, workload_kind()),
        prop::sample::select(vec![1u64, 1, 1, 2, 2, 4, 8]),
        300.0f64..20_000.0,
        0usize..12,
        prop::sample::select(vec![60.0f64, 300.0, 600.0]),
        (prop::bool::weighted(0.9), prop::bool::weighted(0.1)),
        prop::sample::select(vec![0i32, 0, 0, 0, 0, 1]),
        prop::bool::weighted(0.8),
    )
        .prop_map(
            |(
                (tenant, kind),
                gpus,
                duration_seconds,
                arrival_tick,
                quantum_seconds,
                (preemptible, protected),
                priority,
                one_node,
            )| WorkloadSpec {
                tenant,
                kind,
                gpus,
                duration_seconds,
                arrival_tick,
                quantum_seconds,
                preemptible,
                protected,
                priority,
                spread: if one_node {
                    Spread::OneNode
                } else {
                    Spread::AnyNodes
                },
            },
        )
}

/// `count` workloads of `tenants` tenants (spec `i` is workload `w<i>`).
pub fn workloads(tenants: usize, count: Range<usize>) -> impl Strategy<Value = Vec<WorkloadSpec>> {
    prop::collection::vec(workload(tenants), count)
}
