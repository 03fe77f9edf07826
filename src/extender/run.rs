//! `rota extender`: flags and wiring of the extender process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::jiff::Timestamp;
use prometheus::Registry;
use tokio::sync::watch;

use crate::config::{self, ValidConfig};
use crate::controller::agents::{self, AgentDirectory, Discovery, Target};
use crate::controller::collector::{self, Collector, CollectorOptions};
use crate::controller::held_events;
use crate::controller::leader::{default_identity, system_clock, LeaderConfig, LeaderElector};
use crate::controller::ledger_store::{ConfigMapLedgerStore, FileLedgerStore, LedgerStore};
use crate::controller::rotated_out::{self, RotatedOutIndex};
use crate::controller::rotation::{
    CorePlanner, EventSink, KubeActuators, KubeContext, LoopSettings, RotationLoop, RotationMetrics,
};
use crate::controller::usage::UsageAccounting;
use crate::core::rotation_input::build_plan_input;
use crate::core::telemetry::TelemetrySource;
use crate::http::{self, ServerOptions, TlsFiles};
use crate::metrics::{
    ClusterCollector, HttpServerCollector, TelemetryAgeCollector, TelemetryMetrics,
};
use crate::state::fairshare::{FairShareRefresher, SharedLedger};
use crate::state::fairshare_metrics::{FairShareCollector, QueueWaitMetrics};
use crate::state::{ClusterView, ViewSettings};

use super::{Context, Extender};

/// Where the cluster view comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterMode {
    /// Watch Nodes and Pods through the Kubernetes API (kubeconfig or in-cluster discovery).
    Kube,
    /// No API server: learn Nodes from `nodeCacheCapable: false` requests. For trying rota
    /// with curl on a laptop.
    None,
}

/// Flags of `rota extender`.
#[derive(Clone, Debug, clap::Args)]
pub struct ExtenderOptions {
    /// Address and port to serve the scheduler, probes and metrics on.
    #[arg(long, env = "ROTA_LISTEN", default_value = "0.0.0.0:8888")]
    pub listen: SocketAddr,
    /// RotaConfig YAML file. Without it, the embedded defaults apply.
    #[arg(long, env = "ROTA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the cluster view comes from: `kube` (the API server) or `none` (no cluster).
    #[arg(long, value_enum, default_value_t = ClusterMode::Kube)]
    pub cluster: ClusterMode,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_body_bytes: usize,
    /// Seconds allowed to receive a request's headers.
    #[arg(long, default_value_t = 10)]
    pub header_timeout_seconds: u64,
    /// Seconds allowed to receive a request's body; then 408.
    #[arg(long, default_value_t = 30)]
    pub body_timeout_seconds: u64,
    /// Body bytes all requests together may buffer. A request that cannot get room within the
    /// body timeout gets 503 with Retry-After; requests without a body never wait. Default: half
    /// the container's memory limit, at most 512 MiB; set above half the limit, rota refuses to
    /// start (see `http::memory_limit`).
    #[arg(long)]
    pub max_inflight_body_bytes: Option<usize>,
    /// Connections served at once.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Extra connections kept for requests without a body (probes, metrics) when
    /// --max-connections are busy; beyond them a connection gets 503 and is closed.
    #[arg(long, default_value_t = 32)]
    pub reserve_connections: usize,
    /// Serve HTTPS with this PEM certificate chain (for `enableHTTPS: true`); needs --tls-key-file.
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for --tls-cert-file.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Poll GPU telemetry of node NODE at URL (repeatable): `http://HOST:PORT` for a rota
    /// agent, `…/metrics` for a dcgm-exporter. For `--cluster none` and demos; with a cluster,
    /// agents are found by `telemetry.agentSelector` and these take precedence.
    #[arg(long = "agent", value_name = "NODE=URL")]
    pub agents: Vec<Target>,
    /// File that keeps the usage ledger with `--cluster none` (written atomically each tick).
    #[arg(long, env = "ROTA_LEDGER_FILE", default_value = "rota-ledger.json")]
    pub ledger_file: PathBuf,
    /// ConfigMap (in --namespace) that keeps the usage ledger with `--cluster kube`.
    #[arg(long, default_value = "rota-usage-ledger")]
    pub ledger_configmap: String,
    /// Namespace of rota's own Lease and ledger ConfigMap.
    #[arg(long, env = "POD_NAMESPACE", default_value = "rota-system")]
    pub namespace: String,
    /// Lease that elects the replica which charges usage (and, later, rotates workloads).
    #[arg(long, default_value = "rota-extender")]
    pub lease_name: String,
}

