//! The telemetry collector against real sockets on 127.0.0.1: a scripted rota agent, a
//! dcgm-exporter page, and hand-written misbehaving servers (slow, dead, lying about its node,
//! stamped in the future, malformed JSON). The good nodes get fresh data; every bad one is
//! marked unknown (never healthy), and the extender's verbs keep answering over the same view.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rota::agent::{serve_agent, AgentOptions, Script, ScriptedSource};
use rota::config::{TelemetryConfig, ValidConfig};
use rota::core::health::{self, grade_sample, HealthState, Reading, TelemetryRules};
use rota::core::telemetry::{NodeSample, TelemetrySource};
use rota::core::GpuNode;
use rota::extender::{verbs, Context};
use rota::metrics::TelemetryMetrics;
use rota::read::telemetry::agents::{AgentDirectory, Target};
use rota::read::telemetry::collector::{Collector, CollectorOptions, POLL_RESULTS};
use rota::read::telemetry::dcgm;
use rota::read::view::{ClusterView, ViewSettings};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Two GPUs: GPU 0 healthy, GPU 1 reports XID 79 (fell off the bus).
const SCRIPT: &str = "\
frames:
  - atSeconds: 0
    gpus:
      - {index: 0, uuid: GPU-aaaaaaaa-0000, temperatureCelsius: 40, xidErrors: [],
         utilizationGpuRatio: 0.1, memoryTotalBytes: 1000, memoryUsedBytes: 100}
      - {index: 1, uuid: GPU-bbbbbbbb-1111, temperatureCelsius: 50, xidErrors: [79]}
";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Serves the scripted agent as `node`; drop or send on the returned sender to stop it.
async fn start_agent(node: &str) -> anyhow::Result<(SocketAddr, oneshot::Sender<()>)> {
    let script = Script::parse(SCRIPT, false).map_err(anyhow::Error::msg)?;
    let source = ScriptedSource::with_clock(script, Box::new(|| 0.0));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let options = AgentOptions {
        node_name: node.into(),
        interval: Duration::from_millis(20),
        thresholds: TelemetryConfig::default(),
        server: rota::http::ServerOptions::default(),
    };
    let shutdown = async move {
        let _ = stopped.await;
    };
    tokio::spawn(serve_agent(listener, Box::new(source), options, shutdown));
    // The first sample is taken at once; wait until it is served.
    for _ in 0..200 {
        if raw_get(addr).await.is_ok_and(|r| r.contains(" 200 ")) {
            return Ok((addr, stop));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the agent never served a sample")
}

async fn raw_get(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = "GET /v1/telemetry HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// A hand-written HTTP/1.1 server: waits `delay`, then answers every request with `body`.
async fn start_raw(body: String, content_type: &'static str, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            });
        }
    });
    addr
}

/// An address nothing listens on (bound, then closed): connections are refused.
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

fn sample_json(node: &str, sampled_at: f64) -> String {
    let sample = NodeSample {
        node_name: node.into(),
        sampled_at_unix_seconds: sampled_at,
        ..NodeSample::new()
    };
    serde_json::to_string(&sample).expect("encodes")
}

fn view_with(nodes: &[&str]) -> Arc<ClusterView> {
    let view = Arc::new(ClusterView::new(ViewSettings::from_config(
        &ValidConfig::default(),
    )));
    for name in nodes {
        view.apply_gpu_node(GpuNode {
            name: (*name).into(),
            ready: true,
            allocatable: [("nvidia.com/gpu".to_string(), 2)].into(),
            ..GpuNode::default()
        });
    }
    view.set_synced(true);
    view
}

fn target(node: &str, addr: SocketAddr) -> Target {
    format!("{node}=http://{addr}").parse().expect("valid flag")
}

fn options(timeout_ms: u64) -> CollectorOptions {
    CollectorOptions {
        timeout: Duration::from_millis(timeout_ms),
        ..CollectorOptions::from_config(&TelemetryConfig::default())
    }
}

fn reading_of(view: &ClusterView, node: &str, at: f64) -> String {
    let config = TelemetryConfig::default();
    let rules = TelemetryRules {
        config: &config,
        now_unix_seconds: at,
    };
    view.with_snapshot(|s| {
        let node = s.node(node).expect("node in view");
        match health::reading(node, &rules) {
            Reading::Fresh(t) => format!("fresh {} GPUs", t.gpus().len()),
            Reading::Unknown(cause) => format!("unknown: {cause}"),
            other => format!("{other:?}"),
        }
    })
}

