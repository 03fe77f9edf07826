//! The read side: watch feeds and the indexes they keep. Runs on every replica, leader or not.
//!
//! ```text
//!   API server ──watch/list──▶ feeder (one per kind, restartable) ──▶ indexes
//!     nodes, pods ─────────────────────────────────────────────────▶ view::ClusterView
//!     jobs, virtualmachines (rota.io/rotated-out-at) ──────────────▶ rotated_out::RotatedOutIndex
//!     agent / dcgm-exporter pods ──▶ telemetry::agents::AgentDirectory
//!   agents, dcgm-exporters ──HTTP GET──▶ telemetry::collector ─────▶ view (per-node telemetry)
//!   view + ledger (read) ──▶ view::fairshare (entitlements, queue, gate) ──▶ the extender verbs
//! ```
//!
//! - [`feeder`]: the one restartable feeder (watch with re-list, jittered restart backoff,
//!   `rota_watch_restarts_total` and `rota_watch_last_event_age_seconds` per kind).
//! - [`cluster`]: the Node and Pod kinds of the cluster view, and the sync gate.
//! - [`view`]: the cluster view, object translation and the fair-share refresh.
//! - [`rotated_out`]: the index of workloads rota rotated out.
//! - [`telemetry`]: reporter discovery, the poller and the dcgm-exporter parser.
//!
//! May: list and watch any kind, GET telemetry reporters, read the usage ledger in memory,
//! report failures to [`crate::readiness`]. Must not: write to the API server (create, update,
//! patch, delete, Events) or to the ledger; that is [`crate::write`], and only while leading.
//! Must not make policy decisions either (`core` does).

pub mod cluster;
pub mod feeder;
pub mod rotated_out;
pub mod telemetry;
pub mod view;
