//! Workload traces: the job list a simulation replays, and the CSV loaders for the public
//! traces (Microsoft Philly as extracted by Pollux, and the Tiresias 60-job trace).
//!
//! Invariants of a [`Trace`]: jobs are sorted by arrival (ties keep file order), so a job's index
//! is also its FIFO rank; arrivals are seconds since the first arrival (`origin_unix` says when
//! that was, for dated traces); every job asks for ≥ 1 GPU and has a finite duration ≥ 0; every
//! `tenant` indexes `tenants`. Loaders never panic on bad input: every problem is a
//! [`LoadError`] naming the file, line and column. CSV is parsed by hand (no quoting: these
//! traces have none, and a quote is reported rather than misread).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::core::WorkloadKind;

/// Everything that can go wrong reading a trace, workload or cluster file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A malformed value at a known position (1-based line and column).
    #[error("{}:{line}:{column}: {reason}", file.display())]
    Format {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column (characters).
        column: u64,
        /// What is wrong.
        reason: String,
    },
    /// A problem with the file as a whole, or at a path inside a YAML document.
    #[error("{}: {reason}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong (with the YAML path where there is one).
        reason: String,
    },
}

impl LoadError {
    /// Short stable name for messages and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::Io { .. } => "io",
            LoadError::Format { .. } => "format",
            LoadError::Invalid { .. } => "invalid",
        }
    }
}

/// `Result` with [`LoadError`].
pub type Result<T, E = LoadError> = std::result::Result<T, E>;

/// A tenant of a trace and its weight (not normalised; policies normalise over all tenants).
#[derive(Clone, Debug, PartialEq)]
pub struct TenantSpec {
    /// Tenant name.
    pub name: String,
    /// Relative weight (> 0).
    pub weight: f64,
}

/// One job (or VM) of a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// Name for reports (trace line or job id).
    pub name: String,
    /// Index into [`Trace::tenants`].
    pub tenant: usize,
    /// GPUs needed, all at once (a gang); ≥ 1.
    pub gpus: u32,
    /// Seconds the job runs when it runs alone on its GPUs (d_j).
    pub duration: f64,
    /// Submission, in seconds since the trace origin.
    pub arrival: f64,
    /// Scheduling priority (higher first; 0 when the trace has none).
    pub priority: i32,
    /// Batch Job or long-running VM.
    pub kind: WorkloadKind,
}

/// Checks a loader made on the rows it read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadChecks {
    /// Data rows read.
    pub rows: usize,
    /// Lines (1-based) where `gpu_time` differs from `duration × num_gpus` (Philly only).
    pub gpu_time_mismatches: Vec<u64>,
}

/// A workload to replay.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// Tenants, in a stable order (sorted by name for CSV traces).
    pub tenants: Vec<TenantSpec>,
    /// Jobs sorted by arrival.
    pub jobs: Vec<JobSpec>,
    /// Unix time of arrival 0, for dated traces.
    pub origin_unix: Option<i64>,
    /// What the loader checked.
    pub checks: LoadChecks,
}

impl Trace {
    /// Builds a trace from unsorted jobs with absolute arrivals: sorts them (stable) and shifts
    /// arrivals so that the first is 0. `origin_unix` is the Unix time of absolute arrival 0.
    pub fn from_unsorted(
        tenants: Vec<TenantSpec>,
        mut jobs: Vec<JobSpec>,
        origin_unix: Option<i64>,
    ) -> Self {
        jobs.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
        let first = jobs.first().map_or(0.0, |j| j.arrival);
        for j in &mut jobs {
            j.arrival -= first;
        }
        Trace {
            tenants,
            jobs,
            origin_unix: origin_unix.map(|o| o + first as i64),
            checks: LoadChecks::default(),
        }
    }

    /// Keeps the jobs submitted in `[from, to)` (Unix seconds; `None` is unbounded) and moves
    /// the origin to the first kept job. Returns `None` when the trace has no calendar dates.
    pub fn window(&self, from: Option<i64>, to: Option<i64>) -> Option<Trace> {
        let origin = self.origin_unix?;
        let keep = |j: &&JobSpec| {
            let t = origin as f64 + j.arrival;
            from.is_none_or(|f| t >= f as f64) && to.is_none_or(|e| t < e as f64)
        };
        let jobs: Vec<JobSpec> = self.jobs.iter().filter(keep).cloned().collect();
        let mut out = Trace::from_unsorted(self.tenants.clone(), jobs, Some(origin));
        out.checks = self.checks.clone();
        Some(out)
    }

