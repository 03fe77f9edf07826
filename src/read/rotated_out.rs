//! The index of workloads rota rotated out: Jobs and KubeVirt VirtualMachines that carry the
//! `rota.io/rotated-out-at` annotation and are still suspended or halted, fed by kube-rs
//! watchers, read by the rotation planner each tick to decide what to resume.
//!
//! ```text
//!   watcher(Job) ──────────┐  Apply/Delete → upsert/remove     Init … InitDone → replace kind
//!   watcher(VirtualMachine)┴─▶ job_entry / vm_entry ──▶ RotatedOutIndex ──▶ list() (planner)
//! ```
//!
//! The same watches keep each Job's and VM's rotation marks (`core::rotation_input::
//! WorkloadMarks`: an announced stop, the notice asked for, an opt-out), which live on the
//! object rather than its pods, so that any leader reads the stops another announced.
//!
//! Invariants: an object is indexed only while it has rota's annotation *and* is still out
//! (Job `spec.suspend: true`, VM `runStrategy: Halted`, or `Manual` with no instance up): one
//! resumed by hand is no longer offered for resume; a re-list replaces one kind's entries at once; watch errors are retried
//! with backoff and never end the watcher. When the VirtualMachine CRD is absent the VM watcher
//! logs once at info and keeps backing off quietly.
//! Must not: write to the API server, or decide what to resume (`core::rotation` does).

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::Stream;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::core::model::GpuCounts;
use crate::core::rotation::{RotatedOutWorkload, Spread, WaitingWorkload};
use crate::core::rotation_input::{MarksById, WorkloadMarks};
use crate::core::{WorkloadId, WorkloadKind};
use crate::read::view::translate::workload_marks;
use crate::read::view::{translate, ViewSettings};

use super::feeder::{drain, FeedMetrics, Feeder, Index};
use crate::names::ROTATED_OUT_AT;
use crate::readiness::Readiness;

/// The VirtualMachine `runStrategy` of a stopped VM.
pub const HALTED: &str = "Halted";

/// The run strategy under which a VM is started and stopped only through its `start` and
/// `stop` subresources.
pub const MANUAL: &str = "Manual";

/// Whether a VM's instance is up or coming up, from its `status.printableStatus`: starting,
/// running, migrating or paused (a paused VM keeps its GPUs). Stopping, stopped or unknown
/// is not up.
pub fn vm_instance_up(status: Option<&Value>) -> bool {
    let printable = status
        .and_then(|s| s.get("printableStatus"))
        .and_then(Value::as_str);
    matches!(
        printable,
        Some("Starting" | "Running" | "Migrating" | "Paused" | "Provisioning")
    )
}

/// Workloads rota holds rotated out, by id, and the rotation marks of every Job and VM that
/// has any (announced stops, asked notice, opt-outs); shared by the watchers and the planner.
#[derive(Debug, Default)]
pub struct RotatedOutIndex {
    entries: parking_lot::RwLock<BTreeMap<WorkloadId, RotatedOutWorkload>>,
    marks: parking_lot::RwLock<MarksById>,
    /// Kinds whose first full list is in (or whose API is not installed).
    listed: parking_lot::RwLock<std::collections::BTreeSet<WorkloadKind>>,
}

