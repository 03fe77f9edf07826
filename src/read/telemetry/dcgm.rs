//! NVIDIA dcgm-exporter's Prometheus text page, read into the agent's [`NodeSample`].
//!
//! Many clusters already run dcgm-exporter with the GPU Operator; the collector polls it on
//! nodes without a rota agent and grades the result with the same rules. This parser is pure
//! (text in, sample out), hand-written for the subset of the exposition format dcgm-exporter
//! emits, and total: malformed lines are skipped and counted, never a panic.
//!
//! Mapping (dcgm-exporter's units in brackets): `DCGM_FI_DEV_GPU_UTIL` [%] and
//! `DCGM_FI_DEV_MEM_COPY_UTIL` [%] → ratios; `DCGM_FI_DEV_FB_USED` / `_FREE` / `_RESERVED` /
//! `_TOTAL` [MiB] → bytes; `DCGM_FI_DEV_GPU_TEMP` [°C]; `DCGM_FI_DEV_POWER_USAGE` and
//! `DCGM_FI_DEV_POWER_MGMT_LIMIT` [W]; `DCGM_FI_DEV_SM_CLOCK` [MHz]; `DCGM_FI_DEV_XID_ERRORS`
//! (the last XID seen, 0 for none: a sticky gauge, so it feeds the XID history);
//! `DCGM_FI_DEV_ECC_DBE_VOL_TOTAL` (uncorrected, volatile); `DCGM_FI_DEV_RETIRED_PENDING`;
//! `DCGM_FI_DEV_ROW_REMAP_PENDING`; `DCGM_FI_DEV_CLOCK_THROTTLE_REASONS` or
//! `DCGM_FI_DEV_CLOCKS_EVENT_REASONS` (NVML's bit mask). GPUs are keyed by the `gpu` label;
//! `UUID`, `modelName`, `pci_bus_id` and `DCGM_FI_DRIVER_VERSION` labels fill identity fields.
//! Series of MIG instances (a non-empty `GPU_I_ID` label) are skipped: they describe slices,
//! not the GPU. The `Hostname` label is not trusted as the node name (it is the exporter pod's
//! host name unless the pod uses the host network); the node comes from where the exporter
//! pod runs.

use std::collections::BTreeMap;

use crate::core::telemetry::{GpuSample, NodeSample, ThrottleReason};

/// Bytes in one MiB, dcgm-exporter's framebuffer unit.
const MIB: f64 = 1024.0 * 1024.0;

/// Why a page could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The page holds no usable `DCGM_FI_DEV_*` series with a `gpu` label.
    #[error("no DCGM GPU metrics in the page ({skipped} malformed line(s) skipped)")]
    NoGpuMetrics {
        /// Lines that could not be parsed.
        skipped: usize,
    },
}

impl Error {
    /// A short stable code for logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NoGpuMetrics { .. } => "no_gpu_metrics",
        }
    }
}

/// One parsed series: name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series<'a> {
    /// Metric name.
    pub name: &'a str,
    /// Labels in page order, values unescaped.
    pub labels: Vec<(&'a str, String)>,
    /// The sample value (may be NaN or infinite as the format allows).
    pub value: f64,
}

impl Series<'_> {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        let found = self.labels.iter().find(|(k, _)| *k == key);
        found.map(|(_, v)| v.as_str())
    }
}

/// Parses a dcgm-exporter page into a sample (not yet stamped with node or time, not graded).
pub fn parse(text: &str) -> Result<NodeSample, Error> {
    let mut gpus: BTreeMap<u32, (GpuSample, Framebuffer)> = BTreeMap::new();
    let mut driver: Option<String> = None;
    let mut skipped = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(series) = parse_line(line) else {
            skipped += 1;
            continue;
        };
        if !series.name.starts_with("DCGM_FI_") || is_mig_instance(&series) {
            continue;
        }
        let Some(index) = series.label("gpu").and_then(|g| g.parse().ok()) else {
            continue;
        };
        if driver.is_none() {
            driver = series.label("DCGM_FI_DRIVER_VERSION").map(String::from);
        }
        let (gpu, fb) = gpus.entry(index).or_insert_with(|| {
            let gpu = GpuSample {
                index,
                ..GpuSample::default()
            };
            (gpu, Framebuffer::default())
        });
        identify(gpu, &series);
        if !fb.apply(&series) {
            apply(gpu, &series);
        }
    }
    if gpus.is_empty() {
        return Err(Error::NoGpuMetrics { skipped });
    }
    let mut sample = NodeSample::new();
    sample.driver_version = driver.filter(|d| !d.is_empty());
    sample.gpus = gpus.into_values().map(|(g, fb)| fb.finish(g)).collect();
    Ok(sample)
}

