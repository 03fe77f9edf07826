//! The load test's result: per-verb counts, throughput and latency quantiles, the body sizes
//! sent, and hints about the client's own CPU use, as a serialisable [`Report`] and a text
//! table.
//!
//! Invariants: figures come only from the measured window (after `--warmup`); throughput is
//! recorded requests (2xx and errors) over the window; the error rate is errors over recorded
//! requests (0 when none was recorded).
//! Must not: decide the exit status (that is `run`'s job) or read the network.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::bodies::Bodies;
use super::client::{RunStats, VerbStats};
use super::stats::{Histogram, Quantiles};
use super::{LoadtestOptions, Verb};

/// What the generator measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The extender's URL.
    pub target: String,
    /// Candidate nodes per request.
    pub nodes: u32,
    /// Connections (one request in flight each).
    pub concurrency: u32,
    /// Length of the measured window, seconds (after the warm-up period).
    pub measured_seconds: f64,
    /// Load sent before measuring, seconds.
    pub warmup_seconds: f64,
    /// The full-Node filter request, unless `--no-warmup`.
    pub warmup_request: Option<WarmupReport>,
    /// Sizes of the bodies sent.
    pub bodies: BodySizes,
    /// One entry per verb, in `--verbs` order.
    pub verbs: Vec<VerbReport>,
    /// All verbs together.
    pub total: TotalReport,
    /// The client's own CPU use, to judge whether it was the bottleneck.
    pub client: ClientHints,
}

/// The warm-up filter request (all Nodes in full).
#[derive(Clone, Debug, Serialize)]
pub struct WarmupReport {
    /// HTTP status of the answer.
    pub status: u16,
    /// Round trip, milliseconds.
    pub latency_ms: f64,
    /// Request body bytes.
    pub sent_bytes: usize,
    /// Answer body bytes.
    pub received_bytes: usize,
    /// Nodes the answer lists as passing.
    pub passed_nodes: usize,
}

/// Sizes of the request bodies.
#[derive(Clone, Debug, Serialize)]
pub struct BodySizes {
    /// The warm-up request with every Node in full.
    pub warmup_bytes: usize,
    /// Smallest measured request (names only).
    pub request_min_bytes: usize,
    /// Largest measured request.
    pub request_max_bytes: usize,
    /// Distinct pods the measured requests cycle through.
    pub pod_variants: usize,
}

/// One verb's figures.
#[derive(Clone, Debug, Serialize)]
pub struct VerbReport {
    /// The verb.
    pub verb: Verb,
    /// Requests recorded (answered 2xx plus errors).
    pub requests: u64,
    /// Errors of every kind.
    pub errors: u64,
    /// Errors by label: HTTP status, `connect`, `transport` or `timeout`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Recorded requests per second of the measured window.
    pub throughput_per_second: f64,
    /// Latency of the 2xx answers; `None` when there was none.
    pub latency: Option<Quantiles>,
    /// Mean answer body size, bytes.
    pub mean_answer_bytes: f64,
}

/// All verbs together.
#[derive(Clone, Debug, Serialize)]
pub struct TotalReport {
    /// Requests recorded.
    pub requests: u64,
    /// Errors of every kind.
    pub errors: u64,
    /// `errors / requests` (0 when nothing was recorded).
    pub error_rate: f64,
    /// Requests per second of the measured window.
    pub throughput_per_second: f64,
    /// Latency over every verb's 2xx answers.
    pub latency: Option<Quantiles>,
}

