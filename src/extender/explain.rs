//! "Why is this pod pending": `GET /v1/explain/{namespace}/{pod}` on the extender, and the
//! `rota explain NAMESPACE/POD` client that asks it and prints a summary for a person.
//!
//! The endpoint is a thin adapter over `core::explain` (see there for the fields and the start
//! estimate). A pod the view does not know gets 404 with a JSON error.
//! Must not: change the view, or be called on the scheduler's hot path.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;

use crate::clock;
use crate::core::explain::{rotation_status, Explanation, PodState, RotationStatus};
use crate::core::fairshare::SharePolicy;
use crate::core::gate::gpus;
use crate::core::rotation_input::running_workload;
use crate::core::WorkloadId;
use crate::http::Response;

use super::Context;

/// Path prefix of the endpoint; `{namespace}/{pod}` follow.
pub const PATH_PREFIX: &str = "/v1/explain/";

/// The extender `rota explain` asks by default (the extender's default listen port).
pub const DEFAULT_EXTENDER_URL: &str = "http://127.0.0.1:8888";

/// How long `rota explain` waits for the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `GET /v1/explain/{namespace}/{pod}`.
pub fn handle(ctx: &Context, path: &str) -> Response {
    let Some((namespace, name)) = parse_path(path) else {
        return Response::error(
            StatusCode::BAD_REQUEST,
            format!("expected {PATH_PREFIX}NAMESPACE/POD, got {path}"),
        );
    };
    let policy = SharePolicy::from_config(&ctx.config);
    let now = clock::now_seconds();
    match ctx.view.explain(namespace, name, &policy, now) {
        Some(mut explanation) => {
            explanation.rotation = rotation(ctx, &explanation, now);
            encoded(&explanation)
        }
        // Without an API server the view learns Nodes from requests, never pods.
        None if ctx.learn_nodes => Response::error(
            StatusCode::NOT_FOUND,
            "explain needs a cluster: this extender runs with --cluster none, so it sees no pods; \
             run it with --cluster kube to explain pods",
        ),
        None => Response::error(
            StatusCode::NOT_FOUND,
            format!(
                "{namespace}/{name} is not in rota's cluster view: no pod or workload of that name \
                 holds or waits for a managed GPU (it does not exist, is stopped, or has not been \
                 seen yet)"
            ),
        ),
    }
}

/// The rotation side of a running workload's explanation (module `core::explain`).
fn rotation(ctx: &Context, e: &Explanation, now: f64) -> Option<RotationStatus> {
    if e.state != PodState::Running {
        return None;
    }
    let id = WorkloadId::parse(&e.workload)?;
    let marks = ctx.rotation_marks.as_ref().and_then(|m| m.marks_of(&id));
    let w = ctx
        .view
        .with_snapshot(|s| running_workload(s, &id, marks.as_ref(), &ctx.config, now))?;
    let t = &e.tenant_share;
    let share = t.entitled.map(|entitled| (t.held as f64, entitled));
    Some(rotation_status(
        &w,
        share,
        ctx.config.rotation.margin_gpus,
        now,
    ))
}

fn encoded(explanation: &Explanation) -> Response {
    match serde_json::to_vec(explanation) {
        Ok(body) => Response::json(StatusCode::OK, body),
        Err(err) => Response::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the explanation: {err}"),
        ),
    }
}

/// `{namespace}/{pod}` after the prefix: two non-empty segments.
fn parse_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(PATH_PREFIX)?;
    let (namespace, name) = rest.split_once('/')?;
    let ok = |s: &str| !s.is_empty() && !s.contains('/');
    (ok(namespace) && ok(name)).then_some((namespace, name))
}

/// Flags of `rota explain`.
#[derive(Clone, Debug, clap::Args)]
pub struct ExplainArgs {
    /// The pod, as NAMESPACE/POD.
    #[arg(value_name = "NAMESPACE/POD")]
    pub pod: String,
    /// Base URL of a rota extender.
    #[arg(long, env = "ROTA_EXTENDER", default_value = DEFAULT_EXTENDER_URL)]
    pub extender: String,
}

