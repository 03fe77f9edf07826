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

use super::charts::{self, ShareSeries};
use super::cluster::ClusterSpec;
use super::engine::{self, EngineConfig};
use super::generate::{generate, GeneratorConfig};
use super::html::{self, HtmlReport};
use super::policy::{self, LasConfig, PolicyConfig, PolicyKind, RotaSettings};
use super::progress::Progress;
use super::report::{self, effective_warmup, PolicySummary};
use super::trace::{self, Trace};
use super::verdict::{self, wrap};
use super::workload;
use crate::messages::print_stdout;

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
    /// Homogeneous cluster of this many GPUs (1 to 100000). Default 64 when `--cluster` is not
    /// given.
    #[arg(long, conflicts_with = "cluster", value_parser = clap::value_parser!(u32).range(1..=MAX_GPUS as i64))]
    pub gpus: Option<u32>,
    /// GPUs per node of the homogeneous cluster (1 to 64).
    #[arg(long, default_value_t = 8, conflicts_with = "cluster", value_parser = clap::value_parser!(u32).range(1..=MAX_GPUS_PER_NODE as i64))]
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
    /// Folder for `report.html` (table, verdict and charts in one file), `summary.json`,
    /// `timing.json`, the per-policy CSV files and the SVG charts (`<policy>-shares.svg`,
    /// `jct-cdf.svg`, `share-deviation.svg`).
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
    /// Arrivals in the first hours are left out of job statistics and time averages (0 to
    /// 87600).
    #[arg(long, default_value_t = 24.0, value_parser = parse_warmup_hours, allow_negative_numbers = true)]
    pub warmup_hours: f64,
    /// Seconds of work a suspended job loses (LAS preemption; 0 to 86400).
    #[arg(long, default_value_t = 30.0, value_parser = parse_restart_cost, allow_negative_numbers = true)]
    pub restart_cost_seconds: f64,
    /// LAS queue thresholds in attained GPU-seconds, comma-separated, increasing.
    #[arg(long, value_delimiter = ',', default_value = "3250,7200,18000", value_parser = parse_threshold, allow_negative_numbers = true)]
    pub las_thresholds: Vec<f64>,
    /// Synthetic workload: number of jobs and VMs (1 to 200000).
    #[arg(long, default_value_t = 5_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_JOBS as u64))]
    pub jobs: usize,
    /// Synthetic workload: offered load relative to the cluster (above 0, at most 10).
    #[arg(long, default_value_t = 1.1, value_parser = parse_load, allow_negative_numbers = true)]
    pub load: f64,
    /// Output on stdout: `text` (a table, a legend and a verdict) or `json` (for scripts).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Output format of `rota simulate` (the same flag as `rota loadtest --output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Text,
    /// One JSON document for scripts.
    Json,
}

/// A flag value or combination the program cannot run with, found after parsing (exit code 2,
/// as for clap's own usage errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Largest cluster simulated, in GPUs (and per node): bounds memory and time.
pub const MAX_GPUS: u32 = 100_000;
/// Largest node simulated, in GPUs.
pub const MAX_GPUS_PER_NODE: u32 = 64;
/// Most nodes of a `--cluster` file.
pub const MAX_NODES: u64 = 20_000;
/// Most synthetic jobs (the Philly trace has 52,849).
pub const MAX_JOBS: usize = 200_000;
/// Most jobs of a trace file: about twenty Philly traces, minutes of replay per policy.
pub const MAX_TRACE_JOBS: usize = 1_000_000;
/// Longest job a trace may hold: a year, beyond which the replay would take forever.
pub const MAX_JOB_SECONDS: f64 = 365.0 * 86_400.0;
/// Latest arrival a trace may hold: ten years after the first.
pub const MAX_ARRIVAL_SECONDS: f64 = 10.0 * 365.0 * 86_400.0;
/// Most LAS thresholds.
const MAX_LAS_THRESHOLDS: usize = 16;

/// A finite number in `[min, max]` (or `(min, max]` when `open_min`), in words when not.
fn bounded(text: &str, min: f64, open_min: bool, max: f64) -> Result<f64, String> {
    let value: f64 = (text.trim().parse()).map_err(|_| format!("{text:?} is not a number"))?;
    let low_ok = if open_min { value > min } else { value >= min };
    if value.is_finite() && low_ok && value <= max {
        return Ok(value);
    }
    let low = if open_min { "above" } else { "at least" };
    Err(format!(
        "{text} is out of range: must be {low} {min} and at most {max}"
    ))
}

