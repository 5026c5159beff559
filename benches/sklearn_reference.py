"""scikit-learn reference for the transaction classifier.

TF-IDF of char_wb 2-5-grams of the description plus word 1-2-grams, multinomial
LogisticRegression (lbfgs, C=1.0), trained on the same corpus as the Rust model. The word
vectoriser also sees the movement's direction, log2 amount bucket, MCC and type as tokens, so
both models get the same information. Everything runs on one core, like the Rust side.

Subcommands (run with the benches virtual environment, benches/.venv/bin/python):

  sklearn_reference.py throughput CORPUS EVAL BENCH
      Fit on CORPUS, score EVAL, time transform + predict on the BENCH rows. Prints one JSON
      object: macro_f1 (evaluation set), train_seconds, bench_rows, rows_per_second.
      Called by classifier_vs_sklearn.sh.

  sklearn_reference.py predict --train CORPUS [--exclude-family F] \\
          --data IN --out OUT [--data IN2 --out OUT2 ...]
      Fit once on CORPUS (without the rows whose `family` is F, when given), then write each OUT
      as its IN's columns followed by predicted,probability,confidence: the same layout as
      `classifier predict`. Training seconds go to standard error.

  sklearn_reference.py sparse-hashed [--alpha A] [--max-columns N] TRAIN_SVM TEST_SVM [...]
      Logistic regression on the Rust featuriser's own hashed features, weighted and penalised
      as the Rust model is (smoothed inverse document frequency of the training rows, L2
      penalty alpha on the summed loss, i.e. C = 1/alpha) but on every bucket a training row
      holds (or its N most frequent), with no dense matrix. It differs from `classifier train`
      in that it fits every row it is given (no hold-out) and counts a bucket in a row only when
      the row's summed value there is not zero. The files are svmlight (`label_index
      bucket+1:value ...`, label index in the classifier's label order). Prints one JSON
      object per test file: macro_f1, accuracy, train_seconds, columns_used.

CSV inputs may be gzip-compressed (.csv.gz).
"""

import argparse
import csv
import gzip
import json
import math
import os
import sys
import time

# One core, like the Rust side: numpy's BLAS must not use the second one.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

from sklearn.datasets import load_svmlight_file  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from sklearn.pipeline import make_pipeline, make_union  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402

# Hashed feature ids of the Rust featuriser: 1-based, up to 2^24 + 1 for the largest hash space
# `classifier features --hash-bits` takes (only the columns a training row uses are fitted).
HASHED_FEATURES = 2**24 + 1


def read(path):
    """Header and rows (dicts) of a CSV file, gzip-compressed when the name ends in .gz."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return reader.fieldnames, rows


def side_tokens(row):
    amount = float(row["amount"])
    direction = "in" if amount > 0 else ("out" if amount < 0 else "zero")
    bucket = min(24, int(math.floor(math.log2(abs(amount) + 1))))
    tokens = [f"zzdir{direction}", f"zzamt{direction}{bucket}"]
    if row.get("mcc"):
        tokens += [f"zzmcc{row['mcc']}", f"zzmccg{row['mcc'][:2]}"]
    if row.get("type"):
        tokens.append(f"zztype{row['type'].lower()}")
    return " ".join(tokens)


def texts(rows):
    return [(r["description"], side_tokens(r)) for r in rows]


def description(pairs):
    return [d for d, _ in pairs]


def description_and_side(pairs):
    return [f"{d} {s}" for d, s in pairs]


def pipeline():
    return make_pipeline(
        make_union(
            make_pipeline(
                FunctionTransformer(description),
                TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), lowercase=True,
                                strip_accents="unicode", sublinear_tf=True, min_df=2),
            ),
            make_pipeline(
                FunctionTransformer(description_and_side),
                TfidfVectorizer(analyzer="word", ngram_range=(1, 2), lowercase=True,
                                strip_accents="unicode", sublinear_tf=True, min_df=2),
            ),
        ),
        LogisticRegression(C=1.0, max_iter=1000),
    )


def fit(rows):
    """The reference pipeline fitted on `rows`, and the seconds the fit took."""
    model = pipeline()
    started = time.perf_counter()
    model.fit(texts(rows), [r["category"] for r in rows])
    return model, time.perf_counter() - started


def confidence(p):
    """The classifier's confidence band of a probability."""
    if p > 0.98:
        return "VERY_HIGH"
    if p > 0.90:
        return "HIGH"
    if p > 0.70:
        return "MEDIUM"
    return "LOW"


