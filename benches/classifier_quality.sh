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
# 4. What the hash space, the column limit and the penalty cost: the shipped dense model (2^13
#    buckets, every one a column, alpha 10)
#    against the settings before (2^20 buckets, 8,000 chosen columns) and against scikit-learn
#    fitted on every bucket of either hash space, on sets 1 and 3 and held-out bradesco.
#
# 5. What the real names either model gets wrong have in common (real_names_errors.py): how
#    many carry an activity word the corpus builder knows for their label.
#
# Every Rust model here but the "before" ones of part 4 trains with the shipped settings; only
# the data differ. Takes about 40 minutes on 2 cores (eight Rust trainings of about 4 minutes
# each). Results go to benches/out/quality/report.md and standard output.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/default.json}
CORPUS=classifier/data/corpus.csv.gz
EVAL=classifier/data/eval.csv.gz
REAL=benches/data/real-br-suppliers.csv
OUT=benches/out/quality
rm -rf "$OUT"
mkdir -p "$OUT/rust" "$OUT/sklearn" "$OUT/families" "$OUT/models"

# shellcheck source=benches/sklearn_venv.sh
. benches/sklearn_venv.sh
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

echo "== what the hash space, the column limit and the penalty cost" >&2
# The shipped settings hash into 2^13 buckets and keep every one as a dense column. Against
# them: the settings before this (2^20 buckets, the 8,000 best by mutual information, alpha
# 30), and scikit-learn trained like the Rust model on every bucket of the 2^20 and 2^13 spaces
# (no column limit), on the evaluation set, the real names and the held-out bradesco style.
alpha=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["training"]["alpha"])' "$MODEL")
columns=$($PY -c 'import json,sys; print(format(len(json.load(open(sys.argv[1]))["buckets"]), ","))' "$MODEL")
model_bits=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["features"]["hash_bits"])' "$MODEL")
for bits in 13 20; do
  $BIN features --hash-bits $bits --data "$CORPUS" --out "$OUT/corpus-$bits.svm"
  $BIN features --hash-bits $bits --data "$CORPUS" --exclude-family bradesco \
    --out "$OUT/corpus-no-bradesco-$bits.svm"
  $BIN features --hash-bits $bits --data "$EVAL" --out "$OUT/eval-$bits.svm"
  $BIN features --hash-bits $bits --data "$REAL" --out "$OUT/real-$bits.svm"
  $BIN features --hash-bits $bits --data "$OUT/families/family-bradesco.csv" \
    --out "$OUT/bradesco-$bits.svm"
  $PY benches/sklearn_reference.py sparse-hashed --alpha "$alpha" "$OUT/corpus-$bits.svm" \
    "$OUT/eval-$bits.svm" "$OUT/real-$bits.svm" > "$OUT/sparse-$bits.jsonl"
  $PY benches/sklearn_reference.py sparse-hashed --alpha "$alpha" \
    "$OUT/corpus-no-bradesco-$bits.svm" "$OUT/bradesco-$bits.svm" >> "$OUT/sparse-$bits.jsonl"
done
before=(--hash-bits 20 --max-columns 8000 --select information --alpha 30)
$BIN train --data "$CORPUS" --eval "$EVAL" "${before[@]}" \
  --out "$OUT/models/before.json" 2>&1 | tail -1 >&2
$BIN train --data "$CORPUS" --eval "$EVAL" "${before[@]}" --exclude-family bradesco \
  --out "$OUT/models/before-without-bradesco.json" 2>&1 | tail -1 >&2
score() { # model data f1_var accuracy_var: sets both; stops the run when eval says nothing
  local line f1 accuracy
  line=$($BIN eval --model "$1" --data "$2" |
    sed -n 's/^macro-F1 \*\*\([0-9.]*\)\*\*, accuracy \([0-9.]*\).*/\1 \2/p')
  if [ -z "$line" ]; then
    echo "no score for $1 on $2" >&2
    exit 1
  fi
  read -r f1 accuracy <<<"$line"
  printf -v "$3" %s "$f1"
  printf -v "$4" %s "$accuracy"
}
score "$MODEL" "$EVAL" now_f1 unused
score "$MODEL" "$REAL" unused now_acc
score "$OUT/models/without-bradesco.json" "$OUT/families/family-bradesco.csv" now_lofo unused
score "$OUT/models/before.json" "$EVAL" before_f1 unused
score "$OUT/models/before.json" "$REAL" unused before_acc
score "$OUT/models/before-without-bradesco.json" "$OUT/families/family-bradesco.csv" \
  before_lofo unused

{
  cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  echo "Run $(date -u +%F) on $cpu, $(nproc) cores: \`bash benches/classifier_quality.sh\`."
  echo
  $PY benches/quality_report.py "$OUT"
  echo
  echo "### What the hash space, the column limit and the penalty cost"
  echo
  echo "Same corpus; the Rust models are linfa's dense logistic regression, scikit-learn fits"
  echo "every bucket a training row holds on the Rust featuriser's hashed features"
  echo "(\`classifier features --hash-bits B\`), IDF-weighted, C = 1/alpha. Held-out"
  echo "\`bradesco\`: trained without that style, scored on its rows."
  echo
  echo "| model | hash space | columns | evaluation macro-F1 | real names accuracy | held-out \`bradesco\` macro-F1 |"
  echo "|---|---:|---:|---:|---:|---:|"
  echo "| Rust, \`$MODEL\`, alpha $alpha | 2^$model_bits | $columns | $now_f1 | $now_acc | $now_lofo |"
  echo "| Rust, 8,000 buckets by mutual information, alpha 30 (before) | 2^20 | 8,000 | $before_f1 | $before_acc | $before_lofo |"
  $PY - "$alpha" "$OUT/sparse-13.jsonl" "$OUT/sparse-20.jsonl" <<'PY'
import json, sys
alpha = sys.argv[1]
for bits, path in zip((13, 20), sys.argv[2:]):
    e, r, b = (json.loads(line) for line in open(path))
    print(f"| scikit-learn, every bucket, alpha {alpha} | 2^{bits} | {e['columns_used']:,} | "
          f"{e['macro_f1']:.4f} | {r['accuracy']:.4f} | {b['macro_f1']:.4f} |")
PY
  echo
  echo "### What the real names the models miss have in common"
  echo
  $PY benches/real_names_errors.py "$OUT/rust/real-br.csv" "$OUT/sklearn/real-br.csv"
} > "$OUT/report.md"
cat "$OUT/report.md"
