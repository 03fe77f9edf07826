//! Rotates `batch/v1` Jobs with `spec.suspend`: the Job controller deletes the pods without
//! counting them as failures, and recreates them when the Job is unsuspended.
//!
//! | found                                   | rotate out        | resume            |
//! |-----------------------------------------|-------------------|-------------------|
//! | running                                 | suspend + annotate| `AlreadyDone`     |
//! | suspended with rota's annotation        | `AlreadyDone`     | unsuspend + clear |
//! | suspended without it (someone else)     | `LeftAlone`       | `LeftAlone`       |
//! | running with rota's annotation (by hand)| suspend again     | `LeftAlone`       |
//! | finished (Complete or Failed)           | `LeftAlone`       | `LeftAlone`       |
//!
//! Must not: touch a Job's pods or any field besides `spec.suspend` and rota's annotations.

use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use serde_json::{json, Value};

use super::context::{
    annotation, annotations_patch, truncate, Decision, KubeContext, PatchOp, MAX_NOTE_BYTES,
};
use super::notice::clearing_notice;
use super::{Action, Actuator, Direction, Outcome, Result, ROTATED_OUT_AT, ROTATION_REASON};

/// Suspends and unsuspends Jobs.
#[derive(Clone)]
pub struct JobActuator {
    ctx: KubeContext,
}

impl JobActuator {
    /// An actuator writing through `ctx`.
    pub fn new(ctx: KubeContext) -> Self {
        Self { ctx }
    }

    async fn act(&self, action: &Action, direction: Direction, dry_run: bool) -> Result<Outcome> {
        let op = PatchOp {
            api: Api::<Job>::namespaced(self.ctx.client().clone(), &action.workload.namespace),
            dynamic_type: &(),
            action,
            direction,
            dry_run,
            verb: match direction {
                Direction::Resume => "Unsuspend",
                _ => "Suspend",
            },
        };
        let now = self.ctx.now_rfc3339();
        self.ctx
            .read_decide_patch(op, |job| match direction {
                Direction::Resume => decide_resume(job),
                _ => decide_rotate_out(job, &now, &action.reason),
            })
            .await
    }
}

impl Actuator for JobActuator {
    fn rotate_out<'a>(
        &'a self,
        action: &'a Action,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.act(action, Direction::RotateOut, dry_run))
    }

    fn resume<'a>(&'a self, action: &'a Action, dry_run: bool) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.act(action, Direction::Resume, dry_run))
    }
}

fn is_suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
}

fn has_finished(job: &Job) -> bool {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| {
        cs.iter()
            .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
    })
}

/// What to do with `job` when the planner wants it rotated out at `now`.
fn decide_rotate_out(job: &Job, now: &str, reason: &str) -> Decision {
    if has_finished(job) {
        return Decision::Stop(Outcome::left_alone("the Job has finished"));
    }
    let ours = annotation(job, ROTATED_OUT_AT).is_some();
    match (is_suspended(job), ours) {
        (true, true) => Decision::Stop(Outcome::AlreadyDone),
        (true, false) => {
            Decision::Stop(Outcome::left_alone("the Job was suspended by someone else"))
        }
        (false, _) => {
            // The stop, if one was announced, is carried out: its notice goes.
            let mut annotations = clearing_notice(job);
            annotations[ROTATED_OUT_AT] = json!(now);
            annotations[ROTATION_REASON] = json!(truncate(reason, MAX_NOTE_BYTES));
            Decision::Patch(patch(job, annotations, true))
        }
    }
}

/// What to do with `job` when the planner wants it resumed.
fn decide_resume(job: &Job) -> Decision {
    if has_finished(job) {
        return Decision::Stop(Outcome::left_alone("the Job has finished"));
    }
    let ours = annotation(job, ROTATED_OUT_AT).is_some();
    match (is_suspended(job), ours) {
        (true, true) => {
            let annotations = json!({ROTATED_OUT_AT: null, ROTATION_REASON: null});
            Decision::Patch(patch(job, annotations, false))
        }
        (true, false) => Decision::Stop(Outcome::left_alone(
            "the Job was suspended by someone else, not by rota",
        )),
        (false, true) => Decision::Stop(Outcome::left_alone("the Job was resumed by hand")),
        (false, false) => Decision::Stop(Outcome::AlreadyDone),
    }
}

/// `{"metadata":{"resourceVersion":…,"annotations":…},"spec":{"suspend":…}}`; the
/// resourceVersion makes the API server refuse (409) if the Job changed since it was read.
fn patch(job: &Job, annotations: Value, suspend: bool) -> Value {
    let mut patch = annotations_patch(job, annotations);
    patch["spec"] = json!({ "suspend": suspend });
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};

    fn job(suspend: Option<bool>, ours: bool) -> Job {
        let mut job = Job::default();
        job.metadata.resource_version = Some("7".into());
        if ours {
            job.metadata.annotations =
                Some([(ROTATED_OUT_AT.to_owned(), "2026-01-01T00:00:00Z".to_owned())].into());
        }
        job.spec = Some(JobSpec {
            suspend,
            ..JobSpec::default()
        });
        job
    }

    #[test]
    fn rotate_out_patches_only_a_running_job() {
        let Decision::Patch(p) = decide_rotate_out(&job(None, false), "T", "why") else {
            panic!("a running Job is suspended");
        };
        assert_eq!(p["spec"]["suspend"], json!(true));
        assert_eq!(p["metadata"]["resourceVersion"], json!("7"));
        assert_eq!(p["metadata"]["annotations"][ROTATION_REASON], json!("why"));
        let stop = |j: &Job| match decide_rotate_out(j, "T", "why") {
            Decision::Stop(o) => o.code(),
            Decision::Patch(_) => "patch",
        };
        assert_eq!(stop(&job(Some(true), true)), "already_done");
        assert_eq!(stop(&job(Some(true), false)), "left_alone");
    }

    #[test]
    fn resume_only_undoes_rotas_own_suspension() {
        let code = |j: &Job| match decide_resume(j) {
            Decision::Stop(o) => o.code(),
            Decision::Patch(p) => {
                assert_eq!(p["spec"]["suspend"], json!(false));
                assert_eq!(p["metadata"]["annotations"][ROTATED_OUT_AT], Value::Null);
                "patch"
            }
        };
        assert_eq!(code(&job(Some(true), true)), "patch");
        assert_eq!(code(&job(Some(true), false)), "left_alone");
        assert_eq!(code(&job(Some(false), true)), "left_alone");
        assert_eq!(code(&job(None, false)), "already_done");
    }

    #[test]
    fn finished_jobs_are_left_alone() {
        let mut finished = job(None, false);
        finished.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        });
        assert!(matches!(
            decide_rotate_out(&finished, "T", "why"),
            Decision::Stop(Outcome::LeftAlone { .. })
        ));
    }
}
