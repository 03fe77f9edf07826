//! `rota extender`: flags and wiring of the extender process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus::Registry;

use crate::config::{self, ValidConfig};
use crate::http::{self, ServerOptions, TlsFiles};
use crate::metrics::ClusterCollector;
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
    /// Serve HTTPS with this PEM certificate chain (for `enableHTTPS: true`); needs --tls-key-file.
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for --tls-cert-file.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
}

impl ExtenderOptions {
    fn server_options(&self) -> ServerOptions {
        ServerOptions {
            max_body_bytes: self.max_body_bytes,
            header_read_timeout: Duration::from_secs(self.header_timeout_seconds.max(1)),
            body_read_timeout: Duration::from_secs(self.body_timeout_seconds.max(1)),
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
pub async fn run(options: ExtenderOptions) -> anyhow::Result<()> {
    let config = load_config(options.config.as_deref())?;
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(&config)));
    let registry = Registry::new();
    ClusterCollector::register(&registry, view.clone()).context("registering metrics")?;

    match options.cluster {
        ClusterMode::Kube => {
            let client = kube::Client::try_default().await.context(
                "connecting to the Kubernetes API (use --cluster none to run without one)",
            )?;
            tokio::spawn(watch_forever(client, view.clone()));
        }
        ClusterMode::None => view.set_synced(true),
    }

    let ctx = Context {
        view,
        config: Arc::new(config),
        learn_nodes: options.cluster == ClusterMode::None,
    };
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
    http::serve(
        listener,
        Arc::new(extender),
        options.server_options(),
        http::shutdown_signal(),
    )
    .await
    .context("serving HTTP")?;
    tracing::info!("Extender stopped.");
    Ok(())
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

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<ValidConfig> {
    match path {
        Some(path) => config::load(path).with_context(|| format!("loading {}", path.display())),
        None => {
            tracing::info!("No --config given: using the embedded defaults.");
            Ok(ValidConfig::default())
        }
    }
}
