//! The offline simulator (`rota simulate`): replays a trace through the scheduling policies on a
//! simulated cluster with a virtual clock, and reports fairness and efficiency per policy.
//!
//! ```text
//!   trace.rs / workload.rs / generate.rs ─▶ Trace ─┐
//!   cluster.rs (ClusterSpec ─▶ SimCluster) ────────┼─▶ engine.rs (events, clock) ◀─▶ policy/
//!                                                  └─▶ report.rs (metrics) ─▶ cli.rs (table, files)
//! ```
//!
//! Invariants: a run is a pure function of (trace, cluster, policy, config): no wall clock, no
//! OS randomness, deterministic tie-breaking, so the same inputs give byte-identical summaries
//! (wall time is measured only by the CLI and kept out of `summary.json`). Entitlements come
//! from the production water-filling (`core::fairshare`) and node choice agrees with
//! `core::placement::packing`. Must not import kube, hyper or tokio networking: the simulator
//! drives the core directly. The `rota` policy runs the production rotation planner
//! (`core::rotation::plan`), usage-corrected entitlements and the ledger through the
//! [`engine::Policy`] trait, with rotation ticks ([`engine::Policy::tick_seconds`]) and
//! suspension ([`engine::Sim::suspend`]).

pub mod charts;
pub mod cli;
pub mod cluster;
pub mod engine;
pub mod generate;
pub mod html;
pub mod policy;
pub mod progress;
pub mod report;
pub mod rng;
pub mod trace;
pub mod verdict;
pub mod workload;

pub use cli::{run, SimulateArgs, UsageError};
pub use cluster::{ClusterSpec, NodeGroup, SimCluster};
pub use engine::{EngineConfig, JobId, JobState, JobStatus, Policy, RunOutcome, Sim};
pub use generate::{generate, GeneratorConfig};
pub use policy::{PolicyConfig, PolicyError, PolicyKind};
pub use report::{summarize, PolicySummary};
pub use trace::{JobSpec, LoadError, TenantSpec, Trace};

/// Replays `trace` on `cluster` under the policy `kind`.
pub fn run_policy(
    trace: &Trace,
    cluster: &ClusterSpec,
    kind: PolicyKind,
    engine: &EngineConfig,
    policies: &PolicyConfig,
) -> Result<RunOutcome, PolicyError> {
    let mut policy = policy::build(kind, trace, policies)?;
    Ok(engine::run(trace, cluster, policy.as_mut(), engine))
}

/// Each tenant's makespan when it runs alone, under FIFO, on a static partition of ⌊w_t·C⌋ GPUs
/// (nodes as large as the cluster's largest): the denominator of per-tenant finish-time
/// fairness ρ_t. `None` for a tenant without jobs or whose largest gang does not fit its
/// partition. Costs one FIFO run over the whole trace in total.
pub fn tenant_alone_makespans(trace: &Trace, cluster: &ClusterSpec) -> Vec<Option<f64>> {
    let capacity = cluster.capacity() as f64;
    let total_w: f64 = trace.tenants.iter().map(|t| t.weight.max(0.0)).sum();
    let per_node = cluster
        .node_groups
        .iter()
        .map(|g| g.gpus_per_node)
        .max()
        .unwrap_or(1);
    let config = EngineConfig {
        warmup_seconds: 0.0,
        ..EngineConfig::default()
    };
    (0..trace.tenants.len())
        .map(|t| {
            let share = trace.tenants[t].weight.max(0.0) / total_w.max(f64::MIN_POSITIVE);
            let gpus = (share * capacity + 1e-9).floor() as u32;
            let jobs: Vec<JobSpec> = trace
                .jobs
                .iter()
                .filter(|j| j.tenant == t)
                .map(|j| JobSpec {
                    tenant: 0,
                    ..j.clone()
                })
                .collect();
            let largest = jobs.iter().map(|j| j.gpus).max()?;
            if largest > gpus {
                return None;
            }
            let alone = Trace::from_unsorted(vec![trace.tenants[t].clone()], jobs, None);
            let spec = ClusterSpec::homogeneous(gpus, per_node);
            let mut fifo = policy::Fifo::default();
            let run = engine::run(&alone, &spec, &mut fifo, &config);
            let last = run
                .jobs
                .iter()
                .filter_map(|j| j.completion)
                .fold(0.0, f64::max);
            Some(last)
        })
        .collect()
}

/// `k` copies of `trace` on a cluster `k` times as large, so contention stays the same while
/// the job count grows k×: the scaling check of issue #6. Copy `c ≥ 2` renames tenant `x` to
/// `x#c` (copy 1 keeps the names); jobs keep their arrivals, copies in trace order, and node
/// groups keep their node size with `k` times the nodes. `k = 0` is treated as 1.
pub fn replicate(trace: &Trace, cluster: &ClusterSpec, k: usize) -> (Trace, ClusterSpec) {
    let k = k.max(1);
    let n = trace.tenants.len();
    let tenants = (1..=k)
        .flat_map(|c| {
            trace.tenants.iter().map(move |t| TenantSpec {
                name: if c == 1 {
                    t.name.clone()
                } else {
                    format!("{}#{c}", t.name)
                },
                weight: t.weight,
            })
        })
        .collect();
    let jobs = trace
        .jobs
        .iter()
        .flat_map(|j| {
            (0..k).map(move |c| JobSpec {
                tenant: j.tenant + c * n,
                ..j.clone()
            })
        })
        .collect();
    let mut scaled = cluster.clone();
    for g in &mut scaled.node_groups {
        g.count = g.count.saturating_mul(k as u32);
    }
    (
        Trace::from_unsorted(tenants, jobs, trace.origin_unix),
        scaled,
    )
}
