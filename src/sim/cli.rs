//! `rota simulate`: command-line arguments, input loading, and output (a table on stdout;
//! `summary.json`, `timing.json`, per-policy job and tenant CSV files and SVG charts with
//! `--out`), and a progress line on stderr while stdout is a terminal.
//!
//! This is wiring (anyhow errors are fine here). It is the only part of the simulator that reads
//! the wall clock, to report how long each policy's replay took; timings go to stdout and
//! `timing.json`, never into `summary.json`, which must stay byte-identical across runs (and so
//! must the charts).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use super::charts;
use super::cluster::ClusterSpec;
use super::engine::{self, EngineConfig};
use super::generate::{generate, GeneratorConfig};
use super::policy::{self, LasConfig, PolicyConfig, PolicyKind, RotaSettings};
use super::progress::Progress;
use super::report::{self, effective_warmup, PolicySummary};
use super::trace::{self, Trace};
use super::workload;

/// Trace file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceFormat {
    /// Philly CSV (`timestamp,duration,num_gpus,gpu_time,cluster`).
    Philly,
    /// Tiresias job CSV (`job_id,num_gpu,submit_time,iterations,model_name,duration,interval`).
    Tiresias,
    /// rota workload YAML.
    Workload,
}

/// Where tenant weights come from (a `--config` file overrides this).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightSource {
    /// As the trace says (1 for CSV traces; the YAML or generator weights otherwise).
    Trace,
    /// Every tenant weighs 1.
    Equal,
    /// Proportional to each tenant's GPU-hours in the (windowed) trace: quotas sized to demand.
    GpuHours,
}

/// Arguments of `rota simulate`.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateArgs {
    /// Trace to replay. Without it, a synthetic workload is generated (see `--jobs`, `--seed`).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Format of `--trace`. Default: from the extension (`.yaml`/`.yml`) or the CSV header.
    #[arg(long, value_enum, requires = "trace")]
    pub trace_format: Option<TraceFormat>,
    /// Homogeneous cluster of this many GPUs. Default 64 when `--cluster` is not given.
    #[arg(long, conflicts_with = "cluster")]
    pub gpus: Option<u32>,
    /// GPUs per node of the homogeneous cluster.
    #[arg(long, default_value_t = 8, conflicts_with = "cluster")]
    pub gpus_per_node: u32,
    /// Cluster file: YAML `nodeGroups: [{count, gpusPerNode, model}]`, or a Tiresias
    /// cluster-spec `.csv`.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Policies to compare, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "fifo,quota,fair,las,rota"
    )]
    pub policies: Vec<PolicyKind>,
    /// rota config file: tenant weights (`tenants`, `defaultTenantWeight`) override `--weights`;
    /// the `rota` policy also takes its rotation, quantum and usage settings from it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seed of the synthetic workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Folder for `summary.json`, `timing.json`, the per-policy CSV files and the SVG charts
    /// (`<policy>-shares.svg`, `jct-cdf.svg`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Keep jobs submitted at or after this date (`YYYY-MM-DD[ HH:MM:SS]`, UTC; dated traces).
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// Keep jobs submitted before this date (`YYYY-MM-DD[ HH:MM:SS]`, UTC; dated traces).
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
    /// Tenant weights when no `--config` is given.
    #[arg(long, value_enum, default_value = "trace")]
    pub weights: WeightSource,
    /// Arrivals in the first hours are left out of job statistics and time averages.
    #[arg(long, default_value_t = 24.0)]
    pub warmup_hours: f64,
    /// Seconds of work a suspended job loses (LAS preemption).
    #[arg(long, default_value_t = 30.0)]
    pub restart_cost_seconds: f64,
    /// LAS queue thresholds in attained GPU-seconds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "3250,7200,18000")]
    pub las_thresholds: Vec<f64>,
    /// Synthetic workload: number of jobs and VMs.
    #[arg(long, default_value_t = 5_000)]
    pub jobs: usize,
    /// Synthetic workload: offered load relative to the cluster.
    #[arg(long, default_value_t = 1.1)]
    pub load: f64,
}