impl RotatedOutIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `id`'s entry: `Some` indexes it, `None` (not rotated out, or resumed) removes it.
    pub fn set(&self, id: WorkloadId, entry: Option<RotatedOutWorkload>) {
        let mut entries = self.entries.write();
        match entry {
            Some(e) => {
                entries.insert(id, e);
            }
            None => {
                entries.remove(&id);
            }
        }
    }

    /// Sets `id`'s marks (empty marks remove the entry).
    pub fn set_marks(&self, id: WorkloadId, marks: WorkloadMarks) {
        let mut all = self.marks.write();
        if marks.is_empty() {
            all.remove(&id);
        } else {
            all.insert(id, marks);
        }
    }

    /// Replaces every entry of `kind` with `items` (after a full list).
    pub fn replace_kind(&self, kind: WorkloadKind, items: Vec<RotatedOutWorkload>) {
        let mut entries = self.entries.write();
        entries.retain(|id, _| id.kind != kind);
        entries.extend(items.into_iter().map(|e| (e.workload.id.clone(), e)));
    }

    /// Replaces the marks of every `kind` object with `items` (after a full list).
    pub fn replace_marks(&self, kind: WorkloadKind, items: Vec<(WorkloadId, WorkloadMarks)>) {
        let mut all = self.marks.write();
        all.retain(|id, _| id.kind != kind);
        all.extend(items.into_iter().filter(|(_, m)| !m.is_empty()));
    }

    /// The marks of every Job and VM that has any.
    pub fn marks(&self) -> MarksById {
        self.marks.read().clone()
    }

    /// The marks of one workload's object, if any.
    pub fn marks_of(&self, id: &WorkloadId) -> Option<WorkloadMarks> {
        self.marks.read().get(id).cloned()
    }

    /// Marks `kind`'s first full list as in (or its API as absent).
    pub fn mark_listed(&self, kind: WorkloadKind) {
        self.listed.write().insert(kind);
    }

    /// Whether Jobs and VMs have both been listed once: before that, a workload rotated out by
    /// an earlier process is unknown, and planning could count it as neither running nor
    /// waiting.
    pub fn is_synced(&self) -> bool {
        let listed = self.listed.read();
        [WorkloadKind::Job, WorkloadKind::VirtualMachine]
            .iter()
            .all(|k| listed.contains(k))
    }

    /// Every entry, by id.
    pub fn list(&self) -> Vec<RotatedOutWorkload> {
        self.entries.read().values().cloned().collect()
    }

    /// GPUs of the indexed workloads per tenant and resource: demand that has no pods while
    /// rotated out, fed to the fair-share refresh so the tenant can be resumed.
    pub fn demand_by_tenant(&self) -> BTreeMap<String, GpuCounts> {
        let mut out: BTreeMap<String, GpuCounts> = BTreeMap::new();
        for entry in self.entries.read().values() {
            let w = &entry.workload;
            let slot = out
                .entry(w.tenant.clone())
                .or_default()
                .entry(w.resource.clone())
                .or_insert(0);
            *slot = slot.saturating_add(w.gpus);
        }
        out
    }

    /// Entries indexed.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Nothing indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.read().is_empty()
    }
}

/// The `kubevirt.io/v1` `VirtualMachine` resource (plural `virtualmachines`).
pub fn vm_api_resource() -> ApiResource {
    ApiResource {
        group: "kubevirt.io".into(),
        version: "v1".into(),
        api_version: "kubevirt.io/v1".into(),
        kind: "VirtualMachine".into(),
        plural: "virtualmachines".into(),
    }
}

/// The index entry of a Job: `Some` when it carries rota's annotation, is suspended and asks
/// for managed GPUs (pod template requests × parallelism, default 1).
pub fn job_entry(job: &Job, settings: &ViewSettings) -> Option<RotatedOutWorkload> {
    let at = rotated_out_at(job.annotations())?;
    let spec = job.spec.as_ref()?;
    if spec.suspend != Some(true) {
        return None;
    }
    let parallelism = u64::try_from(spec.parallelism.unwrap_or(1).max(1)).unwrap_or(1);
    let (tenant, per_pod) = template_request(&spec.template, &namespace(job), settings);
    let (resource, gpus) = primary(&per_pod)?;
    Some(entry(
        id(WorkloadKind::Job, job),
        tenant,
        resource,
        gpus.saturating_mul(parallelism),
        if parallelism > 1 {
            Spread::AnyNodes
        } else {
            Spread::OneNode
        },
        spec.template.spec.as_ref().and_then(|s| s.priority),
        at,
    ))
}

