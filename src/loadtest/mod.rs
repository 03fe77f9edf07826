//! `rota loadtest`: drives real HTTP `filter` and `prioritize` requests at a running extender
//! and reports throughput and latency quantiles per verb.
//!
//! ```text
//!   Bodies::build (once) ─▶ preflight connect ─▶ warm-up filter (full Nodes; teaches a
//!   --cluster none extender) ─▶ N workers, one keep-alive connection each ─▶ merge ─▶ Report
//!                                              └ --warmup period sent, not recorded
//! ```
//!
//! Invariants: bodies are built before the clock starts and never per request; every failure
//! after the warm-up is counted in the report, never raised; the run fails (non-zero exit)
//! only when it could not start, measured nothing, or more than 1 % of the measured requests
//! failed.
//! Must not: touch the cluster, or run against anything but the given target.

mod bodies;
mod client;
mod report;
mod stats;

pub use bodies::{node_names, Bodies, SplitMix64, POD_VARIANTS};
pub use client::{Target, VerbStats};
pub use report::{BodySizes, ClientHints, Report, TotalReport, VerbReport, WarmupReport};
pub use stats::{Histogram, Quantiles};

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::messages::print_stdout;
use client::{connect, exchange, run_worker, Failure, RunStats, WorkerPlan};

/// The extender's default listen address, as `rota extender` serves it.
pub const DEFAULT_TARGET: &str = "http://127.0.0.1:8888";

/// Largest failed share of measured requests for a passing run (1 %).
pub const MAX_ERROR_RATE: f64 = 0.01;

/// Most candidate nodes per request: the warm-up body holds every Node in full.
const MAX_NODES: i64 = 100_000;
/// Longest duration a flag takes: a week (and no clock overflow).
const MAX_DURATION: Duration = Duration::from_secs(7 * 86_400);

/// An extender verb the generator can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// `POST …/filter`.
    Filter,
    /// `POST …/prioritize`.
    Prioritize,
}

impl Verb {
    /// The path segment and report label.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Filter => "filter",
            Verb::Prioritize => "prioritize",
        }
    }
}

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Text,
    /// One JSON object (the [`Report`] fields), for scripts.
    Json,
}

/// Flags of `rota loadtest`.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct LoadtestOptions {
    /// Base URL of the extender (`http://HOST:PORT`, optionally with the scheduler's urlPrefix).
    #[arg(long, default_value = DEFAULT_TARGET)]
    pub target: String,
    /// Candidate nodes per request (all of them, names only, as `nodeCacheCapable: true`).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=MAX_NODES))]
    pub nodes: u32,
    /// Connections, each with one request in flight and kept alive (kube-scheduler itself
    /// calls an extender from one goroutine per scheduling cycle).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// How long to measure, after `--warmup`: `20s`, `2m`, `500ms` or plain seconds.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Verbs to send, comma-separated; each pod is sent to each verb in turn, as the scheduler
    /// does.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "filter,prioritize"
    )]
    pub verbs: Vec<Verb>,
    /// Load before measuring starts (connections warm, caches filled); not in the figures.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Skip the warm-up filter request that sends every Node in full. Needed only by an
    /// extender without an API server (`--cluster none`); one that watches a cluster already
    /// knows its nodes.
    #[arg(long)]
    pub no_warmup: bool,
    /// Seed of the generated nodes and pods (the same seed sends the same bytes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Limit for connecting and for one request, the warm-up's included; a slower measured
    /// answer counts as a `timeout` error, a slower warm-up fails the run.
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    pub request_timeout: Duration,
}

