//! The write side (placeholder doc).

pub mod held_events;
pub mod leader;
pub mod ledger_store;
pub mod rotation;
pub mod usage;
