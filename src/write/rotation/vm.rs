//! Rotates KubeVirt `kubevirt.io/v1` VirtualMachines the way KubeVirt expects for their run
//! strategy (KubeVirt then deletes the VMI, the launcher pod ends and the GPU is freed):
//!
//! - `Always`, `RerunOnFailure` (and `Once`): `spec.runStrategy: Halted`, and on resume the
//!   strategy they had, kept in `rota.io/previous-run-strategy`. A VM still using the
//!   deprecated `spec.running: true` counts as `Always`; the stop patch sets `running: null`
//!   because KubeVirt refuses a VM with both fields.
//! - `Manual`: the strategy stays; rota annotates, then `PUT`s the `stop` subresource
//!   (`/apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachines/NAME/stop`); on resume
//!   it `PUT`s `start` first and clears its annotations after (the other order could leave a
//!   stopped VM that no longer says rota stopped it).
//!
//! | found                                | rotate out                  | resume                  |
//! |--------------------------------------|-----------------------------|-------------------------|
//! | running (any strategy but Halted)    | stop + annotations          | `AlreadyDone`           |
//! | stopped with rota's annotation       | `AlreadyDone`               | start + clear           |
//! | stopped without it (someone else)    | `LeftAlone`                 | `LeftAlone`             |
//! | running with rota's annotation       | stop again                  | `LeftAlone` (by hand)   |
//! | migrating (`printableStatus`)        | `LeftAlone` until it ends   | –                       |
//! | `WaitAsReceiver` (migration target)  | `LeftAlone`                 | `LeftAlone`             |
//!
//! The VM counts as holding its GPUs until its launcher pod is gone: the planner reads
//! holdings from pods, not from the VM's spec. Must not: pause (a paused VM keeps its GPU).

use futures::future::BoxFuture;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Api;
use serde_json::{json, Map, Value};

use super::context::{
    annotation, annotations_patch, api_error, truncate, Decision, KubeContext, PatchOp,
    MAX_NOTE_BYTES,
};
use super::notice::clearing_notice;
use super::{
    Action, Actuator, Direction, Error, Outcome, Result, PREVIOUS_RUN_STRATEGY, ROTATED_OUT_AT,
    ROTATION_REASON,
};
use crate::read::rotated_out::{vm_instance_up, MANUAL};

/// The run strategy of a stopped VM.
pub const HALTED: &str = "Halted";
/// Run strategies rota restores; anything else in the annotation restores `Always`.
pub const RESTORABLE: [&str; 4] = ["Always", "RerunOnFailure", "Manual", "Once"];

/// `kubevirt.io/v1` `VirtualMachine`, plural `virtualmachines`.
pub fn vm_api_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine");
    ApiResource::from_gvk_with_plural(&gvk, "virtualmachines")
}

/// Stops and restarts KubeVirt VirtualMachines.
#[derive(Clone)]
pub struct VmActuator {
    ctx: KubeContext,
    resource: ApiResource,
}

impl VmActuator {
    /// An actuator writing through `ctx`.
    pub fn new(ctx: KubeContext) -> Self {
        Self {
            ctx,
            resource: vm_api_resource(),
        }
    }

    fn api(&self, action: &Action) -> Api<DynamicObject> {
        Api::<DynamicObject>::namespaced_with(
            self.ctx.client().clone(),
            &action.workload.namespace,
            &self.resource,
        )
    }