fn parse_load(text: &str) -> Result<f64, String> {
    bounded(text, 0.0, true, 10.0)
}

fn parse_warmup_hours(text: &str) -> Result<f64, String> {
    bounded(text, 0.0, false, 87_600.0)
}

fn parse_restart_cost(text: &str) -> Result<f64, String> {
    bounded(text, 0.0, false, 86_400.0)
}

fn parse_threshold(text: &str) -> Result<f64, String> {
    bounded(text, 0.0, true, MAX_JOB_SECONDS * f64::from(MAX_GPUS))
}

/// Checks what clap cannot see one flag at a time.
fn check_args(args: &SimulateArgs) -> Result<(), UsageError> {
    let t = &args.las_thresholds;
    if t.len() > MAX_LAS_THRESHOLDS {
        return Err(UsageError(format!(
            "--las-thresholds: {} values given, at most {MAX_LAS_THRESHOLDS} are allowed",
            t.len()
        )));
    }
    if let Some(w) = t.windows(2).find(|w| w[0] >= w[1]) {
        return Err(UsageError(format!(
            "--las-thresholds must increase: {} is followed by {}",
            w[0], w[1]
        )));
    }
    if args.policies.is_empty() {
        return Err(UsageError("--policies names no policy".into()));
    }
    Ok(())
}

/// Runs `rota simulate`: loads or generates the workload, replays it under each policy, prints
/// a table (or JSON) and writes the files asked for.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let cluster = cluster_spec(&args)?;
    let mut trace = load_input(&args, cluster.capacity())?;
    check_trace(&trace, &cluster, args.trace.as_deref())?;
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
            Some(file) => RotaSettings::from_config(&*load_config(file)?),
            None => RotaSettings::default(),
        },
    };
    let workload = describe(&trace, &cluster, &engine, &args);
    let text = args.output == OutputFormat::Text;
    if text {
        print_stdout(&wrap(&workload, WIDTH))?;
    }
    let runs = replay_all(&args, &trace, &cluster, &engine, &policies)?;
    let summaries: Vec<PolicySummary> = runs.iter().map(|r| r.summary.clone()).collect();
    let timing: Vec<(f64, f64)> = runs.iter().map(|r| r.timing).collect();
    let verdict = verdict::verdict(&summaries);
    let mut notes: Vec<String> = summaries
        .first()
        .and_then(report::unplaceable_note)
        .into_iter()
        .collect();
    notes.extend(summaries.iter().filter_map(report::warning_note));
    notes.push(report::timing_line(&summaries, &timing));
    match text {
        true => {
            print_stdout(&report::table(&summaries))?;
            for line in notes.iter().chain(&verdict) {
                print_stdout(&wrap(line, WIDTH))?;
            }
        }
        false => print_stdout(&(json_report(&workload, &summaries, &timing, &verdict)? + "\n"))?,
    }
    if let Some(dir) = &args.out {
        let page = Page {
            workload: &workload,
            verdict: &verdict,
            notes: &notes,
        };
        write_outputs(dir, &runs, &summaries, &timing, &page, cluster.capacity())?;
        if text {
            print_stdout(&format!("wrote {}\n", dir.join("report.html").display()))?;
        }
    }
    Ok(())
}

/// The `--config` file, its name in every error.
fn load_config(file: &Path) -> anyhow::Result<crate::config::ValidConfig> {
    crate::config::load(file).with_context(|| format!("--config {}", file.display()))
}

/// Width of the text output, in characters.
const WIDTH: usize = 100;

/// One policy's replay: its summary, `(wall seconds, events/s)`, and what the charts need.
struct PolicyRun {
    summary: PolicySummary,
    timing: (f64, f64),
    jct: Vec<f64>,
    shares: ShareSeries,
}

