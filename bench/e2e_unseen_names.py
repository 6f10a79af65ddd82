"""Training MRs whose ``name`` and ``near`` values are replaced by venues no E2E file holds:
a dev check for what the dev set cannot show, names the model has never read.

Why: every name of E2E's dev MRs is in the training file, so a choice made there (the
delexicalised run, copying the MR's values, ``data/delex.py``) never meets the failure it is
for; the test MRs hold six ``near`` venues the dev set lacks. Here each distinct original
value maps to one invented venue (fixed lists below, written before any output was read), in
the MR and in every reference that writes the value verbatim (case ignored). A reference that
phrases the value otherwise would keep a stale name: it is dropped and counted, as is an MR
left with none. ``source_mr`` keeps each row's original MR, so a reranker that reads the
training file leaves that MR (its references, with the old names) out of the neighbours.

    python bench/e2e_unseen_names.py --data runs/devset_half.csv --out runs/devhalf_unseen.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.best_of_n import read_rows  # noqa: E402
from bench.common import save  # noqa: E402
from bench.e2e_synthetic_mrs import parse  # noqa: E402
from data.delex import verbatim  # noqa: E402

# venues of no E2E file: multi-word, several brand-like (the kind a pretrained model may
# "correct" to the brand it knows), fixed before any answer to them was read
INVENTED = {
    "name": ["The Copper Kettle", "Bella Napoli Trattoria", "Golden Dragon House",
             "The Old Mill by the River", "Spice Garden Express", "Le Petit Bistro",
             "The Crown and Anchor", "Pizza Palace Central"],
    "near": ["Travelodge by the Bridge", "Odeon Cinema Central", "Starbucks Reserve Roastery",
             "Courtyard by Marriott", "The Royal Oak", "Costa Coffee by the Station"],
}


def renaming(mrs: list[str]) -> dict[tuple[str, str], str]:
    """Each distinct original (attribute, value) of ``INVENTED``'s attributes, in sorted
    order, to an invented value, cycling through the list."""
    seen = sorted({(a, v) for mr in mrs for a, v in parse(mr).items()
                   if a in INVENTED and v.strip()})
    counters = {a: 0 for a in INVENTED}
    out = {}
    for attribute, value in seen:
        names = INVENTED[attribute]
        out[(attribute, value)] = names[counters[attribute] % len(names)]
        counters[attribute] += 1
    return out


def renamed(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """``rows`` (mr, ref) with the values renamed, plus ``source_mr``; stale references and
    MRs left without references dropped and counted."""
    names = renaming(list(rows["mr"]))
    out, stale = [], 0
    for mr, ref in zip(rows["mr"], rows["ref"], strict=True):
        slots = [(a, v) for a, v in parse(mr).items() if (a, v) in names]
        new_mr, new_ref, kept = mr, str(ref), True
        for attribute, value in slots:
            new = names[(attribute, value)]
            new_mr = new_mr.replace(f"{attribute}[{value}]", f"{attribute}[{new}]")
            pattern = verbatim(value)
            if not pattern.search(new_ref):
                kept = False
                break
            new_ref = pattern.sub(new.replace("\\", "\\\\"), new_ref)
        if kept:
            out.append({"mr": new_mr, "ref": new_ref, "source_mr": mr})
        else:
            stale += 1
    frame = pd.DataFrame(out, columns=["mr", "ref", "source_mr"])
    counts = {"rows_in": len(rows), "rows_out": len(frame), "references_dropped": stale,
              "mrs_in": rows["mr"].nunique(), "mrs_out": frame["mr"].nunique(),
              "mrs_renamed": int((frame["mr"] != frame["source_mr"]).groupby(frame["mr"])
                                 .first().sum())}
    counts["mrs_dropped"] = counts["mrs_in"] - counts["mrs_out"]
    return frame, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an E2E mr/ref csv")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    frame, counts = renamed(read_rows(args.data))
    if frame["mr"].nunique() != frame["source_mr"].nunique():
        raise SystemExit(f"{args.data}: two MRs became one after renaming: not a dev check")
    frame.to_csv(args.out, index=False)
    save(f"unseen_names_{args.out.stem}", {"data": str(args.data), "out": str(args.out),
                                           **counts, "renamed_to": INVENTED})


if __name__ == "__main__":
    main()
