//! Where the telemetry reporters are: rota agents (and optionally dcgm-exporters) by node.
//!
//! ```text
//!   watcher(Pod, agentSelector)        ─┐ apply/delete/replace
//!   watcher(Pod, dcgmExporterSelector) ─┼──────────────────────▶ AgentDirectory ─targets()─▶ collector
//!   --agent NODE=URL (fixed)           ─┘
//! ```
//!
//! A pod is a target while it is Running with a pod IP on a node; its URL is built from the pod
//! IP and the configured port. Each node gets one target: a fixed `--agent` entry first, then a
//! rota agent, then a dcgm-exporter. Watch errors are logged and retried with backoff, never
//! fatal. Must not: poll anything (the collector does) or touch the cluster view.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use std::future::Future;

use futures::Stream;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use crate::core::telemetry::TelemetrySource;
use crate::read::feeder::{drain, FeedMetrics, Feeder, Index};
use crate::readiness::Readiness;

/// Path of the agent's JSON snapshot.
pub const AGENT_PATH: &str = "/v1/telemetry";
/// Path of dcgm-exporter's Prometheus page.
pub const DCGM_PATH: &str = "/metrics";

/// One reporter to poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The node it reports for (where its pod runs, or as given by `--agent`).
    pub node: String,
    /// Full URL to GET (`http://10.0.3.7:9402/v1/telemetry`).
    pub url: String,
    /// What it speaks.
    pub source: TelemetrySource,
}

impl Target {
    /// The target for a reporter at `ip:port` on `node`.
    pub fn at(node: &str, ip: &str, port: u16, source: TelemetrySource) -> Self {
        // IPv6 pod IPs need brackets in a URL.
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let path = match source {
            TelemetrySource::Agent => AGENT_PATH,
            TelemetrySource::DcgmExporter => DCGM_PATH,
        };
        Self {
            node: node.to_string(),
            url: format!("http://{host}:{port}{path}"),
            source,
        }
    }

    /// The target for a pod selected by a watcher, or `None` while it cannot be polled
    /// (not Running, no IP yet, not scheduled).
    pub fn from_pod(pod: &Pod, port: u16, source: TelemetrySource) -> Option<Self> {
        let node = pod.spec.as_ref()?.node_name.as_deref()?;
        let status = pod.status.as_ref()?;
        if status.phase.as_deref() != Some("Running") {
            return None;
        }
        let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
        Some(Self::at(node, ip, port, source))
    }
}

/// `NODE=URL`, as given to `rota extender --agent`. A URL without a path polls the agent's
/// `/v1/telemetry`; a URL whose path ends in `/metrics` is read as a dcgm-exporter page.
impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (node, url) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not NODE=URL"))?;
        if node.trim().is_empty() {
            return Err(format!("{text:?} has no node name"));
        }
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!("URL {url:?} must be http://HOST:PORT[/PATH]"));
        }
        let path = uri.path();
        let (url, source) = if path.ends_with(DCGM_PATH) {
            (url.to_string(), TelemetrySource::DcgmExporter)
        } else if path.is_empty() || path == "/" {
            let base = url.trim_end_matches('/');
            (format!("{base}{AGENT_PATH}"), TelemetrySource::Agent)
        } else {
            (url.to_string(), TelemetrySource::Agent)
        };
        Ok(Self {
            node: node.trim().to_string(),
            url,
            source,
        })
    }
}

/// The pods found by the watchers, plus fixed targets; shared by the watchers and the
/// collector.
#[derive(Debug, Default)]
pub struct AgentDirectory {
    fixed: Vec<Target>,
    pods: parking_lot::RwLock<HashMap<String, Target>>,
}

impl AgentDirectory {
    /// A directory with the given fixed targets (from `--agent`) and no pods yet.
    pub fn new(fixed: Vec<Target>) -> Self {
        Self {
            fixed,
            pods: parking_lot::RwLock::new(HashMap::new()),
        }
    }

    /// Adds, updates or (when it cannot be polled) removes a watched pod.
    pub fn apply_pod(&self, pod: &Pod, port: u16, source: TelemetrySource) {
        let Some(key) = pod_key(pod) else {
            return;
        };
        let mut pods = self.pods.write();
        match Target::from_pod(pod, port, source) {
            Some(target) => pods.insert(key, target),
            None => pods.remove(&key),
        };
    }

    /// Forgets a deleted pod.
    pub fn delete_pod(&self, pod: &Pod) {
        if let Some(key) = pod_key(pod) {
            self.pods.write().remove(&key);
        }
    }