fn replay_all(
    args: &SimulateArgs,
    trace: &Trace,
    cluster: &ClusterSpec,
    engine: &EngineConfig,
    policies: &PolicyConfig,
) -> anyhow::Result<Vec<PolicyRun>> {
    let alone = super::tenant_alone_makespans(trace, cluster);
    let show_progress = std::io::stdout().is_terminal();
    let mut runs = Vec::new();
    for &kind in &args.policies {
        let started = Instant::now();
        let mut built = policy::build(kind, trace, policies)?;
        let mut wrapped = Progress::new(built.as_mut(), trace.jobs.len(), show_progress);
        let outcome = engine::run(trace, cluster, &mut wrapped, engine);
        wrapped.finish();
        let wall = started.elapsed().as_secs_f64();
        let summary = report::summarize(trace, &outcome, &alone);
        let mut jct = Vec::new();
        if let Some(dir) = &args.out {
            write_policy_files(dir, trace, &outcome, &summary)?;
            jct = charts::jct_values(trace, &outcome, summary.warmup_seconds);
        }
        runs.push(PolicyRun {
            timing: (wall, outcome.events as f64 / wall.max(1e-9)),
            summary,
            jct,
            shares: outcome.recorder.shares,
        });
    }
    Ok(runs)
}

/// `--output json`: the workload, every summary, the verdict and the replay times.
fn json_report(
    workload: &str,
    summaries: &[PolicySummary],
    timing: &[(f64, f64)],
    verdict: &[String],
) -> anyhow::Result<String> {
    let timing: Vec<serde_json::Value> = (summaries.iter().zip(timing))
        .map(|(s, (wall, rate))| {
            serde_json::json!({"policy": s.policy, "wall_seconds": wall, "events_per_second": rate})
        })
        .collect();
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "workload": workload,
        "policies": summaries,
        "verdict": verdict,
        "timing": timing,
    }))?)
}

/// The text parts of the HTML report.
struct Page<'a> {
    workload: &'a str,
    verdict: &'a [String],
    notes: &'a [String],
}

/// Writes the summaries, the charts (one x range for every policy) and `report.html`.
fn write_outputs(
    dir: &Path,
    runs: &[PolicyRun],
    summaries: &[PolicySummary],
    timing: &[(f64, f64)],
    page: &Page<'_>,
    capacity: u64,
) -> anyhow::Result<()> {
    write_summaries(dir, summaries, timing)?;
    let hours = runs.iter().map(|r| r.shares.hours()).fold(0.0, f64::max);
    let mut svgs: Vec<(String, String)> = Vec::new();
    let cdfs: Vec<(String, Vec<f64>)> = (runs.iter())
        .map(|r| (r.summary.policy.clone(), r.jct.clone()))
        .collect();
    svgs.push(("Job completion time".into(), charts::jct_cdf_svg(&cdfs)?));
    write(&dir.join("jct-cdf.svg"), &svgs[0].1)?;
    let deviation: Vec<(String, Vec<(f64, f64)>)> = (runs.iter())
        .map(|r| {
            (
                r.summary.policy.clone(),
                r.shares.deviation_points(capacity),
            )
        })
        .collect();
    let svg = charts::deviation_svg(&deviation, hours)?;
    write(&dir.join("share-deviation.svg"), &svg)?;
    svgs.push(("Fairness over time, all policies".into(), svg));
    for r in runs {
        let name = &r.summary.policy;
        let tenants: Vec<String> = r.summary.tenants.iter().map(|t| t.name.clone()).collect();
        let svg = charts::shares_svg(name, &tenants, &r.shares, hours)?;
        write(&dir.join(format!("{name}-shares.svg")), &svg)?;
        svgs.push((
            format!("{name}: GPUs held against fair share, per tenant"),
            svg,
        ));
    }
    let rows = report::table_rows(summaries);
    let html = html::render(&HtmlReport {
        workload: page.workload,
        rows: &rows,
        verdict: page.verdict,
        notes: page.notes,
        charts: &svgs,
    });
    write(&dir.join("report.html"), &html)
}

fn cluster_spec(args: &SimulateArgs) -> anyhow::Result<ClusterSpec> {
    let Some(file) = &args.cluster else {
        // clap has checked both ranges.
        return Ok(ClusterSpec::homogeneous(
            args.gpus.unwrap_or(64),
            args.gpus_per_node,
        ));
    };
    let spec = workload::load_cluster(file)?;
    let (nodes, per_node) = (spec.node_groups.iter()).fold((0_u64, 0_u32), |(n, p), g| {
        (n + u64::from(g.count), p.max(g.gpus_per_node))
    });
    let (name, gpus) = (file.display(), spec.capacity());
    if nodes > MAX_NODES || gpus > u64::from(MAX_GPUS) || per_node > MAX_GPUS_PER_NODE {
        bail!(
            "{name}: {nodes} nodes, {gpus} GPUs, up to {per_node} GPUs per node; the simulator \
             accepts at most {MAX_NODES} nodes, {MAX_GPUS} GPUs and {MAX_GPUS_PER_NODE} GPUs per node"
        );
    }
    if gpus == 0 {
        bail!("{name}: the cluster has no GPU");
    }
    Ok(spec)
}

