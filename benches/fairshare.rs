//! Fair-share core at scale: queue updates with 100,000 pending workloads over 1,000 tenants;
//! a standing change plus the admission of the head through the gate's walk with 50,000
//! waiting workloads over 1,000 tenants (issue #13's figure, ≤ 10 µs); and an entitlement
//! computation over 1,000 tenants (flat and in 20 groups).

use std::hint::black_box;
use std::ops::ControlFlow;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use rota::core::fairshare::{entitlements, SharePolicy, Standing, TenantLoad};
use rota::core::feasibility::{Demand, Fit, Pool};
use rota::core::gate::{self, Step, Supply};
use rota::core::queue::{FairQueue, QueueEntry};

const WORKLOADS: u64 = 100_000;
const TENANTS: u64 = 1_000;

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn tenant_names() -> Vec<String> {
    (0..TENANTS).map(|i| format!("tenant-{i}")).collect()
}

fn entry(key: u64, rng: &mut Rng, names: &[String]) -> QueueEntry<u64> {
    QueueEntry {
        key,
        tenant: names[(rng.next() % TENANTS) as usize].clone(),
        resource: "nvidia.com/gpu".into(),
        gpus: 1 + rng.next() % 8,
        priority_class: (rng.next() % 3) as i32,
        arrival: key as f64,
        attained: (rng.next() % 4) as f64 * 600.0,
    }
}

/// 625 free nodes of 8 GPUs, every workload one pod.
struct Nodes(Pool, Pool);

impl Supply<u64> for Nodes {
    fn fit(&self, e: &QueueEntry<u64>) -> Fit {
        let d = Demand::new(e.gpus, e.gpus);
        match self.1.check(d) {
            Err(why) => Fit::Never(why),
            Ok(()) if self.0.fits(d) => Fit::Now,
            Ok(()) => Fit::Later,
        }
    }
    fn take(&mut self, e: &QueueEntry<u64>) {
        self.0.take(Demand::new(e.gpus, e.gpus));
    }
    fn reserve(&mut self, _: &QueueEntry<u64>) {}
}

fn full_queue(names: &[String]) -> FairQueue<u64> {
    sized_queue(names, WORKLOADS)
}

fn sized_queue(names: &[String], workloads: u64) -> FairQueue<u64> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut q = FairQueue::new();
    for (i, name) in names.iter().enumerate() {
        q.set_standing(name, Standing::new(i as f64 / TENANTS as f64));
    }
    for key in 0..workloads {
        q.push(entry(key, &mut rng, names));
    }
    q
}

fn queue_updates(c: &mut Criterion) {
    let names = tenant_names();
    let base = full_queue(&names);
    let mut g = c.benchmark_group("queue_100k_workloads_1k_tenants");
    g.bench_function("push_then_remove", |b| {
        let mut q = base.clone();
        let mut rng = Rng(7);
        let mut key = WORKLOADS;
        b.iter(|| {
            q.push(entry(key, &mut rng, &names));
            black_box(q.remove(&key));
            key += 1;
        });
    });
    g.bench_function("set_standing_one_tenant", |b| {
        let mut q = base.clone();
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let name = &names[(i % TENANTS) as usize];
            q.set_standing(name, Standing::new((i % 17) as f64 / 8.0));
        });
    });
    g.bench_function("pop_head", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |q| black_box(q.pop("nvidia.com/gpu")),
            BatchSize::LargeInput,
        );
    });
    g.finish();
    let mut g = c.benchmark_group("queue_50k_workloads_1k_tenants");
    let half = sized_queue(&names, WORKLOADS / 2);
    let nodes = Nodes(Pool::of([8; 625]), Pool::of([8; 625]));
    g.bench_function("standing_change_then_admit_head", |b| {
        let mut q = half.clone();
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let name = &names[(i % TENANTS) as usize];
            q.set_standing(name, Standing::new((i % 17) as f64 / 8.0));
            let mut supply = Nodes(nodes.0.clone(), nodes.1.clone());
            let mut head = None;
            gate::walk(&q, "nvidia.com/gpu", &mut supply, |e, step, _| {
                if matches!(step, Step::Admit { .. }) {
                    head = Some(e.key);
                }
                ControlFlow::Break(())
            });
            // Admit it, then queue it again so the queue keeps its size.
            if let Some(key) = head {
                let entry = q.get(&key).cloned();
                q.mark_admitted(&key);
                if let Some(e) = entry {
                    q.push(e);
                }
            }
            black_box(head)
        });
    });
    g.finish();
}

fn loads(names: &[String]) -> Vec<TenantLoad<'_>> {
    let mut rng = Rng(42);
    names
        .iter()
        .map(|n| TenantLoad {
            tenant: n,
            held: (rng.next() % 16) as f64,
            pending: (rng.next() % 32) as f64,
            usage: (rng.next() % 100_000) as f64,
        })
        .collect()
}

fn entitlement(c: &mut Criterion) {
    let names = tenant_names();
    let loads = loads(&names);
    let flat = SharePolicy::default();
    let mut grouped = SharePolicy::default();
    for g in 0..20 {
        grouped = grouped.with_group(&format!("group-{g}"), 1.0 + f64::from(g % 3));
    }
    for (i, n) in names.iter().enumerate() {
        let group = format!("group-{}", i % 20);
        grouped = grouped.with_tenant(n, 1.0 + (i % 5) as f64, Some(&group));
    }
    let mut g = c.benchmark_group("entitlements_1k_tenants");
    g.bench_function("flat", |b| {
        b.iter(|| black_box(entitlements(&flat, 4_000.0, black_box(&loads))));
    });
    g.bench_function("20_groups", |b| {
        b.iter(|| black_box(entitlements(&grouped, 4_000.0, black_box(&loads))));
    });
    g.finish();
}

criterion_group!(benches, queue_updates, entitlement);
criterion_main!(benches);
