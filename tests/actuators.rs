//! The rotation actuators against a scripted mock Kubernetes API (tower-test): every request
//! is checked in order (method, path, query, patch Content-Type, JSON body) and answered from
//! the script; a request beyond the script, or a script step left unused, fails the test.
//! Every action goes through `KubeActuators`, so dispatch by workload kind is covered too.
//! Each scenario runs under a 2-second timeout.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use rota::clock::Clock;
use rota::core::{WorkloadId, WorkloadKind};
use rota::write::rotation::{
    Action, Actuator, Error, KubeActuators, KubeContext, Outcome, Warning, PREVIOUS_RUN_STRATEGY,
    ROTATED_OUT_AT, ROTATION_REASON, STOP_AT, STOP_FOR, STOP_REASON,
};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(2);
const MERGE: &str = "application/merge-patch+json";
const JSON: &str = "application/json";
const JOB_PATH: &str = "/apis/batch/v1/namespaces/ns/jobs/name";
const VM_PATH: &str = "/apis/kubevirt.io/v1/namespaces/ns/virtualmachines/name";
const POD_PATH: &str = "/api/v1/namespaces/ns/pods/name";
const EVICTION_PATH: &str = "/api/v1/namespaces/ns/pods/name/eviction";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";
const REASON: &str =
    "tenant physics holds 12 GPUs, entitled to 8; tenant bio waits below its share (2 of 6)";
/// The test clock reads 2026-01-31T12:00:00.750Z; annotations keep whole seconds.
const NOW: &str = "2026-01-31T12:00:00Z";
/// An announced stop five minutes after [`NOW`], in unix seconds and as written.
const STOP_AT_SECONDS: f64 = 1_769_860_800.0 + 300.0;
const STOP_AT_TIME: &str = "2026-01-31T12:05:00Z";

// ---------------------------------------------------------------------------------------------
// The scripted API server

/// What a step expects of the request body.
enum Expect {
    /// No body (GET).
    Empty,
    /// Exactly this JSON, with this Content-Type.
    Json(&'static str, Value),
    /// An events.k8s.io/v1 Event with this type, reason, action and note about `kind` `name`.
    Event {
        type_: &'static str,
        reason: &'static str,
        action: &'static str,
        kind: &'static str,
    },
}

/// One expected request and the scripted answer.
struct Step {
    method: Method,
    path: &'static str,
    expect: Expect,
    status: u16,
    answer: Value,
}

fn step(method: Method, path: &'static str, expect: Expect, reply: (u16, Value)) -> Step {
    Step {
        method,
        path,
        expect,
        status: reply.0,
        answer: reply.1,
    }
}

fn get(path: &'static str, reply: (u16, Value)) -> Step {
    step(Method::GET, path, Expect::Empty, reply)
}

fn merge_patch(path: &'static str, body: Value, reply: (u16, Value)) -> Step {
    step(Method::PATCH, path, Expect::Json(MERGE, body), reply)
}

fn event(
    type_: &'static str,
    reason: &'static str,
    action: &'static str,
    kind: &'static str,
) -> Step {
    let expect = Expect::Event {
        type_,
        reason,
        action,
        kind,
    };
    // The answer is filled with the posted Event itself (as the API server does).
    step(Method::POST, EVENTS_PATH, expect, (201, Value::Null))
}

fn ok(object: Value) -> (u16, Value) {
    (200, object)
}

fn status(code: u16, reason: &str) -> (u16, Value) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{reason} (scripted)"), "reason": reason, "code": code});
    (code, body)
}

/// Plays `script` in order; returns how many steps were used, or what went wrong.
async fn api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    script: Vec<Step>,
) -> Result<usize, String> {
    let mut script = script.into_iter();
    let mut used = 0;
    while let Some((request, send)) = handle.next_request().await {
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let seen = format!(
            "{} {}?{}",
            parts.method,
            parts.uri.path(),
            parts.uri.query().unwrap_or("")
        );
        let Some(step) = script.next() else {
            return Err(format!(
                "unscripted request {seen} {}",
                String::from_utf8_lossy(&bytes)
            ));
        };
        used += 1;
        if parts.method != step.method || parts.uri.path() != step.path {
            return Err(format!(
                "step {used}: expected {} {}, got {seen}",
                step.method, step.path
            ));
        }
        if parts.uri.query().is_some_and(|q| !q.is_empty()) {
            return Err(format!("step {used}: unexpected query in {seen}"));
        }
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| format!("step {used}: body: {e}"))?
        };
        check(&step.expect, &content_type, &body)
            .map_err(|e| format!("step {used} ({seen}): {e}"))?;
        let answer = if step.answer.is_null() {
            body
        } else {
            step.answer
        };
        let response = Response::builder()
            .status(step.status)
            .body(Body::from(
                serde_json::to_vec(&answer).map_err(|e| e.to_string())?,
            ))
            .map_err(|e| e.to_string())?;
        send.send_response(response);
    }
    match script.next() {
        Some(step) => Err(format!(
            "expected {} {} that never came",
            step.method, step.path
        )),
        None => Ok(used),
    }
}

