//! SSE load generator: many idle clients on one instance, then events flowing to all of them.
//!
//! `sse_load URL KEY CLIENTS SERVER_PID [ANALYSES]` (run by `benches/sse_load.sh`, which
//! starts the server with slow partners so the analyses are idle for a while, then emit events):
//! 1. starts ANALYSES analyses (1 by default) and reads the server's resident memory
//!    (`/proc/PID/status`);
//! 2. opens CLIENTS SSE connections, 250 at a time, spread evenly over the analyses'
//!    `events_url`s, while the partners have not answered yet (no events flow). One analysis
//!    is the worst case: every event goes to every client at the same instant. Many analyses
//!    is the service's ordinary day: each client follows its own analysis (a lender's screen,
//!    a few people looking at it), and events arrive as each analysis's partners answer;
//! 3. reads the server's memory again: (after - before) / CLIENTS is the memory per idle client;
//! 4. as the partners answer, events flow to every client; each event's delivery latency is
//!    the time its bytes arrived minus its `at` stamp (same machine, same clock). Clients are
//!    raw sockets that only look for `"at":` in what they read, so the generator's own
//!    parsing does not delay the clock (an HTTP client library and a JSON parser per event,
//!    10,000 times per event, would measure the generator instead of the server);
//! 5. prints JSON: clients connected, memory per client, delivery p50/p99/max, events seen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// Opens `url` (http://host:port/path) as an SSE stream on a raw socket; returns once the
/// response headers said 200.
async fn raw_sse(url: &str) -> Result<tokio::net::TcpStream> {
    let rest = url.strip_prefix("http://").context("an http URL")?;
    let (host, path) = rest.split_at(rest.find('/').context("a path")?);
    let mut conn = tokio::net::TcpStream::connect(host).await?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(conn.read(&mut byte).await? == 1, "closed during headers");
        head.push(byte[0]);
    }
    anyhow::ensure!(head.starts_with(b"HTTP/1.1 200"), "not 200");
    Ok(conn)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 5 || args.len() == 6,
        "usage: sse_load URL KEY CLIENTS SERVER_PID [ANALYSES]"
    );
    let (url, key) = (args[1].clone(), args[2].clone());
    let clients: usize = args[3].parse()?;
    let pid: u32 = args[4].parse()?;
    let analyses: usize = args.get(5).map_or(Ok(1), |a| a.parse())?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;

    let mut events_urls = Vec::with_capacity(analyses);
    for _ in 0..analyses {
        let started: serde_json::Value = http
            .post(format!("{url}/v1/analyses"))
            .bearer_auth(&key)
            .json(&serde_json::json!({ "cpf": "529.982.247-25" }))
            .send()
            .await?
            .json()
            .await?;
        events_urls.push(format!(
            "{url}{}",
            started["events_url"].as_str().context("events_url")?
        ));
    }
    // Let the first events (accepted, started) go out before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;

    let connected = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let connecting = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for batch in 0..clients.div_ceil(250) {
        let mut opened = Vec::new();
        for i in 0..250.min(clients - batch * 250) {
            let events_url = events_urls[(batch * 250 + i) % analyses].clone();
            let (connected, completed, latencies) =
                (connected.clone(), completed.clone(), latencies.clone());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            opened.push(rx);
            tasks.push(tokio::spawn(async move {
                let Ok(mut conn) = raw_sse(&events_url).await else {
                    return;
                };
                connected.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(());
                let seen = benches::read_stamps(&mut conn, benches::now_ms()).await;
                if seen.completed {
                    completed.fetch_add(1, Ordering::Relaxed);
                }
                let mine = seen.latencies_ms;
                latencies.lock().unwrap().extend(mine);
            }));
        }
        for rx in opened {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
    }
    let connect_secs = connecting.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid)?;
    let n = connected.load(Ordering::Relaxed);
    eprintln!("{n} clients connected in {connect_secs:.1} s; waiting for the analysis to finish");
    for t in tasks {
        let _ = t.await;
    }
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| benches::percentile(&lat, p);
    println!(
        "{}",
        serde_json::json!({
            "analyses": analyses,
            "clients_connected": n,
            "clients_completed": completed.load(Ordering::Relaxed),
            "connect_seconds": connect_secs,
            "server_rss_before_kib": before,
            "server_rss_idle_kib": idle,
            "memory_per_idle_client_kib": (idle.saturating_sub(before)) as f64 / n.max(1) as f64,
            "live_deliveries": lat.len(),
            "delivery_p50_ms": pct(0.5),
            "delivery_p99_ms": pct(0.99),
            "delivery_max_ms": pct(1.0),
        })
    );
    Ok(())
}
