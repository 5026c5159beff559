"""Markdown quality report comparing the Rust classifier with the scikit-learn reference.

    python3 benches/quality_report.py PREDDIR > report.md

PREDDIR holds one folder per model, `rust/` and `sklearn/`, each with prediction CSVs in the
layout of `classifier predict` (the input columns, including the true `category`, followed by
predicted,probability,confidence):

    eval.csv            the evaluation set, predicted by the model trained on the full corpus
    real-br.csv         benches/data/real-br-suppliers.csv, predicted by that same model
    lofo-<family>.csv   the rows of one statement family, predicted by a model trained
                        without that family (leave one family out)

Both models are scored by the same code below: accuracy, per-label precision/recall/F1,
macro-F1, the largest confusions with example descriptions, and accuracy per confidence band.
A missing file is reported as "not run". Standard library only.
"""

import csv
import os
import sys
from collections import Counter, namedtuple

# The classifier's labels, in its own order (tables list labels in this order).
LABELS = [
    "INCOME", "TRANSFER_IN", "TRANSFER_OUT", "TRANSFER_OUT_WITHDRAWAL", "LOAN_PAYMENTS",
    "BANK_FEES", "FOOD_AND_DRINK_GROCERIES", "FOOD_AND_DRINK", "GENERAL_MERCHANDISE",
    "HOME_IMPROVEMENT", "MEDICAL", "PERSONAL_CARE", "GENERAL_SERVICES",
    "GOVERNMENT_AND_NON_PROFIT", "TRANSPORTATION", "TRAVEL", "RENT_AND_UTILITIES",
    "ENTERTAINMENT", "ENTERTAINMENT_CASINOS_AND_GAMBLING",
]
BANDS = ["VERY_HIGH", "HIGH", "MEDIUM", "LOW"]
MODELS = [("rust", "Rust"), ("sklearn", "scikit-learn")]
NOT_RUN = "not run"

Row = namedtuple("Row", "truth predicted probability confidence description")


# --- Reading -------------------------------------------------------------------------------

def load(path):
    """The labelled rows of a prediction CSV and how many rows had no category; None if absent."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        needed = ["description", "category", "predicted", "probability", "confidence"]
        if missing := [c for c in needed if c not in (reader.fieldnames or [])]:
            sys.exit(f"{path}: missing column(s) {', '.join(missing)}")
        rows, unlabelled = [], 0
        for record in reader:
            if not record["category"].strip():
                unlabelled += 1
                continue
            if record["confidence"] not in BANDS:
                sys.exit(f"{path}: unknown confidence {record['confidence']!r}")
            rows.append(Row(record["category"].strip(), record["predicted"],
                            float(record["probability"]), record["confidence"],
                            record["description"]))
    return rows, unlabelled


def load_model(folder):
    """{"eval": rows, "real-br": rows, "lofo": {family: rows}} of one model's folder (None for
    a missing file), and the number of rows without a category per file name."""
    unlabelled = {}

    def rows_of(name):
        loaded = load(os.path.join(folder, name))
        if loaded is None:
            return None
        rows, unlabelled[name] = loaded
        return rows

    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    sets = {
        "eval": rows_of("eval.csv"),
        "real-br": rows_of("real-br.csv"),
        "lofo": {n[len("lofo-"):-len(".csv")]: rows_of(n)
                 for n in names if n.startswith("lofo-") and n.endswith(".csv")},
    }
    return sets, unlabelled


# --- Metrics (one implementation for both models) -----------------------------------------

def label_order(labels):
    """Labels in the classifier's order; unknown ones after, alphabetically."""
    return sorted(labels, key=lambda l: (LABELS.index(l) if l in LABELS else len(LABELS), l))


def seen_labels(rows):
    """Labels in the truth or the predictions of rows."""
    return {r.truth for r in rows} | {r.predicted for r in rows}


