//! The sparse scorer predicts exactly what linfa's own `predict` does on the same rows.

mod common;

use classifier::features::Featurizer;
use classifier::model::{softmax_in_place, Scorer, Workspace};
use classifier::train::{featurize_all, fit, split, to_model_file, TrainSettings, Vocabulary};
use linfa::prelude::Predict;
use ndarray::Array1;

#[test]
fn the_sparse_scorer_predicts_exactly_what_linfa_predicts() {
    let rows = common::labelled_rows(&common::corpus_path(), 4000);
    let settings = TrainSettings {
        max_iterations: 40,
        chunk_iterations: 20,
        max_columns: 3000,
        ..TrainSettings::default()
    };
    let featurizer = Featurizer::new(settings.features.clone()).unwrap();
    let (train_idx, test_idx) = split(rows.len(), 0.25, 3);
    let train_rows: Vec<_> = train_idx.iter().map(|&i| rows[i].clone()).collect();
    let test_rows: Vec<_> = test_idx.iter().map(|&i| rows[i].clone()).collect();
    let train_features = featurize_all(&featurizer, &train_rows);
    let y: Array1<usize> = train_rows
        .iter()
        .map(|t| t.category.unwrap().index())
        .collect();
    let vocabulary = Vocabulary::build(
        &train_features,
        y.as_slice().unwrap(),
        settings.min_df,
        settings.max_columns,
        settings.selection,
        settings.idf,
    );
    let x = vocabulary.matrix(&train_features);
    let fitted = fit(&x, &y, &settings, |_, _| {}).unwrap();
    let model = to_model_file(
        &fitted,
        &vocabulary,
        &settings.features,
        serde_json::Value::Null,
    );
    let scorer = Scorer::new(&model).unwrap();

    // Held-out rows carry features the vocabulary never saw: both sides must drop them alike.
    for rows in [&train_rows, &test_rows] {
        let features = featurize_all(&featurizer, rows);
        let dense = vocabulary.matrix(&features);
        let linfa_labels = fitted.predict(&dense);
        let linfa_probs = fitted.predict_probabilities(&dense);
        let mut ws = Workspace::default();
        let mut logits = Vec::new();
        for (i, t) in rows.iter().enumerate() {
            let p = scorer.predict_with(&t.input(), &mut ws);
            assert_eq!(
                p.label.index(),
                linfa_labels[i],
                "row {i} ({:?}): scorer and linfa disagree",
                t.description
            );
            // Both sums: feature by feature (training's) and word by word through the
            // workspace's word memory (serving's).
            scorer.logits_of(&features[i], &mut logits);
            softmax_in_place(&mut logits);
            let served = scorer.probabilities(&t.input(), &mut ws);
            for (k, (&prob, &served)) in logits.iter().zip(&served).enumerate() {
                for p in [prob, served] {
                    assert!(
                        (p - linfa_probs[[i, k]]).abs() < 1e-4,
                        "row {i} label {k}: {p} vs {}",
                        linfa_probs[[i, k]]
                    );
                }
            }
        }
    }
}
