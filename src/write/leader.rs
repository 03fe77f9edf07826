//! Leader election on a `coordination.k8s.io/v1` Lease: only the leader runs the rotation loop
//! and writes the usage ledger; every replica answers the scheduler.
//!
//! ```text
//!   each round (leader: every renew_period; follower: every retry_period, 1 s when serving):
//!                        GET lease ─▶ absent ─────────────────────▶ POST (409: someone else won)
//!                                  ─▶ ours / free / expired ──────▶ PUT with its resourceVersion
//!                                  ─▶ held by another, unexpired ─▶ follower
//!   leader = the last write succeeded and began less than renew_deadline ago
//! ```
//!
//! Invariants: every write carries the `resourceVersion` it read (or is a create), so the API
//! server lets at most one replica win any round (409 → not leader). A leader steps down
//! (publishes `false`) at once when a renew fails, conflicts or finds another holder, and no
//! later than `renew_deadline` after the start of its last successful write, which is a margin
//! before anyone else may see the lease expire (`renewTime + leaseDurationSeconds < now`). On
//! shutdown it publishes `false` first, then frees the lease (no holder, renew time long past)
//! so a follower takes over on its next retry. A missing namespace (404 on create), a forbidden
//! Lease (403/401) and an unreachable API server go to [`Readiness`], which logs each once.
//! Must not: act on leadership itself (callers watch [`LeaderElector::subscribe`]), read the
//! wall clock except through the injected [`Clock`], or sleep except with `tokio::time` (tests
//! pause time).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;

use crate::clock::Clock;
use crate::readiness::Readiness;

/// Why leadership ends on shutdown (an expected step down, logged at INFO).
const SHUTTING_DOWN: &str = "shutting down";

/// The component name of the Lease in [`Readiness`].
pub const COMPONENT: &str = "lease";
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

/// Default lease duration: 15 s, as kube-controller-manager. A successor waits at most this
/// long after a leader dies without releasing.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// How often a follower of the serving process retries: a lease released on shutdown is taken
/// over within this period plus one round trip.
pub const FOLLOWER_RETRY_PERIOD: Duration = Duration::from_secs(1);

/// This replica's holder identity: `POD_NAME` (set from the downward API), else the host
/// name plus a random suffix so two processes on one host never share an identity.
pub fn default_identity() -> String {
    if let Some(name) = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
    {
        return name;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rota".to_owned());
    format!("{host}-{:06x}", random_suffix() & 0xff_ffff)
}

/// Randomness without a `rand` dependency: std seeds every `RandomState` from the OS.
fn random_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// Why the election settings or one election round failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The durations do not satisfy `0 < renew_period < renew_deadline < lease_duration`.
    #[error("invalid leader election timing: {0}")]
    InvalidConfig(String),
    /// A request to the API server failed.
    #[error("{verb} Lease failed: {source}")]
    Api {
        /// `get`, `create` or `replace`.
        verb: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The round did not finish before the renew deadline.
    #[error("no answer from the API server before the renew deadline")]
    Deadline,
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Stable, bounded label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidConfig(_) => "invalid_config",
            Error::Api { .. } => "api",
            Error::Deadline => "deadline",
        }
    }

    /// Whether the next round may succeed (the elector retries on its own either way).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::InvalidConfig(_))
    }
}

