//! Simulator layer 1: the loaders read the real traces in `../shared/traces/` exactly as its
//! README counts them. Each test skips with a message when the trace is absent.
//!
//! The full Philly replay (layer 3 orderings, timing) is `#[ignore]`d: run it with
//! `cargo test --release --test sim_traces -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use rota::sim::trace::{format_datetime, load_philly, load_tiresias};
use rota::sim::workload::load_cluster;
use rota::sim::{
    report, run_policy, summarize, tenant_alone_makespans, ClusterSpec, EngineConfig, PolicyConfig,
    PolicyKind, Trace,
};

fn traces_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces")
}

/// The trace file at `rel`, or `None` (with a message) when it is absent.
fn trace_file(rel: &str) -> Option<PathBuf> {
    let path = traces_dir().join(rel);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipping: {} is absent (see ../shared/traces/README.md)",
            path.display()
        );
        None
    }
}

fn philly() -> Option<Trace> {
    let path = trace_file("philly-vc/philly-sep-oct-2017.csv")?;
    Some(load_philly(&path).expect("the Philly trace loads"))
}

#[test]
fn philly_loader_counts_are_exact() {
    let Some(t) = philly() else { return };
    assert_eq!(t.jobs.len(), 52_849);
    assert_eq!(t.checks.rows, 52_849);
    assert!(
        t.checks.gpu_time_mismatches.is_empty(),
        "{:?}",
        t.checks.gpu_time_mismatches
    );
    let origin = t.origin_unix.expect("dated");
    assert_eq!(format_datetime(origin), "2017-09-04 10:30:41");
    let last = origin + t.jobs.last().unwrap().arrival as i64;
    assert_eq!(format_datetime(last), "2017-10-31 23:52:11");
    let want: BTreeMap<String, usize> = [
        ("6214e9", 27_044),
        ("6c71a0", 8_033),
        ("11cb48", 7_273),
        ("b436b2", 7_148),
        ("0e4a51", 853),
        ("103959", 684),
        ("ee9e8c", 651),
        ("ed69ec", 393),
        ("7f04ca", 380),
        ("2869ce", 199),
        ("e13805", 183),
        ("23dbec", 8),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(t.jobs_per_tenant(), want);
    let gpu_hours = t.gpu_seconds() / 3600.0;
    assert!((gpu_hours - 642_409.3).abs() < 0.05, "{gpu_hours}");
    let sizes: Vec<(u32, usize)> = t.jobs_per_gang_size().into_iter().collect();
    assert_eq!(
        sizes,
        [
            (1, 50_188),
            (2, 904),
            (4, 945),
            (8, 713),
            (12, 7),
            (16, 65),
            (24, 4),
            (32, 23)
        ]
    );
}

#[test]
fn philly_file_ends_with_a_newline_and_has_no_blank_rows() {
    let Some(path) = trace_file("philly-vc/philly-sep-oct-2017.csv") else {
        return;
    };
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'));
    assert!(!text.lines().any(|l| l.trim().is_empty()));
}

#[test]
fn tiresias_loader_counts_are_exact() {
    let Some(path) = trace_file("tiresias/60_job.csv") else {
        return;
    };
    let t = load_tiresias(&path).expect("the Tiresias trace loads");
    assert_eq!(t.jobs.len(), 60);
    assert_eq!(t.jobs.iter().map(|j| j.gpus as u64).sum::<u64>(), 170);
    assert_eq!(t.jobs.last().unwrap().arrival, 1_779.0);
    assert_eq!(t.jobs[0].arrival, 0.0);
    let Some(spec) = trace_file("tiresias/cluster_spec.csv") else {
        return;
    };
    let c = load_cluster(&spec).expect("cluster spec loads");
    assert_eq!(
        (
            c.capacity(),
            c.node_groups[0].count,
            c.node_groups[0].gpus_per_node
        ),
        (64, 16, 4)
    );
    let Some(n32) = trace_file("tiresias/n32g4.csv") else {
        return;
    };
    assert_eq!(load_cluster(&n32).unwrap().capacity(), 128);
}

#[test]
fn tiresias_60_jobs_replay_under_every_policy() {
    let (Some(jobs), Some(spec)) = (
        trace_file("tiresias/60_job.csv"),
        trace_file("tiresias/cluster_spec.csv"),
    ) else {
        return;
    };
    let t = load_tiresias(&jobs).unwrap();
    let cluster = load_cluster(&spec).unwrap();
    let alone = tenant_alone_makespans(&t, &cluster);
    for kind in [
        PolicyKind::Fifo,
        PolicyKind::Quota,
        PolicyKind::Fair,
        PolicyKind::Las,
    ] {
        let out = run_policy(
            &t,
            &cluster,
            kind,
            &EngineConfig::default(),
            &PolicyConfig::default(),
        )
        .unwrap();
        let s = summarize(&t, &out, &alone);
        assert_eq!(s.jobs_unfinished, 0, "{kind:?}");
        // Every job runs at least its stand-alone duration.
        assert!(s.bounded_slowdown.p50 >= 1.0);
        assert!(
            s.utilisation > 0.0 && s.utilisation <= 1.0,
            "{kind:?} {}",
            s.utilisation
        );
    }
}

/// Layer 3 and speed on the full Philly trace (512 GPUs, 8 per node). Prints the table; asserts
/// only the published orderings, never speed.
#[test]
#[ignore = "long: run in release with --ignored --nocapture"]
fn philly_replay_on_512_gpus() {
    let Some(t) = philly() else { return };
    let cluster = ClusterSpec::homogeneous(512, 8);
    let alone = tenant_alone_makespans(&t, &cluster);
    let mut summaries = Vec::new();
    let mut timing = Vec::new();
    for kind in [
        PolicyKind::Fifo,
        PolicyKind::Quota,
        PolicyKind::Fair,
        PolicyKind::Las,
    ] {
        let started = Instant::now();
        let out = run_policy(
            &t,
            &cluster,
            kind,
            &EngineConfig::default(),
            &PolicyConfig::default(),
        )
        .unwrap();
        let wall = started.elapsed().as_secs_f64();
        timing.push((wall, out.events as f64 / wall));
        summaries.push(summarize(&t, &out, &alone));
    }
    println!("{}", report::table(&summaries));
    println!("{}", report::timing_line(&summaries, &timing));
    let by = |name: &str| summaries.iter().find(|s| s.policy == name).unwrap();
    assert!(
        by("las").jct.mean < by("fifo").jct.mean,
        "LAS beats FIFO on mean JCT"
    );
    assert!(by("quota").utilisation < by("fifo").utilisation);
    assert!(by("fair").share_deviation < by("fifo").share_deviation);
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: rota::sim::SimulateArgs,
}

/// The runs behind `simulations/README.md`, through the CLI entry point: equal weights, weights
/// proportional to GPU-hours, and October measured with September as warm-up. Output goes to
/// `target/tmp/philly-*` (copy `summary.json`, `timing.json` and `*-tenants.csv` from there).
#[test]
#[ignore = "long: run in release with --ignored --nocapture"]
fn philly_cli_runs_for_the_readme() {
    use clap::Parser;
    let Some(path) = trace_file("philly-vc/philly-sep-oct-2017.csv") else {
        return;
    };
    let trace = path.to_str().unwrap();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let runs: [(&str, &[&str]); 3] = [
        ("philly-512-equal", &[]),
        ("philly-512-gpuhours", &["--weights", "gpu-hours"]),
        (
            "philly-512-october",
            &["--weights", "gpu-hours", "--warmup-hours", "637.4886"],
        ),
    ];
    for (name, extra) in runs {
        let out = tmp.join(name);
        let mut argv = vec!["simulate", "--trace", trace, "--trace-format", "philly"];
        argv.extend([
            "--gpus",
            "512",
            "--gpus-per-node",
            "8",
            "--out",
            out.to_str().unwrap(),
        ]);
        argv.extend_from_slice(extra);
        println!("== {name}: rota {}", argv.join(" "));
        let args = Cli::try_parse_from(argv).unwrap().args;
        rota::sim::run(args).unwrap();
        assert!(out.join("summary.json").is_file());
    }
}

/// Issue #13's floors for the defaults, on the contended month: the Philly trace on 512 GPUs
/// (8 per node), everything before 2017-10-01 as warm-up, equal weights, no config at all.
/// The same figures `rota simulate --trace … --gpus 512 --warmup-hours 637.4886 --policies rota`
/// prints (simulations/README.md).
#[test]
fn october_floors_hold_with_the_default_config() {
    let Some(t) = philly() else { return };
    let cluster = ClusterSpec::homogeneous(512, 8);
    let engine = EngineConfig {
        warmup_seconds: 637.4886 * 3600.0,
        ..EngineConfig::default()
    };
    let out = run_policy(
        &t,
        &cluster,
        PolicyKind::Rota,
        &engine,
        &PolicyConfig::default(),
    )
    .expect("rota exists");
    let s = summarize(&t, &out, &vec![None; t.tenants.len()]);
    assert!(
        s.share_deviation <= 0.02,
        "share deviation {}",
        s.share_deviation
    );
    assert!(s.jain_index >= 0.98, "Jain {}", s.jain_index);
    assert!(
        s.jct.mean <= 16.0 * 3600.0,
        "mean JCT {} h",
        s.jct.mean / 3600.0
    );
    assert!(s.preemptions <= 9_500, "{} rotations", s.preemptions);
    assert!(
        s.lost_gpu_seconds <= 0.01 * s.useful_gpu_seconds,
        "lost {} of {} GPU-s",
        s.lost_gpu_seconds,
        s.useful_gpu_seconds
    );
    assert_eq!((s.jobs_unfinished, s.jobs_unplaceable), (0, 0));
    for tenant in &s.tenants {
        let share = tenant.mean_entitled / 512.0;
        if share >= 0.01 {
            let ratio = tenant.received_over_entitled.unwrap_or(0.0);
            assert!(
                ratio >= 0.9,
                "{}: {ratio:.3} of its entitlement",
                tenant.name
            );
        }
    }
}