/// The index entry of a VirtualMachine: `Some` when it carries rota's annotation, is halted
/// and passes through managed GPUs (`spec.template.spec.domain.devices.gpus` and
/// `hostDevices`, counted per `deviceName`).
pub fn vm_entry(vm: &DynamicObject, settings: &ViewSettings) -> Option<RotatedOutWorkload> {
    let at = rotated_out_at(vm.annotations())?;
    let spec = vm.data.get("spec")?;
    let out = match spec.get("runStrategy").and_then(Value::as_str) {
        Some(HALTED) => true,
        // Stopped through the `stop` subresource: the strategy stays, the instance goes.
        Some(MANUAL) => !vm_instance_up(vm.data.get("status")),
        _ => false,
    };
    if !out {
        return None;
    }
    let template = spec.get("template");
    let tenant = template
        .and_then(|t| t.pointer("/metadata/labels"))
        .and_then(|l| l.get(&settings.tenant_label))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map_or_else(|| namespace(vm), str::to_owned);
    let devices = template.and_then(|t| t.pointer("/spec/domain/devices"));
    let mut counts = GpuCounts::new();
    for list in ["gpus", "hostDevices"] {
        let items = devices.and_then(|d| d.get(list)).and_then(Value::as_array);
        for device in items.into_iter().flatten() {
            let name = device.get("deviceName").and_then(Value::as_str);
            if let Some(name) = name.filter(|n| settings.gpu_resources.iter().any(|r| r == n)) {
                *counts.entry(name.to_owned()).or_insert(0) += 1;
            }
        }
    }
    let (resource, gpus) = primary(&counts)?;
    let priority = template
        .and_then(|t| t.pointer("/spec/priority"))
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok());
    let id = id(WorkloadKind::VirtualMachine, vm);
    Some(entry(
        id,
        tenant,
        resource,
        gpus,
        Spread::OneNode,
        priority,
        at,
    ))
}

fn entry(
    id: WorkloadId,
    tenant: String,
    resource: String,
    gpus: u64,
    spread: Spread,
    priority: Option<i32>,
    rotated_out_at: f64,
) -> RotatedOutWorkload {
    RotatedOutWorkload {
        workload: WaitingWorkload {
            id,
            tenant,
            resource,
            gpus,
            spread,
            priority: priority.unwrap_or(0),
        },
        rotated_out_at,
    }
}

/// Unix seconds of rota's annotation; an unreadable time counts as long ago (0), so the
/// workload is still offered for resume, first among its tenant's.
fn rotated_out_at(annotations: &BTreeMap<String, String>) -> Option<f64> {
    let raw = annotations.get(ROTATED_OUT_AT)?;
    let at = raw
        .parse::<k8s_openapi::jiff::Timestamp>()
        .map_or(0.0, crate::clock::seconds);
    Some(at)
}

fn namespace<K: ResourceExt>(obj: &K) -> String {
    obj.namespace()
        .unwrap_or_else(|| translate::DEFAULT_NAMESPACE.to_owned())
}

fn id<K: ResourceExt>(kind: WorkloadKind, obj: &K) -> WorkloadId {
    WorkloadId {
        kind,
        namespace: namespace(obj),
        name: obj.name_any(),
    }
}

/// The tenant (template label, else the namespace) and GPU requests of one pod of a template.
fn template_request(
    template: &PodTemplateSpec,
    namespace: &str,
    settings: &ViewSettings,
) -> (String, GpuCounts) {
    let pod = Pod {
        metadata: template.metadata.clone().unwrap_or_default(),
        spec: template.spec.clone(),
        status: None,
    };
    let tenant = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(&settings.tenant_label))
        .filter(|t| !t.is_empty())
        .cloned()
        .unwrap_or_else(|| namespace.to_owned());
    (tenant, translate::pod_requests(&pod, settings))
}

/// The resource requested most (ties: the smaller name), as the queue picks it.
fn primary(counts: &GpuCounts) -> Option<(String, u64)> {
    counts
        .iter()
        .filter(|&(_, &n)| n > 0)
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(r, &n)| (r.clone(), n))
}

// === watchers ===

