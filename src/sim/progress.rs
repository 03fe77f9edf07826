//! A progress line for long `rota simulate` runs: policy, simulated time and percent of
//! arrivals replayed, rewritten in place (`\r`) on stderr.
//!
//! It wraps the policy ([`Progress`] implements [`Policy`] by delegation), so the engine stays
//! free of wall-clock reads and I/O. Invariants: the wrapped policy sees exactly the calls it
//! would see unwrapped (the run is unchanged); at most [`UPDATES_PER_SECOND`] lines per second;
//! nothing is written when disabled (stdout not a terminal: tests, CI, pipes). Must not be used
//! by the engine or the report.

use std::io::Write;
use std::time::{Duration, Instant};

use super::engine::{JobId, Policy, Sim};

/// Most progress updates per second.
pub const UPDATES_PER_SECOND: u32 = 10;

/// Calls between two looks at the wall clock (reading it on every call would cost more than
/// some policies' whole scheduling step).
const CALLS_PER_CLOCK_READ: u32 = 256;

/// A policy wrapper that reports progress on stderr while `enabled`.
pub struct Progress<'p> {
    inner: &'p mut dyn Policy,
    enabled: bool,
    total: usize,
    arrived: usize,
    calls: u32,
    last: Option<Instant>,
    wrote: bool,
}

impl<'p> Progress<'p> {
    /// Wraps `inner` for a trace of `total_jobs` arrivals; writes only if `enabled` (the CLI
    /// passes whether stdout is a terminal).
    pub fn new(inner: &'p mut dyn Policy, total_jobs: usize, enabled: bool) -> Self {
        Self {
            inner,
            enabled,
            total: total_jobs,
            arrived: 0,
            calls: 0,
            last: None,
            wrote: false,
        }
    }

    /// Clears the progress line, if one was written.
    pub fn finish(self) {
        if self.wrote {
            let mut err = std::io::stderr().lock();
            // A failed write to stderr is not worth failing the run for.
            let _ = write!(err, "\r{:79}\r", "");
            let _ = err.flush();
        }
    }

    fn maybe_report(&mut self, now: f64) {
        if !self.enabled {
            return;
        }
        self.calls += 1;
        if self.calls < CALLS_PER_CLOCK_READ {
            return;
        }
        self.calls = 0;
        let tick = Instant::now();
        let period = Duration::from_secs(1) / UPDATES_PER_SECOND;
        if self.last.is_some_and(|l| tick.duration_since(l) < period) {
            return;
        }
        self.last = Some(tick);
        self.wrote = true;
        let line = progress_line(self.inner.name(), now, self.arrived, self.total);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}");
        let _ = err.flush();
    }
}

/// The text of one update: `policy  day 12.3 (295.0 h)  41.2% of arrivals`.
pub fn progress_line(policy: &str, now_seconds: f64, arrived: usize, total: usize) -> String {
    let pct = if total == 0 {
        100.0
    } else {
        100.0 * arrived as f64 / total as f64
    };
    format!(
        "{policy:<6} simulated {:7.1} h  {pct:5.1}% of arrivals",
        now_seconds / 3600.0
    )
}

impl Policy for Progress<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn on_arrival(&mut self, sim: &Sim<'_>, job: JobId) {
        self.arrived += 1;
        self.inner.on_arrival(sim, job);
        self.maybe_report(sim.now());
    }
    fn on_finish(&mut self, sim: &Sim<'_>, job: JobId) {
        self.inner.on_finish(sim, job);
    }
    fn on_timer(&mut self, sim: &mut Sim<'_>, job: JobId) {
        self.inner.on_timer(sim, job);
    }
    fn tick_seconds(&self) -> Option<f64> {
        self.inner.tick_seconds()
    }
    fn on_tick(&mut self, sim: &mut Sim<'_>) {
        self.inner.on_tick(sim);
        self.maybe_report(sim.now());
    }
    fn schedule(&mut self, sim: &mut Sim<'_>) {
        self.inner.schedule(sim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_policy_time_and_percent() {
        let line = progress_line("rota", 7200.0, 25, 100);
        assert!(line.starts_with("rota"), "{line}");
        assert!(line.contains("2.0 h"), "{line}");
        assert!(line.contains("25.0%"), "{line}");
        assert!(progress_line("fifo", 0.0, 0, 0).contains("100.0%"));
    }
}
