//! [`ScriptedSource`]: replays a YAML or JSON script of GPU readings over time, for demos,
//! the simulator's agent stand-in and tests on machines without GPUs.
//!
//! A script is a list of frames, each with `atSeconds` and the GPUs' readings. A sample
//! returns the last frame whose `atSeconds` has passed (the first frame before that, the last
//! frame forever after the script ends). A frame's `xidErrors` are events that happen at that
//! frame: each is reported once, by the first sample at or after it, even when a sample skips
//! over whole frames. Elapsed time comes from an injected clock, so tests are deterministic.
//! Loading validates everything and reports every problem at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::snapshot::{GpuSample, NodeSample, VfioDevice};
use super::source::GpuSource;

/// `kind` of a script document (optional in the file; checked when present).
pub const SCRIPT_KIND: &str = "GpuTelemetryScript";

/// Problems loading a script.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read GPU script {path}: {source}")]
    Read {
        /// The script file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid script document.
    #[error("GPU script {path} is malformed: {message}")]
    Parse {
        /// The script file.
        path: PathBuf,
        /// The parser's message, with the location or field path.
        message: String,
    },
    /// The document parsed but breaks the script's rules.
    #[error("GPU script {path} is invalid: {}", problems.join("; "))]
    Invalid {
        /// The script file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<String>,
    },
}

impl Error {
    /// A short stable code for logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Parse { .. } => "parse",
            Error::Invalid { .. } => "invalid",
        }
    }
}

/// A script document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Script {
    /// Optional; `rota.io/v1alpha1` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Optional; [`SCRIPT_KIND`] when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Driver version reported in every sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// CUDA driver version reported in every sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_driver_version: Option<String>,
    /// Frames in increasing `atSeconds` order; at least one.
    pub frames: Vec<Frame>,
}

/// The node's readings from `atSeconds` until the next frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Frame {
    /// Seconds since the first sample at which this frame starts.
    pub at_seconds: f64,
    /// Whether NVML works in this frame. Default true.
    #[serde(default = "yes")]
    pub nvml_available: bool,
    /// Why NVML does not work, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvml_error: Option<String>,
    /// GPUs bound to `vfio-pci` in this frame.
    #[serde(default)]
    pub vfio_devices: Vec<VfioDevice>,
    /// GPU readings (the `health` field, if given, is overwritten by the agent's grading).
    #[serde(default)]
    pub gpus: Vec<GpuSample>,
}

fn yes() -> bool {
    true
}

