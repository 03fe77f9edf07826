//! rota: a fair-share GPU scheduler extender for Kubernetes.
//!
//! Containers (batch Jobs) and KubeVirt virtual machines take turns on scarce GPUs with the stock
//! kube-scheduler. The crate is one policy core with thin adapters around it:
//!
//! ```text
//!   kube-scheduler ──HTTP──▶ extender (wire types, handlers) ─┐
//!   NVML ─▶ agent ──HTTP──▶ telemetry ────────────────────────┼─▶ core (pure, no I/O)
//!   kube API ──watch──▶ controller ─▶ state (cluster view) ───┘
//! ```
//!
//! `core` never performs I/O and never reads a clock: callers pass `now`. Everything that talks
//! to the outside world (HTTP, the kube API, NVML, files) lives in the adapter modules.

pub mod agent;
pub mod clock;
pub mod config;
pub mod core;
pub mod extender;
pub mod http;
pub mod loadtest;
pub mod metrics;
pub mod names;
pub mod read;
pub mod readiness;
pub mod serve;
pub mod sim;
#[cfg(test)]
mod testing;
pub mod wire;
pub mod write;
