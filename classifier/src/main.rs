//! `classifier`: build the corpus, train, evaluate and predict from the command line.
//!
//! The work is done by the library; this binary parses arguments, shows progress and reports
//! errors as one line naming what was wrong.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use classifier::card::{model_card, Evaluation};
use classifier::corpus::{self, CorpusSettings};
use classifier::data::Transaction;
use classifier::data::{ReadOptions, TransactionReader};
use classifier::features::FeatureSettings;
use classifier::features::Features;
use classifier::metrics::{Confusion, Reliability};
use classifier::model::{Scorer, Workspace};
use classifier::train::{self, Selection, TrainSettings};

#[derive(Parser)]
#[command(
    name = "classifier",
    version,
    about = "Label bank movements with the 19 transaction categories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the labelled corpus and evaluation set from the name-suggestion-index.
    Corpus(CorpusArgs),
    /// Train a model and write it with its model card.
    Train(TrainArgs),
    /// Print precision, recall, F1 and macro-F1 of a model on labelled data.
    Eval(EvalArgs),
    /// Label movements: the input columns plus predicted,probability,confidence.
    Predict(PredictArgs),
    /// Write labelled rows' hashed features in svmlight format (`label bucket+1:value ...`),
    /// for the unlimited sparse reference of `benches/`.
    Features(FeaturesArgs),
}

#[derive(Args)]
struct FeaturesArgs {
    /// Labelled CSV.
    #[arg(long)]
    data: PathBuf,
    /// svmlight file to write.
    #[arg(long)]
    out: PathBuf,
    /// Leave out the rows of this family (the `family` column).
    #[arg(long)]
    exclude_family: Option<String>,
    /// Keep only the rows of this family.
    #[arg(long)]
    only_family: Option<String>,
    /// Hash space: 2^hash_bits buckets (8 to 24); a larger one than the model's shows what
    /// the shared buckets cost.
    #[arg(long, default_value_t = FeatureSettings::default().hash_bits)]
    hash_bits: u8,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Args)]
struct CorpusArgs {
    /// `dist/json/nsi.json` of the npm package name-suggestion-index.
    #[arg(long)]
    nsi: PathBuf,
    /// Training corpus to write (`.csv` or `.csv.gz`).
    #[arg(long)]
    out: PathBuf,
    /// Evaluation set to write (reserved brands, unseen formats).
    #[arg(long)]
    eval_out: PathBuf,
    #[arg(long, default_value_t = CorpusSettings::default().seed)]
    seed: u64,
    /// Rows aimed at per label.
    #[arg(long, default_value_t = CorpusSettings::default().rows_per_label)]
    rows_per_label: usize,
}

#[derive(Args)]
struct InputArgs {
    /// Skip malformed rows (and count them) instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Labelled CSV (`.csv` or `.csv.gz`).
    #[arg(long)]
    data: PathBuf,
    /// Model file to write; the card goes beside it with `.md`.
    #[arg(long)]
    out: PathBuf,
    /// A separate labelled set to report in the model card.
    #[arg(long)]
    eval: Option<PathBuf>,
    #[arg(long, default_value_t = TrainSettings::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = TrainSettings::default().alpha)]
    alpha: f32,
    #[arg(long, default_value_t = TrainSettings::default().max_iterations)]
    iterations: u64,
    /// L-BFGS iterations per progress step; each step restarts the solver's curvature memory.
    #[arg(long, default_value_t = TrainSettings::default().chunk_iterations)]
    chunk_iterations: u64,
    #[arg(long, default_value_t = TrainSettings::default().max_columns)]
    max_columns: usize,
    #[arg(long, default_value_t = TrainSettings::default().min_df)]
    min_df: u32,
    /// How columns are chosen when more buckets qualify than --max-columns.
    #[arg(long, value_enum, default_value_t = TrainSettings::default().selection)]
    select: Selection,
    /// Do not weigh column values by their inverse document frequency.
    #[arg(long)]
    no_idf: bool,
    /// Leave out the rows of this family (the `family` column) from training and from the
    /// calibration set: the format-shift evaluation trains once per family without it.
    #[arg(long)]
    exclude_family: Option<String>,
    /// Do not fit a calibration temperature on --eval.
    #[arg(long)]
    no_calibration: bool,
    /// Share of rows held out for the card's metrics.
    #[arg(long, default_value_t = TrainSettings::default().holdout)]
    holdout: f64,
    /// Smallest character n-gram inside words.
    #[arg(long, default_value_t = FeatureSettings::default().char_ngram_min)]
    ngram_min: u8,
    /// Largest character n-gram inside words (at most 8).
    #[arg(long, default_value_t = FeatureSettings::default().char_ngram_max)]
    ngram_max: u8,
    /// Hash space: 2^hash_bits buckets (8 to 24).
    #[arg(long, default_value_t = FeatureSettings::default().hash_bits)]
    hash_bits: u8,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// Labelled CSV.
    #[arg(long)]
    data: PathBuf,
    /// Also print the confusion matrix.
    #[arg(long)]
    confusion: bool,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Args)]
