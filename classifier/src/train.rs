//! Training: featurise, pick the columns, fit `linfa_logistic::MultiLogisticRegression`.
//!
//! linfa's logistic regression takes a dense matrix, so training builds one over the buckets
//! that occur in at least `min_df` training rows, at most `max_columns` of them. The shipped
//! settings hash into 2^13 buckets and keep up to 8,192 columns, so in practice every bucket
//! is a column and every n-gram reaches the model. With a larger hash space (`--hash-bits`)
//! more buckets qualify than fit, and [`Selection`] picks them: by default the ones that say
//! most about the label (mutual information between the bucket's presence and the label).
//! Buckets left out get no weight. The fitted rows are
//! written back keyed by bucket, so the sparse scorer computes exactly `x · W + b`.
//!
//! [`fit_temperature`] then fits one temperature on a separate labelled set so that the
//! probabilities the scorer reports mean what they say (see `models/default.md`).
//!
//! linfa's solver (argmin's L-BFGS) reports no progress, so the fit runs in chunks of
//! iterations, each starting from where the last stopped; the progress callback fires after
//! each. That restarts L-BFGS's curvature memory per chunk, a small cost for a user who can see
//! that training is moving.

use std::collections::HashMap;
use std::time::Instant;

use linfa::prelude::*;
use linfa_logistic::{MultiFittedLogisticRegression, MultiLogisticRegression};
use ndarray::{concatenate, Array1, Array2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::Transaction;
use crate::error::ClassifierError;
use crate::features::{bucket, FeatureSettings, Features, Featurizer};
use crate::labels::Label;
use crate::metrics::Confusion;
use crate::model::{ModelFile, Scorer, MODEL_FORMAT};

/// Everything that decides what model comes out. Same settings and data, same model.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSettings {
    /// Seeds the hold-out split.
    pub seed: u64,
    /// Share of rows held out for the model card's metrics.
    pub holdout: f64,
    /// L2 penalty of linfa's loss (which sums over rows, so it is 1/C in scikit-learn's terms).
    pub alpha: f32,
    /// L-BFGS iterations in all.
    pub max_iterations: u64,
    /// Iterations per progress step.
    pub chunk_iterations: u64,
    /// A bucket becomes a column when at least this many training rows have it.
    pub min_df: u32,
    /// At most this many columns (memory is rows × columns × 4 bytes).
    pub max_columns: usize,
    /// How columns are chosen when more buckets qualify than `max_columns`.
    pub selection: Selection,
    /// Whether column values are multiplied by their inverse document frequency.
    pub idf: bool,
    pub features: FeatureSettings,
}

/// How training picks the buckets that become columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// The buckets present in most training rows.
    Frequency,
    /// The buckets whose presence tells most about the label (mutual information).
    Information,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            seed: 42,
            holdout: 0.1,
            // Chosen in scikit-learn prototypes on the same hashed features (benches/README.md,
            // `classifier_prototypes.sh`): alpha 20-30 scored best on unseen brands (evaluation
            // set) but leaned on the statement style; 10 gives up 0.006 there and gains 0.012
            // on held-out styles, the best mean of the two (within noise of 20 and 5).
            alpha: 10.0,
            // 100 iterations give the same evaluation macro-F1 as 150 at two thirds of the time.
            max_iterations: 100,
            chunk_iterations: 15,
            min_df: 2,
            // The whole default hash space (2^13): no bucket is dropped for want of room (those
            // in fewer than `min_df` rows still are).
            max_columns: 8_192,
            selection: Selection::Information,
            idf: true,
            features: FeatureSettings::default(),
        }
    }
}

/// The buckets that became columns, in column order (most frequent first).
#[derive(Debug, Clone)]
pub struct Vocabulary {
    buckets: Vec<u32>,
    column: HashMap<u32, usize>,
    /// Per column, what its values are multiplied by: the inverse document frequency, or 1.
    scale: Vec<f32>,
}

