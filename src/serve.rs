//! `rota extender`: the composition root of the serving process. It builds the client, the
//! views, the feeds, the HTTP server and the leader-gated loops, runs them in one task set, and
//! owns the one shutdown path.
//!
//! ```text
//!   kube::Config ─▶ Client ─┬─ read side (every replica; never writes) ─────────────────────┐
//!                           │    feeders: nodes, pods ─▶ ClusterView ◀─ collector ◀─ agents  │
//!                           │             jobs, VMs ─▶ RotatedOutIndex                      ├─▶ HTTP: verbs,
//!                           │    fair-share refresh (view + ledger ─▶ entitlements)          │   /readyz ◀─ Readiness
//!                           │    ledger reload while following                              │
//!                           └─ write side ───────────────────────────────────────────────────┘
//!                                Lease elector ─▶ leader flag ─▶ while_leading: one group per term
//!                                                 (usage charging + ledger saves, rotation loop),
//!                                                 started on becoming leader, stopped on losing it;
//!                                                 held-pod Events emitted only while leading
//!
//!   SIGTERM/SIGINT ─▶ HTTP stops accepting and drains (≤ 10 s)  ┐ at once, together
//!                  ─▶ write loops stop (≤ 5 s) ─▶ Lease released ┘ (a successor leads within 2 s)
//!                  ─▶ read side stops ─▶ remaining tasks joined (≤ 2 s), then aborted ─▶ exit 0
//! ```
//!
//! Invariants: every task is spawned here, into one [`JoinSet`] per side, and stops on the one
//! [`Shutdown`]; the write side's loops exist only during a leadership term (and still check
//! the leader flag before each write); the Lease is released only after the write loops have stopped (or their
//! grace has passed), and before the process returns, so the runtime never drops a release in
//! flight. Failures a person must fix (missing namespace, forbidden Lease or ledger, an API
//! server that cannot be reached) are reported to one [`Readiness`], which logs each state
//! change once at ERROR, counts them, and fails `/readyz` with the reason, while the extender
//! keeps answering kube-scheduler from its last view.
//! Must not: hold policy, or spawn a task that the shutdown path does not stop.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::{BoxFuture, Shared};
use futures::FutureExt as _;
use k8s_openapi::jiff::Timestamp;
use prometheus::Registry;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock;
use crate::config::{self, ValidConfig};
use crate::core::rotation_input::build_plan_input;
use crate::core::telemetry::TelemetrySource;
use crate::extender::{Context, Extender};
use crate::http::{self, ServerOptions, TlsFiles};
use crate::metrics::{
    ClusterCollector, HttpServerCollector, TelemetryAgeCollector, TelemetryMetrics,
};
use crate::read::cluster;
use crate::read::feeder::FeedMetrics;
use crate::read::rotated_out::{self, RotatedOutIndex};
use crate::read::telemetry::agents::{self, AgentDirectory, Discovery, Target};
use crate::read::telemetry::collector::{self, Collector, CollectorOptions};
use crate::read::view::fairshare::{FairShareRefresher, SharedLedger};
use crate::read::view::fairshare_metrics::{FairShareCollector, QueueWaitMetrics};
use crate::read::view::{ClusterView, ViewSettings};
use crate::readiness::Readiness;
use crate::write::held_events::{self, HeldEventSink, HeldPod};
use crate::write::leader::{default_identity, LeaderConfig, LeaderElector, FOLLOWER_RETRY_PERIOD};
use crate::write::ledger_store::{ConfigMapLedgerStore, FileLedgerStore, LedgerStore};
use crate::write::rotation::{
    CorePlanner, EventSink, KubeActuators, KubeContext, LoopSettings, RotationLoop, RotationMetrics,
};
use crate::write::usage::UsageAccounting;

