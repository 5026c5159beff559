//! Classification metrics: per-label precision, recall and F1, macro-F1, and the confusion matrix.
//!
//! Macro-F1 averages over the labels that occur in the truth or the predictions, as
//! scikit-learn does, so the side-by-side comparison in `benches/` compares like with like.

use std::fmt::Write;

use crate::labels::Label;

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
}
