//! What `rota agent --source nvml` reported on a real NVIDIA H100 (driver 580.159.04), recorded
//! by `tests/hardware/record-nvml.sh` idle and under a bf16 matrix-multiply load holding 30 GiB,
//! next to NVML's own Python binding (nvidia-ml-py) read at the same moments. These tests check
//! that the extender accepts the agent's real wire output and that the agent's readings agree
//! with NVML's reference binding: the NVML adapter's only check against hardware in CI.

use std::path::PathBuf;

use rota::agent::{HealthState, NodeSample};
use rota::config::TelemetryConfig;
use rota::read::telemetry::collector::accept_agent;
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/agent/h100")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

fn sample(name: &str) -> NodeSample {
    serde_json::from_slice(&read(name)).unwrap_or_else(|e| panic!("decoding {name}: {e}"))
}

/// The reference binding's reading of GPU 0.
fn reference(name: &str) -> Value {
    let all: Value = serde_json::from_slice(&read(name)).expect("pynvml JSON");
    all["gpus"][0].clone()
}

#[test]
fn the_extender_accepts_what_the_agent_served_on_an_h100() {
    for name in ["telemetry-idle.json", "telemetry-busy.json"] {
        let body = read(name);
        let at = sample(name).sampled_at_unix_seconds;
        let telemetry = accept_agent(&body, "vm", at + 1.0, &TelemetryConfig::default())
            .unwrap_or_else(|e| panic!("{name} refused: {e}"));
        assert_eq!(telemetry.gpus().len(), 1, "{name}");
        let gpu = &telemetry.gpus()[0];
        assert_eq!(gpu.state, HealthState::Healthy, "{name}: {:?}", gpu.reasons);
        assert_eq!(telemetry.summary().unhealthy, 0, "{name}");
    }
}

#[test]
fn agent_readings_agree_with_nvmls_reference_binding() {
    for (ours, theirs) in [
        ("telemetry-idle.json", "pynvml-idle.json"),
        ("telemetry-busy.json", "pynvml-busy.json"),
    ] {
        let sample = sample(ours);
        let gpu = &sample.gpus[0];
        let reference = reference(theirs);
        assert!(sample.nvml_available);
        assert_eq!(Some(gpu.uuid.as_str()), reference["uuid"].as_str());
        assert_eq!(gpu.name.as_deref(), reference["name"].as_str());
        assert_eq!(
            gpu.memory_total_bytes,
            reference["memoryTotalBytes"].as_u64()
        );
        // Used memory includes the driver's reservation, as NVML's v1 reading does; the two
        // reads were taken a few milliseconds apart under a steady 30 GiB allocation.
        let (used, reference_used) = (
            gpu.memory_used_bytes.expect("memory used") as f64,
            reference["memoryUsedBytes"]
                .as_f64()
                .expect("reference used"),
        );
        assert!(
            (used - reference_used).abs() <= 64.0 * 1024.0 * 1024.0,
            "{ours}"
        );
        let utilization = gpu.utilization_gpu_ratio.expect("utilization");
        let reference_util = reference["gpuUtilPercent"].as_f64().expect("util") / 100.0;
        assert!((utilization - reference_util).abs() <= 0.05, "{ours}");
        assert_eq!(
            gpu.ecc_uncorrected_volatile,
            reference["eccVolatileUncorrected"].as_u64()
        );
        assert_eq!(
            gpu.pending_row_remap,
            Some(false),
            "{ours}: row remapping is readable"
        );
    }
}

#[test]
fn load_shows_in_every_gauge_the_placement_reads() {
    let (idle, busy) = (sample("telemetry-idle.json"), sample("telemetry-busy.json"));
    let (idle, busy) = (&idle.gpus[0], &busy.gpus[0]);
    assert!(busy.utilization_gpu_ratio > idle.utilization_gpu_ratio);
    assert!(busy.memory_used_bytes > idle.memory_used_bytes);
    assert!(busy.power_draw_watts > idle.power_draw_watts);
    assert_eq!(idle.compute_processes, Some(0));
    assert_eq!(busy.compute_processes, Some(1));
    // The reference binding's throttle bitmask: 0x1 idle, 0x4 software power cap.
    let names = |gpu: &rota::agent::GpuSample| gpu.throttle_reasons.clone().unwrap_or_default();
    assert_eq!(reference("pynvml-idle.json")["throttleReasons"], 1);
    assert!(format!("{:?}", names(idle)).contains("Idle"));
    assert_eq!(reference("pynvml-busy.json")["throttleReasons"], 4);
    assert!(format!("{:?}", names(busy)).contains("PowerCap"));
}
