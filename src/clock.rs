//! The one wall clock of the serving processes (extender and agent), and its one time type.
//!
//! ```text
//!   system() / now() ── jiff::Timestamp ──▶ loops, Lease, annotations, Events
//!                                └── seconds(t) ──▶ f64 Unix seconds, the unit `core` takes
//! ```
//!
//! Only this module reads `SystemTime::now` (`tests/purity.rs` checks it). Code that must be
//! testable against a virtual clock takes a [`Clock`] (the Lease elector, the rotation loop and
//! its actuators); the rest reads [`now`]. The policy core and the simulator never read a
//! clock: their callers pass `now` in, as f64 Unix seconds made by [`seconds`]. The extender
//! also reads its thread's CPU clock ([`thread_cpu_seconds`]) for a metric, never for time.
//! Must not: read a monotonic clock for wall time, or be read from `core` or `sim`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff::Timestamp;

/// An injectable wall clock (tests pass one that follows paused tokio time).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock as a [`Clock`].
pub fn system() -> Clock {
    Arc::new(now)
}

/// The system wall clock, to the microsecond. Before 1970 (a broken clock) it reads the epoch.
pub fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let micros = i64::try_from(since.as_micros()).unwrap_or(i64::MAX);
    Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// CPU time the calling thread has used, in seconds: the extender measures its own work per
/// request with it, apart from the time it waited for a core.
pub fn thread_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// `t` as Unix seconds, the time unit of the policy core (`now` arguments, ledger stamps).
pub fn seconds(t: Timestamp) -> f64 {
    t.as_microsecond() as f64 / 1e6
}

/// [`now`] as Unix seconds.
pub fn now_seconds() -> f64 {
    seconds(now())
}

/// Unix seconds as RFC 3339 in UTC, to the second (`2026-01-31T12:00:00Z`); a time that is not
/// finite reads as the epoch.
pub fn rfc3339(seconds: f64) -> String {
    let whole = if seconds.is_finite() {
        seconds.floor() as i64
    } else {
        0
    };
    Timestamp::from_second(whole)
        .map_or_else(|_| Timestamp::UNIX_EPOCH.to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_keep_microseconds_and_now_is_after_2020() {
        let t = Timestamp::from_microsecond(1_700_000_000_250_000).unwrap();
        assert_eq!(seconds(t), 1_700_000_000.25);
        assert!(now_seconds() > 1_577_836_800.0);
        assert!(system()() >= t);
    }
}