struct PredictArgs {
    #[arg(long)]
    model: PathBuf,
    /// CSV to label; standard input when omitted.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where to write; standard output when omitted.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    input: InputArgs,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Corpus(a) => run_corpus(a),
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::Predict(a) => run_predict(a),
        Command::Features(a) => run_features(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn open(path: &Path, require_category: bool, input: &InputArgs) -> Result<TransactionReader> {
    Ok(TransactionReader::from_path(
        path,
        ReadOptions {
            require_category,
            skip_invalid: input.skip_invalid,
        },
    )?)
}

fn report_skips(reader: &TransactionReader) {
    if reader.skipped() > 0 {
        eprintln!(
            "skipped {} malformed row(s); the first: {}",
            reader.skipped(),
            reader.first_skip().unwrap_or("?")
        );
    }
}

fn run_corpus(a: CorpusArgs) -> Result<()> {
    let (version, brands) = corpus::load_brands(&a.nsi)?;
    let settings = CorpusSettings {
        seed: a.seed,
        rows_per_label: a.rows_per_label,
        ..CorpusSettings::default()
    };
    let built = corpus::build(&brands, &settings);
    corpus::write_csv(&built.train, &a.out)?;
    corpus::write_csv(&built.eval, &a.eval_out)?;
    eprintln!(
        "name-suggestion-index {version}: {} labelled brands; wrote {} training rows to {} and {} evaluation rows to {} (seed {})",
        brands.len(),
        built.train.len(),
        a.out.display(),
        built.eval.len(),
        a.eval_out.display(),
        a.seed
    );
    Ok(())
}

fn run_train(a: TrainArgs) -> Result<()> {
    if a.out.extension().is_none_or(|e| e != "json") {
        bail!("--out must name a .json file (the model card is written beside it as .md)");
    }
    let rows = read_family_rows(&a.data, &a.input, a.exclude_family.as_deref(), None)?;
    let settings = TrainSettings {
        seed: a.seed,
        alpha: a.alpha,
        max_iterations: a.iterations,
        chunk_iterations: a.chunk_iterations,
        max_columns: a.max_columns,
        min_df: a.min_df,
        selection: a.select,
        idf: !a.no_idf,
        holdout: a.holdout,
        features: FeatureSettings {
            char_ngram_min: a.ngram_min,
            char_ngram_max: a.ngram_max,
            hash_bits: a.hash_bits,
            ..FeatureSettings::default()
        },
    };
    settings.features.validate().map_err(anyhow::Error::msg)?;
    let bar = indicatif::ProgressBar::new(settings.max_iterations);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} training [{elapsed_precise}] {bar:40} {pos}/{len} L-BFGS iterations (eta {eta})",
        )
        .expect("static template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let started = Instant::now();
    let mut report = train::train(&rows, &settings, |done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    let eval = match &a.eval {
        Some(path) => {
            // A held-out family stays out of the calibration set too.
            let eval_rows = read_family_rows(path, &a.input, a.exclude_family.as_deref(), None)?;
            let uncalibrated = Scorer::new(&report.model)?;
            let (_, before) = evaluate_rows(&uncalibrated, &eval_rows);
            if !a.no_calibration {
                report.model.temperature = train::fit_temperature(&uncalibrated, &eval_rows);
            }
            let scorer = Scorer::new(&report.model)?;
            let (confusion, after) = evaluate_rows(&scorer, &eval_rows);
            Some((path.display().to_string(), confusion, before, after))
        }
        None => None,
    };
    report.model.save(&a.out)?;
    let name = a
        .out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model");
    let command: Vec<String> = std::env::args().collect();
    let command = format!("classifier {}", command[1..].join(" "));
    let card = model_card(
        name,
        &a.data.display().to_string(),
        &command,
        &settings,
        &report,
        eval.as_ref()
            .map(|(data, confusion, before, after)| Evaluation {
                data,
                confusion,
                temperature: report.model.temperature,
                uncalibrated: before,
                calibrated: after,
            }),
    );
    let card_path = a.out.with_extension("md");
    std::fs::write(&card_path, card).with_context(|| format!("writing {}", card_path.display()))?;
    eprintln!(
        "trained on {} rows in {:.1} s: hold-out macro-F1 {:.4}{}; wrote {} and {}",
        report.train_rows,
        started.elapsed().as_secs_f64(),
        report.holdout.macro_f1(),
        eval.as_ref()
            .map(|(_, c, _, _)| format!(
                ", evaluation macro-F1 {:.4}, temperature {:.3}",
                c.macro_f1(),
                report.model.temperature
            ))
            .unwrap_or_default(),
        a.out.display(),
        card_path.display()
    );
    Ok(())
}

/// Reads labelled rows, keeping or leaving out one family (the `family` column).
fn read_family_rows(
    path: &Path,
    input: &InputArgs,
    exclude: Option<&str>,
    only: Option<&str>,
) -> Result<Vec<Transaction>> {
    let mut reader = open(path, true, input)?;
    let column = reader.headers().iter().position(|h| h == "family");
    let rows = reader.read_all()?;
    report_skips(&reader);
    if exclude.is_none() && only.is_none() {
        return Ok(rows);
    }
    let Some(column) = column else {
        bail!(
            "{} has no `family` column to select rows by",
            path.display()
        );
    };
    fn family(t: &Transaction, column: usize) -> Option<&str> {
        t.fields.get(column).map(String::as_str)
    }
    let kept: Vec<Transaction> = rows
        .into_iter()
        .filter(|t| exclude.is_none_or(|f| family(t, column) != Some(f)))
        .filter(|t| only.is_none_or(|f| family(t, column) == Some(f)))
        .collect();
    if kept.is_empty() {
        bail!(
            "no row of {} is left after the family filter",
            path.display()
        );
    }
    Ok(kept)
}

/// Scores labelled rows: the confusion matrix and the reliability of the probabilities.
fn evaluate_rows(scorer: &Scorer, rows: &[Transaction]) -> (Confusion, Reliability) {
    let mut confusion = Confusion::default();
    let mut reliability = Reliability::default();
    let mut ws = Workspace::default();
    for t in rows {
        let truth = t.category.expect("required by the reader");
        let p = scorer.predict_with(&t.input(), &mut ws);
        confusion.add(truth, p.label);
        reliability.add(p.probability, p.label == truth);
    }
    (confusion, reliability)
}

fn evaluate(scorer: &Scorer, data: &Path, input: &InputArgs) -> Result<(Confusion, Reliability)> {
    let rows = read_family_rows(data, input, None, None)?;
    if rows.is_empty() {
        bail!("{} holds no rows to evaluate", data.display());
    }
    Ok(evaluate_rows(scorer, &rows))
}

fn run_eval(a: EvalArgs) -> Result<()> {
    let scorer = Scorer::load(&a.model)?;
    let (confusion, reliability) = evaluate(&scorer, &a.data, &a.input)?;
    print!("{}", confusion.scores_markdown());
    if a.confusion {
        println!();
        print!("{}", confusion.matrix_markdown());
    }
    println!("\nReliability:\n");
    print!("{}", reliability.markdown());
    Ok(())
}

fn run_predict(a: PredictArgs) -> Result<()> {
    let scorer = Scorer::load(&a.model)?;
    let options = ReadOptions {
        require_category: false,
        skip_invalid: a.input.skip_invalid,
    };
    let mut reader = match &a.data {
        Some(path) => TransactionReader::from_path(path, options)?,
        None => {
            let stdin: Box<dyn Read> = Box::new(std::io::stdin().lock());
            TransactionReader::from_reader(stdin, "standard input", options)?
        }
    };
    let sink: Box<dyn std::io::Write> = match &a.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut writer = csv::Writer::from_writer(sink);
    let mut header: Vec<String> = reader.headers().to_vec();
    header.extend(["predicted", "probability", "confidence"].map(String::from));
    writer.write_record(&header)?;
    let mut ws = Workspace::default();
    let mut count = 0u64;
    while let Some(t) = reader.next_transaction()? {
        let p = scorer.predict_with(&t.input(), &mut ws);
        let mut record = t.fields;
        record.push(p.label.as_str().to_string());
        record.push(format!("{:.4}", p.probability));
        record.push(p.confidence.as_str().to_string());
        writer.write_record(&record)?;
        count += 1;
    }
    writer.flush()?;
    report_skips(&reader);
    if a.out.is_some() {
        eprintln!("labelled {count} row(s)");
    }
    Ok(())
}

fn run_features(a: FeaturesArgs) -> Result<()> {
    let rows = read_family_rows(
        &a.data,
        &a.input,
        a.exclude_family.as_deref(),
        a.only_family.as_deref(),
    )?;
    let featurizer = classifier::Featurizer::new(FeatureSettings {
        hash_bits: a.hash_bits,
        ..FeatureSettings::default()
    })
    .map_err(anyhow::Error::msg)?;
    let file =
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut features = Features::default();
    let mut values: std::collections::BTreeMap<u32, f32> = Default::default();
    for t in &rows {
        featurizer.featurize(&t.input(), &mut features);
        values.clear();
        features.for_each_value(|b, v| *values.entry(b).or_default() += v);
        use std::io::Write;
        write!(
            out,
            "{}",
            t.category.expect("required by the reader").index()
        )?;
        for (b, v) in &values {
            if *v != 0.0 {
                write!(out, " {}:{v}", b + 1)?;
            }
        }
        writeln!(out)?;
    }
    eprintln!(
        "wrote the features of {} row(s) to {}",
        rows.len(),
        a.out.display()
    );
    Ok(())
}
