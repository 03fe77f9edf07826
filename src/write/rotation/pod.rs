//! Rotates bare pods (no controlling Job or VM) out through the Eviction API, which honours
//! PodDisruptionBudgets and KubeVirt's eviction webhook; a 429 from either is a retryable
//! [`Error::Blocked`], reported with a Warning Event. Bare pods are never resumed.
//!
//! Steps: GET the pod (404 → `Gone`; terminating → `AlreadyDone` if rota annotated it, else
//! `LeftAlone`), merge-patch rota's annotations onto it so the trail is visible, then POST a
//! typed `policy/v1` Eviction whose `deleteOptions.preconditions.uid` pins the pod that was
//! read (a pod recreated under the same name is never evicted by mistake).
//! Must not: DELETE the pod directly (that would bypass PodDisruptionBudgets).

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, Preconditions};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use serde_json::{json, Value};

use super::context::{annotation, api_error, is_not_found, truncate, KubeContext, MAX_NOTE_BYTES};
use super::{Action, Actuator, Direction, Error, Outcome, Result, ROTATED_OUT_AT, ROTATION_REASON};

/// Event reason when an eviction is refused for now (429).
pub const BLOCKED_REASON: &str = "RotationBlocked";

/// Evicts bare pods.
#[derive(Clone)]
pub struct PodActuator {
    ctx: KubeContext,
}

impl PodActuator {
    /// An actuator writing through `ctx`.
    pub fn new(ctx: KubeContext) -> Self {
        Self { ctx }
    }

    async fn evict(&self, action: &Action, dry_run: bool) -> Result<Outcome> {
        let workload = &action.workload;
        let api = Api::<Pod>::namespaced(self.ctx.client().clone(), &workload.namespace);
        let found = api.get_opt(&workload.name).await;
        let Some(pod) = found.map_err(|e| api_error("get", workload, e))? else {
            return Ok(Outcome::Gone);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(if annotation(&pod, ROTATED_OUT_AT).is_some() {
                Outcome::AlreadyDone
            } else {
                Outcome::left_alone("the pod is already terminating")
            });
        }
        let regarding = pod.object_ref(&());
        if dry_run {
            self.ctx
                .announce(
                    &regarding,
                    Direction::RotateOut,
                    true,
                    "Evict",
                    &action.reason,
                )
                .await;
            return Ok(Outcome::WouldAct);
        }
        let annotate = json!({"metadata": {"annotations": {
            ROTATED_OUT_AT: self.ctx.now_rfc3339(),
            ROTATION_REASON: truncate(&action.reason, MAX_NOTE_BYTES),
        }}});
        let patched = api
            .patch(
                &workload.name,
                &PatchParams::default(),
                &Patch::Merge(&annotate),
            )
            .await;
        match patched {
            Ok(_) => {}
            Err(err) if is_not_found(&err) => return Ok(Outcome::Gone),
            Err(err) => return Err(api_error("patch", workload, err)),
        }
        let eviction = eviction(&pod, &workload.namespace, &workload.name);
        let evicted = api
            .create_subresource::<_, Value>(
                "eviction",
                &workload.name,
                &PostParams::default(),
                &eviction,
            )
            .await;
        match evicted {
            Ok(_) => {}
            Err(err) if is_not_found(&err) => return Ok(Outcome::Gone),
            Err(err) => {
                let err = api_error("evict", workload, err);
                if let Error::Blocked { message, .. } = &err {
                    let note = format!("Eviction refused for now, will retry: {message}");
                    let events = self.ctx.events();
                    events
                        .emit(
                            &regarding,
                            EventType::Warning,
                            BLOCKED_REASON,
                            "Evict",
                            &note,
                        )
                        .await;
                }
                return Err(err);
            }
        }
        self.ctx
            .announce(
                &regarding,
                Direction::RotateOut,
                false,
                "Evict",
                &action.reason,
            )
            .await;
        Ok(Outcome::Done)
    }
}

impl Actuator for PodActuator {
    fn rotate_out<'a>(
        &'a self,
        action: &'a Action,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(self.evict(action, dry_run))
    }

    fn resume<'a>(&'a self, _action: &'a Action, _dry_run: bool) -> BoxFuture<'a, Result<Outcome>> {
        Box::pin(async { Ok(Outcome::NotResumable) })
    }
}

/// A typed `policy/v1` Eviction for the pod that was read (its UID as a precondition).
fn eviction(pod: &Pod, namespace: &str, name: &str) -> Eviction {
    let preconditions = pod.metadata.uid.as_ref().map(|uid| Preconditions {
        uid: Some(uid.clone()),
        resource_version: None,
    });
    Eviction {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        delete_options: Some(DeleteOptions {
            preconditions,
            ..DeleteOptions::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_serializes_with_kind_and_camel_case_options() {
        let mut pod = Pod::default();
        pod.metadata.uid = Some("u-1".into());
        let body = serde_json::to_value(eviction(&pod, "ns", "p")).unwrap();
        assert_eq!(
            body,
            json!({"apiVersion": "policy/v1", "kind": "Eviction",
                   "metadata": {"name": "p", "namespace": "ns"},
                   "deleteOptions": {"preconditions": {"uid": "u-1"}}})
        );
    }
}
