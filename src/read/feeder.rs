//! One restartable feeder for every watched kind: a kube-rs watch with re-list, restarted with
//! jittered backoff whenever its stream ends, feeding one [`Index`].
//!
//! ```text
//!   make() ─▶ watcher stream ─▶ Apply/Delete ───────────────▶ index.apply / index.delete
//!      ▲                     ─▶ Init, InitApply…, InitDone ─▶ buffer ─▶ index.replace (one swap)
//!      │                     ─▶ Err ─▶ index.absent? / Readiness (loud) / warn, stream retries
//!      └── stream ended: rota_watch_restarts_total{kind} += 1, sleep backoff (1 s … 30 s, jitter)
//! ```
//!
//! Invariants: readers never see half a list (the items of a re-list are buffered and handed
//! over at `InitDone`); a feeder runs until its shutdown future completes, however often its
//! watch ends; the backoff resets once a stream has lived [`RESET_AFTER`]; every event stamps
//! `rota_watch_last_event_age_seconds{kind}`. Errors inside a stream are retried by kube's
//! own jittered backoff and never end it; a missing namespace, a forbidden list or an
//! unreachable API server goes to [`Readiness`] (logged once), other errors are warnings.
//! Must not: write to the API server, or know what an index does with its objects.

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use tokio::time::Instant;

use crate::readiness::{watcher_kube_error, Readiness};

/// First delay before a watch whose stream ended is started again.
pub const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);
/// Longest delay between restarts.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A stream that lived this long resets the backoff to [`FIRST_RESTART_DELAY`].
pub const RESET_AFTER: Duration = Duration::from_secs(60);

/// What a feeder keeps up to date: one watched kind's share of an index.
pub trait Index<K>: Send + Sync {
    /// What a re-list buffers per object (its translated form).
    type Item: Send;
    /// Plural kind name for logs, metrics and readiness (`nodes`, `jobs`, `agents`).
    fn kind(&self) -> &'static str;
    /// The buffered form of an object seen during a re-list, or `None` when it is not kept.
    fn item(&self, obj: &K) -> Option<Self::Item>;
    /// Applies an added or modified object.
    fn apply(&self, obj: &K);
    /// Removes a deleted object.
    fn delete(&self, obj: &K);
    /// Replaces every object of this kind after a full list.
    fn replace(&self, items: Vec<Self::Item>);
    /// Handles an error that means "this API is not installed" (a CRD); `true` keeps the
    /// feeder quiet about it.
    fn absent(&self, err: &watcher::Error) -> bool {
        let _ = err;
        false
    }
}

/// Applies the events of one stream to `index` until the stream ends; `observe` sees each
/// answer from the API server (`None`) and each error (metrics, readiness). Generic over the stream so tests can play events.
pub async fn drain<K, I, S>(
    events: S,
    index: &I,
    observe: &mut (dyn FnMut(Option<&watcher::Error>) + Send),
) where
    I: Index<K> + ?Sized,
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut events = std::pin::pin!(events);
    let mut buffer: Option<Vec<I::Item>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                // `Init` comes from the watcher itself before it lists: not proof of an answer.
                if !matches!(event, Event::Init) {
                    observe(None);
                }
                match event {
                    Event::Apply(obj) => index.apply(&obj),
                    Event::Delete(obj) => index.delete(&obj),
                    Event::Init => buffer = Some(Vec::new()),
                    Event::InitApply(obj) => {
                        if let Some(item) = index.item(&obj) {
                            buffer.get_or_insert_with(Vec::new).push(item);
                        }
                    }
                    Event::InitDone => {
                        let items = buffer.take().unwrap_or_default();
                        tracing::debug!(kind = index.kind(), count = items.len(), "Listed.");
                        index.replace(items);
                    }
                }
            }
            Err(err) => {
                if !index.absent(&err) {
                    observe(Some(&err));
                }
            }
        }
    }
}

/// Restarts and freshness of every feeder: `rota_watch_restarts_total{kind}`,
/// `rota_watch_errors_total{kind}` and `rota_watch_last_event_age_seconds{kind}` (computed at
/// scrape time; +Inf before the first event).
#[derive(Debug)]
pub struct FeedMetrics {
    restarts: IntCounterVec,
    errors: IntCounterVec,
    last_event: parking_lot::Mutex<BTreeMap<&'static str, Option<Instant>>>,
    age: GaugeVec,
}

