//! A repeated analysis of the same person, every partner answer cached, against its own
//! classification and storage time.
//!
//! `cached_analysis [PEOPLE]` (default 20) starts a bureau simulator that answers every
//! request in 50 ms (2,000 movements over the default 90-day window) and the service on a
//! partner file that caches all three kinds for an hour (movements are not cached by default;
//! here they are, so a repeat makes no partner call at all). For each person it times a first
//! analysis and then a repeat, each from before `POST /v1/analyses` to the arrival of
//! `analysis.completed` on the SSE stream; then, in the same process, it classifies the same
//! movements with the same model and workspace and writes them to a fresh SQLite store in
//! pages of 500, as the run does: that is the repeat's classification and storage time. The
//! repeat's overhead is its time minus that. Also checks, from the service's metrics, that
//! the repeats called no partner. Prints JSON.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use classifier::model::Workspace;
use core_api::analyses::run::{classify_page, Whose};
use core_api::config::{ApiKeyConfig, Settings};
use core_api::domain::summary::Tally;
use core_api::store::{SqliteStore, TransactionStore};
use core_api::Application;
use integrations::simulator::SimulatorSettings;

const KEY: &str = "bench-key-0123456789";
const PER_DAY: f64 = 2000.0 / 91.0;

/// Partner calls so far, all partners, from `/metrics`.
async fn partner_calls(http: &reqwest::Client, url: &str) -> Result<f64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("integrations_partner_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// What the run does with a history besides asking for it: classify each movement and store
/// the rows page by page. Returns how long that took.
async fn classify_and_store(
    scorer: &classifier::Scorer,
    store: &SqliteStore,
    cpf: &integrations::Cpf,
    analysis: &str,
) -> Result<(Duration, usize)> {
    let today = chrono_today();
    let from = today - chrono::Duration::days(90);
    let movements = integrations::simulator::data::movements(cpf, from, today, Some(PER_DAY));
    let started = Instant::now();
    let mut ws = Workspace::default();
    let mut tally = Tally::default();
    let hash = "0".repeat(64);
    let whose = Whose {
        analysis_id: analysis,
        tenant: "bench",
        cpf_hash: &hash,
    };
    for page in movements.chunks(500) {
        let rows = classify_page(scorer, &mut ws, page, &whose, &mut tally);
        store.put(rows).await?;
    }
    store.searchable(analysis).await?;
    Ok((started.elapsed(), movements.len()))
}

fn chrono_today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

#[tokio::main]
async fn main() -> Result<()> {
    let people = benches::runs_arg(20)?;
    let work = tempfile::tempdir()?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let (sim, _) = integrations::simulator::serve(
        "127.0.0.1:0".parse()?,
        SimulatorSettings {
            latency_ms: 50,
            latency_jitter_ms: 0,
            movements_per_day: Some(PER_DAY),
            ..SimulatorSettings::default()
        },
        None,
        std::future::pending(),
    )
    .await?;
    let mut partners = String::new();
    for (name, kind, concurrency) in [
        ("consumer-sim", "consumer", 8),
        ("rating-sim", "rating", 8),
        ("movements-sim", "movements", 8),
    ] {
        partners.push_str(&format!(
            "[[partners]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"http://{sim}\"\n\
             max_concurrency = {concurrency}\nrate_per_sec = 1000\ntimeout_ms = 5000\n\
             cache_ttl_secs = 3600\n\n"
        ));
    }
    let partners_file = work.path().join("partners.toml");
    std::fs::write(&partners_file, partners)?;
    let model = root.join("models/default.json");
    let settings = Settings {
        port: 0,
        api_keys: vec![ApiKeyConfig {
            tenant: "bench".into(),
            key: KEY.into(),
            scopes: None,
        }],
        model_path: model.clone(),
        data_dir: work.path().join("service"),
        partners_config: Some(partners_file),
        rate_per_key: 100_000,
        ..Settings::default()
    };
    let app = Application::build(settings).await?;
    let url = format!("http://{}", app.addr());
    tokio::spawn(app.run_until(std::future::pending()));
    let http = reqwest::Client::new();
    let scorer = classifier::Scorer::load(&model)?;
    let store = SqliteStore::open(&work.path().join("baseline"))?;

    let (mut first, mut repeat, mut baseline, mut overhead) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut movements = Vec::new();
    let mut repeat_calls = 0.0;
    // Two people first to warm connections and the model's pages; not counted.
    for i in 0..people + 2 {
        let cpf = integrations::simulator::data::person_with_record(300_000 + i as u32);
        let digits = cpf.digits();
        let cold = benches::analyse(&http, &url, KEY, &digits).await?.elapsed;
        let before = partner_calls(&http, &url).await?;
        let warm = benches::analyse(&http, &url, KEY, &digits).await?.elapsed;
        let calls = partner_calls(&http, &url).await? - before;
        let (own, n) = classify_and_store(&scorer, &store, &cpf, &format!("base-{i}")).await?;
        if i >= 2 {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            first.push(ms(cold));
            repeat.push(ms(warm));
            baseline.push(ms(own));
            overhead.push(ms(warm) - ms(own));
            movements.push(n);
            repeat_calls += calls;
        }
    }
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        serde_json::json!({"p50": pct(0.5), "p95": pct(0.95), "max": pct(1.0)})
    };
    println!(
        "{}",
        serde_json::json!({
            "people": first.len(),
            "movements_min": movements.iter().min(),
            "movements_max": movements.iter().max(),
            "partner_calls_during_repeats": repeat_calls,
            "first_analysis_ms": summary(first),
            "repeat_ms": summary(repeat),
            "classify_and_store_ms": summary(baseline),
            "repeat_overhead_ms": summary(overhead),
            "overhead_target_ms": 50,
        })
    );
    Ok(())
}
