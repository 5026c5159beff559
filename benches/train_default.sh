#!/usr/bin/env bash
# Retrains the shipped model from the committed corpus and reports wall time and peak memory
# (GNU time's maximum resident set size), then checks the result is byte-identical to
# models/default.json: training is deterministic for a seed.
#
#   bash benches/train_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo build --release --quiet -p classifier
/usr/bin/time -f '%e s wall, %M KiB peak resident memory' \
  ./target/release/classifier train \
    --data classifier/data/corpus.csv.gz \
    --eval classifier/data/eval.csv.gz \
    --out "$out/default.json" 2>&1 | tail -2
if cmp -s "$out/default.json" models/default.json; then
  echo "identical to models/default.json"
else
  echo "differs from models/default.json" >&2
  exit 1
fi
