//! Kubernetes Events on pods the fair-share gate holds back, so that `kubectl describe pod`
//! says why a pod waits, without one Event per scheduling cycle.
//!
//! ```text
//!   filter (request path) ── notify: try_send, drop when full ──▶ bounded mpsc
//!                                                                    │
//!   run: RateLimit (per pod UID) ──▶ HeldEventSink::emit (EventSink: reason WaitingForFairShare)
//! ```
//!
//! Invariants: the request path never waits (a full channel drops the notice; the pod is
//! filtered again soon); at most one Event per pod per [`REPEAT_AFTER`], or sooner when the
//! reason text changed and [`CHANGED_AFTER`] passed; pods not held for [`FORGET_AFTER`] are
//! forgotten, so memory stays bounded by the pods held recently. Time is `tokio::time`, so
//! tests run under paused time.
//! Must not: block or fail a filter request, or decide whether a pod is held (`core::gate`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::rotation::EventSink;

/// Event reason shown by `kubectl describe pod` for a pod waiting its turn (Normal).
pub const REASON: &str = "WaitingForFairShare";
/// Event reason for a pod whose workload can never fit any node (Warning).
pub const UNPLACEABLE_REASON: &str = "Unplaceable";
/// Event action (events.k8s.io requires one).
pub const ACTION: &str = "Hold";
/// Notices buffered between the filter and the Event task: 1024 covers a burst of pending
/// pods; beyond that, dropping is harmless because held pods are filtered again.
pub const CHANNEL_CAPACITY: usize = 1024;
/// The same pod gets at most one Event per 5 minutes (kube-scheduler retries an
/// unschedulable pod at least that often, so one Event per retry round).
pub const REPEAT_AFTER: Duration = Duration::from_secs(300);
/// A changed reason (say, a new queue position) is reported again after 1 minute.
pub const CHANGED_AFTER: Duration = Duration::from_secs(60);
/// A pod not held for 30 minutes is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(1800);

/// A pod held back by the gate, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldPod {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid` (the rate-limit key).
    pub uid: String,
    /// The gate's reason, as sent to the scheduler.
    pub reason: Arc<str>,
    /// Its workload can never fit: a Warning Event instead of a Normal one.
    pub unplaceable: bool,
}

/// The filter's end of the channel.
pub type HeldSender = mpsc::Sender<HeldPod>;

/// A bounded channel of [`CHANNEL_CAPACITY`] notices.
pub fn channel() -> (HeldSender, mpsc::Receiver<HeldPod>) {
    mpsc::channel(CHANNEL_CAPACITY)
}

/// Sends a notice without waiting; drops it when the channel is full or closed.
pub fn notify(tx: &HeldSender, pod: HeldPod) {
    if tx.try_send(pod).is_err() {
        tracing::debug!("Dropped a held-pod notice (channel full or closed).");
    }
}

/// Where held-pod Events go: the Kubernetes API in production, a recorder in tests.
pub trait HeldEventSink: Send + Sync {
    /// Emits one Event about `pod` (failures are the sink's to log).
    fn emit<'a>(&'a self, pod: &'a HeldPod) -> BoxFuture<'a, ()>;
}

impl HeldEventSink for EventSink {
    fn emit<'a>(&'a self, pod: &'a HeldPod) -> BoxFuture<'a, ()> {
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
            ..ObjectReference::default()
        };
        Box::pin(async move {
            let (kind, reason) = match pod.unplaceable {
                true => (EventType::Warning, UNPLACEABLE_REASON),
                false => (EventType::Normal, REASON),
            };
            EventSink::emit(self, &regarding, kind, reason, ACTION, &pod.reason).await;
        })
    }
}

/// What is remembered of one held pod.
#[derive(Debug)]
struct Seen {
    emitted_at: Instant,
    reason: Arc<str>,
    last_seen: Instant,
}

/// The per-pod rate limit (see the module docs).
#[derive(Debug, Default)]
pub struct RateLimit {
    pods: FxHashMap<String, Seen>,
}

