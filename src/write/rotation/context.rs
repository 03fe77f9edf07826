//! What the Kubernetes actuators share: the client, the Event recorder, the clock, the
//! read-decide-write step and the mapping of API errors to [`Error`].
//!
//! Invariants: an Event that cannot be published is logged, never turned into a failure (the
//! action it reports already happened); Event notes are cut to the API server's 1 KiB limit.
//! Must not: decide what a write should contain (each kind's actuator does).

use std::fmt::Debug;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Action, Direction, Error, Outcome, Result, REPORTER};
use crate::clock::Clock;
use crate::core::WorkloadId;

/// Longest Event note the API server accepts (events.k8s.io/v1 validation), in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;

/// Publishes Kubernetes Events with reporter `rota`; failures are logged, never returned.
#[derive(Clone)]
pub struct EventSink {
    recorder: Recorder,
}

impl EventSink {
    /// A sink whose Events name `instance` (this replica's identity) as reporting instance.
    pub fn new(client: Client, instance: impl Into<String>) -> Self {
        let reporter = Reporter {
            controller: REPORTER.to_owned(),
            instance: Some(instance.into()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes one Event about `regarding` (logged at warn if the API server refuses it).
    pub async fn emit(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note, MAX_NOTE_BYTES).to_owned()),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(
                reason,
                name = regarding.name.as_deref().unwrap_or(""),
                namespace = regarding.namespace.as_deref().unwrap_or(""),
                error = %err,
                "Could not publish an Event."
            );
        }
    }
}

/// The client, Event sink and clock every Kubernetes actuator uses.
#[derive(Clone)]
pub struct KubeContext {
    client: Client,
    events: EventSink,
    clock: Clock,
}

impl KubeContext {
    /// A context for actuators that write with `client`, name `instance` (this replica's
    /// identity) on Events, and stamp `rota.io/rotated-out-at` from `clock`
    /// ([`crate::clock::system`] in production).
    pub fn new(client: Client, instance: impl Into<String>, clock: Clock) -> Self {
        Self {
            events: EventSink::new(client.clone(), instance),
            client,
            clock,
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn events(&self) -> &EventSink {
        &self.events
    }

    /// Now, RFC 3339 in UTC to the second (`2026-01-31T12:00:00Z`).
    pub(crate) fn now_rfc3339(&self) -> String {
        let now = (self.clock)();
        Timestamp::from_second(now.as_second())
            .unwrap_or(now)
            .to_string()
    }

    /// Emits the Event (Warning for an announced stop, else Normal) that reports an action (or, in dry run, the action it would be).
    pub(crate) async fn announce(
        &self,
        regarding: &ObjectReference,
        direction: Direction,
        dry_run: bool,
        verb: &str,
        note: &str,
    ) {
        let reason = direction.event_reason(dry_run);
        self.events
            .emit(regarding, direction.event_type(), reason, verb, note)
            .await;
    }

    /// Reads the object, asks `decide` what to do, and sends the merge patch it returns
    /// (unless `dry_run`), then reports with an Event. 404 on read or write → `Gone`.
    pub(crate) async fn read_decide_patch<K, F>(
        &self,
        op: PatchOp<'_, K>,
        decide: F,
    ) -> Result<Outcome>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
        F: FnOnce(&K) -> Decision,
    {
        let Some(object) = self.read_object(&op).await? else {
            return Ok(Outcome::Gone);
        };
        self.patch_decided(op, &object, decide).await
    }

    /// Reads the object an operation is about (`None`: 404).
    pub(crate) async fn read_object<K>(&self, op: &PatchOp<'_, K>) -> Result<Option<K>>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        let workload = &op.action.workload;
        let found = op.api.get_opt(&workload.name).await;
        found.map_err(|e| api_error("get", workload, e))
    }

    /// [`KubeContext::read_decide_patch`] on an object already read.
    pub(crate) async fn patch_decided<K, F>(
        &self,
        op: PatchOp<'_, K>,
        object: &K,
        decide: F,
    ) -> Result<Outcome>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
        F: FnOnce(&K) -> Decision,
    {
        let PatchOp {
            api,
            dynamic_type,
            action,
            direction,
            dry_run,
            verb,
        } = op;
        let workload = &action.workload;
        let patch = match decide(object) {
            Decision::Patch(patch) => patch,
            Decision::Stop(outcome) => return Ok(outcome),
        };
        let regarding = object.object_ref(dynamic_type);
        if !dry_run {
            let sent = api
                .patch(
                    &workload.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
            match sent {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => return Ok(Outcome::Gone),
                Err(err) => return Err(api_error("patch", workload, err)),
            }
        }
        self.announce(&regarding, direction, dry_run, verb, &action.reason)
            .await;
        Ok(if dry_run {
            Outcome::WouldAct
        } else {
            Outcome::Done
        })
    }
}

/// One read-decide-patch step.
pub(crate) struct PatchOp<'a, K: Resource> {
    pub api: Api<K>,
    pub dynamic_type: &'a K::DynamicType,
    pub action: &'a Action,
    pub direction: Direction,
    pub dry_run: bool,
    /// The Event's `action` field (`Suspend`, `Stop`, …).
    pub verb: &'static str,
}

/// What an actuator decided after reading the object.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    /// Send this JSON merge patch.
    Patch(Value),
    /// Write nothing; this is the answer.
    Stop(Outcome),
}

/// True when the API server answered 404.
pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// Maps a client error to the module's [`Error`] (404 is handled by the callers as `Gone`).
pub(crate) fn api_error(verb: &'static str, workload: &WorkloadId, err: kube::Error) -> Error {
    let workload = workload.to_string();
    match err {
        kube::Error::Api(status) => {
            let message = status.message.clone();
            match status.code {
                409 => Error::Conflict { verb, workload },
                429 => Error::Blocked {
                    verb,
                    workload,
                    message,
                },
                code @ (401 | 403) => Error::Forbidden {
                    verb,
                    workload,
                    code,
                    message,
                },
                code => Error::Rejected {
                    verb,
                    workload,
                    code,
                    message,
                },
            }
        }
        source => Error::Transport {
            verb,
            workload,
            source,
        },
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `{"metadata":{"resourceVersion":…,"annotations":…}}`: a merge patch of annotations that the
/// API server refuses (409) when the object changed since it was read. The kinds' actuators
/// add their `spec` fields to it.
pub(crate) fn annotations_patch<K: Resource>(object: &K, annotations: Value) -> Value {
    let mut metadata = serde_json::Map::new();
    if let Some(rv) = &object.meta().resource_version {
        metadata.insert("resourceVersion".into(), Value::from(rv.as_str()));
    }
    metadata.insert("annotations".into(), annotations);
    serde_json::json!({ "metadata": metadata })
}

/// The object's annotation `key`, if set.
pub(crate) fn annotation<'a, K: Resource>(object: &'a K, key: &str) -> Option<&'a str> {
    object
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "é" is two bytes: cutting inside it backs off to the boundary.
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate(&"x".repeat(2000), MAX_NOTE_BYTES).len(), 1024);
    }
}