impl ExtenderOptions {
    fn server_options(&self) -> ServerOptions {
        ServerOptions {
            max_body_bytes: self.max_body_bytes,
            header_read_timeout: Duration::from_secs(self.header_timeout_seconds.max(1)),
            body_read_timeout: Duration::from_secs(self.body_timeout_seconds.max(1)),
            max_inflight_body_bytes: self
                .max_inflight_body_bytes
                .unwrap_or(http::memory_limit::DEFAULT_INFLIGHT_BODY_BYTES),
            max_connections: self.max_connections,
            reserve_connections: self.reserve_connections,
            tls: match (&self.tls_cert_file, &self.tls_key_file) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            ..ServerOptions::default()
        }
    }
}

/// Runs the extender until SIGTERM or SIGINT.
pub async fn run(mut options: ExtenderOptions) -> anyhow::Result<()> {
    options.max_inflight_body_bytes = Some(http::memory_limit::inflight_budget_here(
        options.max_inflight_body_bytes,
        options.max_body_bytes,
    )?);
    let config = load_config(options.config.as_deref())?;
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(&config)));
    let registry = Registry::new();
    ClusterCollector::register(&registry, view.clone()).context("registering metrics")?;
    TelemetryAgeCollector::register(&registry, view.clone()).context("registering metrics")?;
    let telemetry_metrics = TelemetryMetrics::register(&registry, &collector::POLL_RESULTS)
        .context("registering metrics")?;
    let directory = Arc::new(AgentDirectory::new(options.agents.clone()));

    let shutdown = Shutdown::on_signal();
    let client =
        match options.cluster {
            ClusterMode::Kube => Some(kube::Client::try_default().await.context(
                "connecting to the Kubernetes API (use --cluster none to run without one)",
            )?),
            ClusterMode::None => None,
        };
    let (store, leader): (Arc<dyn LedgerStore>, watch::Receiver<bool>) = match &client {
        Some(client) => {
            let elector = LeaderElector::new(
                client.clone(),
                LeaderConfig::new(&options.namespace, &options.lease_name, &default_identity()),
                system_clock(),
            )
            .context("configuring leader election")?;
            let leader = elector.subscribe();
            tokio::spawn(elector.run(shutdown.wait()));
            let store = ConfigMapLedgerStore::new(
                client.clone(),
                &options.namespace,
                &options.ledger_configmap,
                config.usage.half_life_seconds,
            );
            (Arc::new(store), leader)
        }
        None => {
            // One process, no API server: it is the leader; the ledger lives in a file.
            let (_, rx) = watch::channel(true);
            let store = FileLedgerStore::new(&options.ledger_file, config.usage.half_life_seconds);
            (Arc::new(store), rx)
        }
    };

    match &client {
        Some(client) => {
            tokio::spawn(watch_forever(client.clone(), view.clone()));
            for discovery in discoveries(&config) {
                tokio::spawn(discover_forever(
                    client.clone(),
                    discovery,
                    directory.clone(),
                ));
            }
        }
        None => view.set_synced(true),
    }
    if options.cluster == ClusterMode::Kube || !options.agents.is_empty() {
        let collector_options = CollectorOptions::from_config(&config.telemetry);
        let collector = Collector::new(
            view.clone(),
            directory,
            collector_options,
            Some(telemetry_metrics),
        );
        tokio::spawn(collector.run());
    }
    let config = Arc::new(config);
    let rotated_out = Arc::new(RotatedOutIndex::new());
    let ledger = spawn_fair_share(&config, &registry, &view, &rotated_out)?;
    spawn_rotation(
        client.as_ref(),
        &config,
        &registry,
        &view,
        &leader,
        &shutdown,
        rotated_out,
    )?;
    tokio::spawn(
        UsageAccounting {
            ledger,
            store,
            view: view.clone(),
            config: config.clone(),
            leader,
            interval: Duration::from_secs(config.rotation.interval_seconds.max(1)),
        }
        .run(),
    );

    let ctx = Context {
        view,
        config,
        learn_nodes: options.cluster == ClusterMode::None,
        held_events: client.as_ref().map(spawn_held_events),
    };
    let stats = http::ServerStats::new();
    HttpServerCollector::register(&registry, stats.clone()).context("registering metrics")?;
    let extender = Extender::new(ctx, registry).context("registering metrics")?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding {}", options.listen))?;
    tracing::info!(
        address = %options.listen,
        cluster = ?options.cluster,
        tls = options.tls_cert_file.is_some(),
        "Extender listening."
    );
    http::serve_with_stats(
        listener,
        Arc::new(extender),
        options.server_options(),
        stats,
        shutdown.wait(),
    )
    .await
    .context("serving HTTP")?;
    tracing::info!("Extender stopped.");
    Ok(())
}

