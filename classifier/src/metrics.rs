//! Classification metrics: per-label precision, recall and F1, macro-F1, and the confusion matrix.
//!
//! Macro-F1 averages over the labels that occur in the truth or the predictions, as
//! scikit-learn does, so the side-by-side comparison in `benches/` compares like with like.

use std::fmt::Write;

use crate::labels::{Confidence, Label};

/// Counts of (true label, predicted label) pairs over the 19 labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    counts: Vec<[u64; 19]>,
}

impl Default for Confusion {
    fn default() -> Self {
        Confusion {
            counts: vec![[0; 19]; 19],
        }
    }
}

/// How often predictions are right in each confidence band: the reliability table of a model
/// card ("of the rows called HIGH, how many are right").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reliability {
    /// Per band, from VERY_HIGH down to LOW: rows, rows right, sum of probabilities.
    bands: [(u64, u64, f64); 4],
}

impl Reliability {
    const BANDS: [Confidence; 4] = [
        Confidence::VeryHigh,
        Confidence::High,
        Confidence::Medium,
        Confidence::Low,
    ];

    pub fn add(&mut self, probability: f32, right: bool) {
        let band = Confidence::from_probability(probability);
        let i = Self::BANDS
            .iter()
            .position(|&b| b == band)
            .expect("every band is listed");
        let e = &mut self.bands[i];
        e.0 += 1;
        e.1 += u64::from(right);
        e.2 += probability as f64;
    }

    /// Share of rows right in a band, or `None` when the band is empty.
    pub fn accuracy(&self, band: Confidence) -> Option<f64> {
        let i = Self::BANDS.iter().position(|&b| b == band)?;
        let (rows, right, _) = self.bands[i];
        (rows > 0).then(|| right as f64 / rows as f64)
    }

    /// `| band | rows | share | right | mean probability |` in Markdown.
    pub fn markdown(&self) -> String {
        let total: u64 = self.bands.iter().map(|b| b.0).sum();
        let mut out = String::from(
            "| confidence | rows | share of rows | right | mean probability |\n|---|---:|---:|---:|---:|\n",
        );
        for (band, (rows, right, sum)) in Self::BANDS.iter().zip(self.bands) {
            let cell = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
            let _ = writeln!(
                out,
                "| {band} | {rows} | {} | {} | {} |",
                cell((total > 0).then(|| rows as f64 / total as f64)),
                cell((rows > 0).then(|| right as f64 / rows as f64)),
                cell((rows > 0).then(|| sum / rows as f64)),
            );
        }
        out
    }
}

/// Precision, recall, F1 and support of one label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelScores {
    pub label: Label,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
    pub predicted: u64,
}

impl Confusion {
    pub fn add(&mut self, truth: Label, predicted: Label) {
        self.counts[truth.index()][predicted.index()] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..19).map(|i| self.counts[i][i]).sum();
        ratio(correct, self.total())
    }

    /// Scores of every label that occurs in the truth or the predictions.
    pub fn per_label(&self) -> Vec<LabelScores> {
        Label::ALL
            .iter()
            .filter_map(|&label| {
                let i = label.index();
                let tp = self.counts[i][i];
                let support: u64 = self.counts[i].iter().sum();
                let predicted: u64 = self.counts.iter().map(|row| row[i]).sum();
                if support == 0 && predicted == 0 {
                    return None;
                }
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                Some(LabelScores {
                    label,
                    precision,
                    recall,
                    f1,
                    support,
                    predicted,
                })
            })
            .collect()
    }

    pub fn macro_f1(&self) -> f64 {
        let scores = self.per_label();
        if scores.is_empty() {
            return 0.0;
        }
        scores.iter().map(|s| s.f1).sum::<f64>() / scores.len() as f64
    }

    /// A Markdown table of per-label scores, then macro-F1 and accuracy.
    pub fn scores_markdown(&self) -> String {
        let mut out = String::from(
            "| label | precision | recall | F1 | support |\n|---|---:|---:|---:|---:|\n",
        );
        for s in self.per_label() {
            let _ = writeln!(
                out,
                "| {} | {:.3} | {:.3} | {:.3} | {} |",
                s.label, s.precision, s.recall, s.f1, s.support
            );
        }
        let _ = writeln!(
            out,
            "\nmacro-F1 **{:.4}**, accuracy {:.4}, {} rows",
            self.macro_f1(),
            self.accuracy(),
            self.total()
        );
        out
    }

    /// A Markdown confusion matrix (rows: truth, columns: prediction), labels abbreviated by
    /// their position in the taxonomy.
    pub fn matrix_markdown(&self) -> String {
        let mut out = String::from("| truth \\ predicted |");
        for i in 0..19 {
            let _ = write!(out, " {} |", i + 1);
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(19));
        out.push('\n');
        for (i, label) in Label::ALL.iter().enumerate() {
            let _ = write!(out, "| {} {} |", i + 1, label);
            for c in &self.counts[i] {
                let _ = write!(out, " {} |", c);
            }
            out.push('\n');
        }
        out
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_a_hand_computed_example() {
        let mut c = Confusion::default();
        // INCOME: 3 true, 2 found; BANK_FEES: 1 true, predicted 2 times (1 right).
        c.add(Label::Income, Label::Income);
        c.add(Label::Income, Label::Income);
        c.add(Label::Income, Label::BankFees);
        c.add(Label::BankFees, Label::BankFees);
        let s = c.per_label();
        assert_eq!(
            s.len(),
            2,
            "labels absent from truth and predictions are not averaged"
        );
        assert_eq!(s[0].label, Label::Income);
        assert!((s[0].precision - 1.0).abs() < 1e-12);
        assert!((s[0].recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((s[0].f1 - 0.8).abs() < 1e-12);
        assert!((s[1].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.macro_f1() - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((c.accuracy() - 0.75).abs() < 1e-12);
        assert!(c
            .matrix_markdown()
            .contains("| 1 INCOME | 2 | 0 | 0 | 0 | 0 | 1 |"));
    }

    #[test]
    fn reliability_counts_rows_and_right_ones_per_band() {
        let mut r = Reliability::default();
        r.add(0.99, true);
        r.add(0.995, false);
        r.add(0.95, true);
        r.add(0.5, false);
        assert_eq!(r.accuracy(Confidence::VeryHigh), Some(0.5));
        assert_eq!(r.accuracy(Confidence::High), Some(1.0));
        assert_eq!(r.accuracy(Confidence::Medium), None);
        assert_eq!(r.accuracy(Confidence::Low), Some(0.0));
        let table = r.markdown();
        assert!(
            table.contains("| VERY_HIGH | 2 | 0.500 | 0.500 |"),
            "{table}"
        );
        assert!(table.contains("| MEDIUM | 0 | 0.000 | - | - |"), "{table}");
    }
}