fn filter_body(gpus: u64, nodes: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "Pod": {"metadata": {"name": "p", "namespace": "team-a", "uid": "u1"},
                "spec": {"containers": [{"name": "m",
                         "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]}},
        "NodeNames": nodes,
    }))
    .expect("encodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reporters_are_unknown_good_ones_fresh_and_the_extender_keeps_answering(
) -> anyhow::Result<()> {
    let (good, _stop) = start_agent("good").await?;
    let json = rota::http::JSON;
    let slow = start_raw(sample_json("slow", now()), json, Duration::from_secs(5)).await;
    let liar = start_raw(sample_json("someone-else", now()), json, Duration::ZERO).await;
    let future = start_raw(sample_json("future", now() + 3600.0), json, Duration::ZERO).await;
    let garbage = start_raw("{\"apiVersion\": \"rota.io/v1".into(), json, Duration::ZERO).await;
    let dead = dead_address().await;
    let nodes = ["good", "slow", "liar", "future", "garbage", "dead"];
    let addrs = [good, slow, liar, future, garbage, dead];
    let view = view_with(&nodes);
    let targets = nodes.iter().zip(addrs).map(|(n, a)| target(n, a)).collect();
    let directory = Arc::new(AgentDirectory::new(targets));
    let registry = prometheus::Registry::new();
    let metrics = TelemetryMetrics::register(&registry, &POLL_RESULTS)?;
    let mut collector = Collector::new(view.clone(), directory, options(300), Some(metrics));

    let report = collector.poll_round().await;
    assert_eq!((report.polled, report.ok, report.failed), (6, 1, 5));

    let t = now();
    assert_eq!(reading_of(&view, "good", t), "fresh 2 GPUs");
    let expectations = [
        ("slow", "no answer within"),
        ("liar", "claims to be node \"someone-else\""),
        ("future", "in the future"),
        ("garbage", "malformed"),
        ("dead", "request failed"),
    ];
    for (node, text) in expectations {
        let got = reading_of(&view, node, t);
        assert!(
            got.starts_with("unknown: no valid report yet"),
            "{node}: {got}"
        );
        assert!(got.contains(text), "{node}: {got}");
    }
    let exposition = String::from_utf8(rota::metrics::render(&registry))?;
    for code in [
        "ok",
        "timeout",
        "wrong_node",
        "future_clock",
        "malformed",
        "connect",
    ] {
        let line = format!("rota_telemetry_polls_total{{result=\"{code}\"}} 1");
        assert!(exposition.contains(&line), "{code}: {exposition}");
    }

    // The extender answers over the same view: the good node's unhealthy GPU makes it too
    // small for two GPUs; unknown nodes pass under the default `allow` policy.
    let ctx = Context {
        view: view.clone(),
        config: Arc::new(ValidConfig::default()),
        learn_nodes: false,
        held_events: None,
        rotation_marks: None,
    };
    let answer: serde_json::Value =
        serde_json::from_slice(&verbs::filter(&ctx, &filter_body(2, &nodes))?)?;
    let reason = answer["FailedAndUnresolvableNodes"]["good"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("1 usable free GPU, the pod needs 2"),
        "{answer}"
    );
    assert!(
        reason.contains("GPU 1 (GPU-bbbbbbbb…) unhealthy: XID 79"),
        "{answer}"
    );
    assert_eq!(answer["NodeNames"], json!(nodes[1..]));
    let scores: serde_json::Value =
        serde_json::from_slice(&verbs::prioritize(&ctx, &filter_body(1, &nodes))?)?;
    // A HostPriorityList; sparse by default, so only hosts above the lowest score are listed.
    assert!(scores.as_array().is_some_and(|a| a.len() <= 6), "{scores}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_failed_poll_then_turns_unknown_when_stale() -> anyhow::Result<()> {
    let (addr, stop) = start_agent("n1").await?;
    let view = view_with(&["n1"]);
    let directory = Arc::new(AgentDirectory::new(vec![target("n1", addr)]));
    let mut collector = Collector::new(view.clone(), directory, options(300), None);
    assert_eq!(collector.poll_round().await.ok, 1);

    let _ = stop.send(());
    // Wait until the agent no longer accepts connections.
    for _ in 0..100 {
        if raw_get(addr).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(collector.poll_round().await.failed, 1);
    let t = now();
    // Still within staleAfterSeconds: the earlier data stands, with the error recorded.
    assert_eq!(reading_of(&view, "n1", t), "fresh 2 GPUs");
    let error = view.with_snapshot(|s| {
        let telemetry = s.node("n1").and_then(|n| n.telemetry.clone());
        telemetry.and_then(|t| t.last_error.clone())
    });
    assert!(error.is_some_and(|e| e.contains("request failed")));
    // Past the limit it is unknown, never healthy.
    let later = reading_of(&view, "n1", t + 31.0);
    assert!(
        later.starts_with("unknown: last report 31 s old"),
        "{later}"
    );
    Ok(())
}

fn dcgm_page() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dcgm/metrics.txt");
    std::fs::read_to_string(path).expect("dcgm fixture")
}

#[test]
fn a_realistic_dcgm_exporter_page_parses_and_grades() {
    let mut sample = dcgm::parse(&dcgm_page()).expect("parses");
    grade_sample(&mut sample, &TelemetryConfig::default());
    assert_eq!(sample.driver_version.as_deref(), Some("550.54.15"));
    assert_eq!(sample.gpus.len(), 4);
    let busy = &sample.gpus[1];
    assert_eq!(busy.uuid, "GPU-7a0d4f21-0b3e-4d8a-9a61-2f6d5e4c3b02");
    assert_eq!(busy.name.as_deref(), Some("NVIDIA A100-SXM4-40GB"));
    assert_eq!(busy.pci_bus_id.as_deref(), Some("00000000:0F:00.0"));
    assert_eq!(busy.utilization_gpu_ratio, Some(0.98));
    assert_eq!(busy.utilization_memory_ratio, Some(0.61));
    assert_eq!(busy.memory_used_bytes, Some(38210 << 20));
    assert_eq!(busy.memory_total_bytes, Some((38210 + 2326) << 20));
    assert_eq!(busy.temperature_celsius, Some(91.0));
    assert_eq!(busy.power_draw_watts, Some(398.7));
    assert_eq!(busy.sm_clock_mhz, Some(1275));
    let states: Vec<HealthState> = sample.gpus.iter().map(|g| g.health.state).collect();
    use HealthState::*;
    assert_eq!(states, [Healthy, Degraded, Unhealthy, Unhealthy]);
    assert_eq!(sample.gpus[2].health.reasons, ["XID 79"]);
    assert!(sample.gpus[3].health.reasons[0].contains("2 uncorrected"));
    assert!(busy.health.reasons.iter().any(|r| r.contains("thermal")));
}

#[test]
fn a_mangled_dcgm_page_never_panics() {
    let page = dcgm_page();
    for cut in (0..page.len()).step_by(97) {
        let Some(prefix) = page.get(..cut) else {
            continue;
        };
        let _ = dcgm::parse(prefix);
        let _ = dcgm::parse(&prefix.replace('"', ""));
    }
    assert!(dcgm::parse("").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcgm_exporter_endpoints_are_polled_as_a_source() -> anyhow::Result<()> {
    let text = rota::http::PROMETHEUS_TEXT;
    let addr = start_raw(dcgm_page(), text, Duration::ZERO).await;
    let view = view_with(&["a100"]);
    let flag: Target = format!("a100=http://{addr}/metrics")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let directory = Arc::new(AgentDirectory::new(vec![flag]));
    let mut collector = Collector::new(view.clone(), directory, options(1000), None);
    assert_eq!(collector.poll_round().await.ok, 1);
    let telemetry = view
        .with_snapshot(|s| s.node("a100").and_then(|n| n.telemetry.clone()))
        .ok_or_else(|| anyhow::anyhow!("no telemetry stored"))?;
    assert_eq!(telemetry.source, TelemetrySource::DcgmExporter);
    let unhealthy: Vec<u32> = telemetry
        .gpus()
        .iter()
        .filter(|g| g.state == HealthState::Unhealthy)
        .map(|g| g.index)
        .collect();
    assert_eq!(unhealthy, [2, 3]);
    // The page has no timestamps, so the receive time is the sample time: fresh now.
    let at = telemetry.sampled_at_unix_seconds.unwrap_or_default();
    assert!((now() - at).abs() < 60.0);
    assert!(matches!(
        reading_of(&view, "a100", now() + 3600.0).as_str(),
        s if s.starts_with("unknown: last report")
    ));
    Ok(())
}