fn check(expect: &Expect, content_type: &str, body: &Value) -> Result<(), String> {
    match expect {
        Expect::Empty if body.is_null() => Ok(()),
        Expect::Empty => Err(format!("expected no body, got {body}")),
        Expect::Json(want_type, want) => {
            if content_type != *want_type {
                return Err(format!(
                    "Content-Type {content_type:?}, expected {want_type:?}"
                ));
            }
            if body != want {
                return Err(format!("body\n  {body}\nexpected\n  {want}"));
            }
            Ok(())
        }
        Expect::Event {
            type_,
            reason,
            action,
            kind,
        } => {
            if content_type != JSON {
                return Err(format!("Event Content-Type {content_type:?}"));
            }
            let got = (
                body["type"].as_str(),
                body["reason"].as_str(),
                body["action"].as_str(),
                body["regarding"]["kind"].as_str(),
                body["regarding"]["name"].as_str(),
                body["reportingController"].as_str(),
                body["reportingInstance"].as_str(),
            );
            let want = (
                Some(*type_),
                Some(*reason),
                Some(*action),
                Some(*kind),
                Some("name"),
                Some("rota"),
                Some("rota-0"),
            );
            if got != want {
                return Err(format!("Event {got:?}, expected {want:?}: {body}"));
            }
            let note = body["note"].as_str().unwrap_or("");
            if *type_ == "Normal" && note != REASON {
                return Err(format!("Event note {note:?}"));
            }
            // An announced stop says when, why, and how to keep the workload.
            let announced = [
                STOP_AT_TIME,
                REASON,
                "rota.io/preemptible",
                "rota.io/stop-warning-seconds",
            ];
            let scheduled = reason.contains("ScheduleRotation") || *reason == "RotationScheduled";
            if scheduled && !announced.iter().all(|part| note.contains(part)) {
                return Err(format!("Warning note {note:?} lacks one of {announced:?}"));
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn clock() -> Clock {
    let at = "2026-01-31T12:00:00.750Z".parse::<Timestamp>().unwrap();
    Arc::new(move || at)
}

fn action(kind: WorkloadKind) -> Action {
    Action {
        workload: WorkloadId {
            kind,
            namespace: "ns".into(),
            name: "name".into(),
        },
        tenant: "physics".into(),
        gpus: 4,
        reason: REASON.into(),
        reason_code: "over_share",
    }
}

fn rotated_annotations() -> Value {
    json!({ROTATED_OUT_AT: "2026-01-31T11:00:00Z", ROTATION_REASON: "earlier"})
}

fn job(suspend: Option<bool>, annotations: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "name", "namespace": "ns", "uid": "job-uid", "resourceVersion": "41",
                     "annotations": annotations},
        "spec": {"suspend": suspend, "template": {"spec": {"containers": []}}}})
}

fn vm(spec: Value, annotations: Value) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "name", "namespace": "ns", "uid": "vm-uid", "resourceVersion": "17",
                     "annotations": annotations},
        "spec": spec})
}

fn pod(terminating: bool, annotations: Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "name", "namespace": "ns", "uid": "pod-uid", "resourceVersion": "5",
                     "annotations": annotations},
        "spec": {"containers": [{"name": "main", "image": "trainer"}]}});
    if terminating {
        pod["metadata"]["deletionTimestamp"] = json!("2026-01-31T11:59:00Z");
    }
    pod
}

