//! The policy core: domain types and every scheduling decision rota makes.
//!
//! Pure by rule: no kube, tokio, hyper or file I/O, and no clock reads (`now` is an argument).
//! A test (`tests/purity.rs`) fails if this folder imports an I/O crate. The extender, the
//! rotation loop and the simulator all call these functions, so they behave identically.

pub mod cluster;
pub mod explain;
pub mod fairshare;
pub mod feasibility;
pub mod gate;
pub mod health;
pub mod ledger;
pub mod model;
pub mod node_brief;
pub mod placement;
pub mod preemption;
pub mod quantity;
pub mod queue;
pub mod rotation;
pub mod rotation_input;
pub mod telemetry;
pub mod workloads;

pub use cluster::ClusterSnapshot;
pub use model::{GpuNode, GpuPod, PlacementRules, WorkloadId, WorkloadKind};
