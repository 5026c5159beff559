//! The machine's floor for SSE fan-out: how fast could *any* server deliver one event to
//! 10,000 connections here, with one socket write per client?
//!
//! `sse_floor write PORT CLIENTS` and `sse_floor read PORT CLIENTS` (run by
//! `benches/sse_load.sh` after the real server's measurement, so both figures come from the
//! same run, on the same cores): the writer accepts CLIENTS loopback connections and, for each
//! of 7 events 300 ms apart, writes a chunk of the real events' size to every connection with
//! a blocking `write` (no HTTP, no runtime, no channels: the bare system call) and prints the
//! mean time of one write; the reader opens the connections as the same raw-socket clients
//! as `sse_load` and prints the delivery percentiles, measured the same way as against the
//! server.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

const EVENTS: u64 = 7;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: sse_floor write|read PORT CLIENTS");
    let port: u16 = args[2].parse()?;
    let clients: usize = args[3].parse()?;
    match args[1].as_str() {
        "write" => write(port, clients),
        "read" => read(port, clients),
        other => anyhow::bail!("unknown mode {other}"),
    }
}

fn read(port: u16, clients: usize) -> Result<()> {
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut tasks = Vec::with_capacity(clients);
        for _ in 0..clients {
            let mut conn = loop {
                match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    Ok(c) => break c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            let latencies = latencies.clone();
            tasks.push(tokio::spawn(async move {
                let seen = benches::read_stamps(&mut conn, 0).await;
                latencies.lock().unwrap().extend(seen.latencies_ms);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| benches::percentile(&lat, p);
    println!(
        "{}",
        serde_json::json!({
            "deliveries": lat.len(),
            "delivery_p50_ms": pct(0.5),
            "delivery_p99_ms": pct(0.99),
            "delivery_max_ms": pct(1.0),
        })
    );
    Ok(())
}

fn write(port: u16, clients: usize) -> Result<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (conn, _) = listener.accept()?;
        conn.set_nodelay(true)?;
        conns.push(conn);
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut write_us = Vec::new();
    for id in 1..=EVENTS {
        let last = id == EVENTS;
        // The size of a real `classification.progress` frame, chunk framing included.
        let data = format!(
            "{{\"at\":{},\"classified\":1000,\"total\":2000,\"partner\":\"movements\",\"page\":{id}}}",
            benches::now_ms()
        );
        let kind = if last {
            "analysis.completed"
        } else {
            "classification.progress"
        };
        let frame = format!("id: {id}\nevent: {kind}\ndata: {data}\n\n");
        let chunk = format!("{:x}\r\n{frame}\r\n", frame.len());
        let started = Instant::now();
        for c in &mut conns {
            c.write_all(chunk.as_bytes())?;
        }
        write_us.push(started.elapsed().as_secs_f64() * 1e6 / clients as f64);
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "{}",
        serde_json::json!({
            "clients": clients,
            "write_us_per_client": write_us.iter().sum::<f64>() / write_us.len() as f64,
        })
    );
    Ok(())
}
