//! Announces stops and calls them off, for every kind alike: the notice lives in three
//! annotations on the workload's object (Job, VirtualMachine or bare Pod), where its owner sees
//! it and where any later leader reads it back, and an Event tells the owner.
//!
//! | found                           | warn                              | cancel              |
//! |---------------------------------|-----------------------------------|---------------------|
//! | no notice                       | annotate + `RotationScheduled`    | `AlreadyDone`       |
//! | the same notice                 | `AlreadyDone`                     | clear + `RotationCancelled` |
//! | another notice                  | replace + `RotationScheduled`     | clear + `RotationCancelled` |
//! | gone (404)                      | `Gone`                            | `Gone`              |
//!
//! Must not: stop anything (the kind's actuator does when the stop is due) or touch any field
//! besides the three `rota.io/stop-*` annotations.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Api;
use serde_json::{json, Value};

use super::context::{
    annotation, annotations_patch, truncate, Decision, KubeContext, PatchOp, MAX_NOTE_BYTES,
};
use super::{Action, Direction, Outcome, Result, Warning, STOP_AT, STOP_FOR, STOP_REASON};
use crate::core::WorkloadKind;
use crate::names::{PREEMPTIBLE_ANNOTATION, STOP_WARNING_ANNOTATION};

/// Default longest warning a workload may ask for, as `rotation.warning.maxSeconds`.
pub const DEFAULT_MAX_WARNING_SECONDS: u64 = 3600;

/// Writes and clears stop notices.
#[derive(Clone)]
pub struct NoticeWriter {
    ctx: KubeContext,
    max_warning_seconds: u64,
}

impl NoticeWriter {
    /// A writer through `ctx` whose Events offer up to `rotation.warning.maxSeconds` (default
    /// [`DEFAULT_MAX_WARNING_SECONDS`]) of notice.
    pub fn new(ctx: KubeContext) -> Self {
        Self {
            ctx,
            max_warning_seconds: DEFAULT_MAX_WARNING_SECONDS,
        }
    }

    /// The longest notice the Events offer (`rotation.warning.maxSeconds`).
    pub fn with_max_warning(mut self, seconds: u64) -> Self {
        self.max_warning_seconds = seconds;
        self
    }

    /// Records `warning` on its victim and emits the Warning Event `RotationScheduled`.
    pub async fn warn(&self, warning: &Warning, dry_run: bool) -> Result<Outcome> {
        let stop_at = rfc3339(warning.stop_at);
        let note = Action {
            reason: self.scheduled_note(warning, &stop_at),
            ..warning.action.clone()
        };
        let claim = warning.claim.to_string();
        let reason = truncate(&warning.action.reason, MAX_NOTE_BYTES).to_owned();
        self.write(&note, Direction::Warn, dry_run, |obj| {
            if annotation(obj, STOP_AT) == Some(stop_at.as_str())
                && annotation(obj, STOP_FOR) == Some(claim.as_str())
            {
                return Decision::Stop(Outcome::AlreadyDone);
            }
            let notice = json!({STOP_AT: stop_at, STOP_FOR: claim, STOP_REASON: reason});
            Decision::Patch(annotations_patch(obj, notice))
        })
        .await
    }

    /// Removes `action`'s notice and emits `RotationCancelled` with the planner's reason.
    pub async fn cancel(&self, action: &Action, dry_run: bool) -> Result<Outcome> {
        self.write(action, Direction::Cancel, dry_run, |obj| {
            if annotation(obj, STOP_AT).is_none() {
                return Decision::Stop(Outcome::AlreadyDone);
            }
            Decision::Patch(annotations_patch(obj, cleared()))
        })
        .await
    }

    async fn write<F>(
        &self,
        action: &Action,
        direction: Direction,
        dry_run: bool,
        decide: F,
    ) -> Result<Outcome>
    where
        F: FnOnce(&DynamicObject) -> Decision,
    {
        let resource = api_resource(action.workload.kind);
        let api = Api::<DynamicObject>::namespaced_with(
            self.ctx.client().clone(),
            &action.workload.namespace,
            &resource,
        );
        let op = PatchOp {
            api,
            dynamic_type: &resource,
            action,
            direction,
            dry_run,
            verb: match direction {
                Direction::Warn => "ScheduleStop",
                _ => "CancelStop",
            },
        };
        self.ctx.read_decide_patch(op, decide).await
    }

    /// What the owner reads in `kubectl describe`: when, why, for whom, and what they can do.
    fn scheduled_note(&self, w: &Warning, stop_at: &str) -> String {
        let a = &w.action;
        format!(
            "{} will be stopped at {stop_at} to free {} GPU(s) for {} (tenant {}, below its \
             fair share): {}. To keep it running, annotate it {PREEMPTIBLE_ANNOTATION}=\"false\" \
             (this cancels the stop); for more notice next time, annotate it \
             {STOP_WARNING_ANNOTATION} (up to {} s).",
            a.workload, a.gpus, w.claim, w.claim_tenant, a.reason, self.max_warning_seconds
        )
    }
}

/// The annotations that clear a notice.
pub fn cleared() -> Value {
    json!({STOP_AT: null, STOP_FOR: null, STOP_REASON: null})
}

/// The start of a stop's annotations: clearing the object's notice when it has one (the stop
/// carries it out), else nothing.
pub fn clearing_notice<K: kube::Resource>(object: &K) -> Value {
    let noticed = [STOP_AT, STOP_FOR, STOP_REASON]
        .iter()
        .any(|k| annotation(object, k).is_some());
    if noticed {
        cleared()
    } else {
        json!({})
    }
}

/// Unix seconds as RFC 3339 in UTC, to the second (`2026-01-31T12:00:00Z`).
pub use crate::clock::rfc3339;

/// The API resource of a workload kind's object.
fn api_resource(kind: WorkloadKind) -> ApiResource {
    let (gvk, plural) = match kind {
        WorkloadKind::Job => (GroupVersionKind::gvk("batch", "v1", "Job"), "jobs"),
        WorkloadKind::VirtualMachine => (
            GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
            "virtualmachines",
        ),
        WorkloadKind::Pod => (GroupVersionKind::gvk("", "v1", "Pod"), "pods"),
    };
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_whole_seconds_in_utc() {
        assert_eq!(rfc3339(1_769_860_800.7), "2026-01-31T12:00:00Z");
        assert_eq!(rfc3339(f64::NAN), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn every_kind_has_its_resource() {
        assert_eq!(api_resource(WorkloadKind::Job).api_version, "batch/v1");
        assert_eq!(api_resource(WorkloadKind::Pod).api_version, "v1");
        assert_eq!(
            api_resource(WorkloadKind::VirtualMachine).plural,
            "virtualmachines"
        );
    }
}
