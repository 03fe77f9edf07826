//! The Node and Pod kinds of the cluster view, fed by the restartable [`Feeder`].
//!
//! ```text
//!   Feeder(Node) ─┐  Apply → apply_*        Init … InitApply … InitDone → replace_* (one lock)
//!   Feeder(Pod)  ─┴─▶ ViewIndex ──▶ ClusterView   first InitDone of both → set_synced(true)
//! ```
//!
//! Each watch is a `kube::runtime::watcher` with `any_semantic()` lists and the default
//! backoff: watch errors are retried, never fatal, and a stream that ends is started again by
//! the feeder. Objects are translated as they arrive and never kept (a re-list buffers
//! translated items, and only pods that request a managed GPU), so there is no `managedFields`
//! to strip and memory stays small. Pods are watched with a field selector that drops terminal
//! phases: a pod that finishes then arrives as a `Delete`, which releases its GPUs like any
//! other delete.
//! Must not: write to the API server, or make decisions (`core` does).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::Stream;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::feeder::{drain, FeedMetrics, Feeder, Index};
use crate::core::{GpuNode, GpuPod};
use crate::read::view::{translate, ClusterView, ViewSettings};
use crate::readiness::Readiness;

/// Server-side filter for the Pod watch: terminal pods hold no GPUs, and there can be many.
pub const POD_FIELD_SELECTOR: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// Why the watchers stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watch stream ended; kube's watcher never ends on its own, so this is a bug or shutdown.
    #[error("the {kind} watch stream ended")]
    StreamEnded {
        /// `nodes` or `pods`.
        kind: &'static str,
    },
}

/// `Result` with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, bounded label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::StreamEnded { .. } => "stream_ended",
        }
    }

    /// Restarting the watchers (with a fresh list) is the right answer.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// Runs the Node and Pod watchers until one of their streams ends (tests; the serving process
/// uses [`feed_forever`], which restarts them).
pub async fn run_watchers(client: Client, view: Arc<ClusterView>) -> Result<()> {
    let gate = SyncGate::new(&[Node::KIND_NAME, Pod::KIND_NAME]);
    let nodes = node_watch(&client);
    let pods = pod_watch(&client);
    tokio::try_join!(feed(nodes, &view, &gate), feed(pods, &view, &gate))?;
    Ok(())
}

/// A fresh watch of every Node.
fn node_watch(client: &Client) -> impl Stream<Item = Result<Event<Node>, watcher::Error>> + Send {
    watcher::watcher(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
}

/// A fresh watch of every non-terminal Pod.
fn pod_watch(client: &Client) -> impl Stream<Item = Result<Event<Pod>, watcher::Error>> + Send {
    watcher::watcher(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default()
            .any_semantic()
            .fields(POD_FIELD_SELECTOR),
    )
    .default_backoff()
}

/// Feeds the view from Node and Pod watches until `shutdown`, each kind through its own
/// restartable [`Feeder`]; the view is synced once both have listed.
pub async fn feed_forever(
    client: Client,
    view: Arc<ClusterView>,
    metrics: Arc<FeedMetrics>,
    readiness: Option<Arc<Readiness>>,
    shutdown: impl Future<Output = ()> + Clone,
) {
    let gate = SyncGate::new(&[Node::KIND_NAME, Pod::KIND_NAME]);
    let nodes = Feeder::new(metrics.clone(), readiness.clone()).run(
        || node_watch(&client),
        ViewIndex::<Node>::new(&view, &gate),
        shutdown.clone(),
    );
    let pods = Feeder::new(metrics, readiness).run(
        || pod_watch(&client),
        ViewIndex::<Pod>::new(&view, &gate),
        shutdown,
    );
    tokio::join!(nodes, pods);
}

/// Feeds one watcher's events into the view until the stream ends (then `StreamEnded`).
/// Generic over the stream so that tests can play synthetic events.
pub async fn feed<K, S>(events: S, view: &ClusterView, gate: &SyncGate) -> Result<()>
where
    K: Indexed,
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let index = ViewIndex::<K>::new(view, gate);
    let mut observe = |err: Option<&watcher::Error>| {
        if let Some(err) = err {
            tracing::warn!(kind = K::KIND_NAME, error = %err, "Watch failed; retrying after backoff.");
        }
    };
    drain(events, &index, &mut observe).await;
    Err(Error::StreamEnded { kind: K::KIND_NAME })
}

