//! The three extender verbs as functions from a request body to a response body.
//!
//! Each verb decodes the wire types, translates the pod once, asks the policy core, and encodes
//! the answer. Every failure is a [`VerbError`], mapped to an HTTP status in exactly one place
//! ([`VerbError::status`]). Rejections of nodes are never errors: they travel in the
//! failed-node maps, as the protocol requires.

use std::borrow::Cow;
use std::collections::BTreeMap;

use hyper::StatusCode;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::clock::now_seconds as unix_now;
use crate::config::ScoreAnswer;
use crate::core::health::TelemetryRules;
use crate::core::preemption::{self, Candidate, NodeCandidates, VictimRules};
use crate::core::{gate, placement, GpuPod};
use crate::read::view::fairshare::{GateDecision, Held};
use crate::read::view::translate;
use crate::wire::{
    self, ExtenderArgs, ExtenderFilterResult, ExtenderPreemptionArgs, ExtenderPreemptionResult,
    HostPriority, MetaPod, MetaVictims, NodeList, NodeMessages, RequestPod,
};
use crate::write::held_events;

use super::Context;

/// Why a verb could not be answered. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum VerbError {
    /// The body is not valid JSON of the expected shape.
    #[error("invalid {verb} request: {message}")]
    Decode {
        /// The verb.
        verb: &'static str,
        /// What serde found, with the path of the offending field.
        message: String,
    },
    /// The request has no `Pod`.
    #[error("invalid {verb} request: Pod is missing or null")]
    MissingPod {
        /// The verb.
        verb: &'static str,
    },
    /// The pod cannot be understood.
    #[error("invalid {verb} request: Pod: {reason}")]
    BadPod {
        /// The verb.
        verb: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// One of the `Nodes.items` is not a Node.
    #[error("invalid {verb} request: Nodes.items[{index}]: {reason}")]
    BadNode {
        /// The verb.
        verb: &'static str,
        /// Position in `Nodes.items`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither `NodeNames` nor `Nodes` was given.
    #[error("invalid {verb} request: both NodeNames and Nodes are null")]
    NoNodes {
        /// The verb.
        verb: &'static str,
    },
    /// The answer could not be encoded (a bug, not the caller's fault).
    #[error("cannot encode the {verb} answer: {source}")]
    Encode {
        /// The verb.
        verb: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

impl VerbError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            VerbError::Encode { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// A short, bounded label for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            VerbError::Decode { .. } => "decode",
            VerbError::MissingPod { .. } => "missing_pod",
            VerbError::BadPod { .. } => "bad_pod",
            VerbError::BadNode { .. } => "bad_node",
            VerbError::NoNodes { .. } => "no_nodes",
            VerbError::Encode { .. } => "encode",
        }
    }
}

type Result<T, E = VerbError> = std::result::Result<T, E>;

/// Candidate nodes of a filter or prioritize request, by name, with the raw objects when the
/// scheduler sent full Nodes (`nodeCacheCapable: false`).
struct Candidates<'a> {
    names: Vec<Cow<'a, str>>,
    raw: Option<Vec<&'a RawValue>>,
}

/// Answers `filter`: the nodes the pod may use, the rest in `FailedAndUnresolvableNodes`.
pub fn filter(ctx: &Context, body: &[u8]) -> Result<Vec<u8>> {
    const VERB: &str = "filter";
    let args: ExtenderArgs = decode(VERB, body)?;
    let pod = request_pod(ctx, VERB, args.pod)?;
    let candidates = candidates(ctx, VERB, args.node_names, args.nodes)?;
    let names: Vec<&str> = candidates.names.iter().map(|n| n.as_ref()).collect();

    let now = unix_now();
    // The fair-share gate first: a pod whose turn has not come is held on every node.
    let rules = telemetry_rules(ctx, now);
    let outcome = match ctx.view.gate_pod(&pod, &ctx.config.gate) {
        GateDecision::Hold(held) => {
            if let Some(tx) = &ctx.held_events {
                held_events::notify(tx, held_pod(&pod, &held));
            }
            gate::reject_all(&names, held.reason)
        }
        GateDecision::Pass => placement::filter(&ctx.view.read(), &pod, &names, &rules),
        GateDecision::PassExcept { nodes, reason } => gate::reject_nodes(
            placement::filter(&ctx.view.read(), &pod, &names, &rules),
            &nodes,
            reason,
        ),
    };

    let nodes = candidates.raw.map(|raw| NodeList {
        items: keep_passed(&names, &raw, &outcome.passed),
    });
    let result = ExtenderFilterResult {
        nodes,
        node_names: Some(outcome.passed.iter().map(|&n| Cow::Borrowed(n)).collect()),
        failed_nodes: NodeMessages(
            outcome
                .failed
                .iter()
                .map(|(n, reason)| (Cow::Borrowed(*n), Cow::Borrowed(reason.as_ref())))
                .collect(),
        ),
        failed_and_unresolvable_nodes: NodeMessages(
            outcome
                .unresolvable
                .iter()
                .map(|(n, reason)| (Cow::Borrowed(*n), Cow::Borrowed(reason.as_ref())))
                .collect(),
        ),
        error: String::new(),
    };
    let mut out = answer_buffer(names.len());
    wire::encode::filter_result(&mut out, &result);
    Ok(out)
}