/// Runs `act` on `KubeActuators` over a mock client playing `script`; returns its answer
/// after checking that the whole script, and nothing more, was played.
async fn scenario<F, Fut>(script: Vec<Step>, act: F) -> Result<Outcome, Error>
where
    F: FnOnce(KubeActuators) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, Error>>,
{
    let steps = script.len();
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(api_server(handle, script));
    let result = tokio::time::timeout(TIMEOUT, async move {
        let client = kube::Client::new(service, "default");
        let actuators = KubeActuators::new(KubeContext::new(client, "rota-0", clock()));
        act(actuators).await
    })
    .await
    .expect("the action timed out");
    let played = tokio::time::timeout(TIMEOUT, server)
        .await
        .expect("server timed out");
    assert_eq!(played.unwrap(), Ok(steps), "the mock API server disagreed");
    result
}

async fn rotate_out(
    kind: WorkloadKind,
    dry_run: bool,
    script: Vec<Step>,
) -> Result<Outcome, Error> {
    scenario(script, |a| async move {
        a.rotate_out(&action(kind), dry_run).await
    })
    .await
}

async fn resume(kind: WorkloadKind, script: Vec<Step>) -> Result<Outcome, Error> {
    scenario(
        script,
        |a| async move { a.resume(&action(kind), false).await },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Jobs

#[tokio::test]
async fn job_rotate_out_suspends_with_a_merge_patch_and_reports_an_event() {
    let want = json!({"metadata": {"resourceVersion": "41",
                                   "annotations": {ROTATED_OUT_AT: NOW, ROTATION_REASON: REASON}},
                      "spec": {"suspend": true}});
    let script = vec![
        get(JOB_PATH, ok(job(None, json!({"team": "x"})))),
        merge_patch(JOB_PATH, want, ok(job(Some(true), json!({})))),
        event("Normal", "RotatedOut", "Suspend", "Job"),
    ];
    assert_eq!(
        rotate_out(WorkloadKind::Job, false, script).await.unwrap(),
        Outcome::Done
    );
}

#[tokio::test]
async fn job_already_suspended_by_rota_is_not_patched_again() {
    let script = vec![get(JOB_PATH, ok(job(Some(true), rotated_annotations())))];
    let outcome = rotate_out(WorkloadKind::Job, false, script).await.unwrap();
    assert_eq!(outcome, Outcome::AlreadyDone);
}

#[tokio::test]
async fn job_suspended_by_a_person_is_left_alone_both_ways() {
    let script = vec![get(JOB_PATH, ok(job(Some(true), json!({}))))];
    let outcome = rotate_out(WorkloadKind::Job, false, script).await.unwrap();
    assert!(matches!(outcome, Outcome::LeftAlone { .. }), "{outcome:?}");
    let script = vec![get(JOB_PATH, ok(job(Some(true), json!({}))))];
    let outcome = resume(WorkloadKind::Job, script).await.unwrap();
    assert!(matches!(outcome, Outcome::LeftAlone { .. }), "{outcome:?}");
}

#[tokio::test]
async fn job_resumed_by_a_person_is_left_alone() {
    let script = vec![get(JOB_PATH, ok(job(Some(false), rotated_annotations())))];
    let outcome = resume(WorkloadKind::Job, script).await.unwrap();
    assert!(matches!(outcome, Outcome::LeftAlone { .. }), "{outcome:?}");
}

#[tokio::test]
async fn job_resume_unsuspends_and_clears_the_annotations() {
    let want = json!({"metadata": {"resourceVersion": "41",
                                   "annotations": {ROTATED_OUT_AT: null, ROTATION_REASON: null}},
                      "spec": {"suspend": false}});
    let script = vec![
        get(JOB_PATH, ok(job(Some(true), rotated_annotations()))),
        merge_patch(JOB_PATH, want, ok(job(Some(false), json!({})))),
        event("Normal", "Resumed", "Unsuspend", "Job"),
    ];
    assert_eq!(
        resume(WorkloadKind::Job, script).await.unwrap(),
        Outcome::Done
    );
}

#[tokio::test]
async fn job_missing_or_deleted_under_us_is_gone() {
    let script = vec![get(JOB_PATH, status(404, "NotFound"))];
    assert_eq!(
        rotate_out(WorkloadKind::Job, false, script).await.unwrap(),
        Outcome::Gone
    );
    let script = vec![
        get(JOB_PATH, ok(job(Some(true), rotated_annotations()))),
        step(
            Method::PATCH,
            JOB_PATH,
            Expect::Json(
                MERGE,
                json!({"metadata": {"resourceVersion": "41",
            "annotations": {ROTATED_OUT_AT: null, ROTATION_REASON: null}}, "spec": {"suspend": false}}),
            ),
            status(404, "NotFound"),
        ),
    ];
    assert_eq!(
        resume(WorkloadKind::Job, script).await.unwrap(),
        Outcome::Gone
    );
}

#[tokio::test]
async fn job_conflict_is_a_retryable_error_without_an_event() {
    let want = json!({"metadata": {"resourceVersion": "41",
                                   "annotations": {ROTATED_OUT_AT: NOW, ROTATION_REASON: REASON}},
                      "spec": {"suspend": true}});
    let script = vec![
        get(JOB_PATH, ok(job(Some(false), json!({})))),
        merge_patch(JOB_PATH, want, status(409, "Conflict")),
    ];
    let err = rotate_out(WorkloadKind::Job, false, script)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.code(), "conflict");
}

#[tokio::test]
async fn forbidden_is_not_retryable() {
    let script = vec![get(JOB_PATH, status(403, "Forbidden"))];
    let err = rotate_out(WorkloadKind::Job, false, script)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "forbidden");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn job_dry_run_writes_nothing_but_the_would_event() {
    let script = vec![
        get(JOB_PATH, ok(job(None, json!({})))),
        event("Normal", "WouldRotateOut", "Suspend", "Job"),
    ];
    let outcome = rotate_out(WorkloadKind::Job, true, script).await.unwrap();
    assert_eq!(outcome, Outcome::WouldAct);
}

#[tokio::test]
async fn job_dry_run_resume_writes_nothing_but_the_would_event() {
    let script = vec![
        get(JOB_PATH, ok(job(Some(true), rotated_annotations()))),
        event("Normal", "WouldResume", "Unsuspend", "Job"),
    ];
    let outcome = scenario(script, |a| async move {
        a.resume(&action(WorkloadKind::Job), true).await
    })
    .await;
    assert_eq!(outcome.unwrap(), Outcome::WouldAct);
}

// ---------------------------------------------------------------------------------------------
// VirtualMachines

#[tokio::test]
async fn vm_rotate_out_halts_and_remembers_the_strategy() {
    let want = json!({"metadata": {"resourceVersion": "17", "annotations": {
                          ROTATED_OUT_AT: NOW, ROTATION_REASON: REASON,
                          PREVIOUS_RUN_STRATEGY: "RerunOnFailure"}},
                      "spec": {"runStrategy": "Halted"}});
    let script = vec![
        get(
            VM_PATH,
            ok(vm(json!({"runStrategy": "RerunOnFailure"}), json!({}))),
        ),
        merge_patch(
            VM_PATH,
            want,
            ok(vm(json!({"runStrategy": "Halted"}), json!({}))),
        ),
        event("Normal", "RotatedOut", "Stop", "VirtualMachine"),
    ];
    let outcome = rotate_out(WorkloadKind::VirtualMachine, false, script).await;
    assert_eq!(outcome.unwrap(), Outcome::Done);
}

#[tokio::test]
async fn vm_with_deprecated_running_true_counts_as_always() {
    let want = json!({"metadata": {"resourceVersion": "17", "annotations": {
                          ROTATED_OUT_AT: NOW, ROTATION_REASON: REASON,
                          PREVIOUS_RUN_STRATEGY: "Always"}},
                      "spec": {"runStrategy": "Halted", "running": null}});
    let script = vec![
        get(VM_PATH, ok(vm(json!({"running": true}), json!({})))),
        merge_patch(
            VM_PATH,
            want,
            ok(vm(json!({"runStrategy": "Halted"}), json!({}))),
        ),
        event("Normal", "RotatedOut", "Stop", "VirtualMachine"),
    ];
    let outcome = rotate_out(WorkloadKind::VirtualMachine, false, script).await;
    assert_eq!(outcome.unwrap(), Outcome::Done);
}

#[tokio::test]
async fn vm_resume_restores_the_previous_strategy() {
    let annotations = json!({ROTATED_OUT_AT: "2026-01-31T11:00:00Z", ROTATION_REASON: "earlier",
                             PREVIOUS_RUN_STRATEGY: "RerunOnFailure"});
    let want = json!({"metadata": {"resourceVersion": "17", "annotations": {
                          ROTATED_OUT_AT: null, ROTATION_REASON: null, PREVIOUS_RUN_STRATEGY: null}},
                      "spec": {"runStrategy": "RerunOnFailure"}});
    let script = vec![
        get(
            VM_PATH,
            ok(vm(json!({"runStrategy": "Halted"}), annotations)),
        ),
        merge_patch(
            VM_PATH,
            want,
            ok(vm(json!({"runStrategy": "RerunOnFailure"}), json!({}))),
        ),
        event("Normal", "Resumed", "Start", "VirtualMachine"),
    ];
    let outcome = resume(WorkloadKind::VirtualMachine, script).await;
    assert_eq!(outcome.unwrap(), Outcome::Done);
}

#[tokio::test]
async fn vm_stopped_by_a_person_is_left_alone_and_ours_is_already_done() {
    let script = vec![get(
        VM_PATH,
        ok(vm(json!({"runStrategy": "Halted"}), json!({}))),
    )];
    let outcome = rotate_out(WorkloadKind::VirtualMachine, false, script)
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::LeftAlone { .. }), "{outcome:?}");
    let ours = vm(json!({"runStrategy": "Halted"}), rotated_annotations());
    let outcome = rotate_out(
        WorkloadKind::VirtualMachine,
        false,
        vec![get(VM_PATH, ok(ours))],
    )
    .await;
    assert_eq!(outcome.unwrap(), Outcome::AlreadyDone);
}