    async fn act(&self, action: &Action, direction: Direction, dry_run: bool) -> Result<Outcome> {
        let resume = direction == Direction::Resume;
        let op = PatchOp {
            api: self.api(action),
            dynamic_type: &self.resource,
            action,
            direction,
            dry_run,
            verb: if resume { "Start" } else { "Stop" },
        };
        let Some(vm) = self.ctx.read_object(&op).await? else {
            return Ok(Outcome::Gone);
        };
        let manual = run_strategy(&vm).0 == MANUAL;
        let ours = annotation(&vm, ROTATED_OUT_AT).is_some();
        if resume && manual && ours && !dry_run && is_stopped(&vm, MANUAL) {
            // Start first: cleared first, a failed start would leave a stopped VM that no
            // longer says rota stopped it.
            self.vm_subresource(action, "start").await?;
        }
        let now = self.ctx.now_rfc3339();
        let outcome = (self.ctx)
            .patch_decided(op, &vm, |vm| match resume {
                true => decide_resume(vm),
                false => decide_rotate_out(vm, &now, &action.reason),
            })
            .await?;
        if manual && !resume && outcome == Outcome::Done {
            self.vm_subresource(action, "stop").await?;
        }
        Ok(outcome)
    }

    /// `PUT /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachines/NAME/VERB` with
    /// empty options, as `virtctl start|stop` sends it.
    async fn vm_subresource(&self, action: &Action, verb: &'static str) -> Result<()> {
        let w = &action.workload;
        let path = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{}/virtualmachines/{}/{verb}",
            w.namespace, w.name
        );
        let request = hyper::Request::put(path)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(b"{}".to_vec());
        let request = request.map_err(|e| Error::Transport {
            verb,
            workload: w.to_string(),
            source: kube::Error::HttpError(e),
        })?;
        match self.ctx.client().request_text(request).await {
            Ok(_) => Ok(()),
            Err(err) => Err(api_error(verb, w, err)),
        }
    }
}

