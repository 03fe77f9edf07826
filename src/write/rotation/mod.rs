//! The rotation adapters: actuators that rotate workloads out and resume them through the
//! Kubernetes API, and the leader-only loop that runs the planner's plan through them.
//!
//! ```text
//!   every tick, while leader:  planner ──Plan──▶ RotationLoop ──Action──▶ Actuator (by kind)
//!                                 ▲                  │ metrics                ├─ Job: spec.suspend
//!                                 └── record(outcome)┘                        ├─ VM: runStrategy Halted
//!                                                                             └─ Pod: Eviction API
//! ```
//!
//! Invariants: every action reads the object first and is idempotent (an object already in the
//! wanted state with rota's annotation is `AlreadyDone`); an object put in its state by someone
//! else (suspended, stopped or resumed by hand) is `LeftAlone`, never overwritten; every write
//! carries the `resourceVersion` it read, so a concurrent change gives a retryable conflict
//! instead of a lost update; dry run sends no write except the `Would…` Event.
//! Must not: decide what to rotate (`core::rotation` does), pause a VM (a paused VM keeps its
//! GPU), or act while this replica is not the leader (the loop checks before every action).

mod context;
pub mod driver;
pub mod job;
pub mod metrics;
pub mod notice;
pub mod planner;
pub mod pod;
pub mod vm;

use futures::future::BoxFuture;

pub use context::{EventSink, KubeContext};
pub use driver::{ActionReport, LoopSettings, Planner, RotationLoop, TickSummary};
pub use job::JobActuator;
pub use metrics::RotationMetrics;
pub use notice::NoticeWriter;
pub use planner::CorePlanner;
pub use pod::PodActuator;
pub use vm::VmActuator;

pub use crate::core::rotation::{Action, Plan, Warning};
use crate::core::WorkloadKind;
pub use crate::names::{
    PREVIOUS_RUN_STRATEGY, ROTATED_OUT_AT, ROTATION_REASON, STOP_AT, STOP_FOR, STOP_REASON,
};

/// Reporting controller name on every Event rota emits.
pub const REPORTER: &str = "rota";

/// Which way an action goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Free the workload's GPUs (suspend, stop, evict).
    RotateOut,
    /// Give the workload its GPUs back (unsuspend, start).
    Resume,
    /// Announce a stop: record `rota.io/stop-at` on the object and tell its owner.
    Warn,
    /// Call off an announced stop: remove the notice and say why.
    Cancel,
}

impl Direction {
    /// `rotate_out` or `resume`, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::RotateOut => "rotate_out",
            Direction::Resume => "resume",
            Direction::Warn => "warn",
            Direction::Cancel => "cancel",
        }
    }

    /// The Event reason a user reads in `kubectl describe`.
    pub fn event_reason(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Direction::RotateOut, false) => "RotatedOut",
            (Direction::RotateOut, true) => "WouldRotateOut",
            (Direction::Resume, false) => "Resumed",
            (Direction::Resume, true) => "WouldResume",
            (Direction::Warn, false) => "RotationScheduled",
            (Direction::Warn, true) => "WouldScheduleRotation",
            (Direction::Cancel, false) => "RotationCancelled",
            (Direction::Cancel, true) => "WouldCancelRotation",
        }
    }

    /// A stop announced is a Warning Event: its owner must act before the time it names.
    pub fn event_type(self) -> kube::runtime::events::EventType {
        match self {
            Direction::Warn => kube::runtime::events::EventType::Warning,
            _ => kube::runtime::events::EventType::Normal,
        }
    }
}

/// What an actuator did (or found) for one action. Failures are [`Error`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The write was sent and accepted.
    Done,
    /// Dry run: the write would have been sent; only the `Would…` Event was emitted.
    WouldAct,
    /// The object is already in the wanted state, by rota's own earlier action.
    AlreadyDone,
    /// The object was put in its state by someone else (or cannot be acted on); rota keeps
    /// its hands off.
    LeftAlone {
        /// Why, for logs.
        reason: String,
    },
    /// The object no longer exists (404).
    Gone,
    /// Bare pods are never resumed: their owner recreates them or they are gone.
    NotResumable,
}

impl Outcome {
    /// A short, bounded label for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::WouldAct => "would_act",
            Outcome::AlreadyDone => "already_done",
            Outcome::LeftAlone { .. } => "left_alone",
            Outcome::Gone => "gone",
            Outcome::NotResumable => "not_resumable",
        }
    }

    pub(crate) fn left_alone(reason: impl Into<String>) -> Self {
        Outcome::LeftAlone {
            reason: reason.into(),
        }
    }
}