fn is_mig_instance(series: &Series<'_>) -> bool {
    series.label("GPU_I_ID").is_some_and(|id| !id.is_empty())
}

/// Fills identity fields from labels the first time they are seen.
fn identify(gpu: &mut GpuSample, series: &Series<'_>) {
    if gpu.uuid.is_empty() {
        gpu.uuid = series.label("UUID").unwrap_or_default().to_string();
    }
    let text = |key: &str| {
        series
            .label(key)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    if gpu.name.is_none() {
        gpu.name = text("modelName");
    }
    if gpu.pci_bus_id.is_none() {
        gpu.pci_bus_id = text("pci_bus_id");
    }
}

/// Applies one series' value to the GPU it describes; unknown metrics and non-finite values
/// are ignored.
fn apply(gpu: &mut GpuSample, series: &Series<'_>) {
    let v = series.value;
    if !v.is_finite() {
        return;
    }
    let ratio = || (v / 100.0).clamp(0.0, 1.0);
    let count = || v.max(0.0) as u64;
    match series.name {
        "DCGM_FI_DEV_GPU_UTIL" => gpu.utilization_gpu_ratio = Some(ratio()),
        "DCGM_FI_DEV_MEM_COPY_UTIL" => gpu.utilization_memory_ratio = Some(ratio()),
        "DCGM_FI_DEV_GPU_TEMP" => gpu.temperature_celsius = Some(v),
        "DCGM_FI_DEV_POWER_USAGE" => gpu.power_draw_watts = Some(v),
        "DCGM_FI_DEV_POWER_MGMT_LIMIT" => gpu.power_limit_watts = Some(v),
        "DCGM_FI_DEV_SM_CLOCK" => gpu.sm_clock_mhz = u32::try_from(count()).ok(),
        "DCGM_FI_DEV_XID_ERRORS" => {
            gpu.xid_errors = Some(Vec::new());
            if let Ok(code) = u32::try_from(count()) {
                if code > 0 && !gpu.xid_errors_seen.contains(&code) {
                    gpu.xid_errors_seen.push(code);
                }
            }
        }
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" => gpu.ecc_uncorrected_volatile = Some(count()),
        "DCGM_FI_DEV_RETIRED_PENDING" => gpu.pending_page_retirement = Some(v > 0.0),
        "DCGM_FI_DEV_ROW_REMAP_PENDING" => gpu.pending_row_remap = Some(v > 0.0),
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS" | "DCGM_FI_DEV_CLOCKS_EVENT_REASONS" => {
            gpu.throttle_reasons = Some(throttle_reasons(count()));
        }
        _ => {}
    }
}

/// Framebuffer readings in MiB, combined once the whole page is read (the total is either
/// given or used + free + reserved).
#[derive(Debug, Default)]
struct Framebuffer {
    used: Option<f64>,
    free: Option<f64>,
    reserved: Option<f64>,
    total: Option<f64>,
}

impl Framebuffer {
    /// Takes the series if it is a framebuffer reading.
    fn apply(&mut self, series: &Series<'_>) -> bool {
        let slot = match series.name {
            "DCGM_FI_DEV_FB_USED" => &mut self.used,
            "DCGM_FI_DEV_FB_FREE" => &mut self.free,
            "DCGM_FI_DEV_FB_RESERVED" => &mut self.reserved,
            "DCGM_FI_DEV_FB_TOTAL" => &mut self.total,
            _ => return false,
        };
        *slot = Some(series.value).filter(|v| v.is_finite());
        true
    }

    fn finish(self, mut gpu: GpuSample) -> GpuSample {
        let sum = match (self.used, self.free) {
            (Some(u), Some(f)) => Some(u + f + self.reserved.unwrap_or(0.0)),
            _ => None,
        };
        gpu.memory_used_bytes = self.used.map(mib);
        gpu.memory_total_bytes = self.total.or(sum).map(mib);
        gpu
    }
}

fn mib(value: f64) -> u64 {
    // A saturating float-to-int cast: absurd values cannot wrap.
    (value.max(0.0) * MIB) as u64
}