impl Default for LoadtestOptions {
    /// The same values as the command-line defaults.
    fn default() -> Self {
        Self {
            target: DEFAULT_TARGET.to_string(),
            nodes: 5_000,
            concurrency: 8,
            duration: Duration::from_secs(20),
            verbs: vec![Verb::Filter, Verb::Prioritize],
            warmup: Duration::from_secs(2),
            no_warmup: false,
            seed: 1,
            output: OutputFormat::Text,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a load test could not run. Failures of individual requests are not errors: they are
/// counted in the [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--target` is not a usable `http://` URL.
    #[error("invalid --target {target:?}: {reason}")]
    Target {
        /// The URL given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The flags make no load (no verbs).
    #[error("invalid options: {0}")]
    Options(String),
    /// The request bodies could not be encoded (a bug).
    #[error("cannot encode the request bodies: {0}")]
    Bodies(#[source] serde_json::Error),
    /// The extender could not be reached before the run started.
    #[error("cannot reach the extender at {target}: {reason}")]
    Connect {
        /// The URL.
        target: String,
        /// The connect or handshake failure.
        reason: String,
    },
    /// The warm-up filter request failed, so the measured requests would not be judged
    /// against known nodes.
    #[error("the warm-up filter request failed: {0}")]
    Warmup(String),
    /// A worker task ended abnormally (a bug).
    #[error("a load worker failed: {0}")]
    Worker(#[source] tokio::task::JoinError),
}

impl Error {
    /// A short, bounded label.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Target { .. } => "target",
            Error::Options(_) => "options",
            Error::Bodies(_) => "bodies",
            Error::Connect { .. } => "connect",
            Error::Warmup(_) => "warmup",
            Error::Worker(_) => "worker",
        }
    }

    /// Whether trying again may help (the extender may not be up yet).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Warmup(_))
    }
}

/// `rota loadtest`: runs the load, prints the report, and fails when more than
/// [`MAX_ERROR_RATE`] of the measured requests failed or none was measured.
pub async fn run(options: LoadtestOptions) -> anyhow::Result<()> {
    let report = load_test(&options).await?;
    match options.output {
        OutputFormat::Text => print_stdout(&report.render_text())?,
        OutputFormat::Json => print_stdout(&(serde_json::to_string_pretty(&report)? + "\n"))?,
    }
    let total = &report.total;
    anyhow::ensure!(total.requests > 0, "no request was measured");
    anyhow::ensure!(
        total.error_rate <= MAX_ERROR_RATE,
        "{} of {} measured requests failed ({:.2} %, limit {:.0} %)",
        total.errors,
        total.requests,
        total.error_rate * 100.0,
        MAX_ERROR_RATE * 100.0
    );
    Ok(())
}

/// Runs a load test as `options` say and returns its report.
pub async fn load_test(options: &LoadtestOptions) -> Result<Report, Error> {
    if options.verbs.is_empty() {
        return Err(Error::Options("--verbs names no verb".into()));
    }
    let target = Arc::new(Target::parse(&options.target)?);
    let bodies = Bodies::build(options.nodes as usize, options.seed).map_err(Error::Bodies)?;
    let warmup = if options.no_warmup {
        preflight(options, &target).await?;
        None
    } else {
        Some(warm_up(options, &target, &bodies).await?)
    };

    let cpu_before = report::process_cpu_seconds();
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let requests = Arc::new(bodies.requests.clone());
    let workers: Vec<_> = (0..options.concurrency as usize)
        .map(|w| {
            tokio::spawn(run_worker(WorkerPlan {
                target: target.clone(),
                verbs: options.verbs.clone(),
                bodies: requests.clone(),
                // Spread workers over the pod cycle (each pod once per verb).
                offset: w * options.verbs.len() * 5,
                measure_from,
                until: measure_from + options.duration,
                request_timeout: options.request_timeout,
            }))
        })
        .collect();
    let mut merged: RunStats = RunStats::new();
    for worker in workers {
        for (verb, stats) in worker.await.map_err(Error::Worker)? {
            merged.entry(verb).or_default().merge(&stats);
        }
    }
    let end = Instant::now();
    let cpu = report::cpu_hints(cpu_before, end.saturating_duration_since(start));
    Ok(Report::build(report::Inputs {
        options,
        bodies: &bodies,
        warmup,
        stats: merged,
        measured: end.saturating_duration_since(measure_from),
        client: cpu,
    }))
}

/// Checks that the target accepts connections (with `--no-warmup`, so a wrong port fails
/// loudly instead of as a report full of connect errors).
async fn preflight(options: &LoadtestOptions, target: &Target) -> Result<(), Error> {
    connect(target, options.request_timeout)
        .await
        .map(drop)
        .map_err(|failure| Error::Connect {
            target: options.target.clone(),
            reason: failure.to_string(),
        })
}

/// Sends the full-Node filter request and checks its answer.
async fn warm_up(
    options: &LoadtestOptions,
    target: &Target,
    bodies: &Bodies,
) -> Result<WarmupReport, Error> {
    let timeout = options.request_timeout;
    let mut conn = connect(target, timeout)
        .await
        .map_err(|failure| Error::Connect {
            target: options.target.clone(),
            reason: failure.to_string(),
        })?;
    let started = Instant::now();
    let path = target.path(Verb::Filter);
    let answer = exchange(
        &mut conn,
        target,
        &path,
        bodies.warmup.clone(),
        timeout,
        true,
    )
    .await
    .map_err(|failure| match failure {
        Failure::Timeout => Error::Warmup(format!(
            "no answer within {} s (--request-timeout)",
            timeout.as_secs_f64()
        )),
        other => Error::Warmup(other.to_string()),
    })?;
    let elapsed = started.elapsed();
    let body = answer.body.unwrap_or_default();
    if !answer.status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.chars().take(300).collect();
        return Err(Error::Warmup(format!("{} {text}", answer.status)));
    }
    let passed = serde_json::from_slice::<PassedNames>(&body)
        .map_err(|e| Error::Warmup(format!("the answer is not a filter result: {e}")))?
        .node_names
        .map_or(0, |names| names.len());
    Ok(WarmupReport {
        status: answer.status.as_u16(),
        latency_ms: elapsed.as_secs_f64() * 1e3,
        sent_bytes: bodies.warmup.len(),
        received_bytes: answer.body_bytes,
        passed_nodes: passed,
    })
}

/// Only the passed names of a filter answer (the echoed Nodes are skipped unparsed).
#[derive(Deserialize)]
struct PassedNames {
    #[serde(rename = "NodeNames")]
    node_names: Option<Vec<serde::de::IgnoredAny>>,
}

/// Parses `20s`, `2m`, `1h`, `500ms`, `1.5s` or plain seconds (`20`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 20s, 2m, 500ms or 20)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))?;
    if duration > MAX_DURATION {
        return Err(format!("{text:?} is longer than the week a run may take"));
    }
    Ok(duration)
}

