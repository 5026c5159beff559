//! Single-core throughput of normalise + featurise + predict, the classifier's hot path.
//!
//! `classifier_throughput MODEL CSV [SECONDS] [ROWS_PER_WORKSPACE]` reads movements from CSV
//! (the benchmark rows that `classifier_vs_sklearn.sh` prepares), predicts them one after
//! another on this thread for at least SECONDS (default 3), and prints rows per second and
//! nanoseconds per row as JSON.
//!
//! A workspace remembers the words it has scored. By default one workspace serves every row,
//! as in one long classification stream; ROWS_PER_WORKSPACE starts a fresh one every so many
//! rows, as core-api does for each analysis and each batch, so the memory starts cold each
//! time.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use classifier::data::{ReadOptions, TransactionReader};
use classifier::features::MovementInput;
use classifier::model::{Scorer, Workspace};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (model, data) = match (args.get(1), args.get(2)) {
        (Some(m), Some(d)) => (m, d),
        _ => anyhow::bail!("usage: classifier_throughput MODEL CSV [SECONDS]"),
    };
    let min_seconds: f64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3.0);
    let per_workspace: usize = args
        .get(4)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(usize::MAX);
    anyhow::ensure!(per_workspace > 0, "ROWS_PER_WORKSPACE must be at least 1");
    let scorer = Scorer::load(Path::new(model))?;
    let rows = TransactionReader::from_path(Path::new(data), ReadOptions::default())?
        .read_all()
        .with_context(|| format!("reading {data}"))?;
    anyhow::ensure!(!rows.is_empty(), "{data} holds no rows");
    // The descriptions side by side in one buffer, as they arrive in a request body or a
    // file, rather than scattered over 24,000 heap allocations; the
    // movement types likewise.
    let mut arena = String::new();
    let mut spans = Vec::with_capacity(rows.len());
    for t in &rows {
        let description = arena.len()..arena.len() + t.description.len();
        arena.push_str(&t.description);
        let kind = t.kind.as_deref().map(|k| {
            arena.push_str(k);
            arena.len() - k.len()..arena.len()
        });
        spans.push((description, kind));
    }
    let inputs: Vec<MovementInput<'_>> = rows
        .iter()
        .zip(spans)
        .map(|(t, (description, kind))| MovementInput {
            description: &arena[description],
            amount: t.amount,
            mcc: t.mcc,
            kind: kind.map(|k| &arena[k]),
        })
        .collect();
    let mean_len =
        rows.iter().map(|t| t.description.len()).sum::<usize>() as f64 / rows.len() as f64;

    let mut ws = Workspace::default();
    // Warm-up: caches, branch predictors, CPU frequency.
    for m in inputs.iter().take(10_000) {
        black_box(scorer.predict_with(m, &mut ws));
    }
    let mut predicted = 0u64;
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < min_seconds {
        for chunk in inputs.chunks(per_workspace) {
            if per_workspace != usize::MAX {
                ws = Workspace::default();
            }
            for m in chunk {
                black_box(scorer.predict_with(black_box(m), &mut ws));
            }
        }
        predicted += inputs.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "rows": inputs.len(),
            "rows_per_workspace": (per_workspace != usize::MAX).then_some(per_workspace),
            "mean_description_bytes": mean_len,
            "predicted": predicted,
            "seconds": seconds,
            "rows_per_second": predicted as f64 / seconds,
            "ns_per_row": seconds * 1e9 / predicted as f64,
        })
    );
    Ok(())
}