    /// Total GPU-seconds the trace asks for (Σ g_j · d_j).
    pub fn gpu_seconds(&self) -> f64 {
        self.jobs.iter().map(|j| j.gpus as f64 * j.duration).sum()
    }

    /// Jobs per tenant name.
    pub fn jobs_per_tenant(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for j in &self.jobs {
            *out.entry(self.tenants[j.tenant].name.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Jobs per gang size.
    pub fn jobs_per_gang_size(&self) -> BTreeMap<u32, usize> {
        let mut out = BTreeMap::new();
        for j in &self.jobs {
            *out.entry(j.gpus).or_insert(0) += 1;
        }
        out
    }
}

// === CSV ===

/// One data row: its 1-based line number and its fields with their 1-based columns.
struct Row<'a> {
    line: u64,
    fields: Vec<(u64, &'a str)>,
}

/// Splits CSV text into rows after checking the header. Blank lines are skipped; a trailing
/// newline is optional.
fn csv_rows<'a>(text: &'a str, file: &Path, header: &[&str]) -> Result<Vec<Row<'a>>> {
    let mut rows = Vec::new();
    let mut seen_header = false;
    for (i, raw) in text.split('\n').enumerate() {
        let line = i as u64 + 1;
        let content = raw.strip_suffix('\r').unwrap_or(raw);
        if content.trim().is_empty() {
            continue;
        }
        let fields = split_fields(content, line, file)?;
        if !seen_header {
            seen_header = true;
            let names: Vec<&str> = fields.iter().map(|(_, f)| f.trim()).collect();
            if names != header {
                return Err(format_error(
                    file,
                    line,
                    1,
                    format!("expected header `{}`, found `{content}`", header.join(",")),
                ));
            }
            continue;
        }
        if fields.len() != header.len() {
            return Err(format_error(
                file,
                line,
                1,
                format!("expected {} fields, found {}", header.len(), fields.len()),
            ));
        }
        rows.push(Row { line, fields });
    }
    if !seen_header {
        return Err(LoadError::Invalid {
            file: file.to_path_buf(),
            reason: "empty file: no header".into(),
        });
    }
    Ok(rows)
}

fn split_fields<'a>(content: &'a str, line: u64, file: &Path) -> Result<Vec<(u64, &'a str)>> {
    if let Some(pos) = content.find('"') {
        let column = content[..pos].chars().count() as u64 + 1;
        return Err(format_error(
            file,
            line,
            column,
            "quoted CSV fields are not supported".into(),
        ));
    }
    let mut out = Vec::new();
    let mut column = 1u64;
    for field in content.split(',') {
        out.push((column, field));
        column += field.chars().count() as u64 + 1;
    }
    Ok(out)
}

fn format_error(file: &Path, line: u64, column: u64, reason: String) -> LoadError {
    LoadError::Format {
        file: file.to_path_buf(),
        line,
        column,
        reason,
    }
}

impl Row<'_> {
    fn text(&self, i: usize) -> &str {
        self.fields[i].1.trim()
    }

    fn error(&self, file: &Path, i: usize, reason: String) -> LoadError {
        format_error(file, self.line, self.fields[i].0, reason)
    }

    fn float(&self, file: &Path, i: usize, what: &str) -> Result<f64> {
        match self.text(i).parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
            _ => Err(self.error(
                file,
                i,
                format!(
                    "{what}: expected a finite number ≥ 0, found `{}`",
                    self.text(i)
                ),
            )),
        }
    }

    fn gpus(&self, file: &Path, i: usize) -> Result<u32> {
        match self.text(i).parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(self.error(
                file,
                i,
                format!(
                    "GPU count: expected a whole number ≥ 1, found `{}`",
                    self.text(i)
                ),
            )),
        }
    }
}

fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).map_err(|source| LoadError::Io {
        file: file.to_path_buf(),
        source,
    })
}

/// Maps tenant names to indices; the final order is sorted by name.
#[derive(Default)]
struct TenantNames {
    index: BTreeMap<String, usize>,
}

impl TenantNames {
    fn get(&mut self, name: &str) -> usize {
        let next = self.index.len();
        *self.index.entry(name.to_owned()).or_insert(next)
    }

