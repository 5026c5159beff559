"""What the real supplier names a model gets wrong have in common, by label.

    python3 benches/real_names_errors.py PREDICTIONS.csv [PREDICTIONS.csv ...]

PREDICTIONS is `classifier predict` output for benches/data/real-br-suppliers.csv (columns
`description`, `category`, `predicted`), as benches/classifier_quality.sh writes to
benches/out/quality/rust/real-br.csv. For each true label, counts the rows right and wrong, and
how many of each carry a word the corpus builder knows for that label: a `lead` or `trail`
activity phrase (`AUTO POSTO`, `COMERCIO DE COMBUSTIVEIS`, `HOTEL`) or a known company
(`IPIRANGA`) of that label's lexicon in classifier/src/corpus/brazil.rs, matched on whole words
after folding accents and case.

A wrong row with such a word is one the model had the knowledge for and still missed; a wrong
row without one names its business in a way the corpus does not teach (a surname and a legal
form, a fantasy name). Only counts are printed, never the names: the rows are for evaluation.
"""

import csv
import re
import sys
import unicodedata
from pathlib import Path

LEXICON = Path(__file__).resolve().parent.parent / "classifier/src/corpus/brazil.rs"

# brazil.rs names labels by their Rust variants; the CSV by their taxonomy names.
VARIANTS = {
    "Transportation": "TRANSPORTATION",
    "Travel": "TRAVEL",
    "FoodAndDrink": "FOOD_AND_DRINK",
    "Groceries": "FOOD_AND_DRINK_GROCERIES",
    "GeneralMerchandise": "GENERAL_MERCHANDISE",
    "HomeImprovement": "HOME_IMPROVEMENT",
    "Medical": "MEDICAL",
    "PersonalCare": "PERSONAL_CARE",
    "GeneralServices": "GENERAL_SERVICES",
    "Government": "GOVERNMENT_AND_NON_PROFIT",
    "RentAndUtilities": "RENT_AND_UTILITIES",
    "Entertainment": "ENTERTAINMENT",
    "Gambling": "ENTERTAINMENT_CASINOS_AND_GAMBLING",
    "LoanPayments": "LOAN_PAYMENTS",
}


def fold(text):
    """Upper case, accents dropped, anything but letters and digits a single space."""
    text = unicodedata.normalize("NFD", text.upper())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    return " " + re.sub(r"[^A-Z0-9]+", " ", text).strip() + " "


def known_words():
    """Label name -> the lead and trail phrases and the companies of its lexicon, folded."""
    source = LEXICON.read_text(encoding="utf-8")
    pattern = re.compile(r"label: Label::(\w+),\s*lead: &\[(.*?)\],\s*trail: &\[(.*?)\],"
                         r"\s*companies: &\[(.*?)\],", re.S)
    words = {}
    for variant, lead, trail, companies in pattern.findall(source):
        if variant not in VARIANTS:
            sys.exit(f"{LEXICON}: unknown label variant {variant}; update VARIANTS")
        phrases = re.findall(r'"([^"]+)"', lead + trail + companies)
        words[VARIANTS[variant]] = {fold(w) for w in phrases}
    if not words:
        sys.exit(f"{LEXICON}: no lexicon found; has its layout changed?")
    return words


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    words = known_words()
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        print(f"`{path}`: {len(rows)} rows\n")
        print("| label | rows | right | right, with a known word | wrong "
              "| wrong, with a known word |")
        print("|---|---:|---:|---:|---:|---:|")
        totals = [0, 0, 0, 0, 0]
        counts = {}
        for r in rows:
            counts[r["category"]] = counts.get(r["category"], 0) + 1
        labels = sorted(counts, key=lambda label: (-counts[label], label))
        for label in labels:
            mine = [r for r in rows if r["category"] == label]
            known = words.get(label, set())

            def has_word(row):
                name = fold(row["description"])
                return any(w in name for w in known)

            right = [r for r in mine if r["predicted"] == label]
            wrong = [r for r in mine if r["predicted"] != label]
            figures = [len(mine), len(right), sum(map(has_word, right)), len(wrong),
                       sum(map(has_word, wrong))]
            totals = [t + x for t, x in zip(totals, figures)]
            print(f"| {label} | " + " | ".join(str(x) for x in figures) + " |")
        print("| all | " + " | ".join(str(x) for x in totals) + " |\n")


if __name__ == "__main__":
    main()
