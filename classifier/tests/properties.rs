//! Property tests (proptest) for what the classifier takes from outside: CSV files (training,
//! evaluation and `predict` input) and the movements clients send to the service. Whatever
//! the bytes, nothing panics; a bad row is an error that names its line; every prediction is
//! a probability distribution over the model's labels; and what a workspace remembered never
//! changes a prediction.
//!
//! `PROPTEST_CASES` raises the number of cases (CI's longer run sets it).

mod common;

use std::io::Cursor;
use std::sync::OnceLock;

use classifier::data::ReadOptions;
use classifier::features::MovementInput;
use classifier::model::Workspace;
use classifier::{ClassifierError, Scorer, TransactionReader};
use proptest::prelude::*;

const HEADER: &str = "id,date,description,amount,mcc,category\n";

fn scorer() -> &'static Scorer {
    static SCORER: OnceLock<Scorer> = OnceLock::new();
    SCORER.get_or_init(|| {
        Scorer::load(&common::workspace_root().join("models/default.json"))
            .expect("the shipped model loads")
    })
}

/// Reads every row of `body` (after a valid header) and returns how many were read and the
/// error that stopped the reading, if one did.
fn read(body: &[u8], skip_invalid: bool) -> (usize, Option<ClassifierError>) {
    let mut bytes = HEADER.as_bytes().to_vec();
    bytes.extend_from_slice(body);
    let options = ReadOptions {
        require_category: true,
        skip_invalid,
    };
    let mut reader = TransactionReader::from_reader(Box::new(Cursor::new(bytes)), "p.csv", options)
        .expect("the header is valid");
    let mut rows = 0;
    loop {
        match reader.next_transaction() {
            Ok(Some(_)) => rows += 1,
            Ok(None) => return (rows, None),
            Err(e) => return (rows, Some(e)),
        }
    }
}

/// A field as files really get them wrong: plausible values, quotes, commas, blanks, long
/// runs, numbers out of range, labels in the wrong case, any text at all.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("FOOD_AND_DRINK".to_string()),
        Just("food_and_drink".to_string()),
        Just("5411".to_string()),
        Just("99999".to_string()),
        Just("-12.50".to_string()),
        Just("1,234.56".to_string()),
        Just("1e400".to_string()),
        Just("NaN".to_string()),
        Just("\"quoted, with comma\"".to_string()),
        Just("\"unterminated".to_string()),
        "[ -~]{0,24}",
        any::<String>(),
        "X{300,600}",
    ]
}

fn row() -> impl Strategy<Value = String> {
    prop::collection::vec(field(), 0..9).prop_map(|fields| fields.join(","))
}

/// Descriptions drawn from few words, so that words come back and the workspace's memory is
/// used (and overwritten), mixed with any text at all.
fn description() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("PIX"),
        Just("ENVIADO"),
        Just("AUTO"),
        Just("POSTO"),
        Just("LTDA"),
        Just("DROGARIA"),
        Just("SAO"),
        Just("JOSÉ"),
        Just("*"),
        Just("02/10"),
    ];
    prop_oneof![
        prop::collection::vec(word, 0..8).prop_map(|w| w.join(" ")),
        any::<String>(),
        "[A-Z0-9 *./-]{0,80}",
    ]
}

fn amount() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        -1e7..1e7f64,
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
    ]
}

proptest! {
    #[test]
    fn any_csv_rows_are_read_or_refused_by_line(rows in prop::collection::vec(row(), 1..6)) {
        let body = rows.join("\n");
        let (read_rows, error) = read(body.as_bytes(), false);
        match error {
            None => prop_assert!(read_rows <= rows.len()),
            Some(ClassifierError::Row { line, problem }) => {
                // The header is line 1; a quoted field may run over lines, never past the end.
                let lines = body.matches('\n').count() as u64 + 2;
                prop_assert!((2..=lines).contains(&line), "line {} of {}", line, lines);
                prop_assert!(!problem.is_empty());
            }
            Some(other) => prop_assert!(false, "not a row error: {}", other),
        }
    }

    #[test]
    fn any_bytes_are_read_or_refused_and_skipping_reads_past_every_bad_row(
        body in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let (_, error) = read(&body, false);
        if let Some(e) = error {
            prop_assert!(matches!(e, ClassifierError::Row { .. }), "{}", e);
        }
        let (_, error) = read(&body, true);
        prop_assert!(error.is_none(), "skip_invalid still stopped: {:?}", error);
    }

    #[test]
    fn any_movement_gets_a_probability_distribution_over_the_labels(
        description in description(),
        amount in amount(),
        mcc in any::<Option<u16>>(),
        kind in prop::option::of("[ -~]{0,12}|[a-z]{1,8}"),
    ) {
        let s = scorer();
        let input = MovementInput { description: &description, amount, mcc, kind: kind.as_deref() };
        let p = s.predict(&input);
        prop_assert!(s.labels().contains(&p.label));
        prop_assert!(p.probability.is_finite() && p.probability > 0.0 && p.probability <= 1.0);
        let probs = s.probabilities(&input, &mut Workspace::default());
        prop_assert_eq!(probs.len(), s.labels().len());
        prop_assert!(probs.iter().all(|q| q.is_finite() && *q >= 0.0));
        let sum: f32 = probs.iter().sum();
        prop_assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to {}", sum);
        for alt in p.runners_up.iter().flatten() {
            prop_assert!(alt.probability <= p.probability);
        }
    }

    #[test]
    fn what_a_workspace_remembers_never_changes_a_prediction(
        descriptions in prop::collection::vec(description(), 1..40),
        amount in -5e3..5e3f64,
    ) {
        let s = scorer();
        let mut ws = Workspace::default();
        for d in &descriptions {
            let input = MovementInput { description: d, amount, mcc: None, kind: None };
            let kept = s.probabilities(&input, &mut ws);
            let fresh = s.probabilities(&input, &mut Workspace::default());
            prop_assert_eq!(kept, fresh, "for {:?}", d);
        }
    }
}
