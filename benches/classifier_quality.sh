#!/usr/bin/env bash
# How well the classifier does on data it was not built from, side by side with the
# scikit-learn reference trained on the same corpus, in one run:
#
#   bash benches/classifier_quality.sh            # the shipped models/default.json
#
# 1. Evaluation set (classifier/data/eval.csv.gz): reserved brands and companies, unseen names.
# 2. Leave-one-family-out: for each statement family (bank style) of the corpus, both models
#    are trained without it and scored on every row printed in its style (corpus and eval).
# 3. Real Brazilian supplier names (benches/data/real-br-suppliers.csv, evaluation only).
# 4. What the column limit costs: the shipped dense model against scikit-learn's logistic
#    regression on the very same hashed features with no column limit, and the shipped column
#    choice (mutual information) against the old one (frequency), on sets 1 and 3.
#
# Every Rust model here trains with the shipped settings; only the data differ. Takes about
# 30 minutes on 2 cores (seven Rust trainings of about 3.5 minutes each). Results go to
# benches/out/quality/report.md and standard output.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/default.json}
CORPUS=classifier/data/corpus.csv.gz
EVAL=classifier/data/eval.csv.gz
REAL=benches/data/real-br-suppliers.csv
OUT=benches/out/quality
rm -rf "$OUT"
mkdir -p "$OUT/rust" "$OUT/sklearn" "$OUT/families" "$OUT/models"

if [ ! -x benches/.venv/bin/python ]; then
  python3 -m venv benches/.venv
fi
benches/.venv/bin/python -c 'import sklearn' 2>/dev/null ||
  benches/.venv/bin/pip install --quiet 'scikit-learn==1.7.*' numpy scipy
PY=benches/.venv/bin/python
cargo build --release --quiet -p classifier
BIN=./target/release/classifier

echo "== shipped model and reference on the evaluation set and the real names" >&2
$BIN predict --model "$MODEL" --data "$EVAL" --out "$OUT/rust/eval.csv"
$BIN predict --model "$MODEL" --data "$REAL" --out "$OUT/rust/real-br.csv"
$PY benches/sklearn_reference.py predict --train "$CORPUS" \
  --data "$EVAL" --out "$OUT/sklearn/eval.csv" --data "$REAL" --out "$OUT/sklearn/real-br.csv"

echo "== leave one family out" >&2
families=$($PY benches/split_families.py "$CORPUS" "$EVAL" "$OUT/families")
for f in $families; do
  echo "-- without $f" >&2
  $BIN train --data "$CORPUS" --eval "$EVAL" --exclude-family "$f" \
    --out "$OUT/models/without-$f.json" 2>&1 | tail -1 >&2
  $BIN predict --model "$OUT/models/without-$f.json" \
    --data "$OUT/families/family-$f.csv" --out "$OUT/rust/lofo-$f.csv"
  $PY benches/sklearn_reference.py predict --train "$CORPUS" --exclude-family "$f" \
    --data "$OUT/families/family-$f.csv" --out "$OUT/sklearn/lofo-$f.csv"
done

echo "== what the column limit costs" >&2
$BIN features --data "$CORPUS" --out "$OUT/corpus.svm"
$BIN features --data "$EVAL" --out "$OUT/eval.svm"
$BIN features --data "$REAL" --out "$OUT/real.svm"
sparse_eval=$($PY benches/sklearn_reference.py sparse-hashed "$OUT/corpus.svm" "$OUT/eval.svm")
sparse_real=$($PY benches/sklearn_reference.py sparse-hashed "$OUT/corpus.svm" "$OUT/real.svm")
$BIN train --data "$CORPUS" --eval "$EVAL" --select frequency \
  --out "$OUT/models/frequency.json" 2>&1 | tail -1 >&2
score() { # model data -> "macro-F1 accuracy"
  $BIN eval --model "$1" --data "$2" | sed -n 's/^macro-F1 \*\*\([0-9.]*\)\*\*, accuracy \([0-9.]*\).*/\1 \2/p'
}
read -r info_f1 _ <<<"$(score "$MODEL" "$EVAL")"
read -r _ info_acc <<<"$(score "$MODEL" "$REAL")"
read -r freq_f1 _ <<<"$(score "$OUT/models/frequency.json" "$EVAL")"
read -r _ freq_acc <<<"$(score "$OUT/models/frequency.json" "$REAL")"
columns=$($PY -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["buckets"]))' "$MODEL")

{
  cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
  echo "Run $(date -u +%F) on $cpu, $(nproc) cores: \`bash benches/classifier_quality.sh\`."
  echo
  $PY benches/quality_report.py "$OUT"
  echo
  echo "### What the column limit costs"
  echo
  echo "Same corpus, same hashed features (\`classifier features\`); scikit-learn fits every"
  echo "bucket any training row holds, the Rust models keep $columns columns."
  echo
  echo "| model | columns | evaluation macro-F1 | real names accuracy |"
  echo "|---|---:|---:|---:|"
  echo "| Rust, columns by mutual information (shipped) | $columns | $info_f1 | $info_acc |"
  echo "| Rust, columns by frequency | $columns | $freq_f1 | $freq_acc |"
  $PY - "$sparse_eval" "$sparse_real" <<'PY'
import json, sys
e, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"| scikit-learn on the same hashed features, no limit | {e['columns_used']:,} | "
      f"{e['macro_f1']:.4f} | {r['accuracy']:.4f} |")
PY
} > "$OUT/report.md"
cat "$OUT/report.md"