/// Answers `prioritize`: a bare array of `{Host, Score}` in 0..=10; by default only the hosts
/// above the lowest score, relative to it (`scoring.answer`, [`ScoreAnswer`]).
pub fn prioritize(ctx: &Context, body: &[u8]) -> Result<Vec<u8>> {
    const VERB: &str = "prioritize";
    let args: ExtenderArgs = decode(VERB, body)?;
    let pod = request_pod(ctx, VERB, args.pod)?;
    let candidates = candidates(ctx, VERB, args.node_names, args.nodes)?;
    let names: Vec<&str> = candidates.names.iter().map(|n| n.as_ref()).collect();

    let now = unix_now();
    let scores = placement::prioritize(
        &ctx.view.read(),
        &pod,
        &names,
        &ctx.config.scoring,
        &telemetry_rules(ctx, now),
    );

    let entry = |i: usize, score: i64| HostPriority {
        host: Cow::Borrowed(names[i]),
        score,
    };
    let list: Vec<HostPriority> = match ctx.config.scoring.answer {
        ScoreAnswer::Sparse => placement::above_lowest(&scores)
            .map(|(i, s)| entry(i, s))
            .collect(),
        ScoreAnswer::Full => scores
            .iter()
            .enumerate()
            .map(|(i, &s)| entry(i, s))
            .collect(),
    };
    let mut out = answer_buffer(list.len());
    wire::encode::host_priorities(&mut out, &list);
    Ok(out)
}

/// Answers `preempt`: the victims rota accepts, always as `NodeNameToMetaVictims`.
pub fn preempt(ctx: &Context, body: &[u8]) -> Result<Vec<u8>> {
    const VERB: &str = "preempt";
    let args: ExtenderPreemptionArgs = decode(VERB, body)?;
    let pod = request_pod(ctx, VERB, args.pod)?;

    let mut proposed: BTreeMap<String, NodeCandidates> = BTreeMap::new();
    for (node, victims) in args.node_name_to_meta_victims.unwrap_or_default() {
        let pods = victims
            .pods
            .into_iter()
            .map(|p| Candidate {
                uid: p.uid,
                priority: None,
            })
            .collect();
        proposed.insert(node, node_candidates(pods, victims.num_pdb_violations));
    }
    for (node, victims) in args.node_name_to_victims.unwrap_or_default() {
        let pods = victims.pods.iter().filter_map(full_pod_candidate).collect();
        proposed.insert(node, node_candidates(pods, victims.num_pdb_violations));
    }

    let rules = VictimRules {
        config: &ctx.config,
        now_unix_seconds: unix_now(),
    };
    let selected = preemption::select_victims(&ctx.view.read(), &pod, proposed, &rules);

    let result = ExtenderPreemptionResult {
        node_name_to_meta_victims: selected
            .into_iter()
            .map(|(node, c)| {
                let victims = MetaVictims {
                    pods: c.pods.into_iter().map(|p| MetaPod { uid: p.uid }).collect(),
                    num_pdb_violations: c.num_pdb_violations,
                };
                (node, victims)
            })
            .collect(),
    };
    encode(VERB, &result)
}

fn node_candidates(pods: Vec<Candidate>, num_pdb_violations: i64) -> NodeCandidates {
    NodeCandidates {
        pods,
        num_pdb_violations,
    }
}

/// A full victim pod reduced to what the policy needs; pods without a UID cannot be named in
/// the answer and are skipped.
fn full_pod_candidate(pod: &Pod) -> Option<Candidate> {
    Some(Candidate {
        uid: pod.metadata.uid.clone()?,
        priority: Some(pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)),
    })
}