impl Actuator for VmActuator {
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

/// The VM's effective run strategy, and whether the deprecated `spec.running` is set.
fn run_strategy(vm: &DynamicObject) -> (String, bool) {
    let spec = &vm.data["spec"];
    let legacy = !spec["running"].is_null();
    if let Some(strategy) = spec["runStrategy"].as_str() {
        return (strategy.to_owned(), legacy);
    }
    let running = spec["running"].as_bool().unwrap_or(false);
    let strategy = if running { "Always" } else { HALTED };
    (strategy.to_owned(), legacy)
}

/// Whether the VM is down: `Halted`, or `Manual` with no instance up.
fn is_stopped(vm: &DynamicObject, strategy: &str) -> bool {
    strategy == HALTED || (strategy == MANUAL && !vm_instance_up(vm.data.get("status")))
}

fn is_migrating(vm: &DynamicObject) -> bool {
    vm.data
        .pointer("/status/printableStatus")
        .and_then(Value::as_str)
        == Some("Migrating")
}

fn decide_rotate_out(vm: &DynamicObject, now: &str, reason: &str) -> Decision {
    let (strategy, legacy) = run_strategy(vm);
    let ours = annotation(vm, ROTATED_OUT_AT).is_some();
    if is_stopped(vm, &strategy) {
        return Decision::Stop(if ours {
            Outcome::AlreadyDone
        } else {
            Outcome::left_alone("the VM was stopped by someone else")
        });
    }
    if strategy == "WaitAsReceiver" {
        return Decision::Stop(Outcome::left_alone("the VM is receiving a migration"));
    }
    if is_migrating(vm) {
        // Halting now would abort the migration; the next tick tries again.
        return Decision::Stop(Outcome::left_alone(
            "the VM is migrating; it is stopped once the migration ends",
        ));
    }
    // The stop, if one was announced, is carried out: its notice goes.
    let mut annotations = clearing_notice(vm);
    annotations[ROTATED_OUT_AT] = json!(now);
    annotations[ROTATION_REASON] = json!(truncate(reason, MAX_NOTE_BYTES));
    annotations[PREVIOUS_RUN_STRATEGY] = json!(strategy);
    if strategy == MANUAL {
        // The `stop` subresource follows the annotations (`VmActuator::act`).
        return Decision::Patch(annotations_patch(vm, annotations));
    }
    Decision::Patch(patch(vm, annotations, HALTED, legacy))
}

fn decide_resume(vm: &DynamicObject) -> Decision {
    let (strategy, legacy) = run_strategy(vm);
    let ours = annotation(vm, ROTATED_OUT_AT).is_some();
    if strategy == MANUAL && ours {
        // Started through `start` just before (`VmActuator::act`): clear the marks.
        let annotations = json!({
            ROTATED_OUT_AT: null,
            ROTATION_REASON: null,
            PREVIOUS_RUN_STRATEGY: null,
        });
        return Decision::Patch(annotations_patch(vm, annotations));
    }
    match (is_stopped(vm, &strategy), ours) {
        (true, true) => {
            let previous = annotation(vm, PREVIOUS_RUN_STRATEGY)
                .filter(|s| RESTORABLE.contains(s))
                .unwrap_or("Always");
            let annotations = json!({
                ROTATED_OUT_AT: null,
                ROTATION_REASON: null,
                PREVIOUS_RUN_STRATEGY: null,
            });
            Decision::Patch(patch(vm, annotations, previous, legacy))
        }
        (true, false) => Decision::Stop(Outcome::left_alone(
            "the VM was stopped by someone else, not by rota",
        )),
        (false, true) => Decision::Stop(Outcome::left_alone("the VM was started by hand")),
        (false, false) => Decision::Stop(Outcome::AlreadyDone),
    }
}

/// The merge patch setting `runStrategy` (and clearing a legacy `running`), guarded by the
/// resourceVersion that was read.
fn patch(vm: &DynamicObject, annotations: Value, strategy: &str, legacy: bool) -> Value {
    let mut spec = Map::new();
    spec.insert("runStrategy".into(), json!(strategy));
    if legacy {
        spec.insert("running".into(), Value::Null);
    }
    let mut patch = annotations_patch(vm, annotations);
    patch["spec"] = Value::Object(spec);
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(spec: Value, annotations: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm", "namespace": "ns", "resourceVersion": "3",
                         "annotations": annotations},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn legacy_running_counts_as_always_and_is_cleared() {
        let found = vm(json!({"running": true}), json!({}));
        let Decision::Patch(p) = decide_rotate_out(&found, "T", "why") else {
            panic!("a running VM is stopped");
        };
        assert_eq!(p["spec"], json!({"runStrategy": "Halted", "running": null}));
        assert_eq!(
            p["metadata"]["annotations"][PREVIOUS_RUN_STRATEGY],
            "Always"
        );
        let stopped = vm(json!({"running": false}), json!({}));
        assert!(matches!(
            decide_rotate_out(&stopped, "T", "why"),
            Decision::Stop(Outcome::LeftAlone { .. })
        ));
    }

    #[test]
    fn resume_restores_a_known_strategy_or_always() {
        let halted = |prev: &str| {
            vm(
                json!({"runStrategy": "Halted"}),
                json!({ROTATED_OUT_AT: "T", PREVIOUS_RUN_STRATEGY: prev}),
            )
        };
        let restored = |v: &DynamicObject| match decide_resume(v) {
            Decision::Patch(p) => p["spec"]["runStrategy"].as_str().unwrap().to_owned(),
            Decision::Stop(o) => o.code().to_owned(),
        };
        assert_eq!(restored(&halted("RerunOnFailure")), "RerunOnFailure");
        assert_eq!(restored(&halted("Halted")), "Always");
        assert_eq!(restored(&halted("nonsense")), "Always");
        let by_hand = vm(
            json!({"runStrategy": "Always"}),
            json!({ROTATED_OUT_AT: "T"}),
        );
        assert_eq!(restored(&by_hand), "left_alone");
        let running = vm(json!({"runStrategy": "Always"}), json!({}));
        assert_eq!(restored(&running), "already_done");
    }

    #[test]
    fn migration_receivers_are_left_alone() {
        let receiver = vm(json!({"runStrategy": "WaitAsReceiver"}), json!({}));
        assert!(matches!(
            decide_rotate_out(&receiver, "T", "why"),
            Decision::Stop(Outcome::LeftAlone { .. })
        ));
    }
}