#[tokio::test]
async fn vm_dry_run_writes_nothing_but_the_would_event() {
    let script = vec![
        get(VM_PATH, ok(vm(json!({"runStrategy": "Always"}), json!({})))),
        event("Normal", "WouldRotateOut", "Stop", "VirtualMachine"),
    ];
    let outcome = rotate_out(WorkloadKind::VirtualMachine, true, script).await;
    assert_eq!(outcome.unwrap(), Outcome::WouldAct);
}

// ---------------------------------------------------------------------------------------------
// Bare pods

fn annotate() -> Value {
    json!({"metadata": {"annotations": {ROTATED_OUT_AT: NOW, ROTATION_REASON: REASON}}})
}

fn eviction() -> Value {
    json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "name", "namespace": "ns"},
        "deleteOptions": {"preconditions": {"uid": "pod-uid"}}})
}

fn evict(reply: (u16, Value)) -> Step {
    step(
        Method::POST,
        EVICTION_PATH,
        Expect::Json(JSON, eviction()),
        reply,
    )
}

fn success() -> (u16, Value) {
    (
        201,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    )
}

#[tokio::test]
async fn pod_is_annotated_then_evicted_through_the_eviction_api() {
    let script = vec![
        get(POD_PATH, ok(pod(false, json!({})))),
        merge_patch(POD_PATH, annotate(), ok(pod(false, rotated_annotations()))),
        evict(success()),
        event("Normal", "RotatedOut", "Evict", "Pod"),
    ];
    assert_eq!(
        rotate_out(WorkloadKind::Pod, false, script).await.unwrap(),
        Outcome::Done
    );
}

