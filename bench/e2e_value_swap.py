"""The E2E dev set with its eatType and food values swapped for others of E2E's ontology.

Why: the dev set is not a sample of E2E's domain. Its 547 MRs hold one of the three eatTypes
(``coffee shop``) and two of the seven foods (``Chinese``, ``English``); the test MRs hold all
of them (306 of 630 are pubs). A model trained on the dev set alone never reads ``pub`` or
``French`` in a prompt, and it writes what it learned instead: the whole-dev LoRA run's greedy
answers name the pub in 10% of the pub MRs (the references: 96%) and French food in 15%.

Each dev MR draws one new eatType (of 3) and one new food (of 7), the old value among them; the
MR's references that hold every old value verbatim get the new one in its place (with the
article before it mended: "an English" → "a French", "English food" → "fast food"). A reference
that phrases an old value otherwise ("British", "café") cannot be rewritten: it stays, with its
MR unchanged, and is counted. A drawn MR equal to a test MR is drawn again (the texts are the
dev set's either way; no prompt of the test set is trained on). The row count stays the dev
set's, so a run on this file takes as many steps as one on ``devset.csv``.

``--near-share``: that share of the MRs with a ``near`` get a made-up venue name there (as
``bench/e2e_synthetic_mrs.py --new-names`` makes them, never a dev or test name), written in
its texts as it stands. Of the six test ``near`` names the dev set lacks, five are copied
verbatim; "Express by Holiday Inn" (53 test MRs) comes out "the Holiday Inn".

The value lists are E2E's ontology (Novikova et al. 2017: the attribute values of the
challenge's MRs, which its systems, TGen included, are built over); no test reference is read.

    python bench/e2e_value_swap.py --out runs/e2e_dev_values.csv --seed 0
    python bench/e2e_value_swap.py --out runs/e2e_dev_values_near.csv --seed 0 --near-share 0.5
    python bench/e2e_value_swap.py --out runs/e2e_dev_values_x2.csv --seed 0 --draws 2
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.e2e_synthetic_mrs import SHARED, made_up_name, parse, render  # noqa: E402

ONTOLOGY = {"eatType": ["coffee shop", "pub", "restaurant"],
            "food": ["Chinese", "English", "Fast food", "French", "Indian", "Italian",
                     "Japanese"]}
REDRAWS = 20


def _cased(word: str, like: str) -> str:
    """``word`` with the first letter's case of ``like`` (a sentence may begin with it)."""
    return word[:1].upper() + word[1:] if like[:1].isupper() else word[:1].lower() + word[1:]


def _starts_sentence(match: re.Match) -> bool:
    before = match.string[:match.start()].rstrip()
    return not before or before[-1] in ".!?"


def _mend_articles(text: str, value: str) -> str:
    """``a``/``an`` before each occurrence of ``value`` as its first sound asks."""
    article = "an" if value[:1].lower() in "aeiou" else "a"
    return re.sub(rf"\b([Aa])n? (?={re.escape(value)}\b)",
                  lambda m: _cased(article, m.group(1)) + " ", text, flags=re.IGNORECASE)


def swap_text(ref: str, key: str, old: str, new: str) -> str | None:
    """``ref`` with ``old`` (``key``'s value) written as ``new``; None when ``ref`` does not
    hold ``old`` verbatim (ignoring case), so the swap cannot be read off the text."""
    if not re.search(rf"\b{re.escape(old)}\b", ref, flags=re.IGNORECASE):
        return None
    if key == "near":  # a made-up name: as written, "the" before it not doubled
        out = re.sub(rf"\b{re.escape(old)}\b", lambda m: new, ref, flags=re.IGNORECASE)
        return re.sub(r"\b[Tt]he The\b", "The", out) if new.startswith("The ") else out
    if key == "eatType":
        out = re.sub(rf"\b{re.escape(old)}(s?)\b", lambda m: _cased(new, m.group(0)) + m.group(1),
                     ref, flags=re.IGNORECASE)
        return _mend_articles(out, new)
    written = new.lower() if new == "Fast food" else new
    pattern = rf"\b{re.escape(old)}(?: (?:food|cuisine))?\b" if new == "Fast food" else \
        rf"\b{re.escape(old)}\b"
    out = re.sub(pattern, lambda m: new if new != "Fast food" or _starts_sentence(m) else written,
                 ref, flags=re.IGNORECASE)
    return _mend_articles(out, written)