/// How long the write loops get to stop before the Lease is released anyway.
pub const WRITE_STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the remaining tasks get to stop, after the HTTP drain, before they are aborted.
pub const FINAL_STOP_GRACE: Duration = Duration::from_secs(2);

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
    /// Address and port to serve the scheduler, probes and metrics on: `HOST:PORT`, where HOST
    /// is an IP address or a host name (`localhost:8888`, `[::1]:8888`).
    #[arg(long, env = "ROTA_LISTEN", default_value = "0.0.0.0:8888", value_parser = parse_listen)]
    pub listen: String,
    /// RotaConfig YAML file. Without it, the embedded defaults apply.
    #[arg(long, env = "ROTA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the cluster view comes from: `kube` (the API server) or `none` (no cluster).
    #[arg(long, value_enum, default_value_t = ClusterMode::Kube)]
    pub cluster: ClusterMode,
    /// Largest request body accepted, in bytes (at least 1); larger bodies get 413.
    #[arg(long, default_value_t = 64 << 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_BYTES))]
    pub max_body_bytes: usize,
    /// Seconds allowed to receive a request's headers (1 to 3600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_seconds: u64,
    /// Seconds allowed to receive a request's body (1 to 3600); then 408.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_seconds: u64,
    /// Body bytes all requests together may buffer. A request that cannot get room within the
    /// body timeout gets 503 with Retry-After; requests without a body never wait. Default: half
    /// the container's memory limit, at most 512 MiB; set above half the limit, rota refuses to
    /// start (see `http::memory_limit`).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_BYTES))]
    pub max_inflight_body_bytes: Option<usize>,
    /// Connections served at once (1 to 1048576).
    #[arg(long, default_value_t = 4096, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_CONNECTIONS))]
    pub max_connections: usize,
    /// Extra connections kept for requests without a body (probes, metrics) when
    /// --max-connections are busy; beyond them a connection gets 503 and is closed (0 to
    /// 1048576).
    #[arg(long, default_value_t = 32, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_CONNECTIONS))]
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
    /// Lease that elects the replica which charges usage, rotates workloads and emits Events.
    #[arg(long, default_value = "rota-extender")]
    pub lease_name: String,
}

/// Largest byte count a body flag takes (1 TiB: far beyond any memory limit, and no overflow).
const MAX_BYTES: u64 = 1 << 40;
/// Most connections a flag takes (the process's open files limit is lower anyway).
const MAX_CONNECTIONS: u64 = 1 << 20;

/// `HOST:PORT` with a non-empty host and a port number; the host is resolved when binding.
pub fn parse_listen(text: &str) -> Result<String, String> {
    let bad = || format!("{text:?} is not HOST:PORT (for example 0.0.0.0:8888 or localhost:8888)");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(text.to_owned())
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

/// The one shutdown signal, fanned out to every task as a cloneable future.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    done: Shared<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("started", &self.is_started())
            .finish()
    }
}

impl Shutdown {
    /// A signal that starts when [`start`](Self::start) is called.
    pub fn new() -> Self {
        let (tx, mut rx) = watch::channel(false);
        let done = async move {
            // An error means the sender is gone, which also ends everything.
            let _ = rx.wait_for(|started| *started).await;
        }
        .boxed()
        .shared();
        Self {
            tx: Arc::new(tx),
            done,
        }
    }

