//! The agent's Prometheus metrics: per-GPU gauges from the newest sample, plus the agent's
//! own sampling counters, in the agent's own registry.
//!
//! Invariants: a series exists only for a GPU present in the newest sample and a reading it
//! has (unsupported or failed readings are not exported, never exported as 0); a GPU that
//! disappears loses all its series. Labels are bounded: node, GPU index, UUID and model.
//! Only the sampler writes; scrapes read.

use std::collections::BTreeSet;

use parking_lot::Mutex;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

use super::snapshot::{GpuSample, NodeSample};

/// Label names on every per-GPU series.
const GPU_LABELS: [&str; 4] = ["node", "gpu", "uuid", "model"];

/// One GPU's label values, in [`GPU_LABELS`] order.
type GpuKey = [String; 4];

/// A per-GPU gauge: its metric and how to read it from a sample.
struct GpuGauge {
    vec: GaugeVec,
    read: fn(&GpuSample) -> Option<f64>,
}

/// Metric names, kept together so dashboards and docs have one place to look.
pub mod names {
    /// GPU busy ratio 0..1.
    pub const UTILIZATION: &str = "rota_gpu_utilization_ratio";
    /// Memory controller busy ratio 0..1.
    pub const MEMORY_UTILIZATION: &str = "rota_gpu_memory_utilization_ratio";
    /// Framebuffer memory in use.
    pub const MEMORY_USED: &str = "rota_gpu_memory_used_bytes";
    /// Framebuffer memory in total.
    pub const MEMORY_TOTAL: &str = "rota_gpu_memory_total_bytes";
    /// Core temperature.
    pub const TEMPERATURE: &str = "rota_gpu_temperature_celsius";
    /// Power draw.
    pub const POWER: &str = "rota_gpu_power_watts";
    /// Enforced power limit.
    pub const POWER_LIMIT: &str = "rota_gpu_power_limit_watts";
    /// SM clock.
    pub const SM_CLOCK: &str = "rota_gpu_sm_clock_hertz";
    /// Uncorrected volatile ECC errors.
    pub const ECC_UNCORRECTED: &str = "rota_gpu_ecc_uncorrected_errors";
    /// XID errors observed since the agent started.
    pub const XID_ERRORS: &str = "rota_gpu_xid_errors_total";
    /// Health grade.
    pub const HEALTH: &str = "rota_gpu_health";
    /// Whether NVML is usable.
    pub const NVML_AVAILABLE: &str = "rota_agent_nvml_available";
    /// Samples taken.
    pub const SAMPLES: &str = "rota_agent_samples_total";
    /// Time one sample took.
    pub const SAMPLE_DURATION: &str = "rota_agent_sample_duration_seconds";
}

/// The agent's metrics and the registry that holds them.
pub struct AgentMetrics {
    registry: Registry,
    gauges: Vec<GpuGauge>,
    xid_errors: IntCounterVec,
    nvml_available: Gauge,
    samples: IntCounter,
    sample_duration: Histogram,
    /// GPUs exported by the previous update, to drop the series of vanished GPUs.
    exported: Mutex<BTreeSet<GpuKey>>,
}

