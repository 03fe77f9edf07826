//! GPU telemetry (placeholder doc).

pub mod agents;
pub mod collector;
pub mod dcgm;