/// The held-pod notice of a pod the gate rejected.
fn held_pod(pod: &GpuPod, held: &Held) -> held_events::HeldPod {
    held_events::HeldPod {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        reason: held.reason.clone(),
        unplaceable: held.unplaceable.is_some(),
    }
}

/// Decodes a body; on failure decodes again with path tracking, so the message names the field
/// (the fast path stays free of that bookkeeping).
fn decode<'a, T: Deserialize<'a>>(verb: &'static str, body: &'a [u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|fast| {
        let mut de = serde_json::Deserializer::from_slice(body);
        let message = match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(err) if err.path().iter().next().is_some() => {
                format!("{}: {}", err.path(), err.inner())
            }
            _ => fast.to_string(),
        };
        VerbError::Decode { verb, message }
    })
}

/// A buffer sized for `nodes` entries up front, so large answers are not copied while the
/// buffer grows.
fn answer_buffer(nodes: usize) -> Vec<u8> {
    Vec::with_capacity(256 + nodes * 48)
}

/// Encodes an answer with serde (preempt; filter and prioritize use [`wire::encode`]).
fn encode<T: serde::Serialize + ?Sized>(verb: &'static str, value: &T) -> Result<Vec<u8>> {
    let mut out = answer_buffer(0);
    serde_json::to_writer(&mut out, value).map_err(|source| VerbError::Encode { verb, source })?;
    Ok(out)
}

fn request_pod(ctx: &Context, verb: &'static str, pod: Option<RequestPod>) -> Result<GpuPod> {
    let pod = pod.ok_or(VerbError::MissingPod { verb })?.into_pod();
    translate::gpu_pod(&pod, ctx.view.settings()).map_err(|err| VerbError::BadPod {
        verb,
        reason: err.to_string(),
    })
}

/// The candidate list, from `NodeNames` or from `Nodes`. Without an API server, full Nodes are
/// also learned into the view, so later name-only requests can be judged.
fn candidates<'a>(
    ctx: &Context,
    verb: &'static str,
    node_names: Option<Vec<Cow<'a, str>>>,
    nodes: Option<NodeList<'a>>,
) -> Result<Candidates<'a>> {
    if let Some(names) = node_names {
        return Ok(Candidates { names, raw: None });
    }
    let nodes = nodes.ok_or(VerbError::NoNodes { verb })?;
    let mut names = Vec::with_capacity(nodes.items.len());
    for (index, raw) in nodes.items.iter().enumerate() {
        let bad = |reason: String| VerbError::BadNode {
            verb,
            index,
            reason,
        };
        if ctx.learn_nodes {
            let node: Node = decode_raw(raw).map_err(bad)?;
            let name = node
                .metadata
                .name
                .clone()
                .ok_or_else(|| bad("no metadata.name".into()))?;
            ctx.view.apply_node(&node);
            names.push(Cow::Owned(name));
        } else {
            let named: NamedObject = decode_raw(raw).map_err(bad)?;
            names.push(named.metadata.name);
        }
    }
    Ok(Candidates {
        names,
        raw: Some(nodes.items),
    })
}

/// Just enough of a Kubernetes object to know its name.
#[derive(Deserialize)]
struct NamedObject<'a> {
    #[serde(borrow)]
    metadata: NameOnly<'a>,
}

#[derive(Deserialize)]
struct NameOnly<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

fn decode_raw<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> std::result::Result<T, String> {
    serde_json::from_str(raw.get()).map_err(|e| e.to_string())
}

/// The raw objects of the passed nodes, in input order (`passed` is a subsequence of `names`).
fn keep_passed<'a>(names: &[&str], raw: &[&'a RawValue], passed: &[&str]) -> Vec<&'a RawValue> {
    let mut kept = Vec::with_capacity(passed.len());
    let mut next = passed.iter().peekable();
    for (name, item) in names.iter().zip(raw) {
        if next.peek().is_some_and(|p| *p == name) {
            kept.push(*item);
            next.next();
        }
    }
    kept
}

/// Telemetry thresholds and the decision time for the core (which never reads a clock).
fn telemetry_rules(ctx: &Context, now_unix_seconds: f64) -> TelemetryRules<'_> {
    TelemetryRules {
        config: &ctx.config.telemetry,
        now_unix_seconds,
    }
}