#[tokio::test]
async fn pod_eviction_refused_by_a_budget_is_retryable_and_reported() {
    let script = vec![
        get(POD_PATH, ok(pod(false, json!({})))),
        merge_patch(POD_PATH, annotate(), ok(pod(false, rotated_annotations()))),
        evict(status(429, "TooManyRequests")),
        event("Warning", "RotationBlocked", "Evict", "Pod"),
    ];
    let err = rotate_out(WorkloadKind::Pod, false, script)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Blocked { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.code(), "blocked");
    assert!(
        err.to_string().contains("TooManyRequests (scripted)"),
        "{err}"
    );
}

#[tokio::test]
async fn pod_missing_or_gone_before_eviction_is_gone() {
    let script = vec![get(POD_PATH, status(404, "NotFound"))];
    assert_eq!(
        rotate_out(WorkloadKind::Pod, false, script).await.unwrap(),
        Outcome::Gone
    );
    let script = vec![
        get(POD_PATH, ok(pod(false, json!({})))),
        merge_patch(POD_PATH, annotate(), ok(pod(false, rotated_annotations()))),
        evict(status(404, "NotFound")),
    ];
    assert_eq!(
        rotate_out(WorkloadKind::Pod, false, script).await.unwrap(),
        Outcome::Gone
    );
}