impl AgentMetrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let gauges = gauge_table()
            .into_iter()
            .map(|(name, help, read)| {
                let vec = GaugeVec::new(Opts::new(name, help), &GPU_LABELS)?;
                registry.register(Box::new(vec.clone()))?;
                Ok(GpuGauge { vec, read })
            })
            .collect::<Result<Vec<_>, prometheus::Error>>()?;
        let xid_help = "XID errors observed since the agent started.";
        let xid_errors = IntCounterVec::new(Opts::new(names::XID_ERRORS, xid_help), &GPU_LABELS)?;
        let nvml_help = "1 when NVML initialised on this node, else 0.";
        let nvml_available = Gauge::new(names::NVML_AVAILABLE, nvml_help)?;
        let samples = IntCounter::new(names::SAMPLES, "GPU samples taken.")?;
        let duration_help = "Time taken by one GPU sample.";
        let buckets = vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let opts = HistogramOpts::new(names::SAMPLE_DURATION, duration_help).buckets(buckets);
        let sample_duration = Histogram::with_opts(opts)?;
        registry.register(Box::new(xid_errors.clone()))?;
        registry.register(Box::new(nvml_available.clone()))?;
        registry.register(Box::new(samples.clone()))?;
        registry.register(Box::new(sample_duration.clone()))?;
        Ok(Self {
            registry,
            gauges,
            xid_errors,
            nvml_available,
            samples,
            sample_duration,
            exported: Mutex::new(BTreeSet::new()),
        })
    }

    /// Records one graded sample and how long taking it took.
    pub fn record(&self, sample: &NodeSample, duration_seconds: f64) {
        self.samples.inc();
        self.sample_duration.observe(duration_seconds);
        self.nvml_available
            .set(if sample.nvml_available { 1.0 } else { 0.0 });
        let mut current = BTreeSet::new();
        for gpu in &sample.gpus {
            let key = gpu_key(&sample.node_name, gpu);
            self.record_gpu(&key, gpu);
            current.insert(key);
        }
        let mut exported = self.exported.lock();
        for gone in exported.difference(&current) {
            self.remove_gpu(gone);
        }
        *exported = current;
    }

    fn record_gpu(&self, key: &GpuKey, gpu: &GpuSample) {
        for gauge in &self.gauges {
            match (gauge.read)(gpu) {
                Some(value) => gauge.vec.with_label_values(key).set(value),
                // Absent series are expected here; removal of a missing one is not an error.
                None => drop(gauge.vec.remove_label_values(key)),
            }
        }
        match &gpu.xid_errors {
            Some(recent) => self
                .xid_errors
                .with_label_values(key)
                .inc_by(recent.len() as u64),
            None => drop(self.xid_errors.remove_label_values(key)),
        }
    }

    fn remove_gpu(&self, key: &GpuKey) {
        for gauge in &self.gauges {
            drop(gauge.vec.remove_label_values(key));
        }
        drop(self.xid_errors.remove_label_values(key));
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

fn gpu_key(node: &str, gpu: &GpuSample) -> GpuKey {
    let model = gpu.name.clone().unwrap_or_else(|| "unknown".into());
    [
        node.to_string(),
        gpu.index.to_string(),
        gpu.uuid.clone(),
        model,
    ]
}

type GaugeRow = (&'static str, &'static str, fn(&GpuSample) -> Option<f64>);

fn gauge_table() -> Vec<GaugeRow> {
    vec![
        (names::UTILIZATION, "GPU busy ratio, 0..1.", |g| {
            g.utilization_gpu_ratio
        }),
        (names::MEMORY_UTILIZATION, "Memory busy ratio, 0..1.", |g| {
            g.utilization_memory_ratio
        }),
        (names::MEMORY_USED, "Framebuffer memory in use.", |g| {
            g.memory_used_bytes.map(|b| b as f64)
        }),
        (names::MEMORY_TOTAL, "Framebuffer memory in total.", |g| {
            g.memory_total_bytes.map(|b| b as f64)
        }),
        (names::TEMPERATURE, "Core temperature.", |g| {
            g.temperature_celsius
        }),
        (names::POWER, "Power draw.", |g| g.power_draw_watts),
        (names::POWER_LIMIT, "Enforced power limit.", |g| {
            g.power_limit_watts
        }),
        (names::SM_CLOCK, "SM clock.", |g| {
            g.sm_clock_mhz.map(|mhz| f64::from(mhz) * 1e6)
        }),
        (
            names::ECC_UNCORRECTED,
            "Uncorrected volatile ECC errors.",
            |g| g.ecc_uncorrected_volatile.map(|n| n as f64),
        ),
        (
            names::HEALTH,
            "GPU health: 0 healthy, 1 degraded, 2 unhealthy, 3 unknown.",
            |g| Some(g.health.state.metric_value()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(gpus: Vec<GpuSample>) -> NodeSample {
        NodeSample {
            node_name: "n1".into(),
            gpus,
            ..NodeSample::new()
        }
    }

    fn gpu(index: u32) -> GpuSample {
        GpuSample {
            index,
            uuid: format!("GPU-{index}"),
            name: Some("NVIDIA A10".into()),
            temperature_celsius: Some(60.0 + f64::from(index)),
            sm_clock_mhz: Some(1500),
            xid_errors: Some(vec![79]),
            ..GpuSample::default()
        }
    }

    fn series(text: &str, name: &str) -> Vec<String> {
        let prefix = format!("{name}{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn exports_labelled_series_and_skips_missing_readings() {
        let m = AgentMetrics::new().unwrap();
        m.record(&sample(vec![gpu(0)]), 0.01);
        let text = m.encode().unwrap();
        let temps = series(&text, names::TEMPERATURE);
        let labels = r#"gpu="0",model="NVIDIA A10",node="n1",uuid="GPU-0""#;
        assert_eq!(
            temps,
            vec![format!("{}{{{labels}}} 60", names::TEMPERATURE)]
        );
        assert_eq!(
            series(&text, names::SM_CLOCK),
            vec![format!("{}{{{labels}}} 1500000000", names::SM_CLOCK)]
        );
        // Power was not read, so it is absent rather than 0.
        assert!(series(&text, names::POWER).is_empty());
        assert!(text.contains(&format!("{} 1", names::SAMPLES)));
        assert!(text.contains(&format!("{} 1", names::NVML_AVAILABLE)));
        assert!(text.contains(&format!("{}_count 1", names::SAMPLE_DURATION)));
    }

    #[test]
    fn xid_counter_accumulates_and_vanished_gpus_lose_their_series() {
        let m = AgentMetrics::new().unwrap();
        m.record(&sample(vec![gpu(0), gpu(1)]), 0.01);
        m.record(&sample(vec![gpu(0), gpu(1)]), 0.01);
        let text = m.encode().unwrap();
        let xids = series(&text, names::XID_ERRORS);
        assert_eq!(xids.len(), 2);
        assert!(xids.iter().all(|l| l.ends_with(" 2")), "{xids:?}");
        m.record(&sample(vec![gpu(0)]), 0.01);
        let text = m.encode().unwrap();
        assert_eq!(series(&text, names::TEMPERATURE).len(), 1);
        assert_eq!(series(&text, names::XID_ERRORS).len(), 1);
        assert!(!text.contains(r#"uuid="GPU-1""#));
        let mut unsupported = gpu(0);
        unsupported.temperature_celsius = None;
        unsupported.xid_errors = None;
        m.record(&sample(vec![unsupported]), 0.01);
        let text = m.encode().unwrap();
        assert!(series(&text, names::TEMPERATURE).is_empty());
        assert!(series(&text, names::XID_ERRORS).is_empty());
        assert_eq!(series(&text, names::HEALTH).len(), 1);
    }
}
