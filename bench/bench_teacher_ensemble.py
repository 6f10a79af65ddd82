"""How strong would an ensemble of teachers be? Averages the class distributions that
``shardtune evaluate`` saved for several runs on the same test split (no model is re-run).

    python bench/bench_teacher_ensemble.py RUN_DIR RUN_DIR [RUN_DIR ...]

Each run needs ``eval/test/predictions.parquet`` (``shardtune evaluate run=RUN_DIR``) and the
same label map. Prints and saves each member's accuracy and the ensemble's (mean probability).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from common import save


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    saved = [run / "eval" / "test" / "predictions.parquet" for run in args.runs]
    for path, run in zip(saved, args.runs, strict=True):
        if not path.is_file():
            raise SystemExit(f"error: {path} not found: run `shardtune evaluate run={run}` first")
    frames = [pd.read_parquet(path) for path in saved]
    label_maps = [json.loads((run / "label_map.json").read_text()) for run in args.runs]
    if any(m != label_maps[0] for m in label_maps) or any(
            not np.array_equal(f["text"].values, frames[0]["text"].values) for f in frames):
        raise SystemExit("error: the runs' label maps or test rows differ")
    gold = frames[0]["gold"].to_numpy()
    probs = np.mean([np.stack(f["probs"].to_numpy()) for f in frames], axis=0)
    save("teacher_ensemble", {
        "runs": [str(run) for run in args.runs], "examples": len(gold),
        "members_accuracy": [float((f["pred"].to_numpy() == gold).mean()) for f in frames],
        "ensemble_accuracy": float((probs.argmax(axis=1) == gold).mean()),
    })


if __name__ == "__main__":
    main()
