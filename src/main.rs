//! The `rota` binary: one program, one subcommand per process kind.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rota::messages::print_stdout;
use tracing_subscriber::EnvFilter;

/// mimalloc, not the C library's allocator: rota allocates in bursts (a watch event's objects,
/// answers naming hundreds of nodes) that glibc serves with costly bin consolidation, and musl
/// (the static image) more slowly still. Measured in benches/README.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// rota: fair-share GPU scheduling for Kubernetes.
///
/// Containers and KubeVirt VMs take fair turns on scarce GPUs, with the stock kube-scheduler.
#[derive(Debug, Parser)]
#[command(name = "rota", version, about, long_about)]
struct Cli {
    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `rota=debug,kube=warn`).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    log: String,
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve kube-scheduler's extender calls (filter, prioritize, preempt), probes and metrics.
    Extender(rota::serve::ExtenderOptions),
    /// Sample the GPUs of this node through NVML and serve telemetry (a DaemonSet).
    Agent(rota::agent::AgentArgs),
    /// Replay a workload trace through the scheduling policies and compare fairness and
    /// efficiency (offline; with no arguments, a built-in synthetic workload).
    Simulate(rota::sim::SimulateArgs),
    /// Work with RotaConfig files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Explain why a pod waits: its queue position, its tenant's share and entitlement, what is
    /// ahead of it and an estimated start (asks a running extender).
    Explain(rota::extender::explain::ExplainArgs),
    /// Drive HTTP filter and prioritize requests at a running extender and report throughput
    /// and latency quantiles.
    Loadtest(rota::loadtest::LoadtestOptions),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a RotaConfig file and print the effective configuration.
    Check {
        /// The RotaConfig YAML file.
        file: PathBuf,
    },
    /// Print the default configuration.
    Default,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`| head`): nothing left to say, and no one to say it.
        Err(err) if closed_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rota: {}", error_message(&err));
            // clap's convention: 2 for a usage error, 1 for anything that failed at run time.
            match err.is::<rota::sim::UsageError>() {
                true => ExitCode::from(2),
                false => ExitCode::FAILURE,
            }
        }
    }
}

fn closed_pipe(err: &anyhow::Error) -> bool {
    (err.chain())
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The error chain on one line, each cause once. Many of rota's error types already show their
/// `#[source]` in their own message (thiserror's `{source}`, `#[from]`), so anyhow's `{:#}`
/// would print those causes twice; a cause whose text is already there is skipped.
fn error_message(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Extender(options) => runtime()?.block_on(rota::serve::run(options)),
        Command::Agent(args) => runtime()?.block_on(rota::agent::run(args)),
        Command::Explain(args) => runtime()?.block_on(rota::extender::explain::run_explain(args)),
        Command::Simulate(args) => rota::sim::run(args),
        Command::Loadtest(options) => runtime()?.block_on(rota::loadtest::run(options)),
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
        Command::Config(ConfigCommand::Default) => {
            print_stdout(&rota::config::ValidConfig::default().to_yaml())?;
            Ok(())
        }
    }
}

/// `rota config check`: diagnostics (every problem, or `config OK` and the warnings) on
/// stderr; stdout carries only the effective config, so it can be piped to a file.
fn config_check(file: &std::path::Path) -> anyhow::Result<()> {
    let config = rota::config::load(file).map_err(|err| match err {
        // That message names the file already.
        err @ rota::config::ConfigError::Io { .. } => anyhow::Error::new(err),
        err => anyhow::Error::new(err).context(format!("config file {}", file.display())),
    })?;
    eprintln!("config OK: {}", file.display());
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    print_stdout(&config.to_yaml())?;
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// kube's client logs every failed request at ERROR; rota reports an unreachable API server
/// itself, once per state change (see `rota::readiness`). Named in `--log`, it is kept.
const QUIET_KUBE_CLIENT: &str = "kube_client::client::builder=off";

fn init_logging(filter: &str, format: LogFormat) {
    let mut filter = EnvFilter::try_new(filter).unwrap_or_else(|err| {
        eprintln!("rota: invalid --log filter {filter:?} ({err}); using `info`");
        EnvFilter::new("info")
    });
    if !filter.to_string().contains("kube_client") {
        if let Ok(quiet) = QUIET_KUBE_CLIENT.parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
