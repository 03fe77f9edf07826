//! The global in-flight body budget: how many body bytes all requests together may buffer.
//!
//! A request reserves its body's size *before* reading a byte of it, and holds the
//! [`Reservation`] until its handler has returned (the handler still owns the body). The size
//! reserved is the `Content-Length` (already checked against `max_body_bytes`), or the whole
//! `max_body_bytes` for a chunked body of unknown length: reserving up front means an admitted
//! request always finishes, where growing chunk by chunk could leave many half-read bodies all
//! waiting for each other until their deadlines. Requests without a body reserve nothing and
//! never wait. The budget is a tokio semaphore counting KiB, so waiters are served in arrival
//! order and `u32` permits cover bodies up to 4 TiB.
//!
//! Invariants: the bytes reserved at once never exceed the budget (the budget is raised to at
//! least `max_body_bytes`, so any single allowed body can be admitted); every reservation is
//! released on drop, on every path (answer, rejection, panic, aborted connection). Must not:
//! read bodies or decide status codes (the caller turns [`Exhausted`] into a 503).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::stats::ServerStats;

/// Budget granularity: one semaphore permit per KiB.
const UNIT_BYTES: usize = 1024;

/// The shared budget; one per server.
#[derive(Debug)]
pub(super) struct BodyBudget {
    permits: Arc<Semaphore>,
    stats: ServerStats,
}

/// The budget stayed exhausted until the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Exhausted;

/// Budget held for one body; gives it back when dropped.
#[derive(Debug)]
pub(super) struct Reservation {
    /// Counted bytes (whole KiB); zero for body-less requests.
    bytes: usize,
    stats: ServerStats,
    // Dropped after `Drop::drop` has uncounted the bytes, which keeps the stats invariant.
    _permit: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `budget_bytes`, raised to `max_body_bytes` if smaller (otherwise a body the
    /// size cap allows could never be admitted), and capped at what a semaphore can count.
    pub(super) fn new(budget_bytes: usize, max_body_bytes: usize, stats: ServerStats) -> Self {
        let units = (budget_bytes / UNIT_BYTES)
            .max(units_for(max_body_bytes))
            .min(Semaphore::MAX_PERMITS);
        stats.set_body_budget(units.saturating_mul(UNIT_BYTES));
        Self {
            permits: Arc::new(Semaphore::new(units)),
            stats,
        }
    }

    /// Reserves room for a body of `bytes`, waiting in line until `deadline` at most.
    /// Zero bytes never waits.
    pub(super) async fn reserve(
        &self,
        bytes: usize,
        deadline: Instant,
    ) -> Result<Reservation, Exhausted> {
        if bytes == 0 {
            return Ok(Reservation {
                bytes: 0,
                stats: self.stats.clone(),
                _permit: None,
            });
        }
        let units = units_for(bytes);
        // More units than u32 holds is more than any budget could grant; treat as exhausted.
        let wanted = u32::try_from(units).map_err(|_| Exhausted)?;
        let Some(permit) = self.acquire(wanted, deadline).await else {
            self.stats.budget_rejected();
            return Err(Exhausted);
        };
        let counted = units.saturating_mul(UNIT_BYTES);
        self.stats.body_reserved(counted);
        Ok(Reservation {
            bytes: counted,
            stats: self.stats.clone(),
            _permit: Some(permit),
        })
    }
}

impl BodyBudget {
    /// `wanted` permits at once if free, else in arrival order until `deadline`.
    async fn acquire(&self, wanted: u32, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_many_owned(wanted) {
            return Some(permit);
        }
        self.stats.budget_waited();
        let acquire = self.permits.clone().acquire_many_owned(wanted);
        // Elapsed, or closed (never: the semaphore is not closed while `self` lives).
        tokio::time::timeout_at(deadline, acquire).await.ok()?.ok()
    }
}

impl Reservation {
    /// Bytes this reservation counts against the budget (whole KiB).
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.stats.body_released(self.bytes);
        }
    }
}

/// Whole KiB needed to hold `bytes`.
fn units_for(bytes: usize) -> usize {
    bytes.div_ceil(UNIT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[tokio::test]
    async fn budget_is_raised_to_the_body_cap() {
        let stats = ServerStats::new();
        let budget = BodyBudget::new(1024, 10 * 1024, stats.clone());
        assert_eq!(stats.snapshot().body_budget_bytes, 10 * 1024);
        let whole = budget.reserve(10 * 1024, soon()).await;
        assert!(whole.is_ok(), "a body at the cap must fit an idle budget");
    }

    #[tokio::test]
    async fn exhausted_budget_waits_then_refuses_and_releases_on_drop() {
        let stats = ServerStats::new();
        let budget = BodyBudget::new(4 * 1024, 4 * 1024, stats.clone());
        let held = budget.reserve(3000, soon()).await.expect("first fits");
        assert_eq!(held.bytes(), 3 * 1024, "rounded up to whole KiB");
        assert_eq!(
            budget.reserve(2 * 1024, soon()).await.err(),
            Some(Exhausted)
        );
        assert_eq!(stats.snapshot().budget_rejections_total, 1);
        assert_eq!(stats.snapshot().budget_waits_total, 1);
        // Body-less requests never wait, even with the budget exhausted.
        let empty = budget.reserve(0, Instant::now()).await.expect("no wait");
        assert_eq!(empty.bytes(), 0);
        drop(held);
        let snap = stats.snapshot();
        assert_eq!(
            (snap.reserved_body_bytes, snap.peak_reserved_body_bytes),
            (0, 3 * 1024)
        );
        assert!(budget.reserve(4 * 1024, soon()).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiter_is_admitted_when_budget_frees_before_its_deadline() {
        let stats = ServerStats::new();
        let budget = Arc::new(BodyBudget::new(2048, 2048, stats.clone()));
        let held = budget.reserve(2048, soon()).await.expect("fits");
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                budget.reserve(1024, deadline).await.map(|r| r.bytes())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert_eq!(waiter.await.expect("task"), Ok(1024));
        assert!(stats.snapshot().peak_reserved_body_bytes <= 2048);
    }
}
