//! The rotation planner at scale: one plan for 10,000 full nodes of 8 GPUs (80,000 GPUs), about
//! 50,000 running workloads over 30 tenants and 300 waiting workloads of the tenants below their
//! share, with caps high enough (64 per tick) that the search runs for many claims. Target:
//! under 50 ms.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

use rota::core::fairshare::{entitlements, SharePolicy, TenantLoad};
use rota::core::rotation::{
    plan, Limits, PlanInput, ResourceState, RotationHistory, RunningWorkload, Spread, TenantShare,
    WaitingWorkload,
};
use rota::core::{WorkloadId, WorkloadKind};

const NODES: usize = 10_000;
const GPUS_PER_NODE: u64 = 8;
const WAITING: usize = 300;
const TENANTS: usize = 30;
const GPU: &str = "nvidia.com/gpu";
const NOW: f64 = 1_000_000.0;

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn id(i: usize) -> WorkloadId {
    WorkloadId {
        kind: WorkloadKind::Job,
        namespace: format!("ns-{}", i % 97),
        name: format!("job-{i}"),
    }
}

/// Tenants are skewed: the first ten hold most of the cluster, the last ten mostly wait.
fn tenant_of(rng: &mut Rng, skew: bool) -> usize {
    let t = rng.below(TENANTS as u64) as usize;
    if skew && t >= 20 && rng.below(4) != 0 {
        t - 20
    } else {
        t
    }
}

fn cluster() -> PlanInput {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let names: Vec<String> = (0..TENANTS).map(|t| format!("tenant-{t}")).collect();
    let mut held = vec![0.0; TENANTS];
    let mut running = Vec::with_capacity(5 * NODES);
    // Every node is full; these packings average five workloads per node.
    let packings: [&[u64]; 4] = [
        &[4, 1, 1, 1, 1],
        &[2, 2, 2, 1, 1],
        &[2, 2, 1, 1, 1, 1],
        &[4, 2, 1, 1],
    ];
    for node in 0..NODES {
        for &gpus in packings[rng.below(4) as usize] {
            let i = running.len();
            let t = tenant_of(&mut rng, true);
            held[t] += gpus as f64;
            let started = NOW - 60.0 * rng.below(240) as f64;
            running.push(RunningWorkload {
                id: id(i),
                tenant: names[t].clone(),
                resource: GPU.into(),
                nodes: vec![(format!("node-{node}"), gpus)],
                started_at: started,
                attained_gpu_seconds: (NOW - started) * gpus as f64 * (1 + rng.below(5)) as f64,
                quantum_seconds: 600.0,
                preemptible: rng.below(20) != 0,
                protected: rng.below(50) == 0,
                priority: 0,
                warning_seconds: 0.0,
                stop: None,
            });
        }
    }
    let mut pending = vec![0.0; TENANTS];
    let waiting: Vec<WaitingWorkload> = (0..WAITING)
        .map(|k| {
            let t = 20 + rng.below(10) as usize;
            let gpus = [1, 2, 4, 8][rng.below(4) as usize];
            pending[t] += gpus as f64;
            WaitingWorkload {
                id: id(1_000_000 + k),
                tenant: names[t].clone(),
                resource: GPU.into(),
                gpus,
                spread: if rng.below(3) == 0 {
                    Spread::AnyNodes
                } else {
                    Spread::OneNode
                },
                priority: 0,
            }
        })
        .collect();
    let loads: Vec<TenantLoad<'_>> = (0..TENANTS)
        .map(|t| TenantLoad {
            tenant: &names[t],
            held: held[t],
            pending: pending[t],
            usage: 0.0,
        })
        .collect();
    let capacity = (NODES as u64 * GPUS_PER_NODE) as f64;
    let tenants = entitlements(&SharePolicy::default(), capacity, &loads)
        .iter()
        .enumerate()
        .map(|(t, e)| TenantShare {
            tenant: names[t].clone(),
            held: e.held,
            entitled: e.entitled,
        })
        .collect();
    PlanInput {
        now: NOW,
        running,
        waiting,
        rotated_out: Vec::new(),
        resources: vec![ResourceState {
            resource: GPU.into(),
            tenants,
            free: (0..NODES).map(|n| (format!("node-{n}"), 0)).collect(),
        }],
        limits: Limits {
            margin_gpus: 1.0,
            max_per_tick: 64,
            max_per_tenant_per_tick: 8,
        },
    }
}

fn one_plan(c: &mut Criterion) {
    let input = cluster();
    let history = RotationHistory::new();
    let p = plan(&input, &history);
    // Say what the benchmark exercises, so a change that makes it trivial is visible.
    println!(
        "{} running, {} waiting: plan rotates {} out, resumes {}",
        input.running.len(),
        input.waiting.len(),
        p.rotate_out.len(),
        p.resume.len()
    );
    let mut g = c.benchmark_group("rotation_10k_nodes_50k_workloads");
    g.sample_size(20);
    g.bench_function("plan", |b| b.iter(|| plan(black_box(&input), &history)));
    g.finish();
}

criterion_group!(benches, one_plan);
criterion_main!(benches);
