//! The kube-scheduler extender wire protocol (`k8s.io/kube-scheduler/extender/v1`).
//!
//! The Go types carry no JSON tags, so keys are the Go field names, acronyms included (`UID`,
//! `NumPDBViolations`, `PodUID`). Every optional field accepts `null` or absence, unknown keys
//! are ignored, and lower-case aliases mirror Go's case-insensitive decoding. Node lists keep the
//! raw JSON of each node, so a `nodeCacheCapable: false` filter answer echoes the scheduler's own
//! objects byte for byte. See `../shared/docs/extender-protocol.md` §1.

pub mod encode;
pub mod pod;

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use pod::RequestPod;

/// Lowest score an extender may give (`MinExtenderPriority`).
pub const MIN_EXTENDER_PRIORITY: i64 = 0;
/// Highest score an extender may give (`MaxExtenderPriority`).
pub const MAX_EXTENDER_PRIORITY: i64 = 10;

/// Body of a filter or prioritize request (`ExtenderArgs`).
#[derive(Debug, Default, Deserialize)]
pub struct ExtenderArgs<'a> {
    /// The pod being scheduled, decoded down to what rota reads ([`RequestPod`]).
    #[serde(rename = "Pod", alias = "pod", default)]
    pub pod: Option<RequestPod>,
    /// Full Node objects; set only when `nodeCacheCapable: false`.
    #[serde(rename = "Nodes", alias = "nodes", default, borrow)]
    pub nodes: Option<NodeList<'a>>,
    /// Node names; set only when `nodeCacheCapable: true`.
    /// Names without escapes borrow from the request body (no allocation per node); names
    /// with escapes are owned.
    #[serde(
        rename = "NodeNames",
        alias = "nodeNames",
        alias = "nodenames",
        default,
        borrow,
        deserialize_with = "borrowed_names"
    )]
    pub node_names: Option<Vec<Cow<'a, str>>>,
}

/// A `v1.NodeList`, with each item kept as raw JSON (decoded separately when needed).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NodeList<'a> {
    /// The Node objects.
    #[serde(default, borrow)]
    pub items: Vec<&'a RawValue>,
}

/// Answer to a filter request (`ExtenderFilterResult`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ExtenderFilterResult<'a> {
    /// Nodes that passed, as full objects; only when the request carried `Nodes`.
    #[serde(rename = "Nodes", borrow)]
    pub nodes: Option<NodeList<'a>>,
    /// Names of the nodes that passed. Always present: an empty list, never null, when nothing
    /// passes (§2.4: null in both means zero nodes, but say so plainly).
    #[serde(rename = "NodeNames", default)]
    pub node_names: Option<Vec<Cow<'a, str>>>,
    /// Nodes rejected where preemption might help.
    #[serde(rename = "FailedNodes", default)]
    pub failed_nodes: NodeMessages<'a>,
    /// Nodes rejected where preemption cannot help (takes precedence over `FailedNodes`).
    #[serde(rename = "FailedAndUnresolvableNodes", default)]
    pub failed_and_unresolvable_nodes: NodeMessages<'a>,
    /// A genuine failure of the call; empty otherwise (a non-empty error fails the whole cycle).
    #[serde(rename = "Error", default)]
    pub error: String,
}

/// A Go `map[string]string` of node name to message (`FailedNodesMap`), kept as a list in the
/// order nodes were judged: cheaper than a sorted map for thousands of nodes, and JSON object
/// order carries no meaning. Decodes `null` as empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMessages<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl NodeMessages<'_> {
    /// The message for `node`, if it was rejected.
    pub fn get(&self, node: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, m)| m.as_ref())
    }

    /// Number of rejected nodes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No node was rejected.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for NodeMessages<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(n, m)| (n, m)))
    }
}

impl<'de> Deserialize<'de> for NodeMessages<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let map: Option<BTreeMap<String, String>> = Option::deserialize(de)?;
        Ok(NodeMessages(
            map.unwrap_or_default()
                .into_iter()
                .map(|(n, m)| (Cow::Owned(n), Cow::Owned(m)))
                .collect(),
        ))
    }
}

/// One node's score (`HostPriority`). A prioritize answer is a bare JSON array of these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPriority<'a> {
    /// Node name.
    #[serde(rename = "Host", alias = "host", borrow)]
    pub host: Cow<'a, str>,
    /// Score in `MIN_EXTENDER_PRIORITY..=MAX_EXTENDER_PRIORITY`.
    #[serde(rename = "Score", alias = "score")]
    pub score: i64,
}