/// Where the lease lives, who we are, and the timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderConfig {
    /// Namespace of the Lease (the extender's own).
    pub namespace: String,
    /// Name of the Lease. Every replica of one deployment must use the same name.
    pub lease_name: String,
    /// This replica's holder identity (see [`default_identity`]); must be unique per replica.
    pub identity: String,
    /// `leaseDurationSeconds` written to the Lease (whole seconds, ≥ 1). Default 15 s.
    pub lease_duration: Duration,
    /// How often to renew (and, as follower, to try). Default `lease_duration / 3`.
    pub renew_period: Duration,
    /// A leader that has not renewed for this long steps down, a margin before the lease can
    /// expire for others (clock skew, request latency). Default `lease_duration · 2/3`.
    pub renew_deadline: Duration,
    /// How often a follower reads the lease to try again. Default `renew_period`; the serving
    /// process uses [`FOLLOWER_RETRY_PERIOD`] so that a released lease is taken within 2 s.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// Settings with the default timing (15 s lease, renew every 5 s, step down after 10 s).
    pub fn new(namespace: &str, lease_name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            lease_name: lease_name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_period: DEFAULT_LEASE_DURATION / 3,
            renew_deadline: DEFAULT_LEASE_DURATION * 2 / 3,
            retry_period: DEFAULT_LEASE_DURATION / 3,
        }
    }

    /// Another follower retry period (a GET of the lease per period while following).
    pub fn with_retry_period(mut self, retry_period: Duration) -> Self {
        self.retry_period = retry_period;
        self
    }

    /// Another lease duration, with renew period and deadline scaled as the defaults.
    pub fn with_lease_duration(mut self, lease_duration: Duration) -> Self {
        self.lease_duration = lease_duration;
        self.renew_period = lease_duration / 3;
        self.renew_deadline = lease_duration * 2 / 3;
        self.retry_period = lease_duration / 3;
        self
    }

    /// Checks `0 < renew_period < renew_deadline < lease_duration`, a whole-second lease of
    /// at least 1 s, and a non-empty identity.
    pub fn validate(&self) -> Result<()> {
        let problem = if self.identity.is_empty() {
            Some("the holder identity is empty".to_owned())
        } else if self.lease_duration.as_secs() < 1 || self.lease_duration.subsec_nanos() != 0 {
            Some(format!(
                "lease duration {:?} must be whole seconds ≥ 1 s",
                self.lease_duration
            ))
        } else if self.retry_period.is_zero() {
            Some("the follower retry period is zero".to_owned())
        } else if self.renew_period.is_zero()
            || self.renew_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            Some(format!(
                "need 0 < renew period ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                self.renew_period, self.renew_deadline, self.lease_duration
            ))
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(Error::InvalidConfig(p)))
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// What one round found.
#[derive(Debug)]
enum Round {
    /// Our write succeeded: we hold the lease.
    Leading,
    /// Another replica holds an unexpired lease.
    HeldBy(String),
    /// Our write lost a race (409) or the lease vanished under us (404).
    Lost(&'static str),
}

/// Runs the election and publishes whether this replica leads.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    clock: Clock,
    leader: watch::Sender<bool>,
    readiness: Option<Arc<Readiness>>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .field("is_leader", &*self.leader.borrow())
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// An elector for `config` (validated), reading time from `clock` ([`crate::clock::system`]
    /// in production).
    pub fn new(client: Client, config: LeaderConfig, clock: Clock) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock,
            leader: watch::Sender::new(false),
            readiness: None,
        })
    }

    /// Reports a missing namespace, a forbidden Lease and an unreachable API server to
    /// `readiness` (component [`COMPONENT`]), which logs each once per change at ERROR.
    pub fn with_readiness(mut self, readiness: Arc<Readiness>) -> Self {
        self.readiness = Some(readiness);
        self
    }

    fn object(&self) -> String {
        format!("lease {}/{}", self.config.namespace, self.config.lease_name)
    }

    /// `true` while this replica leads. Starts `false`; ends `false` when [`run`](Self::run)
    /// returns.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Campaigns and renews until `shutdown` completes, then steps down and releases the lease
    /// (if it held it) so a successor takes over at once. Errors are logged and retried every
    /// renew period; they never end the loop.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        // Start of the last successful write while leading.
        let mut renewed_at: Option<Instant> = None;
        let mut ever_led = false;
        loop {
            let started = Instant::now();
            let deadline = renewed_at.unwrap_or(started) + self.config.renew_deadline;
            let round = tokio::select! {
                biased;
                () = &mut shutdown => break,
                r = timeout_at(deadline, self.round()) => r.unwrap_or(Err(Error::Deadline)),
            };
            renewed_at = self.settle(round, started);
            ever_led |= renewed_at.is_some();
            // A leader renews every renew period; a follower tries again every retry period.
            let period = if renewed_at.is_some() {
                self.config.renew_period
            } else {
                self.config.retry_period
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = sleep_until(started + period) => {}
            }
        }
        self.publish(false, SHUTTING_DOWN);
        if ever_led {
            self.release().await;
        }
    }

    /// Publishes the outcome of one round; returns the new "renewed at" instant if leading.
    fn settle(&self, round: Result<Round>, started: Instant) -> Option<Instant> {
        if let Some(readiness) = &self.readiness {
            match &round {
                Ok(_) => readiness.kube_ok(COMPONENT),
                Err(Error::Api { verb, source }) => {
                    let object = self.object();
                    let namespace = Some(self.config.namespace.as_str());
                    let creating = *verb == "create";
                    if readiness.kube_error(COMPONENT, &object, namespace, source, creating) {
                        // Logged once by the registry; this replica cannot lead until fixed.
                        self.publish(false, "the lease cannot be read or written");
                        return None;
                    }
                }
                Err(_) => {}
            }
        }
        match round {
            Ok(Round::Leading) => {
                self.publish(true, "acquired or renewed the lease");
                Some(started)
            }
            Ok(Round::HeldBy(holder)) => {
                tracing::debug!(holder = %holder, "The lease is held by another replica.");
                self.publish(false, "the lease is held by another replica");
                None
            }
            Ok(Round::Lost(why)) => {
                self.publish(false, why);
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, code = err.code(), "Lease round failed.");
                self.publish(false, "the lease round failed");
                None
            }
        }
    }

    fn publish(&self, leading: bool, why: &str) {
        let changed = self.leader.send_if_modified(|current| {
            let changed = *current != leading;
            *current = leading;
            changed
        });
        if changed && leading {
            tracing::info!(identity = %self.config.identity, why, "Became leader.");
        } else if changed && why == SHUTTING_DOWN {
            tracing::info!(identity = %self.config.identity, why, "Stopped leading.");
        } else if changed {
            tracing::warn!(identity = %self.config.identity, why, "Stopped leading.");
        }
    }

    /// One election round: read the lease, then create, take over, renew, or stand by.
    async fn round(&self) -> Result<Round> {
        let found = self.api.get_opt(&self.config.lease_name).await;
        let found = found.map_err(|source| Error::Api {
            verb: "get",
            source,
        })?;
        let now = (self.clock)();
        match found {
            None => self.create(now).await,
            Some(lease) => self.take_or_renew(lease, now).await,
        }
    }

    async fn create(&self, now: Timestamp) -> Result<Round> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.lease_name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(self.held_spec(LeaseSpec::default(), now, false)),
        };
        let created = self.api.create(&PostParams::default(), &lease).await;
        match created {
            // A create finds no object by design: a 404 means the namespace is missing.
            Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::Api {
                verb: "create",
                source: kube::Error::Api(status),
            }),
            created => written(created, "create", "another replica created the lease first"),
        }
    }

    async fn take_or_renew(&self, mut lease: Lease, now: Timestamp) -> Result<Round> {
        let spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.config.identity.as_str());
        if let Some(other) = holder.filter(|_| !ours) {
            if !expired(&spec, now, self.config.lease_seconds()) {
                return Ok(Round::HeldBy(other));
            }
            tracing::info!(former = %other, "Taking over an expired lease.");
        }
        lease.spec = Some(self.held_spec(spec, now, ours));
        lease.metadata.managed_fields = None;
        let replaced = self
            .api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await;
        written(replaced, "replace", "another replica wrote the lease first")
    }

    /// The spec with us as holder, renewed at `now`. A new holder bumps the transitions.
    fn held_spec(&self, old: LeaseSpec, now: Timestamp, ours: bool) -> LeaseSpec {
        let (acquire_time, lease_transitions) = if ours {
            (old.acquire_time.clone(), old.lease_transitions)
        } else {
            let before = old.lease_transitions.unwrap_or(0);
            let bump = if old.holder_identity.is_some() || old.renew_time.is_some() {
                before.saturating_add(1)
            } else {
                before
            };
            (Some(MicroTime(now)), Some(bump))
        };
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_seconds()),
            renew_time: Some(MicroTime(now)),
            acquire_time,
            lease_transitions,
            ..old
        }
    }

    /// Frees the lease if we still hold it: no holder and a renew time already expired, so a
    /// successor acquires on its next round. Best effort, bounded by the renew deadline.
    async fn release(&self) {
        let released = timeout(self.config.renew_deadline, self.release_once()).await;
        match released.unwrap_or(Err(Error::Deadline)) {
            Ok(true) => tracing::info!(identity = %self.config.identity, "Released the lease."),
            Ok(false) => tracing::debug!("The lease was no longer ours; nothing to release."),
            Err(err) => tracing::warn!(
                error = %err,
                "Could not release the lease; a successor waits for it to expire."
            ),
        }
    }

    async fn release_once(&self) -> Result<bool> {
        let found = self.api.get_opt(&self.config.lease_name).await;
        let found = found.map_err(|source| Error::Api {
            verb: "get",
            source,
        })?;
        let Some(mut lease) = found else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        let now_us = (self.clock)().as_microsecond();
        let lease_us = i64::from(self.config.lease_seconds()).saturating_mul(1_000_000);
        let past = Timestamp::from_microsecond(now_us.saturating_sub(lease_us + 1_000_000))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(past));
        lease.metadata.managed_fields = None;
        let replaced = self
            .api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await;
        match replaced {
            Ok(_) => Ok(true),
            // Someone else wrote it meanwhile: it is not ours to release any more.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(false),
            Err(source) => Err(Error::Api {
                verb: "replace",
                source,
            }),
        }
    }
}