    /// Replaces every pod of `source` after a (re-)list.
    pub fn replace_pods(&self, source: TelemetrySource, pods: &[Pod], port: u16) {
        let fresh = pods.iter().filter_map(|pod| {
            let target = Target::from_pod(pod, port, source)?;
            Some((pod_key(pod)?, target))
        });
        let mut stored = self.pods.write();
        stored.retain(|_, t| t.source != source);
        stored.extend(fresh);
    }

    /// One target per node, sorted by node: fixed entries first, then agents, then
    /// dcgm-exporters (an agent grades with rota's own rules and sees more).
    pub fn targets(&self) -> Vec<Target> {
        let mut by_node: HashMap<&str, (u8, &Target)> = HashMap::new();
        let pods = self.pods.read();
        let ranked = self.fixed.iter().map(|t| (0, t));
        let ranked = ranked.chain(pods.values().map(|t| (rank(t.source), t)));
        for (rank, target) in ranked {
            let slot = by_node.entry(&target.node).or_insert((rank, target));
            // Ties keep the smaller URL, so the choice does not depend on hash order.
            if (rank, &target.url) < (slot.0, &slot.1.url) {
                *slot = (rank, target);
            }
        }
        let mut targets: Vec<Target> = by_node.into_values().map(|(_, t)| t.clone()).collect();
        targets.sort_by(|a, b| a.node.cmp(&b.node));
        targets
    }
}

fn rank(source: TelemetrySource) -> u8 {
    match source {
        TelemetrySource::Agent => 1,
        TelemetrySource::DcgmExporter => 2,
    }
}

/// A pod's identity in the directory: UID, else `namespace/name`.
fn pod_key(pod: &Pod) -> Option<String> {
    let meta = &pod.metadata;
    meta.uid.clone().or_else(|| {
        let name = meta.name.as_deref()?;
        Some(format!(
            "{}/{name}",
            meta.namespace.as_deref().unwrap_or("")
        ))
    })
}

/// What one discovery watcher looks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// Label selector of the reporter pods.
    pub selector: String,
    /// Port they serve on.
    pub port: u16,
    /// What they speak.
    pub source: TelemetrySource,
}

/// A fresh watch of the pods `discovery` selects, in all namespaces.
pub fn reporter_watch(
    client: &Client,
    discovery: &Discovery,
) -> impl Stream<Item = Result<Event<Pod>, watcher::Error>> + Send {
    let config = watcher::Config::default()
        .labels(&discovery.selector)
        .any_semantic();
    watcher::watcher(Api::<Pod>::all(client.clone()), config).default_backoff()
}

/// Watches the pods of `discovery` in all namespaces and keeps `directory` in step; returns only
/// if the watch stream ends (tests; the serving process runs [`feed_forever`]).
pub async fn watch_reporters(client: Client, discovery: Discovery, directory: Arc<AgentDirectory>) {
    feed_reporters(reporter_watch(&client, &discovery), &discovery, &directory).await;
}

/// Keeps `directory` in step with the pods of `discovery` until `shutdown`, restarting the
/// watch whenever it ends.
pub async fn feed_forever(
    client: Client,
    discovery: Discovery,
    directory: Arc<AgentDirectory>,
    metrics: Arc<FeedMetrics>,
    readiness: Option<Arc<Readiness>>,
    shutdown: impl Future<Output = ()>,
) {
    let feed = ReporterFeed {
        discovery: &discovery,
        directory: &directory,
    };
    Feeder::new(metrics, readiness)
        .run(|| reporter_watch(&client, &discovery), feed, shutdown)
        .await;
}

/// Feeds watch events into the directory (generic over the stream so tests can play synthetic
/// events). A re-list is buffered and swapped in at `InitDone`.
pub async fn feed_reporters<S>(events: S, discovery: &Discovery, directory: &AgentDirectory)
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>>,
{
    let feed = ReporterFeed {
        discovery,
        directory,
    };
    let mut observe = |err: Option<&watcher::Error>| {
        if let Some(err) = err {
            tracing::warn!(
                source = discovery.source.as_str(),
                error = %err,
                "Reporter watch failed; retrying after backoff."
            );
        }
    };
    drain(events, &feed, &mut observe).await;
}

/// One kind of telemetry reporter in the [`AgentDirectory`], as a feeder [`Index`].
pub struct ReporterFeed<'a> {
    /// Which reporters.
    pub discovery: &'a Discovery,
    /// Where they go.
    pub directory: &'a AgentDirectory,
}