/// NVML's clock throttle reason bits.
fn throttle_reasons(mask: u64) -> Vec<ThrottleReason> {
    const BITS: [(u64, ThrottleReason); 9] = [
        (0x1, ThrottleReason::GpuIdle),
        (0x2, ThrottleReason::ApplicationsClocksSetting),
        (0x4, ThrottleReason::SwPowerCap),
        (0x8, ThrottleReason::HwSlowdown),
        (0x10, ThrottleReason::SyncBoost),
        (0x20, ThrottleReason::SwThermalSlowdown),
        (0x40, ThrottleReason::HwThermalSlowdown),
        (0x80, ThrottleReason::HwPowerBrakeSlowdown),
        (0x100, ThrottleReason::DisplayClockSetting),
    ];
    let set = BITS.iter().filter(|(bit, _)| mask & bit != 0);
    set.map(|(_, reason)| *reason).collect()
}

/// Parses `name{label="value",...} value [timestamp]`; `None` when malformed.
pub fn parse_line(line: &str) -> Option<Series<'_>> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = line.get(..name_end)?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = line.get(name_end..)?;
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    Some(Series {
        name,
        labels,
        value: parse_value(value)?,
    })
}

/// Parses labels after the `{` up to and including the closing `}`; returns the rest.
fn parse_labels(mut text: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let key = text.get(..eq)?.trim();
        if key.is_empty() {
            return None;
        }
        let quoted = text.get(eq + 1..)?.trim_start().strip_prefix('"')?;
        let (value, after) = unescape_until_quote(quoted)?;
        labels.push((key, value));
        text = after.trim_start();
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

/// Reads a label value up to its closing quote, undoing `\\`, `\"` and `\n`.
fn unescape_until_quote(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, text.get(i + 1..)?)),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            other => value.push(other),
        }
    }
    None
}

/// A sample value: a float, `NaN`, `+Inf` or `-Inf`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_escapes_and_timestamps() {
        let s = parse_line(r#"m{a="x\"y",b="1\\2"} 3.5 1700000000000"#).unwrap();
        assert_eq!(s.name, "m");
        assert_eq!(s.label("a"), Some("x\"y"));
        assert_eq!(s.label("b"), Some("1\\2"));
        assert_eq!(s.value, 3.5);
        let bare = parse_line("up 1").unwrap();
        assert!(bare.labels.is_empty());
        assert!(parse_line("m NaN").unwrap().value.is_nan());
        assert_eq!(parse_line("m{} +Inf").unwrap().value, f64::INFINITY);
    }

    #[test]
    fn malformed_lines_are_none_never_a_panic() {
        for line in [
            "",
            "{a=\"b\"} 1",
            "m{a=\"b\" 1",
            "m{a=b} 1",
            "m{=\"b\"} 1",
            "m{a=\"b\"}",
            "m{a=\"b\\",
            "m 1x",
            "m{a=\"é\"} é",
            "bad-name 1",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn throttle_bits_map_to_reasons() {
        let reasons = throttle_reasons(0x1 | 0x40 | 0x80);
        assert_eq!(
            reasons,
            vec![
                ThrottleReason::GpuIdle,
                ThrottleReason::HwThermalSlowdown,
                ThrottleReason::HwPowerBrakeSlowdown
            ]
        );
    }

    #[test]
    fn memory_total_is_used_plus_free_unless_given() {
        let page = "DCGM_FI_DEV_FB_USED{gpu=\"0\"} 1024\nDCGM_FI_DEV_FB_FREE{gpu=\"0\"} 3072\n\
                    DCGM_FI_DEV_FB_USED{gpu=\"1\"} 1\nDCGM_FI_DEV_FB_TOTAL{gpu=\"1\"} 16\n\
                    DCGM_FI_DEV_FB_FREE{gpu=\"1\"} 15\n";
        let sample = parse(page).unwrap();
        assert_eq!(sample.gpus[0].memory_total_bytes, Some(4096 << 20));
        assert_eq!(sample.gpus[0].memory_used_bytes, Some(1024 << 20));
        assert_eq!(sample.gpus[1].memory_total_bytes, Some(16 << 20));
    }

    #[test]
    fn pages_without_gpu_series_are_errors() {
        let err = parse("# HELP x\nup 1\ngarbage{\n").unwrap_err();
        assert_eq!(err, Error::NoGpuMetrics { skipped: 1 });
        assert_eq!(err.code(), "no_gpu_metrics");
    }
}