/// A fresh watch of every Job.
pub fn job_watch(client: &Client) -> impl Stream<Item = Result<Event<Job>, watcher::Error>> + Send {
    watcher::watcher(
        Api::<Job>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
}

/// A fresh watch of every KubeVirt VirtualMachine.
pub fn vm_watch(
    client: &Client,
) -> impl Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Send {
    watcher::watcher(
        Api::<DynamicObject>::all_with(client.clone(), &vm_api_resource()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
}

/// Watches Jobs into `index` until the stream ends (tests; the serving process runs
/// [`feed_forever`], which restarts it).
pub async fn watch_jobs(client: Client, index: Arc<RotatedOutIndex>, settings: ViewSettings) {
    let entry = move |job: &Job| job_entry(job, &settings);
    feed(job_watch(&client), &index, WorkloadKind::Job, entry).await;
}

/// Watches KubeVirt VirtualMachines into `index` until the stream ends; without the CRD, logs
/// once that VM rotation is disabled and keeps retrying quietly (installing KubeVirt later just
/// works).
pub async fn watch_vms(client: Client, index: Arc<RotatedOutIndex>, settings: ViewSettings) {
    let entry = move |vm: &DynamicObject| vm_entry(vm, &settings);
    feed(
        vm_watch(&client),
        &index,
        WorkloadKind::VirtualMachine,
        entry,
    )
    .await;
}

/// Feeds `index` from Job and VM watches until `shutdown`, each through its own restartable
/// [`Feeder`] (so a watch that ends is started again with a fresh list).
pub async fn feed_forever(
    client: Client,
    index: Arc<RotatedOutIndex>,
    settings: ViewSettings,
    metrics: Arc<FeedMetrics>,
    readiness: Option<Arc<Readiness>>,
    shutdown: impl Future<Output = ()> + Clone,
) {
    let job_settings = settings.clone();
    let jobs = RotatedOutFeed::new(&index, WorkloadKind::Job, move |job: &Job| {
        job_entry(job, &job_settings)
    });
    let vms = RotatedOutFeed::new(
        &index,
        WorkloadKind::VirtualMachine,
        move |vm: &DynamicObject| vm_entry(vm, &settings),
    );
    tokio::join!(
        Feeder::new(metrics.clone(), readiness.clone()).run(
            || job_watch(&client),
            jobs,
            shutdown.clone()
        ),
        Feeder::new(metrics, readiness).run(|| vm_watch(&client), vms, shutdown),
    );
}

/// Feeds one watcher's events into `index` until the stream ends. Generic over the stream so
/// tests can play synthetic events.
pub async fn feed<K, S, F>(events: S, index: &RotatedOutIndex, kind: WorkloadKind, entry: F)
where
    K: ResourceExt,
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
    F: Fn(&K) -> Option<RotatedOutWorkload> + Send + Sync,
{
    let feed = RotatedOutFeed::new(index, kind, entry);
    let mut observe = |err: Option<&watcher::Error>| {
        if let Some(err) = err {
            tracing::warn!(kind = kind.as_str(), error = %err, "Rotated-out watch failed; retrying after backoff.");
        }
    };
    drain(events, &feed, &mut observe).await;
    tracing::warn!(kind = kind.as_str(), "Rotated-out watch stream ended.");
}

/// One workload kind's share of the [`RotatedOutIndex`], as a feeder [`Index`].
pub struct RotatedOutFeed<'a, K, F> {
    index: &'a RotatedOutIndex,
    kind: WorkloadKind,
    entry: F,
    missing_logged: AtomicBool,
    objects: PhantomData<fn(&K)>,
}

impl<'a, K, F> RotatedOutFeed<'a, K, F>
where
    F: Fn(&K) -> Option<RotatedOutWorkload>,
{
    /// Feeds `kind` entries made by `entry` into `index`.
    pub fn new(index: &'a RotatedOutIndex, kind: WorkloadKind, entry: F) -> Self {
        Self {
            index,
            kind,
            entry,
            missing_logged: AtomicBool::new(false),
            objects: PhantomData,
        }
    }
}

/// What one object adds to the index: its entry (when rotated out) and its marks.
pub struct Indexed {
    id: WorkloadId,
    out: Option<RotatedOutWorkload>,
    marks: WorkloadMarks,
}

impl<K, F> RotatedOutFeed<'_, K, F>
where
    K: ResourceExt,
    F: Fn(&K) -> Option<RotatedOutWorkload>,
{
    /// What `obj` adds to the index: its entry when rotated out, and its marks.
    fn indexed(&self, obj: &K) -> Indexed {
        Indexed {
            id: id(self.kind, obj),
            out: (self.entry)(obj),
            marks: workload_marks(Some(obj.annotations())),
        }
    }

    /// Sets (or, when empty, clears) one object's entry and marks.
    fn store(&self, item: Indexed) {
        self.index.set(item.id.clone(), item.out);
        self.index.set_marks(item.id, item.marks);
    }
}

impl<K, F> Index<K> for RotatedOutFeed<'_, K, F>
where
    K: ResourceExt,
    F: Fn(&K) -> Option<RotatedOutWorkload> + Send + Sync,
{
    type Item = Indexed;

    fn kind(&self) -> &'static str {
        match self.kind {
            WorkloadKind::Job => "jobs",
            WorkloadKind::VirtualMachine => "virtualmachines",
            _ => "workloads",
        }
    }

    fn item(&self, obj: &K) -> Option<Indexed> {
        Some(self.indexed(obj)).filter(|i| i.out.is_some() || !i.marks.is_empty())
    }

    fn apply(&self, obj: &K) {
        self.store(self.indexed(obj));
    }

    fn delete(&self, obj: &K) {
        self.store(Indexed {
            id: id(self.kind, obj),
            out: None,
            marks: WorkloadMarks::default(),
        });
    }

    fn replace(&self, items: Vec<Indexed>) {
        let mut out = Vec::new();
        let mut marks = Vec::with_capacity(items.len());
        for item in items {
            out.extend(item.out);
            marks.push((item.id, item.marks));
        }
        self.index.replace_marks(self.kind, marks);
        self.index.replace_kind(self.kind, out);
        self.index.mark_listed(self.kind);
        self.missing_logged.store(false, Ordering::Relaxed);
    }

    fn absent(&self, err: &watcher::Error) -> bool {
        if self.kind != WorkloadKind::VirtualMachine || !is_not_found(err) {
            return false;
        }
        // No KubeVirt: no VM can be rotated out, so there is nothing to wait for.
        self.index.mark_listed(self.kind);
        if !self.missing_logged.swap(true, Ordering::Relaxed) {
            tracing::info!("KubeVirt not installed; VM rotation disabled.");
        }
        true
    }
}

/// The API answered 404: the resource (a CRD) is not installed.
fn is_not_found(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => matches!(e, kube::Error::Api(s) if s.code == 404),
        watcher::Error::WatchError(s) => s.code == 404,
        watcher::Error::NoResourceVersion => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::testing::settings;

    fn job(suspend: bool, annotated: bool) -> Job {
        let annotations = if annotated {
            json!({ROTATED_OUT_AT: "2026-01-31T12:00:00Z", "rota.io/rotation-reason": "x"})
        } else {
            json!({})
        };
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "train", "namespace": "ml", "annotations": annotations},
            "spec": {
                "suspend": suspend, "parallelism": 3, "completions": 6,
                "template": {
                    "metadata": {"labels": {"rota.io/tenant": "physics"}},
                    "spec": {"restartPolicy": "Never", "containers": [
                        {"name": "a", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "2"}}},
                        {"name": "b", "image": "x", "resources": {"requests": {"cpu": "1"}}}
                    ]}
                }
            }
        }))
        .unwrap()
    }

    fn vm(strategy: &str, labels: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "notebook", "namespace": "course",
                         "annotations": {ROTATED_OUT_AT: "2026-01-31T12:00:00Z",
                                         "rota.io/previous-run-strategy": "Always"}},
            "spec": {
                "runStrategy": strategy,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"domain": {"devices": {
                        "gpus": [{"name": "g1", "deviceName": "nvidia.com/GA102GL_A10"}],
                        "hostDevices": [
                            {"name": "h1", "deviceName": "nvidia.com/GA102GL_A10"},
                            {"name": "nic", "deviceName": "intel.com/sriov"}
                        ],
                        "disks": []
                    }}}
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_suspended_annotated_job_is_indexed_with_its_gang_of_gpus() {
        let e = job_entry(&job(true, true), &settings()).unwrap();
        let w = &e.workload;
        assert_eq!(w.id.to_string(), "job/ml/train");
        assert_eq!(w.tenant, "physics");
        assert_eq!((w.resource.as_str(), w.gpus), ("nvidia.com/gpu", 6));
        assert_eq!(w.spread, Spread::AnyNodes);
        let expected: k8s_openapi::jiff::Timestamp = "2026-01-31T12:00:00Z".parse().unwrap();
        assert_eq!(e.rotated_out_at, expected.as_second() as f64);
        // Running again (resumed by hand) or never rotated by rota: not indexed.
        assert_eq!(job_entry(&job(false, true), &settings()), None);
        assert_eq!(job_entry(&job(true, false), &settings()), None);
    }

    #[test]
    fn a_halted_vm_counts_its_passthrough_gpus_and_falls_back_to_the_namespace() {
        let e = vm_entry(&vm(HALTED, json!({})), &settings()).unwrap();
        let w = &e.workload;
        assert_eq!(w.id.to_string(), "vm/course/notebook");
        assert_eq!(w.tenant, "course");
        assert_eq!((w.resource.as_str(), w.gpus), ("nvidia.com/GA102GL_A10", 2));
        assert_eq!(w.spread, Spread::OneNode);
        let labelled = vm_entry(&vm(HALTED, json!({"rota.io/tenant": "bio"})), &settings());
        assert_eq!(labelled.unwrap().workload.tenant, "bio");
        assert_eq!(vm_entry(&vm("Always", json!({})), &settings()), None);
    }

    #[tokio::test]
    async fn relists_replace_one_kind_and_deletes_remove() {
        let index = RotatedOutIndex::new();
        let s = settings();
        let stale = vm_entry(&vm(HALTED, json!({})), &s).unwrap();
        index.set(stale.workload.id.clone(), Some(stale));
        let mut other = job(true, true);
        other.metadata.name = Some("other".into());
        let events = futures::stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(job(true, true))),
            Ok(Event::InitApply(job(false, false))),
            Ok(Event::InitDone),
            Ok(Event::Apply(other.clone())),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Delete(job(true, true))),
        ]);
        feed(events, &index, WorkloadKind::Job, |j: &Job| {
            job_entry(j, &s)
        })
        .await;
        let ids: Vec<String> = index
            .list()
            .iter()
            .map(|e| e.workload.id.to_string())
            .collect();
        // The VM entry survived the Job re-list; `train` was listed then deleted.
        assert_eq!(ids, ["job/ml/other", "vm/course/notebook"]);
        // A resume by hand (annotation kept, no longer suspended) drops it.
        let mut resumed = other;
        resumed.spec.as_mut().unwrap().suspend = Some(false);
        let events = futures::stream::iter(vec![Ok(Event::Apply(resumed))]);
        feed(events, &index, WorkloadKind::Job, |j: &Job| {
            job_entry(j, &s)
        })
        .await;
        assert_eq!(index.len(), 1);
    }

    #[tokio::test]
    async fn synced_once_jobs_are_listed_and_vms_are_listed_or_absent() {
        let index = RotatedOutIndex::new();
        let s = settings();
        let jobs = futures::stream::iter(vec![Ok(Event::Init), Ok(Event::InitDone)]);
        feed(jobs, &index, WorkloadKind::Job, |j: &Job| job_entry(j, &s)).await;
        assert!(!index.is_synced(), "VMs not listed yet");
        let status = kube::core::Status::failure("no such resource", "NotFound").with_code(404);
        let missing = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)));
        let vms = futures::stream::iter(vec![Err::<Event<DynamicObject>, _>(missing)]);
        feed(
            vms,
            &index,
            WorkloadKind::VirtualMachine,
            |v: &DynamicObject| vm_entry(v, &s),
        )
        .await;
        assert!(index.is_synced(), "KubeVirt absent: nothing to wait for");
        // A watch error other than 404 does not count as listed.
        let other = RotatedOutIndex::new();
        other.mark_listed(WorkloadKind::Job);
        let failing = futures::stream::iter(vec![Err::<Event<DynamicObject>, _>(
            watcher::Error::NoResourceVersion,
        )]);
        feed(
            failing,
            &other,
            WorkloadKind::VirtualMachine,
            |v: &DynamicObject| vm_entry(v, &s),
        )
        .await;
        assert!(!other.is_synced());
    }

    #[test]
    fn a_missing_crd_reads_as_not_found() {
        let status =
            kube::core::Status::failure("the server could not find it", "NotFound").with_code(404);
        let err = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)));
        assert!(is_not_found(&err));
        assert!(!is_not_found(&watcher::Error::NoResourceVersion));
    }
}