impl Index<Pod> for ReporterFeed<'_> {
    type Item = Pod;

    fn kind(&self) -> &'static str {
        match self.discovery.source {
            TelemetrySource::Agent => "agents",
            TelemetrySource::DcgmExporter => "dcgm-exporters",
        }
    }

    fn item(&self, pod: &Pod) -> Option<Pod> {
        Some(pod.clone())
    }

    fn apply(&self, pod: &Pod) {
        self.directory
            .apply_pod(pod, self.discovery.port, self.discovery.source);
    }

    fn delete(&self, pod: &Pod) {
        self.directory.delete_pod(pod);
    }

    fn replace(&self, pods: Vec<Pod>) {
        tracing::info!(
            source = self.discovery.source.as_str(),
            count = pods.len(),
            "Telemetry reporters listed."
        );
        self.directory
            .replace_pods(self.discovery.source, &pods, self.discovery.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, node: &str, ip: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "rota-system", "uid": uid},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase, "podIP": ip}
        }))
        .unwrap()
    }

    #[test]
    fn pods_become_targets_once_running_with_an_ip() {
        let agent = TelemetrySource::Agent;
        assert_eq!(
            Target::from_pod(&pod("a", "n1", None, "Running"), 9402, agent),
            None
        );
        assert_eq!(
            Target::from_pod(&pod("a", "n1", Some("10.0.0.5"), "Pending"), 9402, agent),
            None
        );
        let t = Target::from_pod(&pod("a", "n1", Some("10.0.0.5"), "Running"), 9402, agent);
        assert_eq!(t.unwrap().url, "http://10.0.0.5:9402/v1/telemetry");
        let v6 = Target::at("n1", "fd00::5", 9400, TelemetrySource::DcgmExporter);
        assert_eq!(v6.url, "http://[fd00::5]:9400/metrics");
    }

    #[test]
    fn agent_flags_parse() {
        let t: Target = "n1=http://127.0.0.1:9402".parse().unwrap();
        assert_eq!(t.url, "http://127.0.0.1:9402/v1/telemetry");
        assert_eq!(t.source, TelemetrySource::Agent);
        let d: Target = "n2=http://127.0.0.1:9400/metrics".parse().unwrap();
        assert_eq!(d.source, TelemetrySource::DcgmExporter);
        for bad in [
            "n1",
            "=http://x:1",
            "n1=https://x:1",
            "n1=not a url",
            "n1=/path",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn one_target_per_node_fixed_then_agent_then_dcgm() {
        let fixed: Target = "n3=http://127.0.0.1:1".parse().unwrap();
        let dir = AgentDirectory::new(vec![fixed.clone()]);
        dir.apply_pod(
            &pod("d1", "n1", Some("10.0.0.9"), "Running"),
            9400,
            TelemetrySource::DcgmExporter,
        );
        dir.apply_pod(
            &pod("a1", "n1", Some("10.0.0.1"), "Running"),
            9402,
            TelemetrySource::Agent,
        );
        dir.apply_pod(
            &pod("d2", "n2", Some("10.0.0.2"), "Running"),
            9400,
            TelemetrySource::DcgmExporter,
        );
        dir.apply_pod(
            &pod("a3", "n3", Some("10.0.0.3"), "Running"),
            9402,
            TelemetrySource::Agent,
        );
        let targets = dir.targets();
        let got: Vec<(&str, TelemetrySource)> = targets
            .iter()
            .map(|t| (t.node.as_str(), t.source))
            .collect();
        assert_eq!(
            got,
            [
                ("n1", TelemetrySource::Agent),
                ("n2", TelemetrySource::DcgmExporter),
                ("n3", TelemetrySource::Agent)
            ]
        );
        assert_eq!(targets[2], fixed);
        // A deleted agent pod hands the node back to dcgm-exporter.
        dir.delete_pod(&pod("a1", "n1", None, "Running"));
        assert_eq!(dir.targets()[0].source, TelemetrySource::DcgmExporter);
    }

    #[tokio::test]
    async fn relists_replace_only_their_own_source() {
        let dir = AgentDirectory::default();
        let dcgm = TelemetrySource::DcgmExporter;
        dir.apply_pod(&pod("d1", "n1", Some("10.0.0.9"), "Running"), 9400, dcgm);
        let discovery = Discovery {
            selector: "app=rota-agent".into(),
            port: 9402,
            source: TelemetrySource::Agent,
        };
        let events = futures::stream::iter(vec![
            Ok(Event::Apply(pod("old", "n9", Some("10.0.0.8"), "Running"))),
            Ok(Event::Init),
            Ok(Event::InitApply(pod(
                "a2",
                "n2",
                Some("10.0.0.2"),
                "Running",
            ))),
            Ok(Event::InitDone),
        ]);
        feed_reporters(events, &discovery, &dir).await;
        let nodes: Vec<String> = dir.targets().into_iter().map(|t| t.node).collect();
        assert_eq!(nodes, ["n1", "n2"]);
    }
}