/// Hints about the load generator's own cost.
#[derive(Clone, Debug, Serialize)]
pub struct ClientHints {
    /// CPU seconds (user + system) this process used during the load, when the OS says
    /// (Linux `/proc/self/stat`).
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds` over the load's wall time: 1.0 is one core busy.
    pub cores_busy: Option<f64>,
    /// Cores this machine offers (shared with the extender when it runs here too).
    pub cores_available: usize,
}

/// What [`Report::build`] needs.
pub(super) struct Inputs<'a> {
    pub options: &'a LoadtestOptions,
    pub bodies: &'a Bodies,
    pub warmup: Option<WarmupReport>,
    pub stats: RunStats,
    pub measured: Duration,
    pub client: ClientHints,
}

impl Report {
    pub(super) fn build(inputs: Inputs<'_>) -> Report {
        let Inputs {
            options,
            bodies,
            warmup,
            stats,
            measured,
            client,
        } = inputs;
        let seconds = measured.as_secs_f64();
        let rate = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        let empty = VerbStats::default();
        // A verb named twice in --verbs (a weighted mix) is reported once.
        let mut order: Vec<Verb> = Vec::with_capacity(options.verbs.len());
        for &verb in &options.verbs {
            if !order.contains(&verb) {
                order.push(verb);
            }
        }
        let verbs: Vec<VerbReport> = order
            .into_iter()
            .map(|verb| verb_report(verb, stats.get(&verb).unwrap_or(&empty), rate))
            .collect();
        let mut all = Histogram::new();
        stats.values().for_each(|s| all.merge(&s.latency));
        let requests: u64 = verbs.iter().map(|v| v.requests).sum();
        let errors: u64 = verbs.iter().map(|v| v.errors).sum();
        let (request_min_bytes, request_max_bytes) = bodies.request_size_range();
        Report {
            target: options.target.clone(),
            nodes: options.nodes,
            concurrency: options.concurrency,
            measured_seconds: seconds,
            warmup_seconds: options.warmup.as_secs_f64(),
            warmup_request: warmup,
            bodies: BodySizes {
                warmup_bytes: bodies.warmup.len(),
                request_min_bytes,
                request_max_bytes,
                pod_variants: bodies.requests.len(),
            },
            verbs,
            total: TotalReport {
                requests,
                errors,
                error_rate: if requests == 0 {
                    0.0
                } else {
                    errors as f64 / requests as f64
                },
                throughput_per_second: rate(requests),
                latency: all.summary(),
            },
            client,
        }
    }

    /// The report as a table for people.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rota loadtest → {}: {} nodes per request (names only), {} connection{}, {:.1} s measured after {:.1} s warm-up",
            self.target,
            self.nodes,
            self.concurrency,
            if self.concurrency == 1 { "" } else { "s" },
            self.measured_seconds,
            self.warmup_seconds
        );
        match &self.warmup_request {
            Some(w) => {
                let _ = writeln!(
                    out,
                    "warm-up: filter with {} full Nodes ({}) → {} in {:.0} ms, {} nodes passed",
                    self.nodes,
                    size(w.sent_bytes),
                    w.status,
                    w.latency_ms,
                    w.passed_nodes
                );
            }
            None => out.push_str("warm-up: skipped (--no-warmup)\n"),
        }
        let b = &self.bodies;
        let _ = writeln!(
            out,
            "requests: {}–{} per body, {} pods cycled\n",
            size(b.request_min_bytes),
            size(b.request_max_bytes),
            b.pod_variants
        );
        let _ = writeln!(
            out,
            "{:<11}{:>9}{:>8}{:>10}{:>9}{:>9}{:>9}{:>9}{:>9}  (latency ms)",
            "verb", "requests", "errors", "req/s", "p50", "p90", "p99", "p99.9", "max"
        );
        for v in &self.verbs {
            let label = v.verb.as_str();
            row(
                &mut out,
                label,
                v.requests,
                v.errors,
                v.throughput_per_second,
                v.latency,
            );
        }
        let t = &self.total;
        row(
            &mut out,
            "total",
            t.requests,
            t.errors,
            t.throughput_per_second,
            t.latency,
        );
        for v in self.verbs.iter().filter(|v| v.errors > 0) {
            let kinds: Vec<String> = v
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect();
            let _ = writeln!(out, "errors ({}): {}", v.verb.as_str(), kinds.join(", "));
        }
        let _ = writeln!(out, "error rate: {:.3} %", t.error_rate * 100.0);
        let c = &self.client;
        if let (Some(cpu), Some(busy)) = (c.cpu_seconds, c.cores_busy) {
            let _ = writeln!(
                out,
                "client: {cpu:.1} CPU-s, {busy:.2} of {} cores busy (the extender shares them when it runs on this machine)",
                c.cores_available
            );
        }
        out
    }
}

fn verb_report(verb: Verb, s: &VerbStats, rate: impl Fn(u64) -> f64) -> VerbReport {
    let requests = s.requests();
    VerbReport {
        verb,
        requests,
        errors: s.error_count(),
        errors_by_kind: s.errors.clone(),
        throughput_per_second: rate(requests),
        latency: s.latency.summary(),
        mean_answer_bytes: if requests == 0 {
            0.0
        } else {
            s.received_bytes as f64 / requests as f64
        },
    }
}

fn row(out: &mut String, label: &str, requests: u64, errors: u64, rps: f64, q: Option<Quantiles>) {
    let _ = write!(out, "{label:<11}{requests:>9}{errors:>8}{rps:>10.1}");
    match q {
        Some(q) => {
            let _ = writeln!(
                out,
                "{:>9.3}{:>9.3}{:>9.3}{:>9.3}{:>9.3}",
                q.p50_ms, q.p90_ms, q.p99_ms, q.p999_ms, q.max_ms
            );
        }
        None => out.push_str("        –        –        –        –        –\n"),
    }
}

/// A byte count for people (kB and MB are 1,000-based, as network sizes are).
fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (Linux; `None`
/// elsewhere). Clock ticks are read as 1/100 s: Linux fixes `USER_HZ` at 100 for userspace.
pub(super) fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name (which may contain spaces): state is
    // field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The client hints for a load that ran `wall` since `before` was read.
pub(super) fn cpu_hints(before: Option<f64>, wall: Duration) -> ClientHints {
    let cpu_seconds = before
        .zip(process_cpu_seconds())
        .map(|(b, a)| (a - b).max(0.0));
    let wall = wall.as_secs_f64();
    ClientHints {
        cpu_seconds,
        cores_busy: cpu_seconds.filter(|_| wall > 0.0).map(|c| c / wall),
        cores_available: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ok_micros: &[u64], errors: &[(&str, u64)]) -> VerbStats {
        let mut s = VerbStats::default();
        for &us in ok_micros {
            s.latency.record(Duration::from_micros(us));
        }
        for &(k, n) in errors {
            s.errors.insert(k.to_string(), n);
        }
        s.received_bytes = 100 * (ok_micros.len() as u64);
        s
    }

    #[test]
    fn report_counts_rates_and_error_share() {
        let options = LoadtestOptions {
            nodes: 3,
            ..LoadtestOptions::default()
        };
        let bodies = Bodies::build(3, 1).unwrap();
        let mut run = RunStats::new();
        run.insert(Verb::Filter, stats(&[1_000, 2_000, 3_000], &[("500", 1)]));
        run.insert(Verb::Prioritize, stats(&[4_000; 4], &[]));
        let report = Report::build(Inputs {
            options: &options,
            bodies: &bodies,
            warmup: None,
            stats: run,
            measured: Duration::from_secs(2),
            client: cpu_hints(process_cpu_seconds(), Duration::from_secs(1)),
        });
        assert_eq!(report.verbs.len(), 2);
        assert_eq!(report.verbs[0].verb, Verb::Filter);
        assert_eq!(report.verbs[0].requests, 4);
        assert_eq!(report.verbs[0].errors_by_kind["500"], 1);
        assert_eq!(report.verbs[0].throughput_per_second, 2.0);
        assert_eq!(report.total.requests, 8);
        assert_eq!(report.total.errors, 1);
        assert_eq!(report.total.error_rate, 1.0 / 8.0);
        assert_eq!(report.total.latency.unwrap().max_ms, 4.0);
        assert_eq!(report.bodies.pod_variants, bodies.requests.len());
        let text = report.render_text();
        assert!(text.contains("errors (filter): 500 ×1"), "{text}");
        assert!(text.contains("error rate: 12.500 %"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["verbs"][1]["verb"], "prioritize");
    }

    #[test]
    fn cpu_time_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let before = process_cpu_seconds().unwrap();
            // Burn a little CPU so the counter can move; it never goes backwards.
            let mut x = 0u64;
            for i in 0..5_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            assert!(process_cpu_seconds().unwrap() >= before);
        }
        assert!(cpu_hints(None, Duration::from_secs(1))
            .cpu_seconds
            .is_none());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(98_400), "98.4 kB");
        assert_eq!(size(12_300_000), "12.3 MB");
    }
}