impl Vocabulary {
    /// Keeps buckets present in at least `min_df` rows: the `max_columns` best by `selection`.
    /// `labels[i]` is the label index of `rows[i]` (used by [`Selection::Information`]).
    pub fn build(
        rows: &[Features],
        labels: &[usize],
        min_df: u32,
        max_columns: usize,
        selection: Selection,
        idf: bool,
    ) -> Self {
        let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
        // Per bucket: rows holding it, in all and per label.
        let mut df: HashMap<u32, (u32, Vec<u32>)> = HashMap::new();
        let mut seen = Vec::new();
        for (f, &label) in rows.iter().zip(labels) {
            seen.clear();
            seen.extend(f.text.iter().chain(&f.other).map(|&x| bucket(x)));
            seen.sort_unstable();
            seen.dedup();
            for &b in &seen {
                let e = df.entry(b).or_insert_with(|| (0, vec![0; classes]));
                e.0 += 1;
                e.1[label] += 1;
            }
        }
        let n = rows.len() as f64;
        let mut per_class = vec![0f64; classes];
        for &l in labels {
            per_class[l] += 1.0;
        }
        let score = |total: u32, by_label: &[u32]| -> f64 {
            match selection {
                Selection::Frequency => total as f64,
                Selection::Information => mutual_information(total, by_label, &per_class, n),
            }
        };
        let mut kept: Vec<(u32, u32, f64)> = df
            .into_iter()
            .filter(|(_, (total, _))| *total >= min_df)
            .map(|(b, (total, by_label))| (b, total, score(total, &by_label)))
            .collect();
        // Best first; the bucket breaks ties so the choice is deterministic.
        kept.sort_unstable_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        kept.truncate(max_columns);
        // Columns go most frequent first: the scorer's weight rows then put the features most
        // movements have side by side, so the rows a prediction touches share cache lines.
        kept.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        // Smoothed inverse document frequency, as scikit-learn computes it: words that every
        // statement style prints (`PIX`, `COMPRA`, `ENVIADO`) weigh less than a merchant's
        // name, so a style the model has not seen moves its predictions less.
        let scale = kept
            .iter()
            .map(|&(_, df, _)| {
                if idf {
                    (((1.0 + n) / (1.0 + df as f64)).ln() + 1.0) as f32
                } else {
                    1.0
                }
            })
            .collect();
        let buckets: Vec<u32> = kept.into_iter().map(|(b, _, _)| b).collect();
        let column = buckets.iter().enumerate().map(|(i, &b)| (b, i)).collect();
        Vocabulary {
            buckets,
            column,
            scale,
        }
    }

    pub fn buckets(&self) -> &[u32] {
        &self.buckets
    }

    /// Per column, the factor its values are multiplied by in [`Vocabulary::matrix`].
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The dense matrix linfa trains on: the same values the scorer sums.
    pub fn matrix(&self, rows: &[Features]) -> Array2<f32> {
        let mut x = Array2::<f32>::zeros((rows.len(), self.buckets.len()));
        for (mut out, f) in x.axis_iter_mut(Axis(0)).zip(rows) {
            f.for_each_value(|b, v| {
                if let Some(&c) = self.column.get(&b) {
                    out[c] += v * self.scale[c];
                }
            });
        }
        x
    }
}

/// Mutual information (nats) between a bucket's presence and the label, from the number of
/// rows holding it (`total`, `by_label`), the rows per label and the row count.
fn mutual_information(total: u32, by_label: &[u32], per_class: &[f64], n: f64) -> f64 {
    let p_present = total as f64 / n;
    let mut mi = 0.0;
    for (&with, &class_rows) in by_label.iter().zip(per_class) {
        let p_class = class_rows / n;
        let with = with as f64;
        for (joint, p_x) in [(with, p_present), (class_rows - with, 1.0 - p_present)] {
            if joint > 0.0 && p_x > 0.0 {
                let p_joint = joint / n;
                mi += p_joint * (p_joint / (p_x * p_class)).ln();
            }
        }
    }
    mi
}