impl FeedMetrics {
    /// Metrics that count from now; [`register`](Self::register) exposes them.
    pub fn new() -> Arc<Self> {
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["kind"])
                .unwrap_or_else(|_| unreachable!("static metric options"))
        };
        Arc::new(Self {
            restarts: counter(
                "rota_watch_restarts_total",
                "Times a watch stream ended and its feeder started it again, by kind.",
            ),
            errors: counter(
                "rota_watch_errors_total",
                "Watch and list errors (retried with backoff), by kind.",
            ),
            last_event: parking_lot::Mutex::new(BTreeMap::new()),
            age: GaugeVec::new(
                Opts::new(
                    "rota_watch_last_event_age_seconds",
                    "Seconds since the feeder of this kind last received an event (+Inf: none yet).",
                ),
                &["kind"],
            )
            .unwrap_or_else(|_| unreachable!("static metric options")),
        })
    }

    /// Registers the three metrics on `registry`.
    pub fn register(self: &Arc<Self>, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.restarts.clone()))?;
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(AgeCollector(self.clone())))
    }

    /// Restarts of `kind` so far.
    pub fn restarts(&self, kind: &str) -> u64 {
        self.restarts.with_label_values(&[kind]).get()
    }

    /// Errors of `kind` so far.
    pub fn errors(&self, kind: &str) -> u64 {
        self.errors.with_label_values(&[kind]).get()
    }

    /// Time since the last event of `kind`, if any arrived.
    pub fn last_event_age(&self, kind: &str) -> Option<Duration> {
        let seen = self.last_event.lock().get(kind).copied().flatten();
        seen.map(|at| at.elapsed())
    }

    fn known(&self, kind: &'static str) {
        self.last_event.lock().entry(kind).or_insert(None);
    }

    fn seen(&self, kind: &'static str) {
        self.last_event.lock().insert(kind, Some(Instant::now()));
    }
}

struct AgeCollector(Arc<FeedMetrics>);

impl Collector for AgeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.age.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let ages: Vec<(&'static str, f64)> = self
            .0
            .last_event
            .lock()
            .iter()
            .map(|(kind, at)| {
                (
                    *kind,
                    at.map_or(f64::INFINITY, |t| t.elapsed().as_secs_f64()),
                )
            })
            .collect();
        for (kind, age) in ages {
            self.0.age.with_label_values(&[kind]).set(age);
        }
        self.0.age.collect()
    }
}

/// Runs one kind's watch forever (until shutdown), restarting it whenever its stream ends.
pub struct Feeder {
    metrics: Arc<FeedMetrics>,
    readiness: Option<Arc<Readiness>>,
    first_delay: Duration,
    max_delay: Duration,
}

impl std::fmt::Debug for Feeder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeder")
            .field("first_delay", &self.first_delay)
            .field("max_delay", &self.max_delay)
            .finish_non_exhaustive()
    }
}

impl Feeder {
    /// A feeder counting into `metrics` and reporting loud failures to `readiness`.
    pub fn new(metrics: Arc<FeedMetrics>, readiness: Option<Arc<Readiness>>) -> Self {
        Self {
            metrics,
            readiness,
            first_delay: FIRST_RESTART_DELAY,
            max_delay: MAX_RESTART_DELAY,
        }
    }

    /// Feeds `index` from the streams `make` builds (a fresh watch, so a fresh list, each
    /// time) until `shutdown` completes.
    pub async fn run<K, I, S, M>(self, mut make: M, index: I, shutdown: impl Future<Output = ()>)
    where
        I: Index<K>,
        M: FnMut() -> S,
        S: Stream<Item = Result<Event<K>, watcher::Error>>,
    {
        let kind = index.kind();
        self.metrics.known(kind);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut delay = self.first_delay;
        let mut jitter = Jitter::new();
        loop {
            let started = Instant::now();
            let mut failing = false;
            let mut observe = |err: Option<&watcher::Error>| self.observe(kind, err, &mut failing);
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = drain(make(), &index, &mut observe) => {}
            }
            if started.elapsed() >= RESET_AFTER {
                delay = self.first_delay;
            }
            let wait = jitter.spread(delay);
            self.metrics.restarts.with_label_values(&[kind]).inc();
            tracing::warn!(
                kind,
                lived_seconds = started.elapsed().as_secs(),
                restart_in_ms = wait.as_millis() as u64,
                "Watch stream ended; restarting it with a fresh list."
            );
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
            delay = (delay * 2).min(self.max_delay);
        }
    }

    fn observe(&self, kind: &'static str, err: Option<&watcher::Error>, failing: &mut bool) {
        let Some(err) = err else {
            self.metrics.seen(kind);
            if std::mem::take(failing) {
                if let Some(readiness) = &self.readiness {
                    readiness.kube_ok(kind);
                }
            }
            return;
        };
        self.metrics.errors.with_label_values(&[kind]).inc();
        *failing = true;
        let object = format!("watch of {kind} (all namespaces)");
        let loud = match (&self.readiness, watcher_kube_error(err)) {
            (Some(readiness), Some(source)) => {
                readiness.kube_error(kind, &object, None, source, false)
            }
            _ => false,
        };
        if loud {
            tracing::debug!(kind, error = %err, "Watch failed (reported); retrying after backoff.");
        } else {
            tracing::warn!(kind, error = %err, "Watch failed; retrying after backoff.");
        }
    }
}

/// Full jitter between half and all of a delay, without a `rand` dependency: std seeds every
/// `RandomState` from the OS.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        Self(h.finish() | 1)
    }

    /// A duration uniformly in `[delay / 2, delay]`.
    fn spread(&mut self, delay: Duration) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let fraction = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        delay.mul_f64(0.5 + 0.5 * fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_whole() {
        let mut j = Jitter::new();
        let d = Duration::from_secs(8);
        for _ in 0..1000 {
            let s = j.spread(d);
            assert!(s >= d / 2 && s <= d, "{s:?}");
        }
    }
}