/// Maps a create or replace answer: 409 (and 404 on replace) lose the round, not an error.
fn written(answer: kube::Result<Lease>, verb: &'static str, lost: &'static str) -> Result<Round> {
    match answer {
        Ok(_) => Ok(Round::Leading),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Round::Lost(lost)),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            Ok(Round::Lost("the lease was deleted under us"))
        }
        Err(source) => Err(Error::Api { verb, source }),
    }
}

/// `renewTime + leaseDurationSeconds < now`; a lease never renewed counts as expired.
fn expired(spec: &LeaseSpec, now: Timestamp, default_seconds: i32) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let seconds = spec
        .lease_duration_seconds
        .unwrap_or(default_seconds)
        .max(0);
    let until = renewed
        .0
        .as_microsecond()
        .saturating_add(i64::from(seconds).saturating_mul(1_000_000));
    until < now.as_microsecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn spec(renewed: Option<i64>, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some("other".into()),
            renew_time: renewed.map(|s| MicroTime(at(s))),
            lease_duration_seconds: duration,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn expiry_is_strictly_after_renew_plus_duration() {
        let s = spec(Some(1_000), Some(15));
        assert!(!expired(&s, at(1_015), 15));
        assert!(expired(&s, at(1_016), 15));
        // Missing duration falls back to ours; missing renew time means free.
        assert!(!expired(&spec(Some(1_000), None), at(1_010), 15));
        assert!(expired(&spec(None, Some(15)), at(0), 15));
    }

    #[test]
    fn config_validation_rejects_bad_timing() {
        let ok = LeaderConfig::new("ns", "rota", "me");
        assert!(ok.validate().is_ok());
        assert_eq!(ok.renew_period, Duration::from_secs(5));
        assert_eq!(ok.renew_deadline, Duration::from_secs(10));
        let mut bad = ok.clone();
        bad.renew_deadline = bad.lease_duration;
        assert!(bad.validate().is_err());
        assert!(ok
            .clone()
            .with_lease_duration(Duration::from_millis(1500))
            .validate()
            .is_err());
        assert!(LeaderConfig::new("ns", "rota", "").validate().is_err());
    }
}