fn load_input(args: &SimulateArgs, capacity: u64) -> anyhow::Result<Trace> {
    let Some(file) = &args.trace else {
        if args.from.is_some() || args.to.is_some() {
            return Err(UsageError(
                "--from/--to need a dated trace (--trace with the philly format)".into(),
            )
            .into());
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
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(UsageError(format!(
                "--from {} must come before --to {}",
                args.from.as_deref().unwrap_or(""),
                args.to.as_deref().unwrap_or("")
            ))
            .into());
        }
    }
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
        let config = load_config(file)?;
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

/// The workload in one paragraph: where it comes from, its size and load, the cluster.
fn describe(
    trace: &Trace,
    cluster: &ClusterSpec,
    engine: &EngineConfig,
    args: &SimulateArgs,
) -> String {
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
    let source = match &args.trace {
        Some(file) => format!("trace {}", file.display()),
        None => format!(
            "synthetic (--seed {}: gangs of 1-16 GPUs, durations heavy-tailed around 20 min, 5 % VMs)",
            args.seed
        ),
    };
    let weights: Vec<String> = trace
        .tenants
        .iter()
        .map(|t| format!("{} {}", t.name, t.weight))
        .collect();
    let weights = match trace.tenants.len() {
        0..=8 => format!(" (weights {})", weights.join(", ")),
        _ => String::new(),
    };
    let nodes: u32 = cluster.node_groups.iter().map(|g| g.count).sum();
    format!(
        "workload: {source}; {} jobs of {} tenants{weights}, arriving over {:.1} h{dates}; \
         offered load {load:.2} on {} GPUs in {nodes} nodes; first {:.1} h not measured \
         (warm-up); a suspended job loses {} s of work.",
        trace.jobs.len(),
        trace.tenants.len(),
        span / 3600.0,
        cluster.capacity(),
        effective_warmup(engine.warmup_seconds, span) / 3600.0,
        engine.restart_cost_seconds,
    )
}

/// Refuses traces the replay cannot answer usefully or in time: no job, no job that fits the
/// cluster, or times too large to simulate.
fn check_trace(trace: &Trace, cluster: &ClusterSpec, file: Option<&Path>) -> anyhow::Result<()> {
    let name = file.map_or("the synthetic workload".to_string(), |f| {
        f.display().to_string()
    });
    if trace.jobs.is_empty() {
        bail!("{name} holds no job (after --from/--to, if given): nothing to simulate");
    }
    if trace.jobs.len() > MAX_TRACE_JOBS {
        bail!(
            "{name} holds {} jobs; the simulator replays at most {MAX_TRACE_JOBS} (use --from/--to \
             for a window)",
            trace.jobs.len()
        );
    }
    let largest = largest_pool(cluster);
    if trace.jobs.iter().all(|j| u64::from(j.gpus) > largest) {
        let smallest = trace.jobs.iter().map(|j| j.gpus).min().unwrap_or(0);
        bail!(
            "every job of {name} asks for more GPUs than any node pool of the cluster holds \
             (the smallest job asks for {smallest}, the largest pool has {largest}): use a larger \
             --gpus or --cluster"
        );
    }
    if let Some(j) = trace.jobs.iter().find(|j| j.duration > MAX_JOB_SECONDS) {
        bail!(
            "{name}: job {} runs {:.3e} s, more than the {} s (one year) the simulator accepts",
            j.name,
            j.duration,
            MAX_JOB_SECONDS
        );
    }
    if let Some(j) = trace.jobs.iter().find(|j| j.arrival > MAX_ARRIVAL_SECONDS) {
        bail!(
            "{name}: job {} arrives {:.3e} s after the first, more than the {} s (ten years) \
             the simulator accepts",
            j.name,
            j.arrival,
            MAX_ARRIVAL_SECONDS
        );
    }
    Ok(())
}

/// GPUs of the largest pool (one GPU model): a gang never spans models.
fn largest_pool(cluster: &ClusterSpec) -> u64 {
    let mut pools: std::collections::BTreeMap<&str, u64> = Default::default();
    for g in &cluster.node_groups {
        *pools.entry(g.model.as_str()).or_default() +=
            u64::from(g.count) * u64::from(g.gpus_per_node);
    }
    pools.into_values().max().unwrap_or(0)
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
    )
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
