//! Replay speed of the offline simulator, per policy.
//!
//! - `generated/<policy>`: 20,000 synthetic jobs (seed 1, offered load 1.1) on 256 GPUs;
//! - `philly/<policy>`: the full 52,849-job Philly trace on 512 GPUs (8 per node), when
//!   `../shared/traces/philly-vc/philly-sep-oct-2017.csv` is present (skipped otherwise).
//!
//! `rota` runs the production queue and gate (`core::queue::FairQueue`, `core::gate::walk`).
//!
//! Target: well under 10 s per policy for Philly on a 2-core machine (goal about 1 s); cost must
//! grow no faster than n log n (compare `generated` at 20,000 with Philly at 52,849).

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rota::sim::trace::load_philly;
use rota::sim::{
    generate, run_policy, ClusterSpec, EngineConfig, GeneratorConfig, PolicyConfig, PolicyKind,
    Trace,
};

const POLICIES: [PolicyKind; 5] = [
    PolicyKind::Fifo,
    PolicyKind::Quota,
    PolicyKind::Fair,
    PolicyKind::Las,
    PolicyKind::Rota,
];

fn bench_trace(c: &mut Criterion, group: &str, trace: &Trace, cluster: &ClusterSpec) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.throughput(Throughput::Elements(trace.jobs.len() as u64));
    let config = EngineConfig::default();
    for kind in POLICIES {
        g.bench_with_input(
            BenchmarkId::from_parameter(kind.as_str()),
            &kind,
            |b, &kind| {
                b.iter(|| {
                    let out = run_policy(trace, cluster, kind, &config, &PolicyConfig::default())
                        .expect("policy exists");
                    black_box(out.events)
                })
            },
        );
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let generated = generate(&GeneratorConfig {
        jobs: 20_000,
        capacity_gpus: 256,
        ..GeneratorConfig::default()
    });
    bench_trace(
        c,
        "generated",
        &generated,
        &ClusterSpec::homogeneous(256, 8),
    );
    let philly = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/traces/philly-vc/philly-sep-oct-2017.csv");
    match load_philly(&philly) {
        Ok(trace) => bench_trace(c, "philly", &trace, &ClusterSpec::homogeneous(512, 8)),
        Err(err) => eprintln!("skipping philly: {err}"),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
