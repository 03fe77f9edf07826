//! The scheduler-extender webhook: kube-scheduler's `filter`, `prioritize` and `preempt` verbs,
//! plus `/healthz`, `/readyz` and `/metrics`.
//!
//! A thin adapter: it decodes the wire types, translates the pod, asks `core`, and encodes the
//! answer. `/readyz` reads the cluster view's sync state and [`crate::readiness`]; the verbs
//! answer whatever it says (degraded: from the last view, without rotation or ledger updates).
//! Must not: hold policy of its own, write to the API server (held pods go to a bounded channel
//! that the write side drains), or wire the process (`crate::serve` does).

pub mod explain;
mod service;
pub mod verbs;

pub use service::{Context, Extender};
