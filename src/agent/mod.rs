//! The GPU node agent: samples NVML and serves telemetry.
