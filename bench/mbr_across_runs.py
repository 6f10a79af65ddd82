"""Per prompt, the answer of several runs' saved evaluations most like the others' (minimum
Bayes risk by sentence BLEU), scored as ``evaluate`` scores one run.

Why: runs of one E2E recipe differ by a point or two of BLEU at the same perplexity (training
seed and swap draw); picking per prompt the consensus answer costs no generation, where an
ensemble (``bench/ensemble_generate.py``) costs one pass per member. Within one run's n-best,
MBR lost a point (``bench/bench_nbest.py``); across runs the candidates differ more.

    python bench/mbr_across_runs.py runs/A/eval/test runs/B/eval/test runs/C/eval/test \\
        --out runs/mbr_abc/eval/test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_nbest import mbr  # noqa: E402
from bench.ensemble_generate import SCORES, save_scored  # noqa: E402


def pick(folders: list[Path]) -> tuple[pd.DataFrame, list[int]]:
    """The first folder's prompts with, per prompt, the MBR answer; and how often each folder's
    answer was picked (ties: the earlier folder)."""
    # by the data's prompt side: a run that read placeholders rendered other prompts
    frames = [pd.read_parquet(f / "predictions.parquet").set_index("text") for f in folders]
    first = frames[0]
    for folder, frame in zip(folders[1:], frames[1:], strict=True):
        if set(frame.index) != set(first.index):
            raise SystemExit(f"{folder} answered other prompts than {folders[0]}")
    chosen, new_tokens, stopped, wins = [], [], [], [0] * len(frames)
    for prompt in first.index:
        candidates = [str(f.loc[prompt, "generated"]) for f in frames]
        best = mbr(candidates, "bleu_uncased")
        k = candidates.index(best)
        wins[k] += 1
        chosen.append(best)
        new_tokens.append(int(frames[k].loc[prompt, "new_tokens"]))
        stopped.append(bool(frames[k].loc[prompt, "stopped"]))
    out = first.drop(columns=[c for c in SCORES if c in first.columns]).reset_index()
    out = out.assign(generated=chosen, new_tokens=new_tokens, stopped=stopped,
                     references=[json.loads(r) for r in out["references"]])
    return out, wins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="evaluation folders, one a run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    if len(args.folders) < 3:
        raise SystemExit("give at least three evaluation folders (with two, MBR is a tie)")
    frame, wins = pick(args.folders)
    made = json.loads((args.folders[0] / "metrics.json").read_text())
    m = save_scored(frame, {
        "run": str(args.out), "split": made["split"], "data": str(args.folders[0]),
        "picked_from": {str(f): w for f, w in zip(args.folders, wins, strict=True)},
        "made_by": {"mbr_over": [str(f) for f in args.folders], "rows": made["made_by"]["rows"],
                    "generation": made["made_by"].get("generation")}},
        args.out, args.resamples)
    print(json.dumps({"prompts": len(frame), "picked": wins,
                      **{k: round(m[k]["value"], 2) for k in SCORES}}))


if __name__ == "__main__":
    main()