/// Starts the fair-share refresh (every 2 s when something changed) and its metrics.
/// Returns the shared ledger, which the usage accounting task loads, charges and persists.
fn spawn_fair_share(
    config: &ValidConfig,
    registry: &Registry,
    view: &Arc<ClusterView>,
    rotated_out: &Arc<RotatedOutIndex>,
) -> anyhow::Result<SharedLedger> {
    let ledger = crate::core::ledger::Ledger::new(config.usage.half_life_seconds)
        .context("building the usage ledger")?;
    let ledger: SharedLedger = Arc::new(parking_lot::Mutex::new(ledger));
    let policy = crate::core::fairshare::SharePolicy::from_config(config);
    FairShareCollector::register(registry, view.clone(), ledger.clone(), policy.clone())
        .context("registering metrics")?;
    let waits = QueueWaitMetrics::register(registry).context("registering metrics")?;
    let index = rotated_out.clone();
    let refresher = FairShareRefresher::new(view.clone(), policy, ledger.clone(), Some(waits))
        .with_dormant(Arc::new(move || index.demand_by_tenant()));
    tokio::spawn(refresher.run());
    Ok(ledger)
}

/// Starts the rotated-out watchers and the leader-only rotation loop when there is an API
/// server to act on and `rotation.enabled`; dry run follows `rotation.dryRun` (default true).
fn spawn_rotation(
    client: Option<&kube::Client>,
    config: &Arc<ValidConfig>,
    registry: &Registry,
    view: &Arc<ClusterView>,
    leader: &watch::Receiver<bool>,
    shutdown: &Shutdown,
    index: Arc<RotatedOutIndex>,
) -> anyhow::Result<()> {
    if !config.rotation.enabled {
        tracing::info!("Rotation disabled in the config.");
        return Ok(());
    }
    let Some(client) = client else {
        tracing::info!("No API server (--cluster none): the rotation loop does not run.");
        return Ok(());
    };
    let metrics = RotationMetrics::register(registry).context("registering metrics")?;
    let settings = view.settings().clone();
    tokio::spawn(rotated_out::watch_jobs(
        client.clone(),
        index.clone(),
        settings.clone(),
    ));
    tokio::spawn(rotated_out::watch_vms(
        client.clone(),
        index.clone(),
        settings,
    ));
    let actuators = KubeActuators::new(KubeContext::new(
        client.clone(),
        default_identity(),
        system_clock(),
    ));
    let (input_view, input_config) = (view.clone(), config.clone());
    let planner = CorePlanner::new(
        move |now: Timestamp| {
            let now = now.as_millisecond() as f64 / 1000.0;
            if !(input_view.is_synced() && index.is_synced()) {
                // Until the first lists are in, a tenant's running or rotated-out work may be
                // missing: plan nothing rather than rotate from half a picture.
                tracing::info!("Rotation waits for the first lists of Pods, Jobs and VMs.");
                return crate::core::rotation::PlanInput {
                    now,
                    ..Default::default()
                };
            }
            let rotated = index.list();
            input_view.with_snapshot(|s| build_plan_input(s, &rotated, &input_config, now))
        },
        Duration::from_secs(config.quantum.max_seconds),
    );
    let settings = LoopSettings::from_config(config);
    tracing::info!(
        dry_run = settings.dry_run,
        interval_seconds = settings.interval.as_secs(),
        "Rotation loop starting (acts only while leading)."
    );
    let rotation = RotationLoop::new(
        planner,
        Arc::new(actuators),
        leader.clone(),
        metrics,
        settings,
        system_clock(),
    );
    tokio::spawn(rotation.run(shutdown.wait()));
    Ok(())
}