    /// A signal that starts on SIGTERM or SIGINT.
    pub fn on_signal() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            http::shutdown_signal().await;
            trigger.start();
        });
        shutdown
    }

    /// Starts the shutdown (idempotent).
    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the shutdown has started.
    pub fn is_started(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the shutdown has started; cloneable, so one call serves many tasks.
    pub fn wait(&self) -> Shared<BoxFuture<'static, ()>> {
        self.done.clone()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the extender until SIGTERM or SIGINT, then shuts down in order and returns `Ok`.
pub async fn run(mut options: ExtenderOptions) -> anyhow::Result<()> {
    options.max_inflight_body_bytes = Some(http::memory_limit::inflight_budget_here(
        options.max_inflight_body_bytes,
        options.max_body_bytes,
    )?);
    serve(options, Shutdown::on_signal()).await
}

/// Runs `fut` until `stop` resolves.
async fn until(stop: impl Future<Output = ()>, fut: impl Future<Output = ()>) {
    tokio::select! {
        biased;
        () = stop => {}
        () = fut => {}
    }
}

/// The tasks of one process and the shutdown that stops them.
struct Tasks {
    read: JoinSet<()>,
    write: JoinSet<()>,
    shutdown: Shutdown,
}

impl Tasks {
    /// Spawns a task of the read side; it must end on `shutdown`. A task that ends early is
    /// logged at ERROR (the feeds restart themselves; nothing should ever end early).
    fn read(&mut self, name: &'static str, fut: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.read.spawn(watched(name, shutdown, fut));
    }

    /// Spawns a leader-gated loop of the write side; it must end on `shutdown`.
    fn write(&mut self, name: &'static str, fut: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.write.spawn(watched(name, shutdown, fut));
    }
}

async fn watched(name: &'static str, shutdown: Shutdown, fut: impl Future<Output = ()>) {
    fut.await;
    if !shutdown.is_started() {
        tracing::error!(
            task = name,
            "A serving task stopped on its own; this replica runs without it."
        );
    }
}

/// Runs the extender until `shutdown` starts, then stops it: see the module doc.
pub async fn serve(options: ExtenderOptions, shutdown: Shutdown) -> anyhow::Result<()> {
    let config = Arc::new(load_config(options.config.as_deref())?);
    // Everything that can stop the start is checked before any task runs or logs.
    let listener = tokio::net::TcpListener::bind(options.listen.as_str())
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", options.listen))?;
    if let Some(files) = &options.server_options().tls {
        http::check_tls(files)?;
    }
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(&config)));
    let registry = Registry::new();
    let metrics_error = "registering metrics";
    ClusterCollector::register(&registry, view.clone()).context(metrics_error)?;
    TelemetryAgeCollector::register(&registry, view.clone()).context(metrics_error)?;
    let telemetry_metrics =
        TelemetryMetrics::register(&registry, &collector::POLL_RESULTS).context(metrics_error)?;
    let feed_metrics = FeedMetrics::new();
    feed_metrics.register(&registry).context(metrics_error)?;

    let (client, api_url) = match options.cluster {
        ClusterMode::Kube => {
            let kube_config = kube::Config::infer()
                .await
                .context("finding the Kubernetes API (use --cluster none to run without one)")?;
            let url = kube_config.cluster_url.to_string();
            let client = kube::Client::try_from(kube_config)
                .with_context(|| format!("building a client for the Kubernetes API at {url}"))?;
            (Some(client), url)
        }
        ClusterMode::None => (None, "none".to_owned()),
    };
    let readiness = Arc::new(Readiness::new(&api_url));
    readiness.register(&registry).context(metrics_error)?;
    let identity = default_identity();

    let mut tasks = Tasks {
        read: JoinSet::new(),
        write: JoinSet::new(),
        shutdown: shutdown.clone(),
    };
    let stop = || shutdown.wait();

    // === the leader flag and the ledger's home ===
    let (leader, store, elector): (_, Arc<dyn LedgerStore>, _) = match &client {
        Some(client) => {
            let lease = LeaderConfig::new(&options.namespace, &options.lease_name, &identity)
                .with_retry_period(FOLLOWER_RETRY_PERIOD);
            let elector = LeaderElector::new(client.clone(), lease, clock::system())
                .context("configuring leader election")?
                .with_readiness(readiness.clone());
            let store = ConfigMapLedgerStore::new(
                client.clone(),
                &options.namespace,
                &options.ledger_configmap,
                config.usage.half_life_seconds,
            );
            (elector.subscribe(), Arc::new(store), Some(elector))
        }
        None => {
            // One process, no API server: it is the leader; the ledger lives in a file.
            let (_, rx) = watch::channel(true);
            let store = FileLedgerStore::new(&options.ledger_file, config.usage.half_life_seconds);
            (rx, Arc::new(store), None)
        }
    };
    // The elector stops only when `release` starts: after the write loops have stopped.
    let release = Shutdown::new();
    let elector = elector.map(|elector| tokio::spawn(elector.run(release.wait())));

    // === read side: feeds and the indexes they keep; never writes ===
    let directory = Arc::new(AgentDirectory::new(options.agents.clone()));
    match &client {
        Some(client) => {
            tasks.read(
                "cluster feeds",
                cluster::feed_forever(
                    client.clone(),
                    view.clone(),
                    feed_metrics.clone(),
                    Some(readiness.clone()),
                    stop(),
                ),
            );
            for discovery in discoveries(&config) {
                tasks.read(
                    "reporter feed",
                    agents::feed_forever(
                        client.clone(),
                        discovery,
                        directory.clone(),
                        feed_metrics.clone(),
                        Some(readiness.clone()),
                        stop(),
                    ),
                );
            }
        }
        None => view.set_synced(true),
    }
    if client.is_some() || !options.agents.is_empty() {
        let collector = Collector::new(
            view.clone(),
            directory,
            CollectorOptions::from_config(&config.telemetry),
            Some(telemetry_metrics),
        );
        tasks.read("telemetry collector", until(stop(), collector.run()));
    }
    let rotated_out = Arc::new(RotatedOutIndex::new());
    let rotating = config.rotation.enabled && client.is_some();
    if let (true, Some(client)) = (rotating, &client) {
        tasks.read(
            "rotated-out feeds",
            rotated_out::feed_forever(
                client.clone(),
                rotated_out.clone(),
                view.settings().clone(),
                feed_metrics.clone(),
                Some(readiness.clone()),
                stop(),
            ),
        );
    }
    let ledger = fair_share(&mut tasks, &config, &registry, &view, &rotated_out)?;
    let rotation_marks = rotating.then(|| rotated_out.clone());

    // === write side: its loops run only while this replica leads ===
    let accounting = UsageAccounting {
        ledger,
        store,
        view: view.clone(),
        config: config.clone(),
        leader: leader.clone(),
        interval: Duration::from_secs(config.rotation.interval_seconds.max(1)),
        readiness: client.as_ref().map(|_| readiness.clone()),
    };
    let last_load = Arc::new(parking_lot::Mutex::new(None));
    // Reading the ledger the leader wrote is the read side's part of usage accounting.
    tasks.read(
        "usage ledger reload",
        until(stop(), accounting.clone().follow(last_load.clone())),
    );
    let rotation = match (&client, config.rotation.enabled) {
        (_, false) => {
            tracing::info!("Rotation disabled in the config.");
            None
        }
        (None, true) => {
            tracing::info!("No API server (--cluster none): the rotation loop does not run.");
            None
        }
        (Some(client), true) => Some(RotationWiring {
            client: client.clone(),
            config: config.clone(),
            view: view.clone(),
            index: rotated_out,
            metrics: RotationMetrics::register(&registry).context(metrics_error)?,
            identity: identity.clone(),
            leader: leader.clone(),
        }),
    };
    let term = move |term_stop: Shutdown| {
        let mut loops: Vec<(&'static str, BoxFuture<'static, ()>)> = Vec::new();
        let charge = accounting.clone().lead(last_load.clone());
        loops.push((
            "usage accounting",
            Box::pin(until(term_stop.wait(), charge)),
        ));
        if let Some(rotation) = &rotation {
            loops.push(("rotation loop", rotation.start(term_stop.wait())));
        }
        loops
    };
    tasks.write(
        "leader-only loops",
        while_leading(leader.clone(), shutdown.clone(), term),
    );
    let held_events = client.as_ref().map(|client| {
        let (tx, rx) = held_events::channel();
        let sink = LeaderOnly {
            sink: EventSink::new(client.clone(), identity.clone()),
            leader: leader.clone(),
        };
        tasks.write(
            "held-pod events",
            until(stop(), held_events::run(rx, Arc::new(sink))),
        );
        tx
    });

    // === HTTP: the verbs and probes ===
    let ctx = Context {
        view,
        config,
        learn_nodes: options.cluster == ClusterMode::None,
        held_events,
        rotation_marks,
    };
    let stats = http::ServerStats::new();
    HttpServerCollector::register(&registry, stats.clone()).context(metrics_error)?;
    let extender = Extender::new(ctx, registry)
        .context(metrics_error)?
        .with_readiness(readiness);
    let address = listener
        .local_addr()
        .map_or(options.listen.clone(), |a| a.to_string());
    tracing::info!(
        %address,
        cluster = ?options.cluster,
        api = %api_url,
        identity = %identity,
        "Extender listening."
    );
    let http = async {
        let served = http::serve_with_stats(
            listener,
            Arc::new(extender),
            options.server_options(),
            stats,
            stop(),
        )
        .await;
        // A server that cannot serve takes the process down, in order.
        shutdown.start();
        served
    };
    // === the one shutdown path ===
    let hand_over = async {
        shutdown.wait().await;
        tracing::info!(
            "Shutting down: draining requests, stopping the loops, releasing the Lease."
        );
        join_within(&mut tasks.write, WRITE_STOP_GRACE, "write loops").await;
        release.start();
        if let Some(elector) = elector {
            if let Err(err) = elector.await {
                tracing::error!(error = %err, "The Lease elector failed.");
            }
        }
    };
    let (served, ()) = tokio::join!(http, hand_over);
    join_within(&mut tasks.read, FINAL_STOP_GRACE, "read side").await;
    served.context("serving HTTP")?;
    tracing::info!("Extender stopped.");
    Ok(())
}

