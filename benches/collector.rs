//! One telemetry poll round over 1,000 in-process agents, against the poll interval.
//!
//! 1,000 real `rota agent` services (`serve_agent` with a scripted 8-GPU source) listen on
//! 127.0.0.1 ports; one [`Collector`] polls them all through HTTP/1.1 with the default options
//! (64 in flight, 2 s timeout) and stores the summaries on a cluster view of 1,000 nodes. The
//! measured time is one whole round: requests, validation, grading and the view update.
//! Target: a round completes well inside the default 5 s interval. Before measuring, one round
//! is run and checked (every agent answered) and its time printed next to the interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rota::agent::{serve_agent, AgentOptions, Script, ScriptedSource};
use rota::config::{TelemetryConfig, ValidConfig};
use rota::core::GpuNode;
use rota::read::telemetry::agents::{AgentDirectory, Target};
use rota::read::telemetry::collector::{Collector, CollectorOptions};
use rota::read::view::{ClusterView, ViewSettings};
use tokio::net::TcpListener;

const AGENTS: usize = 1_000;

/// Eight A100s with every reading filled in, as a busy node reports them.
fn script() -> Script {
    let mut text = String::from("frames:\n  - atSeconds: 0\n    gpus:\n");
    for i in 0..8 {
        text.push_str(&format!(
            "      - {{index: {i}, uuid: GPU-00000000-0000-0000-0000-00000000000{i}, \
             name: NVIDIA A100-SXM4-80GB, pciBusId: \"00000000:{i:02x}:00.0\", \
             memoryTotalBytes: 85899345920, memoryUsedBytes: 1073741824, \
             utilizationGpuRatio: 0.5, utilizationMemoryRatio: 0.2, temperatureCelsius: 55, \
             powerDrawWatts: 250, powerLimitWatts: 400, smClockMhz: 1410, throttleReasons: [], \
             eccUncorrectedVolatile: 0, pendingPageRetirement: false, pendingRowRemap: false, \
             xidErrors: [], computeProcesses: 1, migEnabled: false}}\n"
        ));
    }
    Script::parse(&text, false).expect("static script")
}

fn node_name(i: usize) -> String {
    format!("gpu-node-{i:05}")
}

/// Starts the agents; they sample once at start and then rarely, so sampling does not compete
/// with the poller for the CPU.
async fn start_agents(script: &Script) -> Vec<Target> {
    let mut targets = Vec::with_capacity(AGENTS);
    for i in 0..AGENTS {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let source = ScriptedSource::with_clock(script.clone(), Box::new(|| 0.0));
        let options = AgentOptions {
            node_name: node_name(i),
            interval: Duration::from_secs(3600),
            thresholds: TelemetryConfig::default(),
            server: rota::http::ServerOptions::default(),
        };
        tokio::spawn(serve_agent(
            listener,
            Box::new(source),
            options,
            std::future::pending(),
        ));
        let flag = format!("{}=http://{addr}", node_name(i));
        targets.push(flag.parse().expect("valid flag"));
    }
    // Let every agent take its first sample.
    tokio::time::sleep(Duration::from_millis(500)).await;
    targets
}

fn view() -> Arc<ClusterView> {
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(
        &ValidConfig::default(),
    )));
    for i in 0..AGENTS {
        view.apply_gpu_node(GpuNode {
            name: node_name(i),
            ready: true,
            allocatable: [("nvidia.com/gpu".to_string(), 8)].into(),
            ..GpuNode::default()
        });
    }
    view
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let options = CollectorOptions::from_config(&TelemetryConfig::default());
    let interval = options.interval;
    let mut collector = runtime.block_on(async {
        let targets = start_agents(&script()).await;
        let directory = Arc::new(AgentDirectory::new(targets));
        Collector::new(view(), directory, options, None)
    });

    let first = runtime.block_on(collector.poll_round());
    assert_eq!(first.ok, AGENTS, "every agent must answer: {first:?}");
    let warm = runtime.block_on(collector.poll_round());
    assert_eq!(warm.ok, AGENTS, "every agent must answer: {warm:?}");
    println!(
        "collector: one round over {AGENTS} agents took {:.1} ms cold, {:.1} ms warm \
         ({:.2}% of the {} s interval)",
        first.elapsed.as_secs_f64() * 1e3,
        warm.elapsed.as_secs_f64() * 1e3,
        100.0 * warm.elapsed.as_secs_f64() / interval.as_secs_f64(),
        interval.as_secs()
    );

    let mut group = c.benchmark_group("collector");
    group.sample_size(10);
    group.bench_function("poll_round_1000_agents", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let report = collector.poll_round().await;
                    std::hint::black_box(report);
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
