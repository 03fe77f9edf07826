//! The `rota` binary as a user runs it: the main job's output, its JSON and HTML forms, and one
//! test per absurd input (each must end within seconds with exit code 2 for a usage error or 1
//! for a runtime error, one clear message on stderr, and never a panic).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tempdir::TempDir;

/// What a finished run left.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args`, killing it (and failing the test) after `limit`.
fn rota_within(limit: Duration, args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rota"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the rota binary starts");
    // Pipes are drained on threads, so a chatty child never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait on rota") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rota {args:?} still ran after {limit:?} (killed): it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A run that must fail with `code` within a few seconds, with one clear message that
/// contains `needle`; returns stderr.
fn refused(code: i32, args: &[&str], needle: &str) -> String {
    let run = rota_within(Duration::from_secs(20), args);
    assert_eq!(run.code, Some(code), "rota {args:?}: {run:?}");
    let err = &run.stderr;
    assert!(!err.contains("panicked"), "rota {args:?} panicked: {err}");
    assert!(
        err.contains(needle),
        "rota {args:?}: expected {needle:?} in {err}"
    );
    // One message, not the same chain twice.
    let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert_eq!(err.matches(first).count(), 1, "repeated message: {err}");
    for rust_type in ["u16", "u32", "u64", "usize", "f64"] {
        assert!(!err.contains(&format!("expected {rust_type}")), "{err}");
    }
    run.stderr
}

fn simulate_ok(args: &[&str]) -> Run {
    let run = rota_within(Duration::from_secs(120), args);
    assert_eq!(run.code, Some(0), "rota {args:?}: {}", run.stderr);
    run
}

// === the main job ===