/// Runs `rota simulate`: loads or generates the workload, replays it under each policy, prints
/// a table and writes the files asked for.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let cluster = cluster_spec(&args)?;
    let mut trace = load_input(&args, cluster.capacity())?;
    apply_weights(&mut trace, &args)?;
    let engine = EngineConfig {
        restart_cost_seconds: args.restart_cost_seconds,
        warmup_seconds: args.warmup_hours * 3600.0,
    };
    let policies = PolicyConfig {
        las: LasConfig {
            thresholds_gpu_seconds: args.las_thresholds.clone(),
        },
        rota: match &args.config {
            Some(file) => RotaSettings::from_config(&*crate::config::load(file)?),
            None => RotaSettings::default(),
        },
    };
    print!("{}", describe(&trace, &cluster, &engine));
    let alone = super::tenant_alone_makespans(&trace, &cluster);
    let mut summaries = Vec::new();
    let mut timing = Vec::new();
    let mut cdfs = Vec::new();
    let show_progress = std::io::stdout().is_terminal();
    for &kind in &args.policies {
        let started = Instant::now();
        let mut built = policy::build(kind, &trace, &policies)?;
        let mut wrapped = Progress::new(built.as_mut(), trace.jobs.len(), show_progress);
        let outcome = engine::run(&trace, &cluster, &mut wrapped, &engine);
        wrapped.finish();
        let wall = started.elapsed().as_secs_f64();
        let summary = report::summarize(&trace, &outcome, &alone);
        timing.push((wall, outcome.events as f64 / wall.max(1e-9)));
        if let Some(dir) = &args.out {
            write_policy_files(dir, &trace, &outcome, &summary)?;
            let measured = charts::jct_values(&trace, &outcome, summary.warmup_seconds);
            cdfs.push((summary.policy.clone(), measured));
        }
        summaries.push(summary);
    }
    print!("{}", report::table(&summaries, &timing));
    if let Some(line) = summaries.first().and_then(report::unplaceable_note) {
        println!("{line}");
    }
    for line in summaries.iter().filter_map(report::warning_note) {
        println!("{line}");
    }
    if let Some(dir) = &args.out {
        write_summaries(dir, &summaries, &timing)?;
        write(&dir.join("jct-cdf.svg"), &charts::jct_cdf_svg(&cdfs)?)?;
        println!("wrote {}", dir.display());
    }
    Ok(())
}

fn cluster_spec(args: &SimulateArgs) -> anyhow::Result<ClusterSpec> {
    if let Some(file) = &args.cluster {
        return Ok(workload::load_cluster(file)?);
    }
    let gpus = args.gpus.unwrap_or(64);
    if gpus == 0 || args.gpus_per_node == 0 {
        bail!("--gpus and --gpus-per-node must be at least 1");
    }
    Ok(ClusterSpec::homogeneous(gpus, args.gpus_per_node))
}

fn load_input(args: &SimulateArgs, capacity: u64) -> anyhow::Result<Trace> {
    let Some(file) = &args.trace else {
        if args.from.is_some() || args.to.is_some() {
            bail!("--from/--to need a dated trace (--trace with the philly format)");
        }
        return Ok(generate(&GeneratorConfig {
            seed: args.seed,
            jobs: args.jobs,
            capacity_gpus: capacity,
            load: args.load,
            ..GeneratorConfig::default()
        }));
    };
    let format = match args.trace_format {
        Some(f) => f,
        None => sniff(file)?,
    };
    let trace = match format {
        TraceFormat::Philly => trace::load_philly(file)?,
        TraceFormat::Tiresias => trace::load_tiresias(file)?,
        TraceFormat::Workload => workload::load_workload(file)?,
    };
    if !trace.checks.gpu_time_mismatches.is_empty() {
        eprintln!(
            "warning: {}: gpu_time != duration × num_gpus on {} rows (first at line {})",
            file.display(),
            trace.checks.gpu_time_mismatches.len(),
            trace.checks.gpu_time_mismatches[0]
        );
    }
    if args.from.is_none() && args.to.is_none() {
        return Ok(trace);
    }
    let date = |s: &Option<String>| -> anyhow::Result<Option<i64>> {
        s.as_deref()
            .map(|d| trace::parse_datetime(d).with_context(|| format!("bad date `{d}`")))
            .transpose()
    };
    let (from, to) = (date(&args.from)?, date(&args.to)?);
    trace
        .window(from, to)
        .context("--from/--to need a dated trace (the philly format)")
}

