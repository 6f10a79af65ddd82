"""How strong would an ensemble of teachers be? Averages the class distributions that
``shardtune evaluate`` saved for several runs on the same test split (a run not evaluated yet
is evaluated first, as ``shardtune compare`` does).

    python bench/bench_teacher_ensemble.py RUN_DIR RUN_DIR [RUN_DIR ...]

The runs must share the label map and the test examples. Prints and saves each member's
accuracy and the ensemble's (mean probability).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import save

from evaluation.compare_sides import Evaluations, saved_predictions
from evaluation.config import CompareConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    frames = []
    evals = Evaluations(CompareConfig(split="test"))
    for run in args.runs:
        frame = saved_predictions(evals, run.resolve())
        if frame is None:
            raise SystemExit(f"error: {run}'s test split has no labels to score against")
        frames.append(frame.sort_values("_src"))
    keys, labels = frames[0]["_src"].to_numpy(), frames[0]["gold_label"].to_numpy()
    for run, frame in zip(args.runs, frames, strict=True):
        if not (np.array_equal(frame["_src"].to_numpy(), keys)
                and np.array_equal(frame["gold_label"].to_numpy(), labels)
                and np.array_equal(frame["gold"].to_numpy(), frames[0]["gold"].to_numpy())):
            raise SystemExit(f"error: {run} was evaluated on other examples or another label "
                             f"map than {args.runs[0]}")
    gold = frames[0]["gold"].to_numpy()
    probs = np.mean([np.stack(f["probs"].to_numpy()) for f in frames], axis=0)
    save("teacher_ensemble", {
        "runs": [str(run) for run in args.runs], "examples": len(gold),
        "members_accuracy": [float((f["pred"].to_numpy() == gold).mean()) for f in frames],
        "ensemble_accuracy": float((probs.argmax(axis=1) == gold).mean()),
    })


if __name__ == "__main__":
    main()
