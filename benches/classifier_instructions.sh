#!/usr/bin/env bash
# Instructions per movement on the classifier's hot path, counted by valgrind's cachegrind.
#
#   bash benches/classifier_instructions.sh                       # this tree's build
#   BASE_BIN=/tmp/classifier_throughput.old bash benches/classifier_instructions.sh
#
# Wall-clock rows/s on a shared virtual machine moves by 20-40% from one minute to the next
# for the same binary; the number of instructions a prediction executes does not. This script
# runs `classifier_throughput` for one pass over the benchmark rows (after its 10,000-row
# warm-up) under cachegrind and adds up the instructions spent in normalising, featurising and
# scoring (the classifier's own functions and the libm/libc calls they make), divided by the
# rows predicted. Loading the model and reading the CSV are left out. With BASE_BIN, the same
# count for another build of `classifier_throughput` (say, one built from an earlier commit)
# comes first, so a change is measured side by side. Fewer instructions is not the same as
# less time (a cache miss costs more than an add), so report both.
#
# Needs valgrind (`apt-get install valgrind`) and the benchmark rows that
# `benches/classifier_vs_sklearn.sh` writes to benches/out/bench-rows.csv.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/default.json}
ROWS=benches/out/bench-rows.csv
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
[ -f "$ROWS" ] || { echo "$ROWS is missing: run benches/classifier_vs_sklearn.sh first" >&2; exit 1; }
cargo build --release --quiet -p benches

count() {
  local bin=$1 out
  out=$(mktemp)
  # SECONDS=0.001: the timed loop runs exactly one pass.
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$out" \
    "$bin" "$MODEL" "$ROWS" 0.001 ${ROWS_PER_WORKSPACE:-} > "$out.json" 2>/dev/null
  python3 - "$out" "$out.json" "$bin" <<'PY'
import json, re, subprocess, sys
out, result, binary = sys.argv[1:4]
predicted = json.load(open(result))["predicted"] + 10_000  # the warm-up's rows too
report = subprocess.run(["cg_annotate", "--show-percs=no", out], capture_output=True,
                        text=True, check=True).stdout
hot = re.compile(r":(classifier::(model|normalize|features)::|__expf|__log2|.*fmod|floor|round"
                 r"|core::str::<impl str>::trim_matches|__memcmp)")
total = 0
for line in report.splitlines():
    m = re.match(r"\s*([\d,]+)\s+(\S.*)$", line)
    if m and hot.search(m.group(2)):
        total += int(m.group(1).replace(",", ""))
print(f"{binary}: {total / predicted:,.0f} instructions per movement ({predicted:,} movements)")
PY
  rm -f "$out" "$out.json"
}

if [ -n "${BASE_BIN:-}" ]; then count "$BASE_BIN"; fi
count target/release/classifier_throughput