def swap_set(dev: pd.DataFrame, test_mrs: set[str], seed: int, near_share: float = 0.0,
             taken_names: frozenset[str] = frozenset(), draws: int = 1
             ) -> tuple[pd.DataFrame, dict]:
    """Every dev row, its MR's eatType and food redrawn and its text rewritten where it can be;
    with ``near_share``, that share of the MRs with a ``near`` get a made-up one (never one of
    ``taken_names``); the counts of what was swapped, kept and redrawn. With ``draws`` > 1 each
    row comes ``draws`` times, each copy with its own draw, the copies of a row side by side
    (training reads rows through a local shuffle buffer, so every stretch of it sees them all);
    the first copy is the one ``draws=1`` gives."""
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    copies = [_draw_mrs(dev, test_mrs, rng, near_share, taken_names, counts)
              for _ in range(draws)]
    rows = []
    for mr, ref in zip(dev["mr"], dev["ref"], strict=True):
        rows.extend(_swap_row(mr, ref, drawn[mr], counts) for drawn in copies)
    return pd.DataFrame(rows, columns=["mr", "ref"]), dict(sorted(counts.items()))


def _draw_mrs(dev: pd.DataFrame, test_mrs: set[str], rng: np.random.Generator,
              near_share: float, taken_names: frozenset[str], counts: Counter
              ) -> dict[str, dict[str, str]]:
    """One draw of new values for every dev MR, none equal to a test MR where 20 tries allow."""
    drawn: dict[str, dict[str, str]] = {}
    for mr in dev["mr"].drop_duplicates():
        attrs = parse(mr)
        for _ in range(REDRAWS):
            new = {**attrs, **{k: str(rng.choice(v)) for k, v in ONTOLOGY.items() if k in attrs}}
            if near_share and "near" in attrs and rng.random() < near_share:
                new["near"] = made_up_name(rng)
                while new["near"] in taken_names:
                    new["near"] = made_up_name(rng)
            if render(new) not in test_mrs:
                break
            counts["mrs_redrawn_equal_to_a_test_mr"] += 1
        else:
            new = attrs
            counts["mrs_kept_every_draw_a_test_mr"] += 1
        drawn[mr] = new
    return drawn


def _swap_row(mr: str, ref: str, new: dict[str, str], counts: Counter) -> tuple[str, str]:
    """The row with its MR's new values, its text rewritten; kept as it was (and counted) when
    the text does not hold an old value verbatim."""
    attrs = parse(mr)
    text: str | None = ref
    for key in [*ONTOLOGY, "near"]:
        if text is not None and key in attrs and new[key] != attrs[key]:
            text = swap_text(text, key, attrs[key], new[key])
    if text is None:
        counts["rows_kept_value_not_verbatim"] += 1
        return mr, ref
    counts["rows_swapped" if new != attrs else "rows_drew_their_own_values"] += 1
    counts.update(f"{k}={new[k]}" for k in ONTOLOGY if k in new)
    counts["rows_near_made_up"] += "near" in new and new["near"] != attrs["near"]
    return render(new), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--near-share", type=float, default=0.0,
                        help="share of the MRs with a near whose near becomes a made-up name")
    parser.add_argument("--draws", type=int, default=1,
                        help="copies of every dev row, each with its own draw (more steps)")
    args = parser.parse_args()
    if args.draws < 1:
        sys.exit(f"--draws must be at least 1, not {args.draws}")
    dev = pd.read_csv(args.data / "devset.csv")
    missing = {"mr", "ref"} - set(dev.columns)
    if missing:
        sys.exit(f"{args.data / 'devset.csv'}: no column {sorted(missing)[0]!r}")
    test = pd.read_csv(args.data / "testset_w_refs.csv")["mr"].drop_duplicates()
    names = frozenset(a[k] for a in map(parse, [*dev["mr"], *test]) for k in ("name", "near")
                      if k in a)
    out, counts = swap_set(dev, {render(parse(mr)) for mr in test}, args.seed, args.near_share,
                           names, args.draws)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(args.out, index=False)
    print(json.dumps({"out": str(args.out), "seed": args.seed, "near_share": args.near_share,
                      "draws": args.draws,
                      "rows": len(out), **counts}))


if __name__ == "__main__":
    main()