/// Why an action failed. Every variant names the workload (`kind/namespace/name`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 409: the object changed between our read and our write; the next tick reads again.
    #[error("{verb} {workload}: the object changed since it was read (HTTP 409)")]
    Conflict {
        /// `patch` or `evict`.
        verb: &'static str,
        /// `kind/namespace/name`.
        workload: String,
    },
    /// 429: a PodDisruptionBudget, KubeVirt's eviction webhook or API rate limiting refused
    /// for now.
    #[error("{verb} {workload} was refused for now (HTTP 429): {message}")]
    Blocked {
        /// `patch` or `evict`.
        verb: &'static str,
        /// `kind/namespace/name`.
        workload: String,
        /// The API server's message (names the PDB or the webhook).
        message: String,
    },
    /// 401/403: rota's RBAC lacks a verb; retrying will not help until an operator fixes it.
    #[error("{verb} {workload} was forbidden (HTTP {code}): {message}")]
    Forbidden {
        /// `get`, `patch` or `evict`.
        verb: &'static str,
        /// `kind/namespace/name`.
        workload: String,
        /// 401 or 403.
        code: u16,
        /// The API server's message.
        message: String,
    },
    /// Any other API error status.
    #[error("{verb} {workload} failed (HTTP {code}): {message}")]
    Rejected {
        /// `get`, `patch` or `evict`.
        verb: &'static str,
        /// `kind/namespace/name`.
        workload: String,
        /// The HTTP status code.
        code: u16,
        /// The API server's message.
        message: String,
    },
    /// The request never got an API answer (connection, TLS, decoding).
    #[error("{verb} {workload} failed: {source}")]
    Transport {
        /// `get`, `patch` or `evict`.
        verb: &'static str,
        /// `kind/namespace/name`.
        workload: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The action did not finish within the loop's per-action timeout.
    #[error("{workload} did not finish within {seconds} s")]
    Timeout {
        /// `kind/namespace/name`.
        workload: String,
        /// The timeout.
        seconds: f64,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, bounded label for metrics (`rota_rotation_failures_total{reason}`) and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Conflict { .. } => "conflict",
            Error::Blocked { .. } => "blocked",
            Error::Forbidden { .. } => "forbidden",
            Error::Rejected { code, .. } if *code >= 500 => "server_error",
            Error::Rejected { .. } => "rejected",
            Error::Transport { .. } => "transport",
            Error::Timeout { .. } => "timeout",
        }
    }

    /// Whether the same action may succeed on a later tick without anyone's help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Conflict { .. }
            | Error::Blocked { .. }
            | Error::Transport { .. }
            | Error::Timeout { .. } => true,
            Error::Rejected { code, .. } => *code >= 500,
            Error::Forbidden { .. } => false,
        }
    }
}

/// Rotates one kind of workload out and back in.
///
/// Both methods read the object, decide, and (unless `dry_run`) write; they are idempotent,
/// so the loop may call them again after a timeout or a retryable error.
pub trait Actuator: Send + Sync {
    /// Frees the workload's GPUs: suspend, stop or evict.
    fn rotate_out<'a>(
        &'a self,
        action: &'a Action,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<Outcome>>;
    /// Gives the workload its GPUs back.
    fn resume<'a>(&'a self, action: &'a Action, dry_run: bool) -> BoxFuture<'a, Result<Outcome>>;
    /// Announces a stop: records the notice on the object and tells its owner. The default
    /// writes nothing (an actuator that cannot warn; its stops then come when due).
    fn warn<'a>(&'a self, warning: &'a Warning, dry_run: bool) -> BoxFuture<'a, Result<Outcome>> {
        let _ = (warning, dry_run);
        Box::pin(async { Ok(Outcome::left_alone("this actuator does not announce stops")) })
    }
    /// Calls off an announced stop: removes the notice and says why. Default: nothing.
    fn cancel<'a>(&'a self, action: &'a Action, dry_run: bool) -> BoxFuture<'a, Result<Outcome>> {
        let _ = (action, dry_run);
        Box::pin(async { Ok(Outcome::left_alone("this actuator does not announce stops")) })
    }
}

/// The production actuator: dispatches each action to the Job, VM or Pod actuator by
/// [`WorkloadKind`].
#[derive(Clone)]
pub struct KubeActuators {
    job: JobActuator,
    vm: VmActuator,
    pod: PodActuator,
    notices: NoticeWriter,
}

impl std::fmt::Debug for KubeActuators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeActuators").finish_non_exhaustive()
    }
}

impl KubeActuators {
    /// One actuator per kind, sharing `ctx` (client, event recorder, clock).
    pub fn new(ctx: KubeContext) -> Self {
        Self {
            job: JobActuator::new(ctx.clone()),
            vm: VmActuator::new(ctx.clone()),
            pod: PodActuator::new(ctx.clone()),
            notices: NoticeWriter::new(ctx),
        }
    }

    /// Events offering up to `seconds` of notice (`rotation.warning.maxSeconds`).
    pub fn with_max_warning(mut self, seconds: u64) -> Self {
        self.notices = self.notices.with_max_warning(seconds);
        self
    }

    fn by_kind(&self, kind: WorkloadKind) -> &dyn Actuator {
        match kind {
            WorkloadKind::Job => &self.job,
            WorkloadKind::VirtualMachine => &self.vm,
            WorkloadKind::Pod => &self.pod,
        }
    }
}

impl Actuator for KubeActuators {
    fn rotate_out<'a>(
        &'a self,
        action: &'a Action,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<Outcome>> {
        self.by_kind(action.workload.kind)
            .rotate_out(action, dry_run)
    }

    fn resume<'a>(&'a self, action: &'a Action, dry_run: bool) -> BoxFuture<'a, Result<Outcome>> {
        self.by_kind(action.workload.kind).resume(action, dry_run)
    }

    fn warn<'a>(&'a self, warning: &'a Warning, dry_run: bool) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.notices.warn(warning, dry_run))
    }

    fn cancel<'a>(&'a self, action: &'a Action, dry_run: bool) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.notices.cancel(action, dry_run))
    }
}