/// A [`parse_duration`] above zero.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("{text:?}: a timeout must be above 0")),
        duration => Ok(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: LoadtestOptions,
    }

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("20s"), Duration::from_secs(20));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(" 7 "), Duration::from_secs(7));
        assert_eq!(ok("0"), Duration::ZERO);
        for bad in [
            "",
            "s",
            "-1s",
            "20 parsecs",
            "1.2.3s",
            "1e999",
            "1e300",
            "8d",
            "200h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_matches_the_command_line_defaults() {
        let parsed = Cli::try_parse_from(["rota"]).unwrap().options;
        assert_eq!(parsed, LoadtestOptions::default());
    }

    #[test]
    fn flags_parse_and_bad_ones_are_refused() {
        let cli = Cli::try_parse_from([
            "rota",
            "--verbs",
            "prioritize",
            "--duration",
            "2m",
            "--concurrency",
            "4",
            "--no-warmup",
            "--output",
            "json",
        ])
        .unwrap()
        .options;
        assert_eq!(cli.verbs, [Verb::Prioritize]);
        assert_eq!(cli.duration, Duration::from_secs(120));
        assert_eq!(cli.concurrency, 4);
        assert!(cli.no_warmup);
        assert_eq!(cli.output, OutputFormat::Json);
        for bad in [
            &["rota", "--concurrency", "0"][..],
            &["rota", "--nodes", "0"],
            &["rota", "--verbs", "bind"],
            &["rota", "--duration", "soon"],
            &["rota", "--request-timeout", "0"],
            &["rota", "--nodes", "4000000000"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
