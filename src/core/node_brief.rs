//! What filter and prioritize read of each node, packed for the per-name hot path.
//!
//! kube-scheduler sends hundreds of node names per request, and each name costs rota a lookup.
//! A [`GpuNode`] spreads what a verb reads over several heap blocks (name, product, two count
//! maps), so at 5,000 nodes every candidate cost several cache misses: measured as the largest
//! part of rota's time inside a real kube-scheduler burst. A [`NodeBrief`] holds the same facts
//! in one fixed-size record, under a [`NodeKey`] that keeps short names inline, so a lookup
//! touches one table entry, aligned to a cache line (unaligned, most entries straddle two).
//! [`ClusterSnapshot`](super::ClusterSnapshot) keeps both in step on every node, pod and
//! telemetry event; anything a brief cannot hold (telemetry, a fifth GPU resource) sends the
//! verb to the full node, so answers never depend on which path ran.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHashSet};

use super::model::{GpuCounts, GpuNode};
use super::workloads::counts_capacity;

/// GPU resources a brief counts; a node with more takes the full path.
pub const SLOTS: usize = 4;

/// Longest name kept inline: the key is then 24 bytes, and a key with its brief one cache line.
const INLINE: usize = 22;

/// A node name: inline up to 22 bytes, else on the heap. Hashes and compares as the
/// bytes it holds, so maps keyed by it are searched with `name.as_bytes()` (no UTF-8 check per
/// comparison, as `&str` keys would need).
#[derive(Clone)]
pub struct NodeKey(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl NodeKey {
    /// The key for `name`.
    pub fn new(name: &str) -> Self {
        let mut bytes = [0u8; INLINE];
        match bytes.get_mut(..name.len()) {
            Some(head) => {
                head.copy_from_slice(name.as_bytes());
                Self(Repr::Inline {
                    len: name.len() as u8,
                    bytes,
                })
            }
            None => Self(Repr::Heap(name.into())),
        }
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// The name (built from a `str`, so always valid UTF-8).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl Borrow<[u8]> for NodeKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Hash for NodeKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for NodeKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for NodeKey {}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// One node as filter and prioritize see it without telemetry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeBrief {
    /// The node's hardware kind (GPU product and memory), an index into
    /// the hardware kinds of [`BriefIndex`]: placement rules judge each kind once.
    pub hardware: u32,
    /// The node has a telemetry summary: health and scoring read the full node.
    pub telemetry: bool,
    /// Every GPU resource of the node has a slot; when false, read the full node.
    pub complete: bool,
    /// Ready and schedulable ([`counts_capacity`]).
    pub counts_capacity: bool,
    /// `(allocatable, used)` per resource slot ([`BriefIndex::slot`]); a count past `u32`
    /// makes the brief incomplete.
    counts: [(u32, u32); SLOTS],
}

impl NodeBrief {
    /// `(allocatable, used)` of the resource in `slot`; `(0, 0)` for a resource no node has.
    pub fn counts(&self, slot: Option<usize>) -> (u64, u64) {
        let (allocatable, used) = slot
            .and_then(|s| self.counts.get(s))
            .copied()
            .unwrap_or((0, 0));
        (u64::from(allocatable), u64::from(used))
    }
}

/// A node's brief under its name: one cache line, and one table entry of [`BriefIndex`]
/// (a set of entries found by the name's bytes).
#[derive(Clone, Debug)]
#[repr(align(64))]
struct Entry {
    key: NodeKey,
    brief: NodeBrief,
}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key.as_bytes()
    }
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Entry {}

/// The briefs of every node, with the interned hardware kinds and resource slots they refer to.
#[derive(Clone, Debug, Default)]
pub struct BriefIndex {
    briefs: FxHashSet<Entry>,
    hardware: FxHashMap<Hardware, u32>,
    kinds: Vec<Hardware>,
    resources: Vec<String>,
    with_telemetry: usize,
}

impl BriefIndex {
    /// The brief of the node called `name`.
    pub fn get(&self, name: &str) -> Option<&NodeBrief> {
        self.briefs.get(name.as_bytes()).map(|e| &e.brief)
    }

    /// Number of nodes with a telemetry summary: with none, no node can fail the health gate.
    pub fn with_telemetry(&self) -> usize {
        self.with_telemetry
    }

    /// The slot of `resource`, if some node advertised or used it within [`SLOTS`].
    pub fn slot(&self, resource: &str) -> Option<usize> {
        self.resources.iter().position(|r| r == resource)
    }

    /// Number of hardware kinds seen (every [`NodeBrief::hardware`] is below it).
    pub fn hardware_kinds(&self) -> usize {
        self.kinds.len()
    }

    /// Records `node` as it now is (added, changed, or its usage or telemetry moved).
    /// A known node keeps its key: a pod event builds no new one (a name longer than the
    /// inline part would be allocated each time).
    pub fn update(&mut self, node: &GpuNode) {
        let old = self.briefs.take(node.name.as_bytes());
        let known = old.as_ref().map(|e| e.brief.hardware);
        let brief = self.brief_of(node, known);
        let (key, old) = match old {
            Some(e) => (e.key, Some(e.brief)),
            None => (NodeKey::new(&node.name), None),
        };
        self.briefs.insert(Entry { key, brief });
        self.count_telemetry(old.as_ref(), false);
        self.count_telemetry(Some(&brief), true);
    }

    /// Forgets the node called `name`.
    pub fn remove(&mut self, name: &str) {
        let old = self.briefs.take(name.as_bytes()).map(|e| e.brief);
        self.count_telemetry(old.as_ref(), false);
    }

    /// Forgets every node (kinds and slots stay interned: they only name things).
    pub fn clear(&mut self) {
        self.briefs.clear();
        self.with_telemetry = 0;
    }

    fn count_telemetry(&mut self, brief: Option<&NodeBrief>, add: bool) {
        if brief.is_some_and(|b| b.telemetry) {
            self.with_telemetry = if add {
                self.with_telemetry + 1
            } else {
                self.with_telemetry.saturating_sub(1)
            };
        }
    }

    fn brief_of(&mut self, node: &GpuNode, known: Option<u32>) -> NodeBrief {
        let mut brief = NodeBrief {
            hardware: self.hardware_of(node, known),
            telemetry: node.telemetry.is_some(),
            complete: true,
            counts_capacity: counts_capacity(node),
            counts: [(0, 0); SLOTS],
        };
        let resources = node.allocatable.keys().chain(node.used.keys());
        for resource in resources {
            let counts = (
                count(&node.allocatable, resource),
                count(&node.used, resource),
            );
            match (self.intern_resource(resource), counts) {
                (Some(slot), (Ok(allocatable), Ok(used))) => {
                    brief.counts[slot] = (allocatable, used)
                }
                _ => brief.complete = false,
            }
        }
        brief
    }

    /// The node's hardware kind; `known` is its kind before this update, reused when its labels
    /// did not change (the common case: a usage change), so a pod event allocates nothing.
    fn hardware_of(&mut self, node: &GpuNode, known: Option<u32>) -> u32 {
        let same = |(product, memory): &Hardware| {
            product.as_deref() == node.product.as_deref() && *memory == node.gpu_memory_bytes
        };
        if let Some(kind) = known.filter(|&k| self.kinds.get(k as usize).is_some_and(same)) {
            return kind;
        }
        let key: Hardware = (node.product.clone(), node.gpu_memory_bytes);
        if let Some(&kind) = self.hardware.get(&key) {
            return kind;
        }
        let kind = u32::try_from(self.kinds.len()).unwrap_or(u32::MAX);
        self.kinds.push(key.clone());
        self.hardware.insert(key, kind);
        kind
    }

    fn intern_resource(&mut self, resource: &str) -> Option<usize> {
        if let Some(slot) = self.slot(resource) {
            return Some(slot);
        }
        (self.resources.len() < SLOTS).then(|| {
            self.resources.push(resource.to_owned());
            self.resources.len() - 1
        })
    }
}

/// A hardware kind: GPU product and memory per GPU, what placement rules judge.
type Hardware = (Option<String>, Option<u64>);

fn count(counts: &GpuCounts, resource: &str) -> Result<u32, std::num::TryFromIntError> {
    u32::try_from(counts.get(resource).copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_and_compare_as_their_names() {
        use std::hash::BuildHasher;
        let long = "a-node-name-longer-than-the-inline-part-of-a-key.example.org";
        for name in ["", "n1", "gpu-node-4999", long] {
            let key = NodeKey::new(name);
            assert_eq!(key.as_str(), name);
            let s = rustc_hash::FxBuildHasher;
            assert_eq!(s.hash_one(&key), s.hash_one(name.as_bytes()));
        }
        let mut map = FxHashMap::default();
        map.insert(NodeKey::new(long), 1);
        map.insert(NodeKey::new("n1"), 2);
        assert_eq!(map.get(long.as_bytes()), Some(&1));
        assert_eq!(map.get("n1".as_bytes()), Some(&2));
        assert_eq!(map.get("n2".as_bytes()), None);
        assert_eq!(std::mem::size_of::<NodeKey>(), 24);
        assert_eq!(std::mem::size_of::<Entry>(), 64, "one cache line per node");
    }
}