#[test]
fn the_default_run_fits_100_columns_and_ends_with_a_verdict() {
    let run = simulate_ok(&["simulate"]);
    let out = &run.stdout;
    for line in out.lines() {
        assert!(
            line.chars().count() <= 100,
            "{} columns: {line}",
            line.len()
        );
    }
    assert!(out.starts_with("workload: synthetic"), "{out}");
    let header = out
        .lines()
        .find(|l| l.starts_with("policy"))
        .expect("a table");
    for column in ["jct_h", "unfinished", "unplaceable", "lost_gpu_h"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(out.contains("\njct_h, p95_h: "), "a legend line: {out}");
    let verdict = out
        .find("Verdict: fairest")
        .or_else(|| out.find("Verdict: "));
    let verdict = &out[verdict.expect("a verdict")..];
    assert!(verdict.contains("fastest"), "{verdict}");
    assert!(verdict.contains("rotations"), "{verdict}");
}

#[test]
fn json_output_parses_and_holds_every_policy() {
    let run = simulate_ok(&["simulate", "--jobs", "300", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    let policies: Vec<&str> = (json["policies"].as_array().expect("policies"))
        .iter()
        .filter_map(|p| p["policy"].as_str())
        .collect();
    assert_eq!(policies, ["fifo", "quota", "fair", "las", "rota"]);
    assert!(json["policies"][0]["jobs_unplaceable"].is_u64());
    assert!(json["verdict"][0]
        .as_str()
        .is_some_and(|v| v.starts_with("Verdict")));
}

#[test]
fn the_html_report_holds_the_table_verdict_and_charts_with_axis_titles() {
    let dir = TempDir::new("cli", "html");
    let out = dir.0.to_str().expect("utf-8 temp dir");
    simulate_ok(&["simulate", "--jobs", "400", "--gpus", "16", "--out", out]);
    let html = std::fs::read_to_string(dir.file("report.html")).expect("report.html");
    assert!(
        html.contains("<table>") && html.contains("Verdict"),
        "table and verdict"
    );
    // JCT CDF, share deviation, and one shares chart per policy.
    assert_eq!(html.matches("<svg").count(), 7);
    for title in [
        "JCT (hours, log)",
        "hours since first arrival",
        "share deviation (% of the cluster)",
        "GPUs",
    ] {
        assert!(html.contains(title), "axis title {title:?} missing");
    }
    // Self-contained: nothing to fetch.
    for external in ["<script", " src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "{external} in report.html");
    }
    // One x range for every policy: the same last x tick label in each shares chart.
    let charts: Vec<String> = ["fifo", "rota"]
        .iter()
        .map(|p| std::fs::read_to_string(dir.file(&format!("{p}-shares.svg"))).expect("svg"))
        .collect();
    let ticks = x_ticks(&charts[0]);
    assert!(ticks.len() >= 2, "x tick labels found: {ticks:?}");
    assert_eq!(ticks, x_ticks(&charts[1]));
}

/// The x-axis tick labels of a plotters chart: the numbers drawn in the lowest text row.
fn x_ticks(svg: &str) -> Vec<String> {
    let mut rows: Vec<(i64, String)> = Vec::new();
    for part in svg.split("<text").skip(1) {
        let y = attr(part, "y=\"").unwrap_or(0.0) as i64;
        let text = part
            .split('>')
            .nth(1)
            .unwrap_or("")
            .split('<')
            .next()
            .unwrap_or("");
        let text = text.trim();
        if text.parse::<f64>().is_ok() {
            rows.push((y, text.to_string()));
        }
    }
    let lowest = rows.iter().map(|r| r.0).max().unwrap_or(0);
    rows.into_iter()
        .filter(|r| r.0 == lowest)
        .map(|r| r.1)
        .collect()
}

fn attr(text: &str, key: &str) -> Option<f64> {
    let start = text.find(key)? + key.len();
    text[start..].split('"').next()?.parse().ok()
}

// === absurd inputs: simulate ===

#[test]
fn a_load_of_zero_is_refused() {
    refused(2, &["simulate", "--load", "0"], "--load");
}

#[test]
fn a_load_of_nan_is_refused() {
    refused(2, &["simulate", "--load", "nan"], "--load");
}

#[test]
fn a_huge_duration_is_refused() {
    refused(
        2,
        &["simulate", "--warmup-hours", "1e300"],
        "--warmup-hours",
    );
    refused(
        2,
        &["simulate", "--restart-cost-seconds", "1e300"],
        "--restart-cost-seconds",
    );
}

#[test]
fn a_billion_jobs_is_refused() {
    refused(2, &["simulate", "--jobs", "1000000000"], "--jobs");
}

#[test]
fn the_largest_u64_as_jobs_is_refused() {
    refused(2, &["simulate", "--jobs", "18446744073709551615"], "--jobs");
}

#[test]
fn a_huge_cluster_is_refused() {
    refused(2, &["simulate", "--gpus", "4000000000"], "--gpus");
    let dir = TempDir::new("cli", "huge-cluster");
    let file = dir.file("cluster.yaml");
    std::fs::write(
        &file,
        "nodeGroups:\n  - {count: 4000000000, gpusPerNode: 8}\n",
    )
    .unwrap();
    refused(1, &["simulate", "--cluster", path(&file)], "at most");
}

#[test]
fn a_negative_restart_cost_is_refused() {
    refused(
        2,
        &["simulate", "--restart-cost-seconds", "-1"],
        "at least 0",
    );
}

#[test]
fn unordered_las_thresholds_are_refused() {
    refused(
        2,
        &["simulate", "--las-thresholds", "7200,3250"],
        "must increase",
    );
}

#[test]
fn from_after_to_is_refused() {
    let dir = TempDir::new("cli", "from-to");
    let trace = dir.file("t.csv");
    std::fs::write(&trace, PHILLY_TWO_JOBS).unwrap();
    let args = ["simulate", "--trace", path(&trace), "--from", "2017-10-10"];
    refused(
        2,
        &[&args[..], &["--to", "2017-10-01"]].concat(),
        "must come before --to",
    );
}

#[test]
fn an_empty_trace_is_refused() {
    let dir = TempDir::new("cli", "empty");
    let trace = dir.file("empty.csv");
    std::fs::write(&trace, "timestamp,duration,num_gpus,gpu_time,cluster\n").unwrap();
    refused(1, &["simulate", "--trace", path(&trace)], "holds no job");
}

#[test]
fn a_trace_whose_jobs_all_exceed_the_cluster_is_refused() {
    let dir = TempDir::new("cli", "too-big");
    let trace = dir.file("big.csv");
    std::fs::write(&trace, PHILLY_TWO_JOBS).unwrap();
    let args = ["simulate", "--trace", path(&trace), "--gpus", "8"];
    refused(1, &args, "more GPUs than any node pool");
}

/// Two dated jobs of 16 and 32 GPUs.
const PHILLY_TWO_JOBS: &str = "timestamp,duration,num_gpus,gpu_time,cluster\n\
    2017-10-09 07:01:55,66.0,16,1056.0,a\n\
    2017-10-09 07:02:55,60.0,32,1920.0,b\n";

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn the_real_trace_runs_in_a_window_when_present() {
    let trace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/traces/philly-vc/philly-sep-oct-2017.csv");
    if !trace.is_file() {
        eprintln!(
            "skipped: {} is absent (see README, shared/)",
            trace.display()
        );
        return;
    }
    let args = ["simulate", "--trace", path(&trace), "--from", "2017-10-01"];
    let run = simulate_ok(&[&args[..], &["--to", "2017-10-02", "--gpus", "512"]].concat());
    assert!(run.stdout.contains("Verdict"), "{}", run.stdout);
}

// === absurd inputs: config and serving ===

#[test]
fn config_check_reports_every_problem_on_stderr() {
    let dir = TempDir::new("cli", "config");
    let file = dir.file("bad.yaml");
    let yaml = "kind: Nope\nusage:\n  halfLifeSeconds: 0\ntelemetry:\n  agentPort: 70000\n  \
                wieght: 3\nquantum:\n  jobSeconds: -5\n";
    std::fs::write(&file, yaml).unwrap();
    let err = refused(1, &["config", "check", path(&file)], "5 problem");
    for field in [
        "kind:",
        "usage.halfLifeSeconds:",
        "telemetry.agentPort:",
        "telemetry.wieght:",
        "quantum.jobSeconds:",
    ] {
        assert!(err.contains(field), "{field} missing in {err}");
    }
    assert!(err.contains("from 0 to 65535"), "{err}");
}

#[test]
fn config_check_prints_only_the_config_on_stdout() {
    let dir = TempDir::new("cli", "config-ok");
    let file = dir.file("ok.yaml");
    std::fs::write(&file, "tenantLabel: team\n").unwrap();
    let run = rota_within(Duration::from_secs(20), &["config", "check", path(&file)]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("config OK"), "{run:?}");
    rota::config::parse(&run.stdout).expect("stdout is exactly a valid config");
}

#[test]
fn serving_flags_that_cannot_work_are_refused() {
    refused(
        2,
        &["extender", "--max-body-bytes", "0"],
        "--max-body-bytes",
    );
    refused(
        2,
        &["extender", "--max-connections", "0"],
        "--max-connections",
    );
    refused(2, &["extender", "--listen", "nowhere"], "HOST:PORT");
    refused(
        2,
        &["agent", "--interval", "18446744073709551615"],
        "--interval",
    );
}

#[test]
fn a_taken_port_is_one_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = refused(
        1,
        &["extender", "--cluster", "none", "--listen", &addr],
        "cannot listen",
    );
    assert_eq!(err.matches("ERROR").count(), 0, "{err}");
}

#[test]
fn a_host_name_listen_address_is_resolved() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // The port is taken: the name resolved, the bind failed, so the address was accepted.
    let listen = format!("localhost:{port}");
    refused(
        1,
        &["extender", "--cluster", "none", "--listen", &listen],
        "cannot listen",
    );
}

#[test]
fn loadtest_against_a_silent_server_ends_within_its_timeout() {
    // Accepts connections (the kernel does, from the backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let err = refused(
        1,
        &[
            "loadtest",
            "--target",
            &target,
            "--request-timeout",
            "1s",
            "--nodes",
            "10",
        ],
        "--request-timeout",
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    drop(silent);
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rota"))
        .args(["simulate", "--jobs", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the rota binary starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("workload:"), "{first}");
    // The reader is gone (as `| head -1` leaves it): the next write meets a closed pipe.
    let output = child.wait_with_output().expect("rota ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}
