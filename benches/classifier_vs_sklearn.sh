#!/usr/bin/env bash
# Side-by-side benchmark of the transaction classifier against the scikit-learn reference.
#
#   bash benches/classifier_vs_sklearn.sh            # uses models/default.json
#   MODEL=models/other.json bash benches/classifier_vs_sklearn.sh
#
# Measures, in one run on this machine: macro-F1 on the evaluation set (reserved brands,
# unseen formats) for both models trained on the same corpus, and single-core throughput of
# normalise + featurise + predict on the same 20-40 character descriptions. scikit-learn is
# installed in a virtual environment this script creates (benches/.venv). Results go to
# standard output and benches/out/classifier.md.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-models/default.json}
CORPUS=classifier/data/corpus.csv.gz
EVAL=classifier/data/eval.csv.gz
OUT=benches/out
mkdir -p "$OUT"

# shellcheck source=benches/sklearn_venv.sh
. benches/sklearn_venv.sh

cargo build --release --quiet -p classifier -p benches

# Benchmark rows: every corpus and evaluation description of 20 to 40 characters.
benches/.venv/bin/python - "$CORPUS" "$EVAL" "$OUT/bench-rows.csv" <<'PY'
import csv, gzip, sys
rows = []
for path in sys.argv[1:3]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        rows += [r for r in reader if 20 <= len(r["description"]) <= 40]
with open(sys.argv[3], "w", encoding="utf-8", newline="") as f:
    w = csv.DictWriter(f, fieldnames=header)
    w.writeheader()
    w.writerows(rows)
print(f"{len(rows)} benchmark rows of 20-40 characters", file=sys.stderr)
PY

ours_f1=$(./target/release/classifier eval --model "$MODEL" --data "$EVAL" | sed -n 's/^macro-F1 \*\*\([0-9.]*\)\*\*.*/\1/p')
ours=$(taskset -c 0 ./target/release/classifier_throughput "$MODEL" "$OUT/bench-rows.csv" 5)
# The same rows with a fresh workspace (an empty word memory) every 500 rows, as core-api
# starts one per analysis and per batch.
ours_fresh=$(taskset -c 0 ./target/release/classifier_throughput "$MODEL" "$OUT/bench-rows.csv" 5 500)
ref=$(taskset -c 0 benches/.venv/bin/python benches/sklearn_reference.py throughput "$CORPUS" "$EVAL" "$OUT/bench-rows.csv")

benches/.venv/bin/python - "$ours_f1" "$ours" "$ref" "$MODEL" "$ours_fresh" > "$OUT/classifier.md" <<'PY'
import json, platform, subprocess, sys, datetime
f1, ours, ref, model = float(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
fresh = json.loads(sys.argv[5])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
print(f"Run {datetime.date.today()} on {cpu}, {cores} cores, {platform.system()}; "
      f"both throughput runs pinned to core 0 (`taskset -c 0`).\n")
print("| | Rust (`{}`) | scikit-learn reference | ratio |".format(model))
print("|---|---:|---:|---:|")
print(f"| macro-F1, evaluation set | {f1:.4f} | {ref['macro_f1']:.4f} | {f1 - ref['macro_f1']:+.4f} |")
print(f"| rows/s, one core, 20-40 char descriptions | {ours['rows_per_second']:,.0f} | "
      f"{ref['rows_per_second']:,.0f} | {ours['rows_per_second'] / ref['rows_per_second']:.1f}x |")
print(f"| rows/s, the same, a fresh workspace every {fresh['rows_per_workspace']} rows | "
      f"{fresh['rows_per_second']:,.0f} | | {fresh['rows_per_second'] / ref['rows_per_second']:.1f}x |")
print(f"\nRust: {ours['ns_per_row']:.0f} ns per row over {ours['predicted']:,} predictions of "
      f"{ours['rows']:,} rows (mean {ours['mean_description_bytes']:.1f} bytes). "
      f"scikit-learn: {ref['bench_rows']:,} rows in one `predict` call; trained in "
      f"{ref['train_seconds']:.1f} s.")
PY
cat "$OUT/classifier.md"
