//! Transaction store throughput and query time, embedded SQLite and an Elasticsearch-
//! compatible server (osmem-server: in memory, OpenSearch-compatible, NOT Elasticsearch; a
//! real cluster's figures will differ, and this program says so in its output).
//!
//! `store_bench [ROWS]` (default 200,000):
//! - writes ROWS transactions in batches of 1,000 (a page of movements) to each store, as
//!   20 analyses of ROWS/20 rows, and reports rows per second;
//! - times `totals` (count and total per label) of one 10,000-transaction analysis, 50 times
//!   after a warm-up, and reports the median and max;
//! - on the search server, the end-to-end time from an analysis's first page to all of it
//!   being searchable: 5 pages of 400 written one after another, then the refresh the run does
//!   before `analysis.completed`, then a query that must return all 2,000.

use std::time::Instant;

use anyhow::Result;
use core_api::store::{
    ElasticSettings, ElasticStore, SqliteStore, StoredTransaction, TransactionQuery,
    TransactionStore,
};

const LABELS: [&str; 6] = [
    "INCOME",
    "FOOD_AND_DRINK",
    "BANK_FEES",
    "TRANSPORTATION",
    "ENTERTAINMENT_CASINOS_AND_GAMBLING",
    "RENT_AND_UTILITIES",
];

fn rows(analysis: &str, n: usize) -> Vec<StoredTransaction> {
    (0..n)
        .map(|i| StoredTransaction {
            analysis_id: analysis.into(),
            movement_id: format!("mov-{i:07}"),
            tenant: "bench".into(),
            cpf_hash: "0f3a9c".repeat(8),
            date: format!("2026-{:02}-{:02}", 8 + i % 3, 1 + i % 28),
            description: format!("PIX ENVIADO ESTABELECIMENTO {} LTDA", i % 997),
            amount_cents: (i as i64 * 7_919) % 500_000 - 250_000,
            label: LABELS[i % LABELS.len()].into(),
            probability: 0.9,
            confidence: "HIGH".into(),
        })
        .collect()
}

async fn measure(
    name: &str,
    store: &impl TransactionStore,
    total: usize,
) -> Result<serde_json::Value> {
    let analyses = 20;
    let per = total / analyses;
    let batches: Vec<Vec<StoredTransaction>> = (0..analyses)
        .flat_map(|a| {
            rows(&format!("an_bench_{a}"), per)
                .chunks(1_000)
                .map(<[_]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect();
    let written: usize = batches.iter().map(Vec::len).sum();
    let started = Instant::now();
    for b in batches {
        store.put(b).await?;
    }
    let write_secs = started.elapsed().as_secs_f64();
    store.searchable("an_bench_0").await?;

    store.put(rows("an_bench_10k", 10_000)).await?;
    store.searchable("an_bench_10k").await?;
    let _ = store.totals("an_bench_10k").await?;
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let totals = store.totals("an_bench_10k").await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(totals.iter().map(|t| t.count).sum::<u64>() == 10_000);
    }
    times.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "store": name,
        "rows_written": written,
        "rows_per_second": (written as f64 / write_secs).round(),
        "totals_of_10k_median_ms": (times[25] * 100.0).round() / 100.0,
        "totals_of_10k_max_ms": (times[49] * 100.0).round() / 100.0,
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let total: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(dir.path())?;
    println!("{}", measure("embedded SQLite", &sqlite, total).await?);

    let server = benches::Osmem::start()?;
    eprintln!(
        "osmem-server at {} (in-memory OpenSearch-compatible; not Elasticsearch)",
        server.url
    );
    let elastic = ElasticStore::connect(&ElasticSettings {
        index: "bench-transactions".into(),
        ..ElasticSettings::new(&server.url)
    })
    .await?;
    let mut figures = measure(
        "osmem-server (OpenSearch-compatible, not Elasticsearch)",
        &elastic,
        total,
    )
    .await?;
    // First page to searchable, as an analysis run does it.
    let pages: Vec<Vec<StoredTransaction>> = rows("an_bench_e2e", 2_000)
        .chunks(400)
        .map(<[_]>::to_vec)
        .collect();
    let started = Instant::now();
    for p in pages {
        elastic.put(p).await?;
    }
    elastic.searchable("an_bench_e2e").await?;
    let page = elastic
        .query(TransactionQuery {
            analysis_id: "an_bench_e2e".into(),
            limit: 1_000,
            ..Default::default()
        })
        .await?;
    let count = elastic.count("an_bench_e2e").await?;
    let e2e_ms = started.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(
        page.transactions.len() == 1_000 && count == 2_000,
        "not all searchable"
    );
    figures["first_page_to_searchable_2000_rows_ms"] =
        serde_json::json!((e2e_ms * 10.0).round() / 10.0);
    println!("{figures}");
    Ok(())
}
