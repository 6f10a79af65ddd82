"""Two chat runs' answers to the same prompts, paired: B − A on every generation metric.

``shardtune compare`` pairs two runs on the split of their own data (``eval/<split>/``). An
evaluation on other data — the whole E2E test set, for runs trained and scored on a
``data.max_examples`` subset (``shardtune evaluate run=… data=e2e_nlg``) — lands in
``eval-<name>-<hash>/<split>/``; this pairs two such folders the way ``compare`` pairs its
own (the same prompts resampled for both, corpus BLEU/chrF recomputed per replicate; with
several seeds a side, each replicate also resamples the seeds: the hierarchical bootstrap).

    python bench/bench_paired_generations.py --a runs/A/eval-e2e_nlg-1234abcd/test \
        --b runs/B/eval-e2e_nlg-1234abcd/test --name kd_transfer_630
    python bench/bench_paired_generations.py --a runs/A/seed{0,1}/eval-…/test \
        --b runs/B/seed{0,1}/eval-…/test   # seed groups
    python bench/bench_paired_generations.py --a runs/A/eval-beam4/test \
        --b runs/A/eval-beam8/test --decoding-differs   # one run, two decodings
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
    parser.add_argument("--a", type=Path, nargs="+", required=True,
                        help="the reference's evaluation folder(s), one per seed")
    parser.add_argument("--b", type=Path, nargs="+", required=True,
                        help="the candidate's evaluation folder(s), one per seed")
    parser.add_argument("--name", default="paired_generations")
    parser.add_argument("--resamples", type=int, default=CompareSpec.resamples)
    parser.add_argument("--decoding-differs", action="store_true",
                        help="the sides may differ in generation settings (what is compared)")
    args = parser.parse_args()
    folders = [*args.a, *args.b]
    made = [json.loads((d / "metrics.json").read_text())["made_by"] for d in folders]
    if any(m["rows"] != made[0]["rows"] for m in made):
        sys.exit(f"error: {', '.join(map(str, folders))} answered other prompts")
    settings = [m.get("generation") for m in made]
    side_a, side_b = settings[:len(args.a)], settings[len(args.a):]
    if any(s != side[0] for side in (side_a, side_b) for s in side):
        sys.exit("error: the seeds of one side generated otherwise: " + str(settings))
    if not args.decoding_differs and side_a[0] != side_b[0]:
        sys.exit(f"error: {', '.join(map(str, folders))} generated otherwise "
                 f"({settings}); --decoding-differs compares decodings")
    frames = {d: pd.read_parquet(d / "predictions.parquet") for d in folders}
    effects = generation_effects([frames[d] for d in args.a], [frames[d] for d in args.b],
                                 "a", "b", CompareSpec(resamples=args.resamples))
    save(args.name, {"a": list(map(str, args.a)), "b": list(map(str, args.b)),
                     "prompts": len(frames[args.a[0]]),
                     "generation": {"a": side_a[0], "b": side_b[0]},
                     "effects": {k: e.as_dict() for k, e in effects.items()}})


if __name__ == "__main__":
    main()