#[tokio::test]
async fn pod_already_terminating_is_not_evicted_again() {
    let script = vec![get(POD_PATH, ok(pod(true, rotated_annotations())))];
    let outcome = rotate_out(WorkloadKind::Pod, false, script).await.unwrap();
    assert_eq!(outcome, Outcome::AlreadyDone);
}

#[tokio::test]
async fn pod_dry_run_writes_nothing_but_the_would_event() {
    let script = vec![
        get(POD_PATH, ok(pod(false, json!({})))),
        event("Normal", "WouldRotateOut", "Evict", "Pod"),
    ];
    assert_eq!(
        rotate_out(WorkloadKind::Pod, true, script).await.unwrap(),
        Outcome::WouldAct
    );
}

#[tokio::test]
async fn pods_are_never_resumed_and_no_request_is_sent() {
    assert_eq!(
        resume(WorkloadKind::Pod, vec![]).await.unwrap(),
        Outcome::NotResumable
    );
}

// ---------------------------------------------------------------------------------------------
// Announced stops (rotation.warning) and Manual VMs

fn warning(kind: WorkloadKind) -> Warning {
    Warning {
        action: action(kind),
        stop_at: STOP_AT_SECONDS,
        claim: WorkloadId {
            kind: WorkloadKind::Job,
            namespace: "bio".into(),
            name: "train".into(),
        },
        claim_tenant: "bio".into(),
    }
}

fn notice() -> Value {
    json!({STOP_AT: STOP_AT_TIME, STOP_FOR: "job/bio/train", STOP_REASON: REASON})
}

fn put(path: &'static str) -> Step {
    step(
        Method::PUT,
        path,
        Expect::Json(JSON, json!({})),
        ok(json!({})),
    )
}

fn manual_vm(printable: &str, annotations: Value) -> Value {
    let mut v = vm(json!({"runStrategy": "Manual"}), annotations);
    v["status"] = json!({"printableStatus": printable});
    v
}

#[tokio::test]
async fn warn_records_the_notice_and_emits_rotation_scheduled() {
    let want = json!({"metadata": {"resourceVersion": "17", "annotations": notice()}});
    let script = vec![
        get(VM_PATH, ok(vm(json!({"runStrategy": "Always"}), json!({})))),
        merge_patch(
            VM_PATH,
            want,
            ok(vm(json!({"runStrategy": "Always"}), notice())),
        ),
        event(
            "Warning",
            "RotationScheduled",
            "ScheduleStop",
            "VirtualMachine",
        ),
    ];
    let w = warning(WorkloadKind::VirtualMachine);
    let outcome = scenario(script, |a| async move { a.warn(&w, false).await }).await;
    assert_eq!(outcome.unwrap(), Outcome::Done);
    // The same notice already on the object: nothing is written twice.
    let script = vec![get(
        VM_PATH,
        ok(vm(json!({"runStrategy": "Always"}), notice())),
    )];
    let w = warning(WorkloadKind::VirtualMachine);
    let outcome = scenario(script, |a| async move { a.warn(&w, false).await }).await;
    assert_eq!(outcome.unwrap(), Outcome::AlreadyDone);
}

#[tokio::test]
async fn warn_on_a_job_in_dry_run_writes_only_the_would_event() {
    let script = vec![
        get(JOB_PATH, ok(job(None, json!({})))),
        event("Warning", "WouldScheduleRotation", "ScheduleStop", "Job"),
    ];
    let w = warning(WorkloadKind::Job);
    let outcome = scenario(script, |a| async move { a.warn(&w, true).await }).await;
    assert_eq!(outcome.unwrap(), Outcome::WouldAct);
}

#[tokio::test]
async fn cancel_clears_the_notice_and_says_why() {
    let want = json!({"metadata": {"resourceVersion": "41", "annotations": {
                          STOP_AT: null, STOP_FOR: null, STOP_REASON: null}}});
    let script = vec![
        get(JOB_PATH, ok(job(None, notice()))),
        merge_patch(JOB_PATH, want, ok(job(None, json!({})))),
        event("Normal", "RotationCancelled", "CancelStop", "Job"),
    ];
    let outcome = scenario(script, |a| async move {
        a.cancel(&action(WorkloadKind::Job), false).await
    })
    .await;
    assert_eq!(outcome.unwrap(), Outcome::Done);
    // Nothing announced: nothing to clear.
    let script = vec![get(JOB_PATH, ok(job(None, json!({}))))];
    let outcome = scenario(script, |a| async move {
        a.cancel(&action(WorkloadKind::Job), false).await
    })
    .await;
    assert_eq!(outcome.unwrap(), Outcome::AlreadyDone);
}