/// Starts the task that turns held-pod notices from the filter into rate-limited Events.
fn spawn_held_events(client: &kube::Client) -> held_events::HeldSender {
    let (tx, rx) = held_events::channel();
    let sink = EventSink::new(client.clone(), default_identity());
    tokio::spawn(held_events::run(rx, Arc::new(sink)));
    tx
}

/// One shutdown signal (SIGTERM or SIGINT) fanned out to every task that must see it.
#[derive(Clone)]
struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    fn on_signal() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            http::shutdown_signal().await;
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    /// Resolves once the signal has arrived.
    fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// Keeps the watchers running: they return only when a watch stream ends, which a restart fixes.
async fn watch_forever(client: kube::Client, view: Arc<ClusterView>) {
    loop {
        if let Err(err) = crate::controller::run_watchers(client.clone(), view.clone()).await {
            tracing::error!(code = err.code(), error = %err, "Cluster watchers stopped; restarting.");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The reporter watchers the config asks for: agents always, dcgm-exporter when selected.
fn discoveries(config: &ValidConfig) -> Vec<Discovery> {
    let t = &config.telemetry;
    let mut out = vec![Discovery {
        selector: t.agent_selector.clone(),
        port: t.agent_port,
        source: TelemetrySource::Agent,
    }];
    if !t.dcgm_exporter_selector.is_empty() {
        out.push(Discovery {
            selector: t.dcgm_exporter_selector.clone(),
            port: t.dcgm_exporter_port,
            source: TelemetrySource::DcgmExporter,
        });
    }
    out
}

/// Keeps one reporter watcher running (it returns only if its stream ends).
async fn discover_forever(
    client: kube::Client,
    discovery: Discovery,
    directory: Arc<AgentDirectory>,
) {
    loop {
        agents::watch_reporters(client.clone(), discovery.clone(), directory.clone()).await;
        tracing::error!(
            source = discovery.source.as_str(),
            "Reporter watch stream ended; restarting."
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<ValidConfig> {
    match path {
        Some(path) => config::load(path).with_context(|| format!("loading {}", path.display())),
        None => {
            tracing::info!("No --config given: using the embedded defaults.");
            Ok(ValidConfig::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        extender: ExtenderOptions,
    }

    #[test]
    fn agent_flags_repeat_and_bad_ones_are_refused() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from([
            "rota",
            "--cluster",
            "none",
            "--agent",
            "n1=http://127.0.0.1:9402",
            "--agent",
            "n2=http://127.0.0.1:9400/metrics",
        ])
        .unwrap();
        let agents = &cli.extender.agents;
        assert_eq!(agents.len(), 2);
        assert_eq!(agents[0].url, "http://127.0.0.1:9402/v1/telemetry");
        assert_eq!(agents[1].source, TelemetrySource::DcgmExporter);
        assert!(Cli::try_parse_from(["rota", "--agent", "n1"]).is_err());
        let defaults = Cli::try_parse_from(["rota"]).unwrap();
        assert!(defaults.extender.agents.is_empty());
    }

    #[test]
    fn dcgm_discovery_is_opt_in() {
        let config = ValidConfig::default();
        let sources: Vec<TelemetrySource> = discoveries(&config).iter().map(|d| d.source).collect();
        assert_eq!(sources, [TelemetrySource::Agent]);
        let yaml = "telemetry: {dcgmExporterSelector: app=nvidia-dcgm-exporter}";
        let config = crate::config::parse(yaml).unwrap();
        let found = discoveries(&config);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].port, 9400);
        assert_eq!(found[1].selector, "app=nvidia-dcgm-exporter");
    }
}
