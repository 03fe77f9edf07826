//! Live counters of the HTTP transport: connections by lane, body-budget use and rejections.
//!
//! A [`ServerStats`] is a cheap clone of one shared set of atomics: the server updates it, and
//! whoever holds a clone (a metrics collector, a test) reads a [`StatsSnapshot`] at any time.
//! Invariant: `reserved_body_bytes` only counts reservations that hold budget permits, so it
//! never exceeds `body_budget_bytes`. Must not: register metrics or log (the application owns
//! both; a scrape-time collector can read the snapshot).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A handle on the transport's counters. Clones share the same counters.
#[derive(Debug, Clone, Default)]
pub struct ServerStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    open_connections: AtomicUsize,
    peak_open_connections: AtomicUsize,
    reserve_lane_connections_total: AtomicU64,
    shed_connections_total: AtomicU64,
    body_budget_bytes: AtomicUsize,
    reserved_body_bytes: AtomicUsize,
    peak_reserved_body_bytes: AtomicUsize,
    budget_rejections_total: AtomicU64,
    budget_waits_total: AtomicU64,
}

/// The counters at one moment. Totals count since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections being served now (both lanes).
    pub open_connections: usize,
    /// Most connections served at once so far.
    pub peak_open_connections: usize,
    /// Connections admitted on the reserve lane (body-less requests only) because
    /// `max_connections` were busy.
    pub reserve_lane_connections_total: u64,
    /// Connections answered with an immediate 503 and closed because both lanes were full.
    pub shed_connections_total: u64,
    /// The in-flight body budget in force (after raising it to at least `max_body_bytes`).
    pub body_budget_bytes: usize,
    /// Body bytes reserved now (rounded up to whole KiB per request).
    pub reserved_body_bytes: usize,
    /// Most body bytes reserved at once so far; never above `body_budget_bytes`.
    pub peak_reserved_body_bytes: usize,
    /// Requests answered 503 because the budget stayed exhausted until their body deadline
    /// (or because they carried a body on the reserve lane).
    pub budget_rejections_total: u64,
    /// Requests that found the budget used up and had to wait in line (served or not).
    pub budget_waits_total: u64,
}

impl ServerStats {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every counter. Each value is exact; the set is not one atomic picture.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.0;
        StatsSnapshot {
            open_connections: c.open_connections.load(Ordering::Relaxed),
            peak_open_connections: c.peak_open_connections.load(Ordering::Relaxed),
            reserve_lane_connections_total: c
                .reserve_lane_connections_total
                .load(Ordering::Relaxed),
            shed_connections_total: c.shed_connections_total.load(Ordering::Relaxed),
            body_budget_bytes: c.body_budget_bytes.load(Ordering::Relaxed),
            reserved_body_bytes: c.reserved_body_bytes.load(Ordering::Relaxed),
            peak_reserved_body_bytes: c.peak_reserved_body_bytes.load(Ordering::Relaxed),
            budget_rejections_total: c.budget_rejections_total.load(Ordering::Relaxed),
            budget_waits_total: c.budget_waits_total.load(Ordering::Relaxed),
        }
    }

    // === updates (crate-internal) ===

    /// Counts a connection until the returned guard drops.
    pub(super) fn connection_opened(&self) -> ConnectionGuard {
        let now = self.0.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.0
            .peak_open_connections
            .fetch_max(now, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    pub(super) fn reserve_lane_used(&self) {
        self.0
            .reserve_lane_connections_total
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused connection; returns the new total (for log throttling).
    pub(super) fn connection_shed(&self) -> u64 {
        self.0
            .shed_connections_total
            .fetch_add(1, Ordering::Relaxed)
            + 1
    }

    pub(super) fn set_body_budget(&self, bytes: usize) {
        self.0.body_budget_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Call only while holding permits for `bytes` (see the module invariant).
    pub(super) fn body_reserved(&self, bytes: usize) {
        let now = self
            .0
            .reserved_body_bytes
            .fetch_add(bytes, Ordering::Relaxed)
            + bytes;
        self.0
            .peak_reserved_body_bytes
            .fetch_max(now, Ordering::Relaxed);
    }

    /// Call before the permits for `bytes` go back.
    pub(super) fn body_released(&self, bytes: usize) {
        self.0
            .reserved_body_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
    }

    pub(super) fn budget_waited(&self) {
        self.0.budget_waits_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn budget_rejected(&self) {
        self.0
            .budget_rejections_total
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Decrements `open_connections` when dropped, whatever way the connection task ends.
#[derive(Debug)]
pub(super) struct ConnectionGuard(ServerStats);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        (self.0).0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_guard_counts_open_and_peak() {
        let stats = ServerStats::new();
        let a = stats.connection_opened();
        let b = stats.connection_opened();
        drop(a);
        let snap = stats.snapshot();
        assert_eq!((snap.open_connections, snap.peak_open_connections), (1, 2));
        drop(b);
        assert_eq!(stats.snapshot().open_connections, 0);
    }

    #[test]
    fn reservations_track_current_and_peak() {
        let stats = ServerStats::new();
        stats.body_reserved(10);
        stats.body_reserved(5);
        stats.body_released(10);
        let snap = stats.snapshot();
        assert_eq!(
            (snap.reserved_body_bytes, snap.peak_reserved_body_bytes),
            (5, 15)
        );
    }
}
