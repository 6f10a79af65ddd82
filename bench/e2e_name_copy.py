"""Does a model write the venue's name? E2E test answers split by names seen in training.

The E2E dev set names 20 venues; 221 of the 630 test MRs name one it lacks. A model that
copies writes the MR's ``name`` whether it trained on it or not; one that memorised writes a
trained name instead. For each saved evaluation (``predictions.parquet`` of ``shardtune
evaluate``), on the test MRs whose name is in the dev set and on the others: how many answers
contain the MR's name, and their mean sentence BLEU.

    python bench/e2e_name_copy.py --eval teacher=runs/T/eval-e2e_nlg-…/test \
        student=runs/S/eval-e2e_nlg-…/test --name e2e_name_copy_400
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import save  # noqa: E402
from bench.e2e_synthetic_mrs import SHARED, parse  # noqa: E402


def name_slices(folder: Path, trained: set[str]) -> dict[str, dict[str, float]]:
    """Per slice (``seen``, ``unseen`` name): MRs, answers holding the name, mean BLEU."""
    frame = pd.read_parquet(folder / "predictions.parquet")
    names = [parse(str(text)).get("name") for text in frame["text"]]  # "…: name[X], …"
    if any(name is None for name in names):
        raise SystemExit(f"{folder}: a prompt without name[…]: not an E2E evaluation")
    frame = frame.assign(name=names, seen=[n in trained for n in names],
                         copied=[n in str(g) for n, g in zip(names, frame["generated"],
                                                            strict=True)])
    out = {}
    for label, part in (("seen", frame[frame["seen"]]), ("unseen", frame[~frame["seen"]])):
        out[label] = {"mrs": len(part), "name_written": int(part["copied"].sum()),
                      "mean_sentence_bleu": round(float(part["bleu"].mean()), 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", nargs="+", required=True, metavar="LABEL=FOLDER",
                        help="an evaluation folder holding predictions.parquet, labelled")
    parser.add_argument("--dev", type=Path, default=SHARED / "devset.csv",
                        help="the training data whose names count as seen")
    parser.add_argument("--name", default="e2e_name_copy")
    args = parser.parse_args()
    trained = {parse(mr)["name"] for mr in pd.read_csv(args.dev)["mr"]}
    figures = {"trained_names": len(trained), "runs": {}}
    for item in args.eval:
        label, _, folder = item.partition("=")
        if not folder:
            raise SystemExit(f"--eval {item!r}: expected LABEL=FOLDER")
        figures["runs"][label] = {"folder": folder, **name_slices(Path(folder), trained)}
        print(label, figures["runs"][label])
    print(save(args.name, figures))


if __name__ == "__main__":
    main()
