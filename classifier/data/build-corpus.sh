#!/usr/bin/env bash
# Rebuilds corpus.csv.gz and eval.csv.gz from the name-suggestion-index, as committed.
# Needs npm (to fetch the index package) and cargo. Same index version and seed, same bytes.
set -euo pipefail
cd "$(dirname "$0")/../.."

NSI_VERSION=${NSI_VERSION:-8.0.20260918}
SEED=${SEED:-20261121}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "name-suggestion-index@$NSI_VERSION" >/dev/null && tar xzf name-suggestion-index-*.tgz)
cargo run --release --quiet -p classifier -- corpus \
  --nsi "$work/package/dist/json/nsi.json" \
  --seed "$SEED" \
  --out classifier/data/corpus.csv.gz \
  --eval-out classifier/data/eval.csv.gz