/// Waits up to `grace` for every task of `set`, then aborts the rest.
async fn join_within(set: &mut JoinSet<()>, grace: Duration, what: &'static str) {
    let joined = tokio::time::timeout(grace, async {
        while let Some(result) = set.join_next().await {
            if let Err(err) = result {
                if err.is_panic() {
                    tracing::error!(tasks = what, error = %err, "A serving task panicked.");
                }
            }
        }
    })
    .await;
    if joined.is_err() {
        tracing::warn!(
            tasks = what,
            left = set.len(),
            "Tasks did not stop in time; aborting them."
        );
        set.shutdown().await;
    }
}

/// Starts the fair-share refresh (every 2 s when something changed) and its metrics. Returns
/// the shared ledger, which the usage accounting loads, charges and persists.
fn fair_share(
    tasks: &mut Tasks,
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
    let stop = tasks.shutdown.wait();
    tasks.read("fair-share refresh", until(stop, refresher.run()));
    Ok(ledger)
}

/// What one leadership term's rotation loop is built from.
struct RotationWiring {
    client: kube::Client,
    config: Arc<ValidConfig>,
    view: Arc<ClusterView>,
    index: Arc<RotatedOutIndex>,
    metrics: RotationMetrics,
    identity: String,
    /// Checked before every action too, so nothing starts after leadership is lost.
    leader: watch::Receiver<bool>,
}

