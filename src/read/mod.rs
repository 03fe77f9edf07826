//! The read side (placeholder doc, rewritten below).

pub mod cluster;
pub mod feeder;
pub mod rotated_out;
pub mod telemetry;
pub mod view;
