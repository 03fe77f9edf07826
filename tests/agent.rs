//! The whole agent over real HTTP on 127.0.0.1: a scripted source (two GPUs; GPU 0 heats up,
//! throttles, then hits XID 79) replayed 100x faster than written, served by `serve_agent` on
//! a listener bound to port 0, polled until GPU 0 is graded unhealthy, then shut down.

use std::path::Path;
use std::time::{Duration, Instant};

use rota::agent::{serve_agent, AgentOptions, HealthState, NodeSample, Script, ScriptedSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Script seconds per real second.
const SPEED_UP: f64 = 100.0;

/// One HTTP/1.1 GET with `Connection: close`; returns the status code and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no header end in {raw:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?
        .parse()?;
    Ok((status, body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_agent_reports_the_xid_gpu_unhealthy_over_http() -> anyhow::Result<()> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/agent/two-gpus.yaml");
    let script = Script::load(&file)?;
    let start = Instant::now();
    let clock = move || start.elapsed().as_secs_f64() * SPEED_UP;
    let source = ScriptedSource::with_clock(script, Box::new(clock));

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = AgentOptions {
        node_name: "gpu-node-1".into(),
        interval: Duration::from_millis(20),
        thresholds: rota::config::TelemetryConfig::default(),
        server: rota::http::ServerOptions::default(),
    };
    let shutdown = async move {
        let _ = stopped.await;
    };
    let agent = tokio::spawn(serve_agent(listener, Box::new(source), options, shutdown));

    let (status, body) = get(addr, "/healthz").await?;
    assert_eq!((status, body.as_str()), (200, "ok"));

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let sample = loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "GPU 0 never became unhealthy: {seen:?}"
        );
        let (status, body) = get(addr, "/v1/telemetry").await?;
        if status == 503 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        assert_eq!(status, 200, "{body}");
        let sample: NodeSample = serde_json::from_str(&body)?;
        let state = sample.gpus[0].health.state;
        seen.push(state);
        if state == HealthState::Unhealthy {
            break sample;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The script only gets worse for GPU 0, whatever the timing: healthy, degraded, unhealthy.
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(sample.node_name, "gpu-node-1");
    assert!(sample.gpus[0].health.reasons.iter().any(|r| r == "XID 79"));
    assert_eq!(sample.gpus[1].health.state, HealthState::Healthy);
    assert_eq!(sample.health.state, HealthState::Unhealthy);
    assert!(sample
        .health
        .reasons
        .iter()
        .any(|r| r.starts_with("GPU 0: ")));

    let (status, metrics) = get(addr, "/metrics").await?;
    assert_eq!(status, 200);
    let health0 = metrics
        .lines()
        .find(|l| l.starts_with("rota_gpu_health{") && l.contains(r#"gpu="0""#))
        .ok_or_else(|| anyhow::anyhow!("no rota_gpu_health for GPU 0 in {metrics}"))?;
    assert!(health0.contains(r#"node="gpu-node-1""#), "{health0}");
    assert!(health0.ends_with(" 2"), "{health0}");

    let (status, _) = get(addr, "/nope").await?;
    assert_eq!(status, 404);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), agent).await???;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
    Ok(())
}
