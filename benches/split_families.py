"""Split the labelled corpus and evaluation set by statement family, for leave-one-family-out runs.

    python3 benches/split_families.py CORPUS EVAL OUTDIR

CORPUS and EVAL are labelled CSV files (.csv or .csv.gz) with a `family` column naming the bank
statement style each row is printed in. For every family value f, writes OUTDIR/family-<f>.csv:
the CORPUS rows of family f followed by the EVAL rows of family f, under the corpus header.
Prints the family names, sorted, one per line on standard output; row counts go to standard
error. Rows with an empty family are left out (and counted on standard error).
"""

import csv
import gzip
import os
import re
import sys


def read(path):
    """Header and rows (dicts) of a CSV file, gzip-compressed when the name ends in .gz."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    corpus_path, eval_path, outdir = sys.argv[1:4]
    header, corpus = read(corpus_path)
    eval_header, evaluation = read(eval_path)
    for path, columns in ((corpus_path, header), (eval_path, eval_header)):
        if "family" not in columns:
            sys.exit(f"{path} has no family column")
    if missing := [c for c in header if c not in eval_header]:
        sys.exit(f"{eval_path} lacks corpus column(s) {', '.join(missing)}")

    by_family = {}
    unnamed = 0
    for row in corpus + evaluation:
        family = row["family"].strip()
        if family:
            by_family.setdefault(family, []).append(row)
        else:
            unnamed += 1
    for family in by_family:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", family) or family.startswith("."):
            sys.exit(f"family {family!r} is not usable in a file name")

    os.makedirs(outdir, exist_ok=True)
    for family in sorted(by_family):
        rows = by_family[family]
        path = os.path.join(outdir, f"family-{family}.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore",
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        print(f"{path}: {len(rows)} row(s)", file=sys.stderr)
        print(family)
    if unnamed:
        print(f"left out {unnamed} row(s) with no family", file=sys.stderr)


if __name__ == "__main__":
    main()
