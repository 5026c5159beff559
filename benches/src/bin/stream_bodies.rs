//! What large and hostile classification-stream bodies cost a running core-api process.
//!
//! `stream_bodies URL KEY SERVER_PID CASE` runs one case against a server that
//! `benches/stream_bodies.sh` starts afresh for each:
//! - `array`: posts a 64 MiB JSON array of rows (`application/json`), generated as it is
//!   sent, and reads the SSE answer to its end, while sampling the server's resident memory
//!   every 10 ms (and reading its kernel-kept peak, `VmHWM`, reset before the case);
//! - `ndjson`: the same rows as 64 MiB of NDJSON;
//! - `blank`: 8 MiB of blank NDJSON lines, twice at once, while `/healthz` is asked every
//!   20 ms: how long the bodies take and the slowest health answer meanwhile.
//!
//! Prints the case's figures as one JSON object.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;

const ROW_TARGET_BYTES: usize = 64 * 1024 * 1024;
const BLANK_BYTES: usize = 8 * 1024 * 1024;

/// A field of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} of process {pid}"))
}

/// Resets the process's peak resident size to its current one (`clear_refs` 5).
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting VmHWM")
}

/// One row as NDJSON or as an array element; about 120 bytes.
fn row(i: usize) -> String {
    let merchants = [
        "PAG*IFOOD RESTAURANTE",
        "AUTO POSTO SAO JORGE LTDA",
        "PIX ENVIADO MARIA SILVA",
        "DROGARIA CENTRAL",
        "NETFLIX.COM",
        "TARIFA PACOTE SERVICOS",
    ];
    format!(
        r#"{{"id":"r{i}","description":"{} {}","amount":-{}.{:02},"type":"cartao"}}"#,
        merchants[i % merchants.len()],
        i % 997,
        10 + i % 900,
        i % 100
    )
}

/// The body, made as it is sent: `array` wraps the rows in `[` `,` `]`, else one per line.
fn rows_body(array: bool) -> (reqwest::Body, usize) {
    let rows = ROW_TARGET_BYTES / (row(0).len() + 1);
    let chunks = futures_util::stream::iter((0..rows).step_by(1000).map(move |start| {
        let mut chunk = String::with_capacity(130 * 1000);
        for i in start..(start + 1000).min(rows) {
            match (array, i) {
                (true, 0) => chunk.push('['),
                (true, _) => chunk.push(','),
                (false, _) => {}
            }
            chunk.push_str(&row(i));
            if !array {
                chunk.push('\n');
            }
        }
        if array && start + 1000 >= rows {
            chunk.push(']');
        }
        Ok::<_, std::io::Error>(chunk)
    }));
    (reqwest::Body::wrap_stream(chunks), rows)
}

/// Reads an SSE answer to its end; returns the final event's name and data.
async fn read_to_end(r: reqwest::Response) -> Result<(String, serde_json::Value)> {
    if r.status() != 200 {
        bail!("answered {}: {}", r.status(), r.text().await?);
    }
    let mut events = r.bytes_stream().eventsource();
    let mut last = (String::new(), serde_json::Value::Null);
    while let Some(e) = events.next().await {
        let e = e?;
        if e.event != "classification.results" {
            last = (e.event, serde_json::from_str(&e.data).unwrap_or_default());
        }
    }
    Ok(last)
}

async fn rows_case(url: &str, key: &str, pid: u32, array: bool) -> Result<serde_json::Value> {
    let http = reqwest::Client::new();
    let before = status_kib(pid, "VmRSS:")?;
    reset_peak(pid)?;
    let (body, rows) = rows_body(array);
    let kind = if array {
        "application/json"
    } else {
        "application/x-ndjson"
    };
    let sampling = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            match status_kib(pid, "VmRSS:") {
                Ok(kib) => peak = peak.max(kib),
                Err(_) => return peak,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let started = Instant::now();
    let r = http
        .post(format!("{url}/v1/classifications/stream"))
        .bearer_auth(key)
        .header("content-type", kind)
        .body(body)
        .send()
        .await?;
    let (last, data) = read_to_end(r).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let hwm = status_kib(pid, "VmHWM:")?;
    sampling.abort();
    let sampled = sampling.await.unwrap_or(0);
    Ok(serde_json::json!({
        "case": if array { "64 MiB JSON array" } else { "64 MiB NDJSON" },
        "rows": rows,
        "final_event": last,
        "classified": data["classified"],
        "seconds": (elapsed * 100.0).round() / 100.0,
        "rows_per_sec": (rows as f64 / elapsed).round(),
        "rss_before_mib": before / 1024,
        "peak_rss_mib": hwm.max(sampled) / 1024,
        "peak_growth_mib": hwm.max(sampled).saturating_sub(before) / 1024,
    }))
}

async fn blank_case(url: &str, key: &str) -> Result<serde_json::Value> {
    let http = reqwest::Client::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (http, url, stop) = (http.clone(), url.to_string(), stop.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut probes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let ok = http.get(format!("{url}/healthz")).send().await.is_ok();
                worst = worst.max(t.elapsed());
                probes += 1;
                if !ok {
                    worst = Duration::MAX;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (worst, probes)
        })
    };
    let started = Instant::now();
    let send = |http: reqwest::Client| {
        let url = url.to_string();
        let key = key.to_string();
        async move {
            let r = http
                .post(format!("{url}/v1/classifications/stream"))
                .bearer_auth(key)
                .header("content-type", "application/x-ndjson")
                .body("\n".repeat(BLANK_BYTES))
                .send()
                .await?;
            let (last, data) = read_to_end(r).await?;
            Ok::<_, anyhow::Error>((last, data, started.elapsed()))
        }
    };
    let (a, b) = tokio::join!(send(http.clone()), send(http.clone()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, probes) = probe.await?;
    let (a, b) = (a?, b?);
    Ok(serde_json::json!({
        "case": "two 8 MiB bodies of blank NDJSON lines at once",
        "final_events": [a.0, b.0],
        "reasons": [a.1["reason"], b.1["reason"]],
        "seconds": [a.2.as_secs_f64(), b.2.as_secs_f64()],
        "healthz_probes": probes,
        "slowest_healthz_ms": worst.as_millis(),
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key, pid, case] = args.as_slice() else {
        bail!("usage: stream_bodies URL KEY SERVER_PID array|ndjson|blank");
    };
    let pid: u32 = pid.parse().context("SERVER_PID")?;
    let figures = match case.as_str() {
        "array" => rows_case(url, key, pid, true).await?,
        "ndjson" => rows_case(url, key, pid, false).await?,
        "blank" => blank_case(url, key).await?,
        other => bail!("no case {other:?}: array, ndjson or blank"),
    };
    println!("{figures}");
    Ok(())
}
