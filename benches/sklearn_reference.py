"""scikit-learn reference for the transaction classifier, run by classifier_vs_sklearn.sh.

TF-IDF of char_wb 2-5-grams of the description plus word 1-2-grams, multinomial
LogisticRegression (lbfgs), trained on the same corpus as the Rust model and scored on the
same evaluation set. The word vectoriser also sees the movement's direction, log2 amount
bucket, MCC and type as tokens, so both models get the same information.

Prints one JSON object: macro-F1 on the evaluation set, training seconds, and single-thread
throughput of transform + predict on the benchmark rows.
"""

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

from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.pipeline import make_pipeline, make_union  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402


def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


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


def main():
    corpus_path, eval_path, bench_path = sys.argv[1:4]
    train = read(corpus_path)
    evaluation = read(eval_path)
    bench = read(bench_path)

    model = pipeline()
    started = time.perf_counter()
    model.fit(texts(train), [r["category"] for r in train])
    train_seconds = time.perf_counter() - started

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


if __name__ == "__main__":
    main()
