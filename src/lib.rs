//! rota: a fair-share GPU scheduler extender for Kubernetes.
//!
//! Containers (batch Jobs) and KubeVirt virtual machines take turns on scarce GPUs with the stock
//! kube-scheduler. The crate is one policy core with thin adapters around it:
//!
//! ```text
//!   kube-scheduler ──HTTP──▶ extender (wire types, verbs) ─────────┐
//!   NVML ─▶ agent ──HTTP──▶ read::telemetry ─┐                      │
//!   kube API ──watch──▶ read (feeds) ────────┴─▶ read::view ────────┼─▶ core (pure, no I/O)
//!   kube API ◀──write── write (Lease, ledger, rotation, Events) ◀───┘   (only while leading)
//!   serve: builds all of the above, runs it in one task set, shuts it down in order
//! ```
//!
//! `core` never performs I/O and never reads a clock: callers pass `now`. Everything that talks
//! to the outside world (HTTP, the kube API, NVML, files) lives in the adapter modules: the read
//! side (`read`) never writes to the API server; the write side (`write`) acts only while this
//! replica holds the Lease. The wall clock is read in `clock` only; every `rota.io/…` name is in
//! `names`; failures a person must fix are reported to `readiness`.

pub mod agent;
pub mod clock;
pub mod config;
pub mod core;
pub mod extender;
pub mod http;
pub mod loadtest;
pub mod messages;
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
