//! The scheduler-extender webhook: kube-scheduler's `filter`, `prioritize` and `preempt` verbs,
//! plus `/healthz`, `/readyz` and `/metrics`.
//!
//! A thin adapter: it decodes the wire types, translates the pod, asks `core`, and encodes the
//! answer. It holds no policy of its own and never writes to the cluster.

pub mod explain;
mod service;
pub mod verbs;

pub use service::{Context, Extender};