/// The prioritize answer (`HostPriorityList`): a top-level JSON array.
pub type HostPriorityList<'a> = Vec<HostPriority<'a>>;

/// Body of a preempt request (`ExtenderPreemptionArgs`).
#[derive(Debug, Default, Deserialize)]
pub struct ExtenderPreemptionArgs {
    /// The pod that wants to preempt ([`RequestPod`]).
    #[serde(rename = "Pod", alias = "pod", default)]
    pub pod: Option<RequestPod>,
    /// Candidate victims as full pods; set only when `nodeCacheCapable: false`.
    #[serde(rename = "NodeNameToVictims", alias = "nodeNameToVictims", default)]
    pub node_name_to_victims: Option<BTreeMap<String, Victims>>,
    /// Candidate victims as UIDs; set only when `nodeCacheCapable: true`.
    #[serde(
        rename = "NodeNameToMetaVictims",
        alias = "nodeNameToMetaVictims",
        default
    )]
    pub node_name_to_meta_victims: Option<BTreeMap<String, MetaVictims>>,
}

/// Victims on one node, as full pods (`Victims`).
#[derive(Debug, Default, Deserialize)]
pub struct Victims {
    /// The pods that would be preempted.
    #[serde(
        rename = "Pods",
        alias = "pods",
        default,
        deserialize_with = "null_as_default"
    )]
    pub pods: Vec<Pod>,
    /// PodDisruptionBudget violations the preemption would cause.
    #[serde(rename = "NumPDBViolations", alias = "numPDBViolations", default)]
    pub num_pdb_violations: i64,
}

/// A pod known by UID only (`MetaPod`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaPod {
    /// The pod's UID. The key is `UID`, all capitals.
    #[serde(rename = "UID", alias = "uid")]
    pub uid: String,
}

/// Victims on one node, as UIDs (`MetaVictims`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaVictims {
    /// The pods that would be preempted.
    #[serde(
        rename = "Pods",
        alias = "pods",
        default,
        deserialize_with = "null_as_default"
    )]
    pub pods: Vec<MetaPod>,
    /// PodDisruptionBudget violations the preemption would cause.
    #[serde(rename = "NumPDBViolations", alias = "numPDBViolations", default)]
    pub num_pdb_violations: i64,
}

/// Answer to a preempt request (`ExtenderPreemptionResult`): always the Meta form.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ExtenderPreemptionResult {
    /// Nodes where preemption may go ahead, each with a non-empty victim list.
    #[serde(rename = "NodeNameToMetaVictims", default)]
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictims>,
}

/// Body of a bind request (`ExtenderBindingArgs`). rota is not a binder; the type exists so
/// that a misconfigured `bindVerb` gets a clear answer.
#[derive(Debug, Default, Deserialize)]
pub struct ExtenderBindingArgs {
    /// Pod name.
    #[serde(rename = "PodName", alias = "podName", default)]
    pub pod_name: String,
    /// Pod namespace.
    #[serde(rename = "PodNamespace", alias = "podNamespace", default)]
    pub pod_namespace: String,
    /// Pod UID.
    #[serde(rename = "PodUID", alias = "podUID", alias = "podUid", default)]
    pub pod_uid: String,
    /// Target node.
    #[serde(rename = "Node", alias = "node", default)]
    pub node: String,
}

/// Answer to a bind request (`ExtenderBindingResult`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ExtenderBindingResult {
    /// Empty on success.
    #[serde(rename = "Error", default)]
    pub error: String,
}

/// Decodes `NodeNames` (`null` as `None`), borrowing every name that has no escapes. serde's
/// own `Cow<str>` always allocates inside a `Vec`, one `String` per node.
fn borrowed_names<'de: 'a, 'a, D>(de: D) -> Result<Option<Vec<Cow<'a, str>>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let names: Option<Vec<Name<'a>>> = Option::deserialize(de)?;
    Ok(names.map(|names| names.into_iter().map(|n| n.0).collect()))
}

/// One node name: borrowed from the body when the JSON string has no escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_str(NameVisitor).map(Name)
    }
}

struct NameVisitor;

impl<'de> serde::de::Visitor<'de> for NameVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Accepts `null` where a list is expected (Go sends nil slices as `null`).
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}