def throughput(args):
    _, train = read(args.corpus)
    _, evaluation = read(args.eval)
    _, bench = read(args.bench)

    model, train_seconds = fit(train)

    predicted = model.predict(texts(evaluation))
    macro_f1 = f1_score([r["category"] for r in evaluation], predicted, average="macro")

    bench_texts = texts(bench)
    model.predict(bench_texts[:1000])  # warm-up
    started = time.perf_counter()
    model.predict(bench_texts)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "macro_f1": macro_f1,
        "train_seconds": train_seconds,
        "bench_rows": len(bench_texts),
        "rows_per_second": len(bench_texts) / seconds,
    }))


def predict(args, parser):
    if len(args.data) != len(args.out):
        parser.error("give one --out for each --data, in the same order")
    header, train = read(args.train)
    if args.exclude_family is not None:
        if "family" not in header:
            parser.error(f"--exclude-family: {args.train} has no family column")
        kept = [r for r in train if r["family"] != args.exclude_family]
        print(f"excluded {len(train) - len(kept)} training row(s) of family "
              f"{args.exclude_family}", file=sys.stderr)
        train = kept

    model, train_seconds = fit(train)
    print(f"trained on {len(train)} row(s) in {train_seconds:.1f} s", file=sys.stderr)

    for data_path, out_path in zip(args.data, args.out):
        header, rows = read(data_path)
        probabilities = model.predict_proba(texts(rows)) if rows else []
        with open(out_path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header + ["predicted", "probability", "confidence"])
            for row, p in zip(rows, probabilities):
                best = p.argmax()
                writer.writerow([row[c] for c in header] + [
                    model.classes_[best], f"{p[best]:.4f}", confidence(p[best])])
        print(f"labelled {len(rows)} row(s) of {data_path} into {out_path}", file=sys.stderr)


def sparse_hashed(args):
    import numpy as np
    import scipy.sparse as sp

    x_train, y_train = load_svmlight_file(args.train_svm, n_features=HASHED_FEATURES,
                                          zero_based=False)
    x_train.eliminate_zeros()
    # A column that is zero in every training row gets weight zero at the L2-penalised optimum
    # (its loss gradient is always zero), so fitting on the used columns only gives the same
    # model as fitting on all 2^20 + 1, without lbfgs carrying 19 x 2^20 weights around.
    used = (x_train.getnnz(axis=0) > 0).nonzero()[0]
    if args.max_columns:
        # The most frequent buckets, as `classifier train --select frequency` keeps them.
        counts = x_train[:, used].getnnz(axis=0)
        best = np.lexsort((used, -counts))[:args.max_columns]
        used = np.sort(used[best])
    x_train = x_train[:, used]
    # The Rust trainer's weighting: smoothed inverse document frequency per bucket.
    df = x_train.getnnz(axis=0)
    n = x_train.shape[0]
    idf = sp.diags(np.log((1.0 + n) / (1.0 + df)) + 1.0)

    model = LogisticRegression(C=1.0 / args.alpha, max_iter=1000)
    started = time.perf_counter()
    model.fit(x_train @ idf, y_train.astype(int))
    train_seconds = time.perf_counter() - started

    for path in args.test_svm:
        x_test, y_test = load_svmlight_file(path, n_features=HASHED_FEATURES, zero_based=False)
        predicted = model.predict(x_test[:, used] @ idf)
        truth = y_test.astype(int)
        print(json.dumps({
            "macro_f1": f1_score(truth, predicted, average="macro"),
            "accuracy": accuracy_score(truth, predicted),
            "train_seconds": train_seconds,
            "columns_used": len(used),
        }))


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("throughput", help="macro-F1 and single-core throughput (JSON)")
    p.add_argument("corpus", help="training CSV")
    p.add_argument("eval", help="evaluation CSV")
    p.add_argument("bench", help="CSV of the rows to time prediction on")

    p = commands.add_parser("predict", help="label CSV files like `classifier predict`")
    p.add_argument("--train", required=True, help="training CSV")
    p.add_argument("--exclude-family", metavar="F",
                   help="leave out the training rows whose family is F")
    p.add_argument("--data", action="append", required=True, metavar="IN",
                   help="CSV to label (repeatable, paired in order with --out)")
    p.add_argument("--out", action="append", required=True, metavar="OUT",
                   help="where to write the labelled copy of the matching --data")

    p = commands.add_parser("sparse-hashed",
                            help="logistic regression on the Rust hashed features (JSON)")
    p.add_argument("--alpha", type=float, default=10.0,
                   help="L2 penalty on the summed loss, as `classifier train --alpha`")
    p.add_argument("--max-columns", type=int, default=0,
                   help="keep only this many buckets, the most frequent (default: all)")
    p.add_argument("train_svm", help="svmlight training file")
    p.add_argument("test_svm", nargs="+", help="svmlight test file(s)")

    args = parser.parse_args()
    if args.command == "throughput":
        throughput(args)
    elif args.command == "predict":
        predict(args, parser)
    else:
        sparse_hashed(args)


if __name__ == "__main__":
    main()
