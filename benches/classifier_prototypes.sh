#!/usr/bin/env bash
# Prototypes of the hash space and penalty, rerun on the featuriser's own buckets: scikit-learn's
# logistic regression on the Rust featuriser's own hashed features (`classifier features`),
# IDF-weighted with the penalty alpha as `classifier train` does (sklearn_reference.py
# sparse-hashed), a few seconds per fit instead of minutes for linfa's dense one. For each
# setting: evaluation-set macro-F1, and the macro-F1 of each statement family for a model
# trained without it.
#
#   bash benches/classifier_prototypes.sh       # about 7 minutes on 2 cores
#
# Settings: 2^13 buckets, every one a column, alpha 30, 20, 10 and 5; and 2^20 buckets, the
# 8,000 most frequent, alpha 30 and 10 (the column limit of the settings before, chosen by
# frequency here). The rule the shipped settings were chosen by is the best mean of the
# evaluation macro-F1 and the held-out mean over bradesco, intl, itau and nubank (caixa and
# wallet were kept for the full run of classifier_quality.sh). The real names are not scored
# here: they were never used to choose. Results go to benches/out/prototypes/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."

CORPUS=classifier/data/corpus.csv.gz
EVAL=classifier/data/eval.csv.gz
OUT=benches/out/prototypes
rm -rf "$OUT"
mkdir -p "$OUT"

# shellcheck source=benches/sklearn_venv.sh
. benches/sklearn_venv.sh
cargo build --release --quiet -p classifier
BIN=./target/release/classifier

# Progress and row counts go to $OUT/log; a failing step stops the run (set -e).
families=$($PY benches/split_families.py "$CORPUS" "$EVAL" "$OUT/families" 2>>"$OUT/log")
for bits in 13 20; do
  $BIN features --hash-bits $bits --data "$CORPUS" --out "$OUT/corpus-$bits.svm" 2>>"$OUT/log"
  $BIN features --hash-bits $bits --data "$EVAL" --out "$OUT/eval-$bits.svm" 2>>"$OUT/log"
  for f in $families; do
    $BIN features --hash-bits $bits --data "$CORPUS" --exclude-family "$f" \
      --out "$OUT/without-$f-$bits.svm" 2>>"$OUT/log"
    $BIN features --hash-bits $bits --data "$OUT/families/family-$f.csv" \
      --out "$OUT/$f-$bits.svm" 2>>"$OUT/log"
  done
done

f1() { # bits columns alpha train test -> macro-F1
  local line
  line=$($PY benches/sklearn_reference.py sparse-hashed --alpha "$3" --max-columns "$2" \
    "$OUT/$4-$1.svm" "$OUT/$5-$1.svm") || return 1
  $PY -c 'import json,sys; print("%.4f" % json.loads(sys.argv[1])["macro_f1"])' "$line"
}

{
  cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  echo "Run $(date -u +%F) on $cpu, $(nproc) cores: \`bash benches/classifier_prototypes.sh\`."
  echo
  header="| hash space | columns | alpha | evaluation"
  rule="|---:|---:|---:|---:"
  for f in $families; do
    header="$header | without $f"
    rule="$rule|---:"
  done
  echo "$header | held-out mean of four | mean of it and evaluation | held-out mean of six |"
  echo "$rule|---:|---:|---:|"
  for setting in "13 0 30" "13 0 20" "13 0 10" "13 0 5" "20 8000 30" "20 8000 10"; do
    read -r bits columns alpha <<<"$setting"
    scores=()
    for f in $families; do
      score=$(f1 "$bits" "$columns" "$alpha" "without-$f" "$f")
      scores+=("$f=$score")
    done
    evaluation=$(f1 "$bits" "$columns" "$alpha" corpus eval)
    $PY - "$bits" "$columns" "$alpha" "$evaluation" "${scores[@]}" <<'PY'
import sys
bits, columns, alpha, evaluation = sys.argv[1:5]
scores = dict(s.split("=") for s in sys.argv[5:])
chosen = ("bradesco", "intl", "itau", "nubank")
four = sum(float(scores[f]) for f in chosen) / len(chosen)
six = sum(float(v) for v in scores.values()) / len(scores)
columns = "every bucket" if columns == "0" else f"{int(columns):,}"
cells = " | ".join(scores[f] for f in sorted(scores))
print(f"| 2^{bits} | {columns} | {alpha} | {evaluation} | {cells} | {four:.4f} | "
      f"{(four + float(evaluation)) / 2:.4f} | {six:.4f} |")
PY
  done
} > "$OUT/report.md"
cat "$OUT/report.md"
