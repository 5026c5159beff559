//! How long a whole analysis takes in the embedded shape, against the partners' own time.
//!
//! `analysis_latency [RUNS]` starts the service (as `cargo run` does, with the bundled
//! simulator answering every request in exactly 50 ms and a 2,000-movement history over the
//! default 90-day window), then runs analyses one after another: the clock starts before
//! `POST /v1/analyses` and stops when `analysis.completed` arrives on the SSE stream. The
//! partners' time is the slowest partner's: movement pages are fetched one after another, so
//! pages × 50 ms. Prints JSON with the percentiles and the target (partners' time + 100 ms).

use anyhow::{Context, Result};
use core_api::config::{ApiKeyConfig, Settings};
use core_api::Application;
use integrations::simulator::SimulatorSettings;

const KEY: &str = "bench-key-0123456789";
const LATENCY_MS: u64 = 50;

#[tokio::main]
async fn main() -> Result<()> {
    let runs = benches::runs_arg(20)?;
    let data = std::env::temp_dir().join(format!("analysis-latency-{}", std::process::id()));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let settings = Settings {
        port: 0,
        api_keys: vec![ApiKeyConfig {
            tenant: "bench".into(),
            key: KEY.into(),
            scopes: None,
        }],
        model_path: root.join("models/default.json"),
        data_dir: data.clone(),
        rate_per_key: 100_000,
        simulator: SimulatorSettings {
            latency_ms: LATENCY_MS,
            latency_jitter_ms: 0,
            // 91 days of history (the default window, both ends included) at this rate is
            // 2,000 movements on average.
            movements_per_day: Some(2000.0 / 91.0),
            ..SimulatorSettings::default()
        },
        ..Settings::default()
    };
    let app = Application::build(settings).await?;
    let url = format!("http://{}", app.addr());
    tokio::spawn(app.run_until(std::future::pending()));
    let http = reqwest::Client::new();

    let mut times = Vec::new();
    let mut movements = Vec::new();
    let mut pages_seen = Vec::new();
    for i in 0..runs + 2 {
        // Each run asks for a different person, so nothing is cached anywhere.
        let cpf = integrations::simulator::data::person_with_record(200_000 + i as u32).digits();
        let timed = benches::analyse(&http, &url, KEY, &cpf).await?;
        let (pages, transactions) = (timed.pages, timed.transactions);
        let elapsed = timed.elapsed.as_secs_f64() * 1000.0;
        // The first two runs warm connections and caches.
        if i >= 2 {
            times.push(elapsed);
            movements.push(transactions);
            pages_seen.push(pages);
        }
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    let pages = *pages_seen.iter().max().unwrap_or(&0);
    let partners_ms = pages as f64 * LATENCY_MS as f64;
    let _ = std::fs::remove_dir_all(&data);
    println!(
        "{}",
        serde_json::json!({
            "runs": times.len(),
            "movements_min": movements.iter().min(),
            "movements_max": movements.iter().max(),
            "movement_pages": pages,
            "slowest_partner_total_ms": partners_ms,
            "target_ms": partners_ms + 100.0,
            "p50_ms": pct(0.5),
            "p95_ms": pct(0.95),
            "max_ms": pct(1.0),
        })
    );
    Ok(())
}
