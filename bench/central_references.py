"""Keep, of each meaning representation's references, the ones most like the others.

Why: multi-reference BLEU rewards the phrasing an MR's references share, and a model trained
on all of them learns every writer's phrasing; ensembles and weight averages of such models
score as their mean (docs/benchmarks.md, session 42). Each reference is scored by its
sentence BLEU (sacrebleu, uncased) against the MR's other references, and the top
``--keep`` share of every MR is kept (at least one; an MR with one reference keeps it). Only
the training file is read: no test text. Rows dropped are counted and printed, per MR size.

    python bench/central_references.py runs/e2e_dev_values.csv --keep 0.5 \\
        --out runs/e2e_dev_values_central.csv
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd
from sacrebleu.metrics import BLEU


def centrality(refs: list[str]) -> list[float]:
    """Each reference's sentence BLEU against the others of its MR (0 when it is alone)."""
    if len(refs) < 2:
        return [0.0] * len(refs)
    bleu = BLEU(lowercase=True, effective_order=True)
    return [bleu.sentence_score(ref, refs[:i] + refs[i + 1:]).score
            for i, ref in enumerate(refs)]


def keep_central(frame: pd.DataFrame, keep: float, mr: str = "mr", ref: str = "ref"
                 ) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows kept (file order) and counts of rows read, kept and dropped."""
    kept: list[int] = []
    for _, group in frame.groupby(mr, sort=False):
        scores = centrality([str(r) for r in group[ref]])
        n = max(1, math.ceil(len(group) * keep))
        best = sorted(range(len(group)), key=lambda i: -scores[i])[:n]
        kept += [group.index[i] for i in best]
    out = frame.loc[sorted(kept)]
    return out, {"rows": len(frame), "kept": len(out), "dropped": len(frame) - len(out),
                 "mrs": int(frame[mr].nunique())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="an E2E-shaped file: columns mr and ref")
    parser.add_argument("--keep", type=float, default=0.5, help="share of each MR's references")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not 0 < args.keep <= 1:
        raise SystemExit(f"--keep must lie in (0, 1], got {args.keep}")
    frame = pd.read_csv(args.csv)
    missing = {"mr", "ref"} - set(frame.columns)
    if missing:
        raise SystemExit(f"{args.csv}: no column(s) {sorted(missing)}")
    out, counts = keep_central(frame, args.keep)
    out.to_csv(args.out, index=False)
    print(json.dumps({"out": str(args.out), "keep": args.keep, **counts}))


if __name__ == "__main__":
    main()
