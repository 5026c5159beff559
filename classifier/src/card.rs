//! The model card: what a model was trained on, how, and how well it does.

use std::fmt::Write;

use crate::metrics::{Confusion, Reliability};
use crate::train::{TrainReport, TrainSettings};

/// Evaluation of a model on a separate set, for the card.
pub struct Evaluation<'a> {
    pub data: &'a str,
    pub confusion: &'a Confusion,
    /// The calibration temperature fitted on this set (1 when calibration was off).
    pub temperature: f32,
    pub uncalibrated: &'a Reliability,
    pub calibrated: &'a Reliability,
}

/// Renders a model card in Markdown.
pub fn model_card(
    name: &str,
    data: &str,
    command: &str,
    settings: &TrainSettings,
    report: &TrainReport,
    evaluation: Option<Evaluation<'_>>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Model card: `{name}`\n");
    let _ = writeln!(
        out,
        "Multinomial logistic regression over hashed text and movement features, labelling bank \
         movements with the 19 categories of `docs/taxonomy.md`. Trained with \
         `linfa_logistic::MultiLogisticRegression`; served by the sparse scorer of \
         `classifier::model`.\n"
    );
    let _ = writeln!(
        out,
        "## How it was made\n\nTrained {} on {}.\n\n```\n{command}\n```\n",
        today(),
        machine()
    );
    let _ = writeln!(
        out,
        "- data: `{data}`: {} rows, {} for training and {} held out (seed {}, {:.0}%)",
        report.train_rows + report.holdout_rows,
        report.train_rows,
        report.holdout_rows,
        settings.seed,
        settings.holdout * 100.0
    );
    let _ = writeln!(
        out,
        "- solver: L-BFGS, {} iterations in steps of {}, alpha {} (L2 on the summed loss)",
        settings.max_iterations, settings.chunk_iterations, settings.alpha
    );
    let f = &settings.features;
    // Fewer columns than the limit means every qualifying bucket was kept: nothing was chosen.
    let columns = if report.columns < settings.max_columns {
        format!(
            "{} columns: every bucket in at least {} training rows",
            report.columns, settings.min_df
        )
    } else {
        format!(
            "{} columns kept (buckets in at least {} training rows, at most {}, chosen by {})",
            report.columns,
            settings.min_df,
            settings.max_columns,
            match settings.selection {
                crate::train::Selection::Information => "mutual information with the label",
                crate::train::Selection::Frequency => "frequency",
            }
        )
    };
    let _ = writeln!(
        out,
        "- features: 2^{} hash buckets; character {}-{}-grams inside words, words{}, direction, \
         log2 amount bucket, round amount, MCC and MCC group, movement type; {columns}{}",
        f.hash_bits,
        f.char_ngram_min,
        f.char_ngram_max,
        if f.word_bigrams { ", word bigrams" } else { "" },
        if settings.idf {
            ", values weighted by inverse document frequency (folded into the stored weights)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "- training time: {:.1} s in all, {:.1} s of it fitting; peak memory {}\n",
        report.seconds,
        report.fit_seconds,
        report
            .peak_rss_bytes
            .map(|b| format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "not measured on this platform".into())
    );
    let _ = writeln!(out, "Rows per label in the data:\n");
    let _ = writeln!(out, "| label | rows |\n|---|---:|");
    for (label, n) in &report.label_counts {
        let _ = writeln!(out, "| {label} | {n} |");
    }
    if let Some(e) = evaluation {
        let _ = writeln!(
            out,
            "\n## Evaluation on unseen merchants and names\n\n`{}`: brands of the \
             name-suggestion-index and known Brazilian companies reserved from training, local \
             businesses and people named from separate pools, and bank lines in phrasings kept \
             out of training, printed in every family's statement style. The format-shift and \
             real-name evaluations are in the section after the hold-out.\n\n**macro-F1 {:.4}**\n",
            e.data,
            e.confusion.macro_f1()
        );
        out.push_str(&e.confusion.scores_markdown());
        out.push_str(
            "\nConfusion matrix (rows: truth, columns: prediction, by taxonomy position):\n\n",
        );
        out.push_str(&e.confusion.matrix_markdown());
        let _ = writeln!(
            out,
            "\n### Calibration\n\nOne temperature, fitted on this set by minimising its \
             negative log-likelihood: probabilities are `softmax(logits / {:.3})`. It cannot \
             change which label wins. Confidence bands: VERY_HIGH above 0.98, HIGH above 0.90, \
             MEDIUM above 0.70, LOW otherwise. Fitted here, so this table shows the fit; the \
             honest reliability is on rows the temperature never saw (format shift, real names, \
             below).\n\nBefore calibration:\n",
            e.temperature
        );
        out.push_str(&e.uncalibrated.markdown());
        out.push_str("\nAfter calibration:\n\n");
        out.push_str(&e.calibrated.markdown());
    }
    let _ = writeln!(
        out,
        "\n## Hold-out ({} rows of the training corpus)\n",
        report.holdout_rows
    );
    out.push_str(&report.holdout.scores_markdown());
    out.push_str("\nConfusion matrix:\n\n");
    out.push_str(&report.holdout.matrix_markdown());
    out
}

/// Today's date (UTC) as `yyyy-mm-dd`, from the system clock.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The CPU model and core count, from /proc/cpuinfo where there is one.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {cores} cores")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_since_the_epoch_become_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_413), (2025, 11, 21));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