impl RotationWiring {
    /// A fresh rotation loop (its planner's short memory starts empty, as after a restart),
    /// running until `stop`; dry run follows `rotation.dryRun` (default true).
    fn start(&self, stop: impl Future<Output = ()> + Send + 'static) -> BoxFuture<'static, ()> {
        let (view, index, config) = (self.view.clone(), self.index.clone(), self.config.clone());
        let planner = CorePlanner::new(
            move |now: Timestamp| {
                let now = clock::seconds(now);
                if !(view.is_synced() && index.is_synced()) {
                    // Until the first lists are in, a tenant's running or rotated-out work may
                    // be missing: plan nothing rather than rotate from half a picture.
                    tracing::info!("Rotation waits for the first lists of Pods, Jobs and VMs.");
                    return crate::core::rotation::PlanInput {
                        now,
                        ..Default::default()
                    };
                }
                let (rotated, marks) = (index.list(), index.marks());
                view.with_snapshot(|s| build_plan_input(s, &rotated, &marks, &config, now))
            },
            Duration::from_secs(self.config.quantum.max_seconds),
        );
        let actuators = KubeActuators::new(KubeContext::new(
            self.client.clone(),
            self.identity.clone(),
            clock::system(),
        ))
        .with_max_warning(self.config.rotation.warning.max_seconds);
        let settings = LoopSettings::from_config(&self.config);
        tracing::info!(
            dry_run = settings.dry_run,
            interval_seconds = settings.interval.as_secs(),
            "Rotation loop starting (this replica leads)."
        );
        let rotation = RotationLoop::new(
            planner,
            Arc::new(actuators),
            self.leader.clone(),
            self.metrics.clone(),
            settings,
            clock::system(),
        );
        Box::pin(rotation.run(stop))
    }
}

/// Runs the loops `term` builds while `leader` reads `true`: starts them as one group when
/// this replica becomes leader, and stops them as one group (their stop signal, then at most
/// [`WRITE_STOP_GRACE`]) when it stops leading or the process shuts down.
async fn while_leading(
    mut leader: watch::Receiver<bool>,
    shutdown: Shutdown,
    mut term: impl FnMut(Shutdown) -> Vec<(&'static str, BoxFuture<'static, ()>)>,
) {
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait() => return,
            became = async { leader.wait_for(|leading| *leading).await.is_ok() } => {
                if !became {
                    // The flag can no longer change to leading.
                    return shutdown.wait().await;
                }
            }
        }
        let term_stop = Shutdown::new();
        let mut set = JoinSet::new();
        let loops = term(term_stop.clone());
        let names: Vec<&str> = loops.iter().map(|(name, _)| *name).collect();
        tracing::info!(loops = ?names, "Leading: write loops started.");
        for (name, fut) in loops {
            set.spawn(watched(name, term_stop.clone(), fut));
        }
        let shutting_down = tokio::select! {
            biased;
            () = shutdown.wait() => true,
            lost = async { leader.wait_for(|leading| !*leading).await.is_ok() } => match lost {
                true => false,
                // The flag never changes again (no API server): lead until shutdown.
                false => {
                    shutdown.wait().await;
                    true
                }
            },
        };
        term_stop.start();
        join_within(&mut set, WRITE_STOP_GRACE, "write loops").await;
        if shutting_down {
            return;
        }
        tracing::info!("Stopped leading: write loops stopped.");
    }
}