#[tokio::test]
async fn a_due_stop_clears_its_notice_with_the_suspension() {
    let mut annotations = notice();
    annotations[ROTATED_OUT_AT] = json!(NOW);
    annotations[ROTATION_REASON] = json!(REASON);
    annotations[STOP_AT] = Value::Null;
    annotations[STOP_FOR] = Value::Null;
    annotations[STOP_REASON] = Value::Null;
    let want = json!({"metadata": {"resourceVersion": "41", "annotations": annotations},
                      "spec": {"suspend": true}});
    let script = vec![
        get(JOB_PATH, ok(job(None, notice()))),
        merge_patch(JOB_PATH, want, ok(job(Some(true), json!({})))),
        event("Normal", "RotatedOut", "Suspend", "Job"),
    ];
    let outcome = rotate_out(WorkloadKind::Job, false, script).await;
    assert_eq!(outcome.unwrap(), Outcome::Done);
}

#[tokio::test]
async fn manual_vm_is_annotated_then_stopped_through_the_stop_subresource() {
    let want = json!({"metadata": {"resourceVersion": "17", "annotations": {
                          ROTATED_OUT_AT: NOW, ROTATION_REASON: REASON,
                          PREVIOUS_RUN_STRATEGY: "Manual"}}});
    let script = vec![
        get(VM_PATH, ok(manual_vm("Running", json!({})))),
        merge_patch(
            VM_PATH,
            want,
            ok(manual_vm("Running", rotated_annotations())),
        ),
        event("Normal", "RotatedOut", "Stop", "VirtualMachine"),
        put("/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/name/stop"),
    ];
    let outcome = rotate_out(WorkloadKind::VirtualMachine, false, script).await;
    assert_eq!(outcome.unwrap(), Outcome::Done);
    // Stopped by rota already: nothing more.
    let script = vec![get(
        VM_PATH,
        ok(manual_vm("Stopped", rotated_annotations())),
    )];
    let outcome = rotate_out(WorkloadKind::VirtualMachine, false, script).await;
    assert_eq!(outcome.unwrap(), Outcome::AlreadyDone);
}

#[tokio::test]
async fn manual_vm_is_started_through_the_start_subresource_before_its_marks_go() {
    let mut annotations = rotated_annotations();
    annotations[PREVIOUS_RUN_STRATEGY] = json!("Manual");
    let want = json!({"metadata": {"resourceVersion": "17", "annotations": {
                          ROTATED_OUT_AT: null, ROTATION_REASON: null, PREVIOUS_RUN_STRATEGY: null}}});
    let script = vec![
        get(VM_PATH, ok(manual_vm("Stopped", annotations))),
        put("/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/name/start"),
        merge_patch(VM_PATH, want, ok(manual_vm("Starting", json!({})))),
        event("Normal", "Resumed", "Start", "VirtualMachine"),
    ];
    let outcome = resume(WorkloadKind::VirtualMachine, script).await;
    assert_eq!(outcome.unwrap(), Outcome::Done);
}

#[tokio::test]
async fn a_failed_start_keeps_the_marks_so_the_next_tick_retries() {
    let mut annotations = rotated_annotations();
    annotations[PREVIOUS_RUN_STRATEGY] = json!("Manual");
    let script = vec![
        get(VM_PATH, ok(manual_vm("Stopped", annotations))),
        step(
            Method::PUT,
            "/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/name/start",
            Expect::Json(JSON, json!({})),
            status(500, "InternalError"),
        ),
    ];
    let err = resume(WorkloadKind::VirtualMachine, script)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn a_migrating_vm_is_not_stopped_until_the_migration_ends() {
    for spec in [
        json!({"runStrategy": "Always"}),
        json!({"runStrategy": "Manual"}),
    ] {
        let mut found = vm(spec, json!({}));
        found["status"] = json!({"printableStatus": "Migrating"});
        let outcome = rotate_out(
            WorkloadKind::VirtualMachine,
            false,
            vec![get(VM_PATH, ok(found))],
        )
        .await
        .unwrap();
        assert!(
            matches!(&outcome, Outcome::LeftAlone { reason } if reason.contains("migrat")),
            "{outcome:?}"
        );
    }
}
