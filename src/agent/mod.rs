//! The GPU node agent (`rota agent`): samples the node's GPUs and serves telemetry.
//!
//! ```text
//!   GpuSource (NVML | script) ─blocking thread─▶ sampler ─▶ newest NodeSample ─▶ /v1/telemetry
//!                                    stamp, XID history, grade ─┘          └──▶ /metrics
//! ```
//!
//! Invariants: the sampler is the only writer of the newest sample; handlers only read it.
//! NVML and file reads never run on the async runtime. The agent does not schedule anything:
//! it reports, and the extender decides.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;

pub mod metrics;
pub mod nvml;
pub mod scripted;
pub mod service;
pub mod source;

/// The health grader lives in the policy core; re-exported under its old path.
pub use crate::core::health;
/// The snapshot types live in the policy core; re-exported under their old path.
pub use crate::core::telemetry as snapshot;

pub use health::{grade, Health, HealthState};
pub use nvml::NvmlSource;
pub use scripted::{Script, ScriptedSource};
pub use service::{serve_agent, AgentHandler, AgentOptions, AgentState};
pub use snapshot::{GpuSample, NodeSample, ThrottleReason, VfioDevice};
pub use source::GpuSource;

use crate::config::ValidConfig;

/// Where the agent's readings come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// NVML on this node (`nvml`).
    Nvml,
    /// A replayed script (`file:PATH`), for demos and GPU-less test clusters.
    File(PathBuf),
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            _ if text == "nvml" => Ok(SourceSpec::Nvml),
            Some(("file", path)) if !path.is_empty() => Ok(SourceSpec::File(path.into())),
            _ => Err(format!(
                "unknown source {text:?}: expected `nvml` or `file:PATH`"
            )),
        }
    }
}

/// Flags of `rota agent`. Process concerns only; health thresholds come from `--config`.
#[derive(clap::Args, Clone, Debug)]
pub struct AgentArgs {
    /// Address to serve telemetry and metrics on: `HOST:PORT`, HOST an IP address or a name.
    #[arg(long, default_value = "0.0.0.0:9402", value_parser = crate::serve::parse_listen)]
    pub listen: String,
    /// Where readings come from: `nvml`, or `file:PATH` to replay a script.
    #[arg(long, default_value = "nvml")]
    pub source: SourceSpec,
    /// Seconds between samples (the first is taken at start; 1 to 86400).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub interval: u64,
    /// This node's name; the DaemonSet sets NODE_NAME from `spec.nodeName`. Required.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Root of sysfs, for finding GPUs bound to vfio-pci (tests point it elsewhere).
    #[arg(long, default_value = "/sys", hide = true)]
    pub sysfs_root: PathBuf,
    /// A RotaConfig file for the health thresholds (`telemetry`); defaults when absent.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let node_name = args
        .node_name
        .filter(|name| !name.trim().is_empty())
        .context("the node name is required: pass --node-name or set NODE_NAME")?;
    let config = match &args.config {
        Some(path) => load_config(path)?,
        None => ValidConfig::default(),
    };
    let source: Box<dyn GpuSource> = match args.source {
        SourceSpec::Nvml => {
            let root = args.sysfs_root.clone();
            Box::new(tokio::task::spawn_blocking(move || NvmlSource::new(root)).await?)
        }
        SourceSpec::File(path) => Box::new(ScriptedSource::load(&path)?),
    };
    let listener = tokio::net::TcpListener::bind(args.listen.as_str())
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let options = AgentOptions {
        node_name,
        interval: Duration::from_secs(args.interval),
        thresholds: config.telemetry.clone(),
        server: crate::http::ServerOptions::default(),
    };
    serve_agent(listener, source, options, crate::http::shutdown_signal()).await?;
    Ok(())
}

fn load_config(path: &Path) -> anyhow::Result<ValidConfig> {
    crate::config::load(path).with_context(|| format!("cannot use config {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse() {
        assert_eq!("nvml".parse(), Ok(SourceSpec::Nvml));
        assert_eq!(
            "file:/tmp/a.yaml".parse(),
            Ok(SourceSpec::File("/tmp/a.yaml".into()))
        );
        assert!("file:".parse::<SourceSpec>().is_err());
        assert!("dcgm".parse::<SourceSpec>().unwrap_err().contains("dcgm"));
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    #[test]
    fn flags_have_the_documented_defaults() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["rota", "--node-name", "gpu-1"]).unwrap();
        assert_eq!(cli.agent.listen, "0.0.0.0:9402");
        assert_eq!(cli.agent.source, SourceSpec::Nvml);
        assert_eq!(cli.agent.interval, 5);
        assert_eq!(cli.agent.sysfs_root, PathBuf::from("/sys"));
        assert!(Cli::try_parse_from(["rota", "--interval", "0"]).is_err());
    }

    #[tokio::test]
    async fn a_missing_node_name_is_a_clear_error() {
        let args = AgentArgs {
            listen: "127.0.0.1:0".into(),
            source: SourceSpec::Nvml,
            interval: 5,
            node_name: Some("  ".into()),
            sysfs_root: "/nonexistent".into(),
            config: None,
        };
        let err = run(args).await.unwrap_err().to_string();
        assert!(err.contains("NODE_NAME"), "{err}");
    }
}