    /// Tenants sorted by name (weight 1), and the remapping from provisional to final indices.
    fn finish(self, jobs: &mut [JobSpec]) -> Vec<TenantSpec> {
        let mut remap = vec![0; self.index.len()];
        let mut tenants = Vec::with_capacity(self.index.len());
        for (sorted, (name, provisional)) in self.index.into_iter().enumerate() {
            remap[provisional] = sorted;
            tenants.push(TenantSpec { name, weight: 1.0 });
        }
        for j in jobs {
            j.tenant = remap[j.tenant];
        }
        tenants
    }
}

// === Philly ===

const PHILLY_HEADER: &[&str] = &["timestamp", "duration", "num_gpus", "gpu_time", "cluster"];

/// Reads a Philly CSV (`timestamp,duration,num_gpus,gpu_time,cluster`). See [`parse_philly`].
pub fn load_philly(file: &Path) -> Result<Trace> {
    parse_philly(&read(file)?, file)
}

/// Parses Philly CSV text. The tenant is the `cluster` column; timestamps are read as UTC;
/// tenants get weight 1. Rows where `gpu_time` is not `duration × num_gpus` (relative
/// tolerance 1e-6) are kept and listed in [`LoadChecks::gpu_time_mismatches`].
pub fn parse_philly(text: &str, file: &Path) -> Result<Trace> {
    let rows = csv_rows(text, file, PHILLY_HEADER)?;
    let mut names = TenantNames::default();
    let mut jobs = Vec::with_capacity(rows.len());
    let mut mismatches = Vec::new();
    for row in &rows {
        let Some(submitted) = parse_datetime(row.text(0)) else {
            return Err(row.error(
                file,
                0,
                format!(
                    "timestamp: expected `YYYY-MM-DD HH:MM:SS`, found `{}`",
                    row.text(0)
                ),
            ));
        };
        let duration = row.float(file, 1, "duration")?;
        let gpus = row.gpus(file, 2)?;
        let gpu_time = row.float(file, 3, "gpu_time")?;
        if (gpu_time - duration * gpus as f64).abs() > 1e-6 * gpu_time.max(1.0) {
            mismatches.push(row.line);
        }
        let tenant_name = row.text(4);
        if tenant_name.is_empty() {
            return Err(row.error(file, 4, "cluster: empty tenant".into()));
        }
        jobs.push(JobSpec {
            name: format!("line-{}", row.line),
            tenant: names.get(tenant_name),
            gpus,
            duration,
            arrival: submitted as f64,
            priority: 0,
            kind: WorkloadKind::Job,
        });
    }
    let tenants = names.finish(&mut jobs);
    let mut trace = Trace::from_unsorted(tenants, jobs, Some(0));
    trace.checks = LoadChecks {
        rows: rows.len(),
        gpu_time_mismatches: mismatches,
    };
    Ok(trace)
}

// === Tiresias ===

const TIRESIAS_HEADER: &[&str] = &[
    "job_id",
    "num_gpu",
    "submit_time",
    "iterations",
    "model_name",
    "duration",
    "interval",
];

/// Reads a Tiresias job CSV (`60_job.csv`). See [`parse_tiresias`].
pub fn load_tiresias(file: &Path) -> Result<Trace> {
    parse_tiresias(&read(file)?, file)
}

/// Parses Tiresias job CSV text. The tenant is the model family (`vgg19` → `vgg`, `resnet50` →
/// `resnet`: the name without trailing digits), so that the 60-job trace has several tenants
/// with different gang sizes; every tenant weighs 1. `duration` is d_j; `iterations` and
/// `interval` are ignored. The trace has no calendar dates.
pub fn parse_tiresias(text: &str, file: &Path) -> Result<Trace> {
    let rows = csv_rows(text, file, TIRESIAS_HEADER)?;
    let mut names = TenantNames::default();
    let mut jobs = Vec::with_capacity(rows.len());
    for row in &rows {
        let gpus = row.gpus(file, 1)?;
        let arrival = row.float(file, 2, "submit_time")?;
        let family = row.text(4).trim_end_matches(|c: char| c.is_ascii_digit());
        if family.is_empty() {
            return Err(row.error(file, 4, "model_name: empty".into()));
        }
        let duration = row.float(file, 5, "duration")?;
        jobs.push(JobSpec {
            name: format!("job-{}", row.text(0)),
            tenant: names.get(family),
            gpus,
            duration,
            arrival,
            priority: 0,
            kind: WorkloadKind::Job,
        });
    }
    let tenants = names.finish(&mut jobs);
    let mut trace = Trace::from_unsorted(tenants, jobs, None);
    trace.checks.rows = rows.len();
    Ok(trace)
}

// === dates ===

