#!/usr/bin/env bash
# Side-by-side: what the number of columns and the n-gram range buy, at a fixed budget of 60
# L-BFGS iterations. Each row trains on the committed corpus and reports training time, peak
# memory and macro-F1 on the evaluation set. Takes about five minutes on 2 cores.
#
#   bash benches/classifier_settings.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo build --release --quiet -p classifier
echo "| columns | char n-grams | training s | peak MiB | eval macro-F1 |"
echo "|---:|---|---:|---:|---:|"
for setting in "4000 4" "8000 4" "12000 4" "8000 5"; do
  set -- $setting
  /usr/bin/time -f '%e %M' -o "$out/time" ./target/release/classifier train \
    --data classifier/data/corpus.csv.gz --eval classifier/data/eval.csv.gz \
    --out "$out/m.json" --iterations 60 --max-columns "$1" --ngram-max "$2" 2> "$out/log"
  read -r secs kib < "$out/time"
  f1=$(sed -n 's/.*evaluation macro-F1 \([0-9.]*\).*/\1/p' "$out/log")
  echo "| $1 | 3-$2 | $secs | $((kib / 1024)) | $f1 |"
done