/// Held-pod Events only while leading: the notices a follower's filter sends are dropped (the
/// pod is filtered again, and kube-scheduler's own FailedScheduling Event carries the reason).
struct LeaderOnly {
    sink: EventSink,
    leader: watch::Receiver<bool>,
}

impl HeldEventSink for LeaderOnly {
    fn emit<'a>(&'a self, pod: &'a HeldPod) -> BoxFuture<'a, ()> {
        if *self.leader.borrow() {
            HeldEventSink::emit(&self.sink, pod)
        } else {
            Box::pin(async {})
        }
    }
}

/// The reporter feeds the config asks for: agents always, dcgm-exporter when selected.
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

    #[tokio::test]
    async fn write_loops_run_only_during_a_leadership_term() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (flag, leader) = watch::channel(false);
        let shutdown = Shutdown::new();
        let running = Arc::new(AtomicUsize::new(0));
        let terms = Arc::new(AtomicUsize::new(0));
        let (r, t) = (running.clone(), terms.clone());
        let term = move |stop: Shutdown| {
            t.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            let fut: BoxFuture<'static, ()> = Box::pin(async move {
                r.fetch_add(1, Ordering::SeqCst);
                stop.wait().await;
                r.fetch_sub(1, Ordering::SeqCst);
            });
            vec![("probe", fut)]
        };
        let group = tokio::spawn(while_leading(leader, shutdown.clone(), term));
        let settle = || tokio::time::sleep(Duration::from_millis(50));
        settle().await;
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "not leading: nothing runs"
        );
        flag.send_replace(true);
        settle().await;
        assert_eq!(running.load(Ordering::SeqCst), 1, "leading: the group runs");
        flag.send_replace(false);
        settle().await;
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "stepped down: the group stopped"
        );
        flag.send_replace(true);
        settle().await;
        assert_eq!(
            terms.load(Ordering::SeqCst),
            2,
            "a new term starts a new group"
        );
        shutdown.start();
        tokio::time::timeout(Duration::from_secs(5), group)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "shutdown stops the group"
        );
    }
}