/// Parses `YYYY-MM-DD HH:MM:SS` (or `YYYY-MM-DDTHH:MM:SS`, or a bare `YYYY-MM-DD` for midnight)
/// as UTC into Unix seconds. `None` when malformed or out of range.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=days_in_month(y, m)).contains(&day) {
        return None;
    }
    let secs = match time {
        None => 0,
        Some(t) => {
            let mut p = t.split(':');
            let (h, mi, se) = (num(p.next()?)?, num(p.next()?)?, num(p.next()?)?);
            if p.next().is_some() || h > 23 || mi > 59 || se > 60 {
                return None;
            }
            h * 3600 + mi * 60 + se
        }
    };
    Some(days_from_civil(y, m, day) * 86_400 + secs)
}

/// Renders Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_datetime(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("t.csv")
    }

    #[test]
    fn dates_round_trip() {
        let t = parse_datetime("2017-09-04 10:30:41").unwrap();
        assert_eq!(t, 1_504_521_041);
        assert_eq!(format_datetime(t), "2017-09-04 10:30:41");
        assert_eq!(
            parse_datetime("2017-10-01"),
            parse_datetime("2017-10-01 00:00:00")
        );
        assert_eq!(parse_datetime("2016-02-29T00:00:00"), Some(1_456_704_000));
        for bad in [
            "2017-02-29",
            "2017-13-01",
            "x",
            "2017-01-01 25:00:00",
            "2017-1-1 1:2",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn philly_rows_are_sorted_and_checked() {
        let text = "timestamp,duration,num_gpus,gpu_time,cluster\n\
                    2017-10-01 00:00:10,5.0,2,10.0,b\n\
                    2017-10-01 00:00:00,3.0,1,4.0,a\n";
        let t = parse_philly(text, p()).unwrap();
        assert_eq!(t.jobs.len(), 2);
        assert_eq!(t.jobs[0].arrival, 0.0);
        assert_eq!(t.jobs[1].arrival, 10.0);
        assert_eq!(t.tenants[t.jobs[0].tenant].name, "a");
        assert_eq!(t.checks.gpu_time_mismatches, vec![3]);
        assert_eq!(t.origin_unix, parse_datetime("2017-10-01"));
    }

    #[test]
    fn errors_name_line_and_column() {
        let text =
            "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-01 00:00:00,3.0,zero,3,a\n";
        let err = parse_philly(text, p()).unwrap_err().to_string();
        assert!(err.starts_with("t.csv:2:25:"), "{err}");
        let err = parse_philly("a,b\n", p()).unwrap_err().to_string();
        assert!(
            err.contains("t.csv:1:1") && err.contains("expected header"),
            "{err}"
        );
        let err = parse_philly("", p()).unwrap_err();
        assert_eq!(err.code(), "invalid");
        let text = "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-01 00:00:00,3.0,1\n";
        assert!(parse_philly(text, p())
            .unwrap_err()
            .to_string()
            .contains("expected 5 fields"));
        let text = "timestamp,duration,num_gpus,gpu_time,cluster\n\"x\",1,1,1,a\n";
        assert!(parse_philly(text, p())
            .unwrap_err()
            .to_string()
            .contains("quoted"));
    }

    #[test]
    fn tiresias_tenants_are_model_families() {
        let text = "job_id,num_gpu,submit_time,iterations,model_name,duration,interval\r\n\
                    0,1,0,606,vgg19,164,30\r\n1,8,30,133,vgg11,147,23\r\n2,2,53,157,resnet50,127,26";
        let t = parse_tiresias(text, p()).unwrap();
        assert_eq!(
            t.tenants
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["resnet", "vgg"]
        );
        assert_eq!(t.jobs[1].gpus, 8);
        assert_eq!(t.jobs[2].duration, 127.0);
        assert_eq!(t.origin_unix, None);
    }

    #[test]
    fn window_keeps_the_half_open_range() {
        let text = "timestamp,duration,num_gpus,gpu_time,cluster\n\
                    2017-10-01 00:00:00,1,1,1,a\n2017-10-02 00:00:00,1,1,1,a\n2017-10-03 00:00:00,1,1,1,a\n";
        let t = parse_philly(text, p()).unwrap();
        let w = t
            .window(parse_datetime("2017-10-02"), parse_datetime("2017-10-03"))
            .unwrap();
        assert_eq!(w.jobs.len(), 1);
        assert_eq!(w.jobs[0].arrival, 0.0);
        assert_eq!(w.origin_unix, parse_datetime("2017-10-02"));
    }
}