/// Marks the view synced once every named watcher has completed its first list.
#[derive(Debug)]
pub struct SyncGate {
    pending: parking_lot::Mutex<BTreeSet<&'static str>>,
}

impl SyncGate {
    /// A gate waiting for the watchers named `kinds` (their [`Indexed::KIND_NAME`]).
    pub fn new(kinds: &[&'static str]) -> Self {
        Self {
            pending: parking_lot::Mutex::new(kinds.iter().copied().collect()),
        }
    }

    /// Records that `kind` has listed; the last one marks `view` synced.
    pub fn listed(&self, kind: &'static str, view: &ClusterView) {
        let mut pending = self.pending.lock();
        let was_pending = pending.remove(kind);
        if was_pending && pending.is_empty() {
            tracing::info!("Cluster view synced.");
            view.set_synced(true);
        }
    }
}

/// One kind's share of the cluster view, as a feeder [`Index`]: events apply at once; a
/// (re-)list is swapped in whole and reported to the sync gate.
pub struct ViewIndex<'a, K> {
    view: &'a ClusterView,
    gate: &'a SyncGate,
    kind: std::marker::PhantomData<fn(K)>,
}

impl<'a, K> ViewIndex<'a, K> {
    /// The index of kind `K` in `view`, reporting lists to `gate`.
    pub fn new(view: &'a ClusterView, gate: &'a SyncGate) -> Self {
        Self {
            view,
            gate,
            kind: std::marker::PhantomData,
        }
    }
}

impl<K: Indexed> Index<K> for ViewIndex<'_, K> {
    type Item = K::Item;

    fn kind(&self) -> &'static str {
        K::KIND_NAME
    }

    fn item(&self, obj: &K) -> Option<K::Item> {
        obj.translate(self.view.settings())
    }

    fn apply(&self, obj: &K) {
        K::apply(self.view, obj);
    }

    fn delete(&self, obj: &K) {
        K::delete(self.view, obj);
    }

    fn replace(&self, items: Vec<K::Item>) {
        tracing::info!(
            kind = K::KIND_NAME,
            count = items.len(),
            "Watcher listed every object."
        );
        K::replace(self.view, items);
        self.gate.listed(K::KIND_NAME, self.view);
    }
}

/// A Kubernetes kind the cluster view indexes.
pub trait Indexed: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    /// Plural name for logs and the sync gate (`nodes`, `pods`).
    const KIND_NAME: &'static str;
    /// The translated form buffered during a list.
    type Item: Debug + Send + Sync;
    /// Translates the object, or `None` when the view does not keep it.
    fn translate(&self, settings: &ViewSettings) -> Option<Self::Item>;
    /// Applies an added or modified object.
    fn apply(view: &ClusterView, obj: &Self);
    /// Removes a deleted object.
    fn delete(view: &ClusterView, obj: &Self);
    /// Replaces everything of this kind after a list.
    fn replace(view: &ClusterView, items: Vec<Self::Item>);
}

impl Indexed for Node {
    const KIND_NAME: &'static str = "nodes";
    type Item = GpuNode;

    fn translate(&self, settings: &ViewSettings) -> Option<GpuNode> {
        // Every node is kept: the filter must tell "no GPUs here" from "never heard of it".
        Some(translate::gpu_node(self, settings)).filter(|n| !n.name.is_empty())
    }

    fn apply(view: &ClusterView, obj: &Self) {
        view.apply_node(obj);
    }

    fn delete(view: &ClusterView, obj: &Self) {
        if let Some(name) = obj.metadata.name.as_deref() {
            view.delete_node(name);
        }
    }

    fn replace(view: &ClusterView, items: Vec<GpuNode>) {
        view.replace_nodes(items);
    }
}

impl Indexed for Pod {
    const KIND_NAME: &'static str = "pods";
    type Item = GpuPod;

    fn translate(&self, settings: &ViewSettings) -> Option<GpuPod> {
        match translate::gpu_pod(self, settings) {
            Ok(pod) => pod.wants_gpus().then_some(pod),
            Err(err) => {
                tracing::warn!(error = %err, "Skipping a pod that cannot be translated.");
                None
            }
        }
    }

    fn apply(view: &ClusterView, obj: &Self) {
        view.apply_pod(obj);
    }

    fn delete(view: &ClusterView, obj: &Self) {
        view.delete_pod(obj);
    }

    fn replace(view: &ClusterView, items: Vec<GpuPod>) {
        view.replace_pods(items);
    }
}