def per_label(rows, labels):
    """{label: (precision, recall, f1, support)}; a ratio with a zero denominator counts as 0."""
    truth = Counter(r.truth for r in rows)
    predicted = Counter(r.predicted for r in rows)
    hits = Counter(r.truth for r in rows if r.truth == r.predicted)
    scores = {}
    for label in labels:
        precision = hits[label] / predicted[label] if predicted[label] else 0.0
        recall = hits[label] / truth[label] if truth[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[label] = (precision, recall, f1, truth[label])
    return scores


def macro_f1(rows, labels=None):
    """Mean F1 over `labels`, by default the labels in the truth or predictions of rows."""
    labels = seen_labels(rows) if labels is None else labels
    if not labels:
        return None
    return sum(s[2] for s in per_label(rows, labels).values()) / len(labels)


def truth_macro_f1(rows):
    """Macro-F1 over only the labels present in the truth."""
    return macro_f1(rows, {r.truth for r in rows})


def accuracy(rows):
    return sum(r.truth == r.predicted for r in rows) / len(rows) if rows else None


def confusions(rows, top=10, examples=3):
    """The `top` largest (truth, predicted, count, share of truth's rows, example descriptions)."""
    truth = Counter(r.truth for r in rows)
    pairs = Counter((r.truth, r.predicted) for r in rows if r.truth != r.predicted)
    worst = []
    for (t, p), count in pairs.most_common(top):
        seen = []
        for r in rows:
            if r.truth == t and r.predicted == p and r.description not in seen:
                seen.append(r.description)
                if len(seen) == examples:
                    break
        worst.append((t, p, count, count / truth[t], seen))
    return worst


def reliability(rows):
    """{band: (rows, share of rows, accuracy, mean probability)}; None where a band is empty."""
    table = {}
    for band in BANDS:
        in_band = [r for r in rows if r.confidence == band]
        n = len(in_band)
        table[band] = (n, n / len(rows) if rows else None, accuracy(in_band),
                       sum(r.probability for r in in_band) / n if n else None)
    return table


# --- Markdown ------------------------------------------------------------------------------

def num(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def diff(a, b):
    return "" if a is None or b is None else f"{a - b:+.4f}"


def example(description, width=40):
    short = description if len(description) <= width else description[:width] + "…"
    return "`" + short.replace("`", "'").replace("|", "\\|") + "`"


def table(header, rows, align):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(align) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print()


def pooled(lofo):
    """All held-out rows of the families that were run, or None when none was."""
    runs = [rows for rows in lofo.values() if rows is not None]
    return [r for rows in runs for r in rows] if runs else None


def summary(results, families):
    def metric_row(name, metric, pick):
        sets = [pick(results[key]) for key, _ in MODELS]
        values = [None if rows is None else metric(rows) for rows in sets]
        cells = [NOT_RUN if rows is None else num(v) for rows, v in zip(sets, values)]
        return [name] + cells + [diff(*values)]

    rows = [
        metric_row("eval: macro-F1", macro_f1, lambda s: s["eval"]),
        metric_row("eval: accuracy", accuracy, lambda s: s["eval"]),
    ]
    for family in families:
        rows.append(metric_row(f"LOFO: macro-F1, held-out `{family}`", macro_f1,
                               lambda s, f=family: s["lofo"][f]))
    run = {key: [f for f in families if results[key]["lofo"][f] is not None]
           for key, _ in MODELS}
    same_families = len({tuple(r) for r in run.values()}) == 1

    def lofo_row(name, score):
        values, cells = [], []
        for key, _ in MODELS:
            value = score(results[key]["lofo"]) if run[key] else None
            values.append(value)
            coverage = "" if len(run[key]) == len(families) else \
                f" ({len(run[key])} of {len(families)} families)"
            cells.append(num(value) + coverage if run[key] else NOT_RUN)
        return [name] + cells + [diff(*values) if same_families else ""]

    def mean_macro_f1(lofo):
        scores = [macro_f1(rows) for rows in lofo.values() if rows is not None]
        scores = [s for s in scores if s is not None]
        return sum(scores) / len(scores) if scores else None

    rows.append(lofo_row("LOFO: macro-F1, mean over families", mean_macro_f1))
    rows.append(lofo_row("LOFO: macro-F1, pooled held-out rows",
                         lambda lofo: macro_f1(pooled(lofo))))
    rows.append(metric_row("**real-br: accuracy (headline)**", accuracy,
                           lambda s: s["real-br"]))
    rows.append(metric_row("real-br: macro-F1, labels in its truth", truth_macro_f1,
                           lambda s: s["real-br"]))
    table(["", "Rust", "scikit-learn", "Rust − scikit-learn"], rows,
          ["---", "---:", "---:", "---:"])
    print("Macro-F1 is the unweighted mean of per-label F1 over the labels that appear in the "
          "truth or the predictions of that set for that model (so the two models may average "
          "over slightly different labels), except the real-br row, which averages over the "
          "labels present in the real-br truth only. Accuracy is the share of rows whose "
          "prediction equals the truth. The family mean and the pooled LOFO figures cover the "
          "held-out families run for that model; their difference is left blank when the two "
          "models cover different families.\n")


def per_label_section(title, sets, labels_of):
    print(f"### {title}\n")
    available = [(name, rows) for name, rows in sets if rows is not None]
    if not available:
        print(f"{NOT_RUN}\n")
        return
    own = {name: labels_of(rows) for name, rows in available}
    labels = label_order(set().union(*own.values()))
    scores = {name: per_label(rows, [l for l in labels if l in own[name]])
              for name, rows in available}
    rows = []
    for label in labels:
        row = [label]
        f1s = []
        for name, _ in sets:
            s = scores.get(name, {}).get(label)
            if s is None:
                row += ["—"] * 4 if name in scores else [NOT_RUN, "", "", ""]
                f1s.append(None)
            else:
                row += [num(s[0]), num(s[1]), num(s[2]), f"{s[3]:,}"]
                f1s.append(s[2])
        rows.append(row + [diff(*f1s)])
    header = ["label"]
    for name, _ in sets:
        header += [f"{name} P", "R", "F1", "support"]
    table(header + ["ΔF1"], rows, ["---"] + ["---:"] * (4 * len(sets) + 1))


def confusion_section(title, sets):
    print(f"### {title}\n")
    for name, rows in sets:
        print(f"**{name}**\n")
        if rows is None:
            print(f"{NOT_RUN}\n")
            continue
        worst = confusions(rows)
        if not worst:
            print("no confusions\n")
            continue
        table(["truth", "predicted", "rows", "share of truth", "examples"],
              [[t, p, f"{n:,}", pct(share), ", ".join(example(d) for d in seen)]
               for t, p, n, share, seen in worst],
              ["---", "---", "---:", "---:", "---"])


def reliability_section(title, sets):
    print(f"### {title}\n")
    rows = []
    for name, data in sets:
        if data is None:
            rows.append([name, "", NOT_RUN, "", "", ""])
            continue
        for band, (n, share, acc, mean_p) in reliability(data).items():
            rows.append([name, band, f"{n:,}", pct(share), pct(acc), num(mean_p)])
    table(["model", "band", "rows", "share of rows", "accuracy", "mean probability"], rows,
          ["---", "---", "---:", "---:", "---:", "---:"])


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    preddir = sys.argv[1]
    if not os.path.isdir(preddir):
        sys.exit(f"{preddir} is not a directory")
    results, unlabelled = {}, {}
    for key, _ in MODELS:
        results[key], unlabelled[key] = load_model(os.path.join(preddir, key))
    families = sorted(set().union(*(results[k]["lofo"] for k, _ in MODELS)))
    for key, _ in MODELS:
        for family in families:
            results[key]["lofo"].setdefault(family, None)

    def each(pick):
        return [(name, pick(results[key])) for key, name in MODELS]

    print("# Classifier quality: Rust vs scikit-learn\n")
    print(f"Predictions from `{preddir}`. eval: the evaluation set; LOFO: leave one statement "
          "family out (each family's rows predicted by a model trained without that family); "
          "real-br: real Brazilian supplier names (evaluation only).\n")

    print("## Inputs\n")
    inputs = [("eval", "eval.csv", lambda s: s["eval"])] + [
        (f"LOFO `{f}`", f"lofo-{f}.csv", lambda s, f=f: s["lofo"][f]) for f in families] + [
        ("real-br", "real-br.csv", lambda s: s["real-br"])]
    table(["set", "file", "Rust rows", "scikit-learn rows"],
          [[label, f"`{name}`"] + [NOT_RUN if rows is None else f"{len(rows):,}"
                                   for _, rows in each(pick)]
           for label, name, pick in inputs],
          ["---", "---", "---:", "---:"])
    skipped = [f"{name} {file}: {n:,}" for key, name in MODELS
               for file, n in sorted(unlabelled[key].items()) if n]
    if skipped:
        print("Rows without a category, left out: " + "; ".join(skipped) + ".\n")

    print("## Summary\n")
    summary(results, families)

    print("## Per label\n")
    per_label_section("LOFO, pooled held-out rows", each(lambda s: pooled(s["lofo"])),
                      seen_labels)
    per_label_section("real-br (labels present in its truth)", each(lambda s: s["real-br"]),
                      lambda rows: {r.truth for r in rows})
    print("P, R: precision and recall; a label never predicted has precision 0, and its F1 is "
          "0. — : the label appears in neither the truth nor the predictions of that model.\n")

    print("## Worst confusions\n")
    print("The 10 largest truth → predicted counts, with up to 3 example descriptions "
          "(cut at 40 characters).\n")
    confusion_section("LOFO, pooled held-out rows", each(lambda s: pooled(s["lofo"])))
    confusion_section("real-br", each(lambda s: s["real-br"]))

    print("## Reliability by confidence band\n")
    print("VERY_HIGH: probability > 0.98, HIGH: > 0.90, MEDIUM: > 0.70, LOW: the rest. A "
          "well-calibrated model's accuracy in a band is close to its mean probability.\n")
    reliability_section("eval", each(lambda s: s["eval"]))
    reliability_section("LOFO, pooled held-out rows", each(lambda s: pooled(s["lofo"])))
    reliability_section("real-br", each(lambda s: s["real-br"]))


if __name__ == "__main__":
    main()
