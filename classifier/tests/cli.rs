//! The `classifier` command line, run as a user would: corpus, train, eval and predict, and
//! the errors bad input gets.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn classifier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_classifier"))
        .args(args)
        .output()
        .expect("the classifier binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes the first `n` rows of a committed labelled file as plain CSV.
fn slice_of(src: &Path, n: usize, dst: &Path) {
    let rows = common::labelled_rows(src, n);
    let mut w = csv::Writer::from_path(dst).unwrap();
    w.write_record([
        "id",
        "date",
        "description",
        "amount",
        "mcc",
        "type",
        "category",
        "source",
        "family",
    ])
    .unwrap();
    for t in rows {
        w.write_record(&t.fields).unwrap();
    }
}

fn train_small(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("train.csv");
    slice_of(&common::corpus_path(), 6000, &data);
    let model = dir.join("small.json");
    let out = classifier(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--iterations",
        "50",
        "--max-columns",
        "4000",
        "--eval",
        common::eval_path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    model
}

#[test]
fn training_writes_a_model_and_card_that_eval_and_predict_use() {
    let dir = common::scratch_dir("cli-train");
    let model = train_small(&dir);
    let card = std::fs::read_to_string(model.with_extension("md")).unwrap();
    for part in [
        "macro-F1",
        "Confusion matrix",
        "peak memory",
        "training time",
        "| INCOME |",
        "Calibration",
        "After calibration",
    ] {
        assert!(card.contains(part), "the model card lacks {part}");
    }
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&model).unwrap()).unwrap();
    let temperature = file["temperature"].as_f64().unwrap();
    assert!(
        temperature > 0.05 && temperature < 20.0 && temperature != 1.0,
        "a model trained with --eval is calibrated: temperature {temperature}"
    );

    let eval = classifier(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        common::eval_path().to_str().unwrap(),
    ]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let text = String::from_utf8(eval.stdout).unwrap();
    let f1: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("macro-F1 **"))
        .and_then(|l| l.split("**").next())
        .and_then(|v| v.parse().ok())
        .expect("eval prints macro-F1");
    // 6,000 rows and 50 iterations: far from the shipped model, far above chance (1/19).
    assert!(f1 > 0.5, "macro-F1 {f1} on unseen merchants after training");

    // predict: input columns carried through, three columns added, every row labelled.
    let input = dir.join("input.csv");
    std::fs::write(
        &input,
        "id,date,description,amount,mcc,category,note\n\
         a,01/02/2026,PIX RECEBIDO JOAO SILVA,250.00,,,keep me\n\
         b,,NETFLIX.COM,-55.90,,,\n\
         c,,SALARIO ACME LTDA,4200,,,\n",
    )
    .unwrap();
    let labelled = dir.join("labelled.csv");
    let out = classifier(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--data",
        input.to_str().unwrap(),
        "--out",
        labelled.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut reader = csv::Reader::from_path(&labelled).unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers,
        [
            "id",
            "date",
            "description",
            "amount",
            "mcc",
            "category",
            "note",
            "predicted",
            "probability",
            "confidence"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][6], "keep me");
    assert_eq!(&rows[0][7], "TRANSFER_IN");
    assert_eq!(&rows[2][7], "INCOME");
    for r in &rows {
        let p: f32 = r[8].parse().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert!(["VERY_HIGH", "HIGH", "MEDIUM", "LOW"].contains(&&r[9]));
    }

    // predict from standard input to standard output.
    let mut child = Command::new(env!("CARGO_BIN_EXE_classifier"))
        .args(["predict", "--model", model.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"id,date,description,amount,mcc,category\n1,,TARIFA PACOTE SERVICOS,-32.90,,\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text
        .starts_with("id,date,description,amount,mcc,category,predicted,probability,confidence\n"));
    assert!(text.contains(",BANK_FEES,"), "{text}");
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let dir = common::scratch_dir("cli-determinism");
    let data = dir.join("train.csv");
    slice_of(&common::corpus_path(), 1500, &data);
    let mut models = Vec::new();
    for name in ["a.json", "b.json"] {
        let model = dir.join(name);
        let out = classifier(&[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            model.to_str().unwrap(),
            "--iterations",
            "20",
            "--max-columns",
            "1500",
            "--seed",
            "9",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        models.push(std::fs::read(model).unwrap());
    }
    assert!(
        models[0] == models[1],
        "two runs with one seed gave different models"
    );
}

#[test]
fn a_malformed_row_is_named_by_line_and_skip_invalid_counts_it() {
    let dir = common::scratch_dir("cli-bad-rows");
    let data = dir.join("bad.csv");
    std::fs::write(
        &data,
        "id,date,description,amount,mcc,category\n\
         1,,PADARIA REAL,-12.00,,FOOD_AND_DRINK\n\
         2,,PIX RECEBIDO ANA,abc,,TRANSFER_IN\n\
         3,,NETFLIX,-39.90,,ENTERTAINMENT\n",
    )
    .unwrap();
    let model = dir.join("m.json");
    let out = classifier(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "error: line 3: amount `abc` is not a decimal number like -12.50"
    );

    let out = classifier(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--skip-invalid",
        "--min-df",
        "1",
        "--iterations",
        "5",
        "--holdout",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped 1 malformed row(s); the first: line 3: amount"));
}

#[test]
fn missing_corrupt_and_incompatible_model_files_get_clear_errors_and_no_panic() {
    let dir = common::scratch_dir("cli-bad-model");
    let data = common::eval_path();
    let data = data.to_str().unwrap();

    let out = classifier(&["eval", "--model", "/nonexistent/model.json", "--data", data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: /nonexistent/model.json: No such file"),
        "{}",
        stderr(&out)
    );

    let corrupt = dir.join("corrupt.json");
    std::fs::write(&corrupt, b"\x00\x01 not json").unwrap();
    let out = classifier(&["eval", "--model", corrupt.to_str().unwrap(), "--data", data]);
    assert!(
        stderr(&out).contains("corrupt.json: not valid JSON"),
        "{}",
        stderr(&out)
    );

    let old = dir.join("old.json");
    std::fs::write(&old, br#"{"format": "credit-classifier/0", "weights": []}"#).unwrap();
    let out = classifier(&["predict", "--model", old.to_str().unwrap(), "--data", data]);
    assert!(
        stderr(&out).contains("format `credit-classifier/0` is not supported"),
        "{}",
        stderr(&out)
    );

    let truncated = dir.join("truncated.json");
    let shipped =
        std::fs::read_to_string(common::workspace_root().join("models/default.json")).unwrap();
    let mut model: serde_json::Value = serde_json::from_str(&shipped).unwrap();
    model["weights"].as_array_mut().unwrap().pop();
    std::fs::write(&truncated, model.to_string()).unwrap();
    let out = classifier(&[
        "eval",
        "--model",
        truncated.to_str().unwrap(),
        "--data",
        data,
    ]);
    assert!(
        stderr(&out).contains("weights, expected"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"));
}

#[test]
fn a_family_left_out_is_absent_from_training_and_the_feature_export_is_svmlight() {
    let dir = common::scratch_dir("cli-family");
    let data = dir.join("rows.csv");
    slice_of(&common::corpus_path(), 3000, &data);
    let rows = common::labelled_rows(&data, usize::MAX);
    let intl = rows.iter().filter(|t| t.fields[8] == "intl").count();
    assert!(intl > 100, "{intl} intl rows in the slice");

    let model = dir.join("no-intl.json");
    let out = classifier(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--iterations",
        "10",
        "--max-columns",
        "1000",
        "--exclude-family",
        "intl",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&model).unwrap()).unwrap();
    let training = &file["training"];
    let used =
        training["train_rows"].as_u64().unwrap() + training["holdout_rows"].as_u64().unwrap();
    assert_eq!(
        used as usize,
        rows.len() - intl,
        "only the intl rows are left out"
    );

    // A file without the column cannot be filtered by it: the error names the column.
    let plain = dir.join("plain.csv");
    std::fs::write(
        &plain,
        "id,date,description,amount,mcc,category
1,,NETFLIX.COM,-55.90,,ENTERTAINMENT
",
    )
    .unwrap();
    let out = classifier(&[
        "train",
        "--data",
        plain.to_str().unwrap(),
        "--out",
        dir.join("x.json").to_str().unwrap(),
        "--exclude-family",
        "intl",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no `family` column"),
        "{}",
        stderr(&out)
    );

    let svm = dir.join("nubank.svm");
    let out = classifier(&[
        "features",
        "--data",
        data.to_str().unwrap(),
        "--out",
        svm.to_str().unwrap(),
        "--only-family",
        "nubank",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&svm).unwrap();
    let nubank: Vec<_> = rows.iter().filter(|t| t.fields[8] == "nubank").collect();
    assert_eq!(text.lines().count(), nubank.len());
    for (line, t) in text.lines().zip(&nubank) {
        let mut parts = line.split(' ');
        let label: usize = parts.next().unwrap().parse().unwrap();
        assert_eq!(label, t.category.unwrap().index());
        let mut last = 0u64;
        for pair in parts {
            let (index, value) = pair.split_once(':').expect("index:value");
            let index: u64 = index.parse().unwrap();
            assert!(index > last, "indices rise and start at 1: {line}");
            last = index;
            assert!(value.parse::<f32>().unwrap().is_finite());
        }
        assert!(last > 0, "every row has features: {line}");
    }
}

#[test]
fn the_corpus_command_keeps_reserved_brands_out_of_training() {
    let dir = common::scratch_dir("cli-corpus");
    let nsi = dir.join("nsi.json");
    std::fs::write(
        &nsi,
        r#"{"_meta": {"version": "test"}, "nsi": {
            "brands/shop/supermarket": {"items": [
                {"displayName": "Mercado Alfa", "id": "mercadoalfa-aaaaa2", "locationSet": {"include": ["br"]}, "tags": {}},
                {"displayName": "Mercado Beta", "id": "mercadobeta-bbbbb0", "locationSet": {"include": ["br"]}, "tags": {}}
            ]},
            "brands/amenity/bank": {"items": [
                {"displayName": "Banco Gama", "id": "bancogama-ccccc2", "locationSet": {"include": ["br"]}, "tags": {}}
            ]}
        }}"#,
    )
    .unwrap();
    let train = dir.join("corpus.csv.gz");
    let eval = dir.join("eval.csv");
    let out = classifier(&[
        "corpus",
        "--nsi",
        nsi.to_str().unwrap(),
        "--out",
        train.to_str().unwrap(),
        "--eval-out",
        eval.to_str().unwrap(),
        "--rows-per-label",
        "50",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let train_rows = common::labelled_rows(&train, usize::MAX);
    let eval_text = std::fs::read_to_string(&eval).unwrap();
    let sources: Vec<&str> = train_rows.iter().map(|t| t.fields[7].as_str()).collect();
    assert!(sources.contains(&"nsi:mercadoalfa-aaaaa2"));
    assert!(
        !sources.contains(&"nsi:mercadobeta-bbbbb0"),
        "a reserved brand is in training"
    );
    assert!(eval_text.contains("nsi:mercadobeta-bbbbb0"));
    assert!(
        !eval_text.contains("bancogama") && !sources.contains(&"nsi:bancogama-ccccc2"),
        "amenity=bank is not in the tag table"
    );

    let out = classifier(&[
        "corpus",
        "--nsi",
        "/nonexistent/nsi.json",
        "--out",
        "x.csv",
        "--eval-out",
        "y.csv",
    ]);
    assert!(stderr(&out).contains("/nonexistent/nsi.json"));
}