/// `rota explain`: asks the extender and prints a summary.
pub async fn run_explain(args: ExplainArgs) -> anyhow::Result<()> {
    let explanation = fetch(&args.extender, &args.pod).await?;
    crate::messages::print_stdout(&summary(&explanation))?;
    Ok(())
}

/// Fetches the explanation of `pod` (`NAMESPACE/POD`) from the extender at `base`.
pub async fn fetch(base: &str, pod: &str) -> anyhow::Result<Explanation> {
    let (namespace, name) = pod
        .split_once('/')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty() && !p.contains('/'))
        .with_context(|| format!("expected NAMESPACE/POD, got {pod:?}"))?;
    let url = format!(
        "{}{PATH_PREFIX}{namespace}/{name}",
        base.trim_end_matches('/')
    );
    let uri: hyper::Uri = url.parse().with_context(|| format!("invalid URL {url}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let exchange = async {
        let response = client.get(uri).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .with_context(|| format!("no answer from {url} within {CLIENT_TIMEOUT:?}"))?
        .with_context(|| format!("asking {url}"))?;
    if status != StatusCode::OK {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        anyhow::bail!("{url} answered {status}: {message}");
    }
    serde_json::from_slice(&body).with_context(|| format!("decoding the answer of {url}"))
}

/// A few lines for a person.
pub fn summary(e: &Explanation) -> String {
    let mut out = String::new();
    let resource = e.resource.as_deref().unwrap_or("no GPU");
    let state = match e.state {
        PodState::Waiting => "waiting in the fair-share queue",
        PodState::Admitted => "admitted, being placed",
        PodState::Running => "running",
        PodState::Finished => "finished",
        PodState::NotQueued => "not queued",
    };
    let _ = writeln!(out, "Pod {} ({}): {state}.", e.pod, e.workload);
    if let Some(position) = e.position {
        let _ = writeln!(
            out,
            "Position {position} of {} for {resource}; it needs {} GPUs, {} are waited for ahead of it; {} free, {} reserved.",
            e.queue_length, e.gpus, e.gpus_ahead, e.free_gpus, e.reserved_gpus
        );
    }
    let t = &e.tenant_share;
    let entitled = t.entitled.map_or_else(|| "unknown".to_string(), gpus);
    let usage = t
        .usage_gpu_seconds
        .map_or_else(|| "unknown".to_string(), |u| format!("{:.0}", u / 3600.0));
    let _ = writeln!(
        out,
        "Tenant {} (weight {}): holds {} GPUs, entitled to {entitled}, {} pending in {} workloads; decayed usage {usage} GPU-hours.",
        e.tenant,
        gpus(t.weight),
        t.held,
        t.pending,
        t.pending_workloads
    );
    if !e.ahead.is_empty() {
        let _ = writeln!(out, "Ahead of it ({} in all):", e.ahead_count);
        for a in &e.ahead {
            let _ = writeln!(
                out,
                "  {} (tenant {}, {} GPUs, priority {})",
                a.workload, a.tenant, a.gpus, a.priority
            );
        }
    }
    if let Some(r) = &e.rotation {
        let _ = writeln!(out, "Rotation: {}.", r.detail);
    }
    let _ = writeln!(out, "Gate: {}.", e.gate);
    let start = match e.estimated_start.seconds {
        Some(s) if s <= 0.0 => "now".to_string(),
        Some(s) => format!("in about {}", human_duration(s)),
        None => "unknown".to_string(),
    };
    let _ = writeln!(
        out,
        "Estimated start: {start} ({}).",
        e.estimated_start.basis
    );
    out
}

fn human_duration(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_need_a_namespace_and_a_pod() {
        assert_eq!(parse_path("/v1/explain/ns/p"), Some(("ns", "p")));
        assert_eq!(parse_path("/v1/explain/ns/"), None);
        assert_eq!(parse_path("/v1/explain/ns"), None);
        assert_eq!(parse_path("/v1/explain/ns/p/x"), None);
        assert_eq!(parse_path("/v1/explain//p"), None);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(30.0), "30 s");
        assert_eq!(human_duration(600.0), "10 min");
        assert_eq!(human_duration(7200.0), "2.0 h");
        assert_eq!(human_duration(3.0 * 86_400.0), "3.0 days");
    }
}
