//! Every `rota.io/…` annotation and label name rota reads or writes, in one place.
//!
//! | name | on | written by | read by |
//! |---|---|---|---|
//! | [`TENANT_LABEL`] | pods, pod templates | users | the view (`tenantLabel` default) |
//! | [`GPU_MODELS_ANNOTATION`] | pods | users | the filter |
//! | [`MIN_GPU_MEMORY_ANNOTATION`] | pods | users | the filter |
//! | [`GANG_SIZE_ANNOTATION`] | pods | users | the queue and gate |
//! | [`QUANTUM_ANNOTATION`] | pods | users | preempt and rotation |
//! | [`PREEMPTIBLE_ANNOTATION`] | pods | users | rotation |
//! | [`ROTATED_OUT_AT`] | Jobs, VMs, pods | rotation | the rotated-out index |
//! | [`ROTATION_REASON`] | Jobs, VMs, pods | rotation | people |
//! | [`PREVIOUS_RUN_STRATEGY`] | VMs | rotation | rotation (on resume) |
//! | [`STOP_WARNING_ANNOTATION`] | Jobs, VMs, pods | users | rotation |
//! | [`STOP_AT`] | Jobs, VMs, pods | rotation (warning) | rotation (any leader), `explain`, people |
//! | [`STOP_FOR`] | Jobs, VMs, pods | rotation (warning) | rotation (any leader) |
//! | [`STOP_REASON`] | Jobs, VMs, pods | rotation (warning) | people |
//!
//! API versions of rota's own documents (`rota.io/v1alpha1`) are not names of this kind and
//! live with their formats. Must not: hold anything but constant names.

/// Default pod label naming the tenant to charge (`tenantLabel` in the config).
pub const TENANT_LABEL: &str = "rota.io/tenant";
/// Pod annotation: comma-separated GPU model substrings the pod accepts.
pub const GPU_MODELS_ANNOTATION: &str = "rota.io/gpu-models";
/// Pod annotation: minimum memory of one GPU, as a Kubernetes quantity (`40Gi`).
pub const MIN_GPU_MEMORY_ANNOTATION: &str = "rota.io/min-gpu-memory";
/// Pod annotation: the number of pods of the workload admitted together (a gang), a whole
/// number ≥ 1.
pub const GANG_SIZE_ANNOTATION: &str = "rota.io/gang-size";
/// Pod annotation: the minimum run time the workload asks for, in whole seconds (clamped to
/// `quantum.minSeconds..=quantum.maxSeconds` where it is used).
pub const QUANTUM_ANNOTATION: &str = "rota.io/quantum-seconds";
/// Pod annotation: `"false"` keeps the workload from ever being rotated out.
pub const PREEMPTIBLE_ANNOTATION: &str = "rota.io/preemptible";
/// Annotation rota writes when it rotates a workload out: when (RFC 3339, UTC, seconds).
/// Its presence is how rota tells its own suspensions from a person's.
pub const ROTATED_OUT_AT: &str = "rota.io/rotated-out-at";
/// Annotation rota writes when it rotates a workload out: the planner's human reason.
pub const ROTATION_REASON: &str = "rota.io/rotation-reason";
/// Annotation on a stopped VirtualMachine: the `runStrategy` to restore on resume.
pub const PREVIOUS_RUN_STRATEGY: &str = "rota.io/previous-run-strategy";
/// Annotation (on a Job, VM or pod): the notice, in whole seconds, its owner wants before rota
/// stops it (at most `rotation.warning.maxSeconds`; `0` asks for none).
pub const STOP_WARNING_ANNOTATION: &str = "rota.io/stop-warning-seconds";
/// Annotation rota writes when it announces a stop: when (RFC 3339, UTC, seconds). Removed
/// when the stop is cancelled or carried out.
pub const STOP_AT: &str = "rota.io/stop-at";
/// Annotation rota writes with [`STOP_AT`]: the workload its GPUs are promised to
/// (`kind/namespace/name`), so that a new leader keeps the promise.
pub const STOP_FOR: &str = "rota.io/stop-for";
/// Annotation rota writes with [`STOP_AT`]: the planner's human reason.
pub const STOP_REASON: &str = "rota.io/stop-reason";