impl Script {
    /// Reads and validates a script; `.json` files are parsed as JSON, others as YAML.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let script = Self::parse(&text, json).map_err(|message| Error::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        script.validate().map_err(|problems| Error::Invalid {
            path: path.to_path_buf(),
            problems,
        })?;
        Ok(script)
    }

    /// Parses a document without validating it. The error names the failing location, in
    /// plain words (a negative memory reading says it wants a whole number of at least 0).
    pub fn parse(text: &str, json: bool) -> Result<Self, String> {
        let plain = crate::messages::plain_serde_message;
        if json {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| format!("at {}: {}", e.path(), plain(&e.inner().to_string())))
        } else {
            serde_saphyr::from_str(text).map_err(|e| plain(&e.to_string()))
        }
    }

    /// Checks the script's rules and returns every problem found.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Some(kind) = self.kind.as_deref().filter(|k| *k != SCRIPT_KIND) {
            problems.push(format!("kind is {kind:?}, expected {SCRIPT_KIND:?}"));
        }
        if self.frames.is_empty() {
            problems.push("frames: at least one frame is required".into());
        }
        let mut previous = f64::NEG_INFINITY;
        for (i, frame) in self.frames.iter().enumerate() {
            let at = frame.at_seconds;
            if !at.is_finite() || at < 0.0 {
                problems.push(format!("frames[{i}].atSeconds: {at} is not a time >= 0"));
            } else if at <= previous {
                problems.push(format!(
                    "frames[{i}].atSeconds: {at} does not come after the previous frame's {previous}"
                ));
            }
            previous = previous.max(at);
            for (g, gpu) in frame.gpus.iter().enumerate() {
                check_reading(&format!("frames[{i}].gpus[{g}]"), gpu, &mut problems);
            }
            let mut indices: Vec<u32> = frame.gpus.iter().map(|g| g.index).collect();
            indices.sort_unstable();
            if indices.windows(2).any(|w| w[0] == w[1]) {
                problems.push(format!("frames[{i}].gpus: GPU indices repeat"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Hottest reading a GPU can report, °C (they shut down long before).
const MAX_TEMPERATURE_CELSIUS: f64 = 150.0;
/// Coldest plausible reading, °C.
const MIN_TEMPERATURE_CELSIUS: f64 = -50.0;

/// Flags readings no GPU can give: ratios outside 0..1, more memory used than there is,
/// temperatures beyond physics, negative power.
fn check_reading(path: &str, gpu: &GpuSample, problems: &mut Vec<String>) {
    let ratios = [
        ("utilizationGpuRatio", gpu.utilization_gpu_ratio),
        ("utilizationMemoryRatio", gpu.utilization_memory_ratio),
    ];
    for (field, value) in ratios {
        if let Some(v) = value.filter(|v| !(0.0..=1.0).contains(v)) {
            problems.push(format!(
                "{path}.{field}: {v} is not a fraction from 0 to 1 (1 = 100 %)"
            ));
        }
    }
    if let (Some(used), Some(total)) = (gpu.memory_used_bytes, gpu.memory_total_bytes) {
        if used > total {
            problems.push(format!(
                "{path}.memoryUsedBytes: {used} is more than memoryTotalBytes {total}"
            ));
        }
    }
    if let Some(t) = gpu
        .temperature_celsius
        .filter(|t| !(MIN_TEMPERATURE_CELSIUS..=MAX_TEMPERATURE_CELSIUS).contains(t))
    {
        problems.push(format!(
            "{path}.temperatureCelsius: {t} is not a GPU temperature \
             ({MIN_TEMPERATURE_CELSIUS} to {MAX_TEMPERATURE_CELSIUS} °C)"
        ));
    }
    let watts = [
        ("powerDrawWatts", gpu.power_draw_watts),
        ("powerLimitWatts", gpu.power_limit_watts),
    ];
    for (field, value) in watts {
        if let Some(w) = value.filter(|w| !(w.is_finite() && *w >= 0.0)) {
            problems.push(format!(
                "{path}.{field}: {w} is not a power of at least 0 W"
            ));
        }
    }
}

/// Elapsed seconds since the replay started.
pub type Clock = Box<dyn FnMut() -> f64 + Send>;

/// Replays a [`Script`] (see the module docs for the timing rules).
pub struct ScriptedSource {
    script: Script,
    clock: Clock,
    /// Frame returned by the previous sample; `None` before the first sample.
    last_frame: Option<usize>,
}

impl ScriptedSource {
    /// Loads a script file and replays it in real time, time 0 being the first sample.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let script = Script::load(path)?;
        let mut start: Option<Instant> = None;
        let clock = move || {
            start
                .get_or_insert_with(Instant::now)
                .elapsed()
                .as_secs_f64()
        };
        Ok(Self::with_clock(script, Box::new(clock)))
    }

    /// Replays an already validated script with the given clock.
    pub fn with_clock(script: Script, clock: Clock) -> Self {
        Self {
            script,
            clock,
            last_frame: None,
        }
    }

    /// Index of the frame in force at `elapsed` seconds (0 before the first frame starts).
    fn frame_at(&self, elapsed: f64) -> usize {
        let started = self
            .script
            .frames
            .iter()
            .take_while(|f| f.at_seconds <= elapsed);
        started.count().saturating_sub(1)
    }

    /// XID codes per GPU index from frames entered since the previous sample.
    fn new_xids(&self, current: usize) -> BTreeMap<u32, Vec<u32>> {
        let first = self.last_frame.map_or(0, |last| last + 1);
        let entered = self.script.frames.get(first..=current).unwrap_or_default();
        let mut xids: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for gpu in entered.iter().flat_map(|f| &f.gpus) {
            let codes = gpu.xid_errors.iter().flatten();
            xids.entry(gpu.index).or_default().extend(codes);
        }
        xids
    }
}

impl GpuSource for ScriptedSource {
    fn sample(&mut self) -> NodeSample {
        let elapsed = (self.clock)();
        let current = self.frame_at(elapsed);
        let mut xids = self.new_xids(current);
        self.last_frame = Some(current);
        let Some(frame) = self.script.frames.get(current) else {
            return NodeSample::nvml_unavailable("the GPU script has no frames");
        };
        let mut sample = NodeSample::new();
        sample.nvml_available = frame.nvml_available;
        sample.nvml_error = frame.nvml_error.clone();
        sample.driver_version = self.script.driver_version.clone();
        sample.cuda_driver_version = self.script.cuda_driver_version.clone();
        sample.vfio_devices = frame.vfio_devices.clone();
        sample.gpus = frame.gpus.clone();
        for gpu in &mut sample.gpus {
            if gpu.xid_errors.is_some() {
                gpu.xid_errors = Some(xids.remove(&gpu.index).unwrap_or_default());
            }
        }
        sample
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    const SCRIPT: &str = r#"
kind: GpuTelemetryScript
driverVersion: "550.54.15"
frames:
  - atSeconds: 0
    gpus:
      - { index: 0, uuid: GPU-a, temperatureCelsius: 50, xidErrors: [] }
  - atSeconds: 10
    gpus:
      - { index: 0, uuid: GPU-a, temperatureCelsius: 70, xidErrors: [13] }
  - atSeconds: 20
    gpus:
      - { index: 0, uuid: GPU-a, temperatureCelsius: 90, xidErrors: [79] }
"#;

    /// A clock the test moves by hand (milliseconds in an atomic).
    fn manual_clock() -> (Arc<AtomicU64>, Clock) {
        let ms = Arc::new(AtomicU64::new(0));
        let reader = ms.clone();
        let clock = move || reader.load(Ordering::SeqCst) as f64 / 1000.0;
        (ms, Box::new(clock))
    }

    fn source() -> (Arc<AtomicU64>, ScriptedSource) {
        let script = Script::parse(SCRIPT, false).unwrap();
        script.validate().unwrap();
        let (ms, clock) = manual_clock();
        (ms, ScriptedSource::with_clock(script, clock))
    }

    fn temp(sample: &NodeSample) -> f64 {
        sample.gpus[0].temperature_celsius.unwrap()
    }

    #[test]
    fn frames_switch_at_their_times_and_the_last_one_holds() {
        let (ms, mut src) = source();
        let mut at = |t_ms: u64| {
            ms.store(t_ms, Ordering::SeqCst);
            temp(&src.sample())
        };
        assert_eq!(at(0), 50.0);
        assert_eq!(at(9_999), 50.0);
        assert_eq!(at(10_000), 70.0);
        assert_eq!(at(19_999), 70.0);
        assert_eq!(at(20_000), 90.0);
        assert_eq!(at(1_000_000), 90.0);
    }

    #[test]
    fn xids_are_reported_once_even_when_frames_are_skipped() {
        let (ms, mut src) = source();
        let first = src.sample();
        assert_eq!(first.gpus[0].xid_errors, Some(vec![]));
        assert_eq!(first.driver_version.as_deref(), Some("550.54.15"));
        // Jump over the XID-13 frame straight into the XID-79 frame.
        ms.store(25_000, Ordering::SeqCst);
        assert_eq!(src.sample().gpus[0].xid_errors, Some(vec![13, 79]));
        ms.store(26_000, Ordering::SeqCst);
        assert_eq!(src.sample().gpus[0].xid_errors, Some(vec![]));
    }

    #[test]
    fn malformed_documents_name_the_problem() {
        let err = Script::parse(
            "frames:\n  - atSeconds: 0\n    gpus:\n      - { index: 0, temp: 3 }\n",
            false,
        )
        .unwrap_err();
        assert!(err.contains("temp"), "{err}");
        let err = Script::parse(r#"{"frames":[{"atSeconds":"soon"}]}"#, true).unwrap_err();
        assert!(err.contains("frames[0].atSeconds"), "{err}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let text = "kind: Other\nframes:\n  - atSeconds: 5\n  - atSeconds: 5\n  - atSeconds: -1\n";
        let problems = Script::parse(text, false).unwrap().validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("Other"));
        assert!(problems[1].contains("frames[1]"));
        assert!(problems[2].contains("frames[2]"));
        let empty = Script::parse("frames: []\n", false)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(empty[0].contains("at least one frame"));
    }

    #[test]
    fn impossible_readings_are_refused() {
        let text = "frames:\n  - atSeconds: 0\n    gpus:\n      - index: 0\n        \
                    utilizationGpuRatio: 1.5\n        memoryTotalBytes: 10\n        \
                    memoryUsedBytes: 11\n        temperatureCelsius: 900\n        \
                    powerDrawWatts: -3\n";
        let problems = Script::parse(text, false).unwrap().validate().unwrap_err();
        let fields = [
            "utilizationGpuRatio",
            "memoryUsedBytes",
            "temperatureCelsius",
            "powerDrawWatts",
        ];
        assert_eq!(problems.len(), fields.len(), "{problems:?}");
        for (problem, field) in problems.iter().zip(fields) {
            assert!(
                problem.starts_with(&format!("frames[0].gpus[0].{field}: ")),
                "{problem}"
            );
        }
        let negative =
            "frames:\n  - atSeconds: 0\n    gpus:\n      - {index: 0, memoryUsedBytes: -1}\n";
        let err = Script::parse(negative, false).unwrap_err();
        assert!(err.contains("at least 0") && !err.contains("u64"), "{err}");
    }

    #[test]
    fn load_errors_carry_the_path_and_a_code() {
        let dir = std::env::temp_dir().join(format!("rota-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "frames: [ {atSeconds: 0, gpus: 7} ]\n").unwrap();
        let err = ScriptedSource::load(&bad).err().unwrap();
        assert_eq!(err.code(), "parse");
        assert!(err.to_string().contains("bad.yaml"), "{err}");
        let missing = ScriptedSource::load(&dir.join("missing.yaml"))
            .err()
            .unwrap();
        assert_eq!(missing.code(), "read");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shipped_scripts_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in [
            "tests/data/agent/two-gpus.yaml",
            "deploy/examples/agent-script.yaml",
        ] {
            let script = Script::load(&root.join(file)).unwrap();
            let last = script.frames.last().unwrap();
            assert_eq!(last.gpus.len(), 2, "{file}");
            // Merge keys (`<<: *gpu0`) carry the identity into every frame.
            assert!(
                last.gpus
                    .iter()
                    .all(|g| g.name.as_deref() == Some("NVIDIA A10")),
                "{file}"
            );
            let xids = script.frames.iter().flat_map(|f| &f.gpus[0].xid_errors);
            assert!(xids.flatten().any(|&x| x == 79), "{file}");
        }
    }
}