impl RateLimit {
    /// Records that `pod` was held at `now`; true when an Event is due.
    pub fn admit(&mut self, pod: &HeldPod, now: Instant) -> bool {
        let key = if pod.uid.is_empty() {
            format!("{}/{}", pod.namespace, pod.name)
        } else {
            pod.uid.clone()
        };
        let Some(seen) = self.pods.get_mut(&key) else {
            self.pods.insert(
                key,
                Seen {
                    emitted_at: now,
                    reason: pod.reason.clone(),
                    last_seen: now,
                },
            );
            return true;
        };
        seen.last_seen = now;
        let since = now.saturating_duration_since(seen.emitted_at);
        let due = since >= REPEAT_AFTER || (seen.reason != pod.reason && since >= CHANGED_AFTER);
        if due {
            seen.emitted_at = now;
            seen.reason = pod.reason.clone();
        }
        due
    }

    /// Forgets pods not held since `now − FORGET_AFTER`.
    pub fn prune(&mut self, now: Instant) {
        self.pods
            .retain(|_, s| now.saturating_duration_since(s.last_seen) < FORGET_AFTER);
    }

    /// Pods remembered.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

/// Emits rate-limited Events for the notices on `rx` until every sender is gone.
pub async fn run(mut rx: mpsc::Receiver<HeldPod>, sink: Arc<dyn HeldEventSink>) {
    let mut limit = RateLimit::default();
    let mut prune = tokio::time::interval(CHANGED_AFTER);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            pod = rx.recv() => {
                let Some(pod) = pod else { break };
                if limit.admit(&pod, Instant::now()) {
                    sink.emit(&pod).await;
                }
            }
            _ = prune.tick() => limit.prune(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorded(parking_lot::Mutex<Vec<(String, String)>>);

    impl HeldEventSink for Recorded {
        fn emit<'a>(&'a self, pod: &'a HeldPod) -> BoxFuture<'a, ()> {
            self.0
                .lock()
                .push((pod.name.clone(), pod.reason.to_string()));
            Box::pin(async {})
        }
    }

    fn held(name: &str, reason: &str) -> HeldPod {
        HeldPod {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            reason: reason.into(),
            unplaceable: false,
        }
    }

    async fn settle() {
        // Let the task drain the channel (paused time: no real waiting).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_event_per_pod_per_five_minutes_unless_the_reason_changes() {
        let (tx, rx) = channel();
        let sink = Arc::new(Recorded::default());
        let task = tokio::spawn(run(rx, sink.clone()));
        let count = || sink.0.lock().len();

        notify(&tx, held("a", "position 3 of 7"));
        notify(&tx, held("a", "position 3 of 7"));
        notify(&tx, held("b", "position 4 of 7"));
        settle().await;
        assert_eq!(count(), 2, "first notice per pod only");

        // A changed reason within a minute waits; after a minute it is reported.
        tokio::time::advance(Duration::from_secs(30)).await;
        notify(&tx, held("a", "position 2 of 7"));
        settle().await;
        assert_eq!(count(), 2);
        tokio::time::advance(Duration::from_secs(31)).await;
        notify(&tx, held("a", "position 2 of 7"));
        settle().await;
        assert_eq!(count(), 3);
        assert_eq!(sink.0.lock()[2], ("a".into(), "position 2 of 7".into()));

        // The same reason repeats only after five minutes (b was first reported at 0 s).
        tokio::time::advance(Duration::from_secs(200)).await;
        notify(&tx, held("b", "position 4 of 7"));
        settle().await;
        assert_eq!(count(), 3);
        tokio::time::advance(Duration::from_secs(40)).await;
        notify(&tx, held("b", "position 4 of 7"));
        settle().await;
        assert_eq!(count(), 4);

        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn pods_not_held_for_half_an_hour_are_forgotten() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        assert!(limit.admit(&held("a", "r"), t0));
        assert!(limit.admit(&held("b", "r"), t0));
        let later = t0 + Duration::from_secs(1200);
        assert!(!limit.admit(&held("b", "r"), later - Duration::from_secs(1000)));
        limit.prune(t0 + FORGET_AFTER);
        assert_eq!(limit.len(), 1, "a was last held at t0; b more recently");
    }

    #[test]
    fn a_full_channel_drops_instead_of_blocking() {
        let (tx, mut rx) = mpsc::channel(1);
        notify(&tx, held("a", "r"));
        notify(&tx, held("b", "r"));
        assert_eq!(rx.try_recv().unwrap().name, "a");
        assert!(rx.try_recv().is_err());
    }
}
