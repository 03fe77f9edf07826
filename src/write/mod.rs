//! The write side: everything that changes the cluster, gated by one `coordination.k8s.io`
//! Lease so that exactly one replica acts.
//!
//! ```text
//!   leader::LeaderElector ──Lease GET/POST/PUT──▶ API server
//!        │ leader flag (watch::Receiver<bool>)
//!        ├─▶ usage::UsageAccounting ─▶ ledger_store (ConfigMap or file): charge + save
//!        ├─▶ rotation::RotationLoop ─▶ actuators: suspend/resume Jobs, stop/start VMs, evict
//!        └─▶ held_events (via the serving process's leader-only sink) ─▶ Events
//! ```
//!
//! - [`leader`]: the Lease elector. It is the one loop that writes while not leading (it
//!   campaigns), and on shutdown it releases the Lease so a successor leads at once.
//! - [`usage`] and [`ledger_store`]: usage accounting and where the ledger lives.
//! - [`rotation`]: the rotation loop, its planner and its actuators.
//! - [`held_events`]: rate-limited Events on pods the gate holds back.
//!
//! May: write Leases, the ledger ConfigMap or file, workload objects and Events. Must: run only
//! during a leadership term (the serving process starts the loops as one group when this
//! replica becomes leader and stops them when it stops leading) and still check the leader flag
//! before every write; the ledger reload of a follower ([`usage::UsageAccounting::follow`])
//! only reads. Must stop on shutdown before the Lease is released, and report
//! a missing namespace, a forbidden object or an unreachable API server to
//! [`crate::readiness`]. Must not: watch or list for the view (that is [`crate::read`]), or
//! make policy decisions (`core` does).

pub mod held_events;
pub mod leader;
pub mod ledger_store;
pub mod rotation;
pub mod usage;