/// The temperature `T` that makes `softmax(logits / T)` best calibrated on labelled rows: the
/// one minimising their negative log-likelihood, found by golden-section search on
/// `log T ∈ [ln 0.2, ln 10]`. One number, so it cannot change which label wins; it only makes
/// the reported probability (and its confidence band) honest about how often that label is
/// right.
pub fn fit_temperature(scorer: &Scorer, rows: &[Transaction]) -> f32 {
    let mut features = Features::default();
    let mut logits = Vec::new();
    let mut all: Vec<(Vec<f32>, usize)> = Vec::with_capacity(rows.len());
    for t in rows {
        let Some(label) = t.category else { continue };
        let Some(k) = scorer.labels().iter().position(|&l| l == label) else {
            continue;
        };
        scorer.featurizer().featurize(&t.input(), &mut features);
        scorer.logits_of(&features, &mut logits);
        all.push((logits.clone(), k));
    }
    if all.is_empty() {
        return 1.0;
    }
    let nll = |log_t: f64| -> f64 {
        let t = log_t.exp();
        all.iter()
            .map(|(z, k)| {
                let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let sum: f64 = z.iter().map(|&v| ((v as f64 - max) / t).exp()).sum();
                -((z[*k] as f64 - max) / t - sum.ln())
            })
            .sum()
    };
    let (mut lo, mut hi) = (0.2f64.ln(), 10f64.ln());
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..60 {
        let a = hi - phi * (hi - lo);
        let b = lo + phi * (hi - lo);
        if nll(a) < nll(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    ((lo + hi) / 2.0).exp() as f32
}

/// Featurises every row.
pub fn featurize_all(featurizer: &Featurizer, rows: &[Transaction]) -> Vec<Features> {
    rows.iter()
        .map(|t| {
            let mut f = Features::default();
            featurizer.featurize(&t.input(), &mut f);
            f
        })
        .collect()
}

/// Splits row indices into (train, hold-out) with a seeded shuffle.
pub fn split(n: usize, holdout: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_holdout = ((n as f64) * holdout.clamp(0.0, 0.9)).round() as usize;
    let train = idx.split_off(n_holdout);
    (train, idx)
}

/// Fits linfa's multinomial logistic regression in chunks, calling `progress(done, total)`.
pub fn fit(
    x: &Array2<f32>,
    y: &Array1<usize>,
    settings: &TrainSettings,
    mut progress: impl FnMut(u64, u64),
) -> Result<MultiFittedLogisticRegression<f32, usize>, ClassifierError> {
    let dataset = DatasetBase::new(x.view(), y.view());
    let total = settings.max_iterations.max(1);
    let chunk = settings.chunk_iterations.clamp(1, total);
    let mut done = 0;
    let mut fitted: Option<MultiFittedLogisticRegression<f32, usize>> = None;
    while done < total {
        let step = chunk.min(total - done);
        let mut params = MultiLogisticRegression::default()
            .alpha(settings.alpha)
            .max_iterations(step)
            .gradient_tolerance(1e-5);
        if let Some(f) = &fitted {
            let start = concatenate(
                Axis(0),
                &[f.params().view(), f.intercept().view().insert_axis(Axis(0))],
            )
            .map_err(|e| ClassifierError::Training(e.to_string()))?;
            params = params.initial_params(start);
        }
        let next = params
            .fit(&dataset)
            .map_err(|e| ClassifierError::Training(e.to_string()))?;
        fitted = Some(next);
        done += step;
        progress(done, total);
    }
    fitted.ok_or_else(|| ClassifierError::Training("no iterations were run".into()))
}

/// Writes a fitted linfa model as a model file.
pub fn to_model_file(
    fitted: &MultiFittedLogisticRegression<f32, usize>,
    vocabulary: &Vocabulary,
    features: &FeatureSettings,
    training: serde_json::Value,
) -> ModelFile {
    let labels = fitted
        .classes()
        .iter()
        .map(|&i| Label::ALL[i].as_str().to_string())
        .collect();
    ModelFile {
        format: MODEL_FORMAT.into(),
        features: features.clone(),
        labels,
        buckets: vocabulary.buckets().to_vec(),
        // The column scale is folded into the weights: (x ∘ s) · W = x · (s ∘ W), so the
        // scorer sums raw feature values against these rows and gets linfa's logits.
        weights: fitted
            .params()
            .outer_iter()
            .zip(vocabulary.scale())
            .flat_map(|(row, &s)| row.iter().map(move |&w| w * s).collect::<Vec<_>>())
            .collect(),
        intercept: fitted.intercept().to_vec(),
        temperature: 1.0,
        training,
    }
}

/// What a training run produced and measured.
#[derive(Debug)]
pub struct TrainReport {
    pub model: ModelFile,
    pub holdout: Confusion,
    pub train_rows: usize,
    pub holdout_rows: usize,
    pub label_counts: Vec<(Label, u64)>,
    pub columns: usize,
    pub seconds: f64,
    pub fit_seconds: f64,
    /// Peak resident memory of the process, when the platform tells it.
    pub peak_rss_bytes: Option<u64>,
}

/// Trains a model on labelled rows and measures it on a seeded hold-out.
pub fn train(
    rows: &[Transaction],
    settings: &TrainSettings,
    progress: impl FnMut(u64, u64),
) -> Result<TrainReport, ClassifierError> {
    let started = Instant::now();
    let featurizer =
        Featurizer::new(settings.features.clone()).map_err(ClassifierError::Training)?;
    let mut labels = Vec::with_capacity(rows.len());
    for t in rows {
        labels.push(t.category.ok_or_else(|| ClassifierError::Row {
            line: t.line,
            problem: "missing category".into(),
        })?);
    }
    let (train_idx, holdout_idx) = split(rows.len(), settings.holdout, settings.seed);
    let train_rows: Vec<Transaction> = train_idx.iter().map(|&i| rows[i].clone()).collect();
    let distinct = {
        let mut l: Vec<Label> = train_idx.iter().map(|&i| labels[i]).collect();
        l.sort_unstable();
        l.dedup();
        l.len()
    };
    if distinct < 2 {
        return Err(ClassifierError::Training(format!(
            "the training rows hold {distinct} distinct label(s); at least 2 are needed"
        )));
    }
    let features = featurize_all(&featurizer, &train_rows);
    let y: Array1<usize> = train_idx.iter().map(|&i| labels[i].index()).collect();
    let vocabulary = Vocabulary::build(
        &features,
        y.as_slice().expect("a fresh array is contiguous"),
        settings.min_df,
        settings.max_columns,
        settings.selection,
        settings.idf,
    );
    if vocabulary.is_empty() {
        return Err(ClassifierError::Training(
            "no feature occurs often enough to become a column; lower min_df or add data".into(),
        ));
    }
    let x = vocabulary.matrix(&features);
    drop(features);
    let fit_started = Instant::now();
    let fitted = fit(&x, &y, settings, progress)?;
    let fit_seconds = fit_started.elapsed().as_secs_f64();
    drop(x);

    let mut label_counts: Vec<(Label, u64)> = Label::ALL.iter().map(|&l| (l, 0)).collect();
    for l in &labels {
        label_counts[l.index()].1 += 1;
    }
    let metadata = serde_json::json!({
        "seed": settings.seed,
        "holdout": settings.holdout,
        "alpha": settings.alpha,
        "max_iterations": settings.max_iterations,
        "chunk_iterations": settings.chunk_iterations,
        "min_df": settings.min_df,
        "max_columns": settings.max_columns,
        "selection": settings.selection,
        "idf": settings.idf,
        "train_rows": train_idx.len(),
        "holdout_rows": holdout_idx.len(),
        "columns": vocabulary.len(),
        "solver": "linfa-logistic 0.8.1 MultiLogisticRegression (argmin L-BFGS, More-Thuente)",
    });
    let model = to_model_file(&fitted, &vocabulary, &settings.features, metadata);
    let scorer = Scorer::new(&model)?;
    let mut holdout = Confusion::default();
    let mut ws = crate::model::Workspace::default();
    for &i in &holdout_idx {
        let p = scorer.predict_with(&rows[i].input(), &mut ws);
        holdout.add(labels[i], p.label);
    }
    Ok(TrainReport {
        columns: vocabulary.len(),
        model,
        holdout,
        train_rows: train_idx.len(),
        holdout_rows: holdout_idx.len(),
        label_counts,
        seconds: started.elapsed().as_secs_f64(),
        fit_seconds,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(buckets: &[u32]) -> Features {
        let mut f = Features::default();
        f.text = buckets.to_vec();
        f.text_scale = 1.0;
        f
    }

    #[test]
    fn information_keeps_a_rare_telling_bucket_that_frequency_drops() {
        // Bucket 1 is in every row (says nothing); bucket 2 is in a third of label 0's rows and
        // no other (says a lot); bucket 3 leans to label 1, 15 rows to 5 (says a little).
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..60 {
            let label = i % 2;
            let mut b = vec![1];
            if label == 0 && i % 3 == 0 {
                b.push(2);
            }
            if i % 4 == 1 || (i % 4 == 0 && i < 20) {
                b.push(3);
            }
            rows.push(features(&b));
            labels.push(label);
        }
        let by_frequency = Vocabulary::build(&rows, &labels, 2, 1, Selection::Frequency, false);
        assert_eq!(by_frequency.buckets(), [1]);
        let by_information = Vocabulary::build(&rows, &labels, 2, 1, Selection::Information, false);
        assert_eq!(by_information.buckets(), [2]);
        let both = Vocabulary::build(&rows, &labels, 2, 2, Selection::Information, true);
        // Columns are laid out most frequent first, whatever chose them; the rarer one
        // weighs more.
        assert_eq!(both.buckets(), [3, 2]);
        assert!(both.scale()[1] > both.scale()[0] && both.scale()[0] > 1.0);
        assert!(
            !both.buckets().contains(&1),
            "a bucket in every row carries no information"
        );
    }

    #[test]
    fn mutual_information_is_zero_for_independence_and_positive_otherwise() {
        let per_class = [50.0, 50.0];
        assert!(mutual_information(50, &[25, 25], &per_class, 100.0).abs() < 1e-12);
        assert!(mutual_information(50, &[50, 0], &per_class, 100.0) > 0.69);
    }
}
