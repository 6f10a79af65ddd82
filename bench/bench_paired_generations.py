"""Two chat runs' answers to the same prompts, paired: B − A on every generation metric.

``shardtune compare`` pairs two runs on the split of their own data (``eval/<split>/``). An
evaluation on other data — the whole E2E test set, for runs trained and scored on a
``data.max_examples`` subset (``shardtune evaluate run=… data=e2e_nlg``) — lands in
``eval-<name>-<hash>/<split>/``; this pairs two such folders the way ``compare`` pairs its
own (the same prompts resampled for both, corpus BLEU/chrF recomputed per replicate).

    python bench/bench_paired_generations.py runs/A/eval-e2e_nlg-1234abcd/test \
        runs/B/eval-e2e_nlg-1234abcd/test --name kd_transfer_630
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import save  # noqa: E402
from evaluation.compare import generation_effects  # noqa: E402
from evaluation.config import CompareSpec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="the reference's evaluation folder")
    parser.add_argument("b", type=Path, help="the candidate's evaluation folder")
    parser.add_argument("--name", default="paired_generations")
    parser.add_argument("--resamples", type=int, default=CompareSpec.resamples)
    args = parser.parse_args()
    made = [json.loads((d / "metrics.json").read_text())["made_by"] for d in (args.a, args.b)]
    if made[0]["rows"] != made[1]["rows"] or made[0].get("generation") != made[1].get(
            "generation"):
        sys.exit(f"error: {args.a} and {args.b} answered other prompts or generated otherwise")
    frames = [pd.read_parquet(d / "predictions.parquet") for d in (args.a, args.b)]
    effects = generation_effects([frames[0]], [frames[1]], str(args.a), str(args.b),
                                 CompareSpec(resamples=args.resamples))
    save(args.name, {"a": str(args.a), "b": str(args.b), "prompts": len(frames[0]),
                     "generation": made[0].get("generation"),
                     "effects": {k: e.as_dict() for k, e in effects.items()}})


if __name__ == "__main__":
    main()
