//! GPU telemetry on the read side: where the reporters are, polling them, and reading
//! dcgm-exporter pages.
//!
//! - [`agents`]: the reporter pods (rota agents by `telemetry.agentSelector`, dcgm-exporters by
//!   `telemetry.dcgmExporterSelector`, fixed `--agent` targets), fed by the restartable feeder.
//! - [`collector`]: polls every reporter each interval and stores graded telemetry on the view.
//! - [`dcgm`]: parses dcgm-exporter's Prometheus text.
//!
//! May: watch pods, GET reporters over HTTP, write telemetry into the in-memory view. Must not:
//! write to the API server, or grade health itself (`core::health` does).

pub mod agents;
pub mod collector;
pub mod dcgm;
