#!/usr/bin/env bash
# Side-by-side: what inverse document frequency and the L2 penalty buy in the hash space the
# model used until 2026-11-22 (2^20 buckets, 8,000 columns by mutual information; set
# HASH_BITS=13 MAX_COLUMNS=8192 for today's). Each row trains on the committed corpus with
# those settings and the two named, and reports evaluation-set
# macro-F1 (the set the settings are chosen on), accuracy on the real Brazilian names, and
# macro-F1 on the rows of one statement family (bradesco) for a model trained without it.
# The real names and the held-out family are reported, never used to choose. Takes about
# 40 minutes on 2 cores (eight trainings).
#
#   bash benches/classifier_settings.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo build --release --quiet -p classifier
BIN=./target/release/classifier
CORPUS=classifier/data/corpus.csv.gz
EVAL=classifier/data/eval.csv.gz
python3 benches/split_families.py "$CORPUS" "$EVAL" "$out" >/dev/null
score() { # model data -> "macro-F1 accuracy"
  $BIN eval --model "$1" --data "$2" | sed -n 's/^macro-F1 \*\*\([0-9.]*\)\*\*, accuracy \([0-9.]*\).*/\1 \2/p'
}
echo "| idf | alpha | evaluation macro-F1 | real names accuracy | held-out bradesco macro-F1 |"
echo "|---|---:|---:|---:|---:|"
for setting in "no 1" "yes 1" "yes 10" "yes 30"; do
  set -- $setting
  flags=(--alpha "$2" --hash-bits "${HASH_BITS:-20}" --max-columns "${MAX_COLUMNS:-8000}")
  [ "$1" = no ] && flags+=(--no-idf)
  $BIN train --data "$CORPUS" --eval "$EVAL" "${flags[@]}" --out "$out/m.json" 2>/dev/null
  $BIN train --data "$CORPUS" --eval "$EVAL" "${flags[@]}" --exclude-family bradesco \
    --out "$out/lofo.json" 2>/dev/null
  read -r f1 _ <<<"$(score "$out/m.json" "$EVAL")"
  read -r _ acc <<<"$(score "$out/m.json" benches/data/real-br-suppliers.csv)"
  read -r lofo _ <<<"$(score "$out/lofo.json" "$out/family-bradesco.csv")"
  echo "| $1 | $2 | $f1 | $acc | $lofo |"
done