fn sniff(file: &Path) -> anyhow::Result<TraceFormat> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") {
        return Ok(TraceFormat::Workload);
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let header = text.lines().next().unwrap_or("");
    if header.starts_with("timestamp,") {
        Ok(TraceFormat::Philly)
    } else if header.starts_with("job_id,") {
        Ok(TraceFormat::Tiresias)
    } else {
        bail!(
            "{}: cannot tell the trace format; pass --trace-format",
            file.display()
        )
    }
}

fn apply_weights(trace: &mut Trace, args: &SimulateArgs) -> anyhow::Result<()> {
    if let Some(file) = &args.config {
        let config = crate::config::load(file)?;
        for t in &mut trace.tenants {
            t.weight = config.tenant_weight(&t.name);
        }
        return Ok(());
    }
    match args.weights {
        WeightSource::Trace => {}
        WeightSource::Equal => trace.tenants.iter_mut().for_each(|t| t.weight = 1.0),
        WeightSource::GpuHours => {
            let mut hours = vec![0.0; trace.tenants.len()];
            for j in &trace.jobs {
                hours[j.tenant] += j.gpus as f64 * j.duration / 3600.0;
            }
            for (t, h) in trace.tenants.iter_mut().zip(hours) {
                // A tenant with no work in the window keeps a token weight.
                t.weight = h.max(1e-6);
            }
        }
    }
    Ok(())
}

fn describe(trace: &Trace, cluster: &ClusterSpec, engine: &EngineConfig) -> String {
    let span = trace.jobs.last().map_or(0.0, |j| j.arrival);
    let c = cluster.capacity() as f64;
    let load = if span > 0.0 {
        trace.gpu_seconds() / (c * span)
    } else {
        0.0
    };
    let dates = match trace.origin_unix {
        Some(o) => format!(
            " from {} to {}",
            trace::format_datetime(o),
            trace::format_datetime(o + span as i64)
        ),
        None => String::new(),
    };
    let nodes: u32 = cluster.node_groups.iter().map(|g| g.count).sum();
    format!(
        "trace: {} jobs, {} tenants, arrivals over {:.1} h{dates}, offered load {:.2}\n\
         cluster: {} GPUs on {} nodes; warm-up {:.1} h; restart cost {} s\n",
        trace.jobs.len(),
        trace.tenants.len(),
        span / 3600.0,
        load,
        cluster.capacity(),
        nodes,
        effective_warmup(engine.warmup_seconds, span) / 3600.0,
        engine.restart_cost_seconds,
    )
}

fn write_policy_files(
    dir: &Path,
    trace: &Trace,
    outcome: &super::RunOutcome,
    summary: &PolicySummary,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = &summary.policy;
    write(
        &dir.join(format!("{name}-jobs.csv")),
        &report::jobs_csv(trace, outcome),
    )?;
    write(
        &dir.join(format!("{name}-tenants.csv")),
        &report::tenants_csv(summary),
    )?;
    let names: Vec<String> = trace.tenants.iter().map(|t| t.name.clone()).collect();
    let svg = charts::shares_svg(name, &names, &outcome.recorder.shares)?;
    write(&dir.join(format!("{name}-shares.svg")), &svg)
}

fn write_summaries(
    dir: &Path,
    summaries: &[PolicySummary],
    timing: &[(f64, f64)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::to_string_pretty(summaries)? + "\n";
    write(&dir.join("summary.json"), &json)?;
    let timing: Vec<serde_json::Value> = summaries
        .iter()
        .zip(timing)
        .map(|(s, (wall, rate))| {
            serde_json::json!({"policy": s.policy, "wall_seconds": wall, "events_per_second": rate})
        })
        .collect();
    let timing = serde_json::json!({
        "policies": timing,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    write(
        &dir.join("timing.json"),
        &(serde_json::to_string_pretty(&timing)? + "\n"),
    )
}

fn write(file: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))
}

/// Peak resident memory of this process (Linux `VmHWM`), if the platform says.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
