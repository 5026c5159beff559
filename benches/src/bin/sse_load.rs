//! SSE load generator: many idle clients on one instance, then events flowing to all of them.
//!
//! `sse_load URL KEY CLIENTS SERVER_PID` (run by `benches/sse_load.sh`, which starts the
//! server with slow partners so the analysis is idle for a while, then emits events):
//! 1. starts one analysis and reads the server's resident memory (`/proc/PID/status`);
//! 2. opens CLIENTS SSE connections to the analysis's `events_url`, 250 at a time, while the
//!    partners have not answered yet (no events flow);
//! 3. reads the server's memory again: (after - before) / CLIENTS is the memory per idle client;
//! 4. as the partners answer, events flow to every client; each event's delivery latency is
//!    the time it arrived minus its `at` stamp (same machine, same clock);
//! 5. prints JSON: clients connected, memory per client, delivery p50/p99/max, events seen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;

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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 5,
        "usage: sse_load URL KEY CLIENTS SERVER_PID"
    );
    let (url, key) = (args[1].clone(), args[2].clone());
    let clients: usize = args[3].parse()?;
    let pid: u32 = args[4].parse()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;

    let started: serde_json::Value = http
        .post(format!("{url}/v1/analyses"))
        .bearer_auth(&key)
        .json(&serde_json::json!({ "cpf": "529.982.247-25" }))
        .send()
        .await?
        .json()
        .await?;
    let events_url = format!(
        "{url}{}",
        started["events_url"].as_str().context("events_url")?
    );
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
        for _ in 0..250.min(clients - batch * 250) {
            let (http, events_url) = (http.clone(), events_url.clone());
            let (connected, completed, latencies) =
                (connected.clone(), completed.clone(), latencies.clone());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            opened.push(rx);
            tasks.push(tokio::spawn(async move {
                let response = match http.get(&events_url).send().await {
                    Ok(r) if r.status().is_success() => r,
                    _ => return,
                };
                connected.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(());
                let mut stream = response.bytes_stream().eventsource();
                let mut mine = Vec::new();
                // Events replayed on connect were not "delivered live": skip what was sent
                // before this client arrived.
                let joined = now_ms();
                while let Some(Ok(e)) = stream.next().await {
                    if let Ok(d) = serde_json::from_str::<serde_json::Value>(&e.data) {
                        if let Some(at) = d["at"].as_u64() {
                            if at >= joined {
                                mine.push(now_ms().saturating_sub(at));
                            }
                        }
                    }
                    if e.event == "analysis.completed" || e.event == "analysis.failed" {
                        completed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
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
    let pct = |p: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
    };
    println!(
        "{}",
        serde_json::json!({
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
