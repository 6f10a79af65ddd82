"""Seed variance on BANKING77: a 5-seed group vs the same 5 seeds as separate commands.

Both sides do the same work a scientist needs before comparing configurations: train each
seed and save its test predictions (the group evaluates itself; the sequential side runs
``shardtune evaluate`` after each ``train``). Run on a fixed subset so it fits ~15 minutes on
2 CPU cores; the full-scale command is in docs/benchmarks.md.

    python bench/bench_seeds.py [--seeds 5] [--max-examples 2000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import shutil

from common import ROOT, SHARED, save
from common import run_cli as _run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    work = ROOT / "runs" / "bench_seeds"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    seeds = list(range(args.seeds))
    common = ["experiment=banking77_lora", f"paths.datasets={SHARED}",
              f"data.max_examples={args.max_examples}", f"trainer.epochs={args.epochs}",
              "trainer.ckpt_every=0"]
    group_s = _run(["train", *common, "run_name=group", f"seeds=[{','.join(map(str, seeds))}]"],
                   work)
    sequential_s = 0.0
    for seed in seeds:
        sequential_s += _run(["train", *common, f"run_name=seq{seed}", f"seed={seed}"], work)
        sequential_s += _run(["evaluate", f"run={work / 'runs' / f'seq{seed}'}",
                              "baseline=false"], work)
    agg = json.loads((work / "runs" / "group" / "aggregate.json").read_text())
    seq = [json.loads((work / "runs" / f"seq{s}" / "metrics.json").read_text()) for s in seeds]
    diffs = [abs(p["test/accuracy"] - q["test/accuracy"]) for p, q in zip(agg["per_seed"], seq,
                                                                          strict=True)]
    figures = {
        "scale": f"banking77, ~{args.max_examples} examples per split (hash-sampled), "
                 f"{args.epochs} epochs, LoRA r16 all-linear, mean pooling",
        "seeds": seeds,
        "group_wall_s": group_s, "sequential_wall_s": sequential_s,
        "speedup": sequential_s / group_s, "concurrent_runs": agg["concurrent_runs"],
        "test_accuracy": agg["metrics"]["test/accuracy"],
        "test_macro_f1": agg["metrics"]["test/macro_f1"],
        "worst_slices": agg["slices"][:3],
        "group_vs_sequential_max_abs_accuracy_diff": max(diffs),
    }
    save("seed_group", figures)


if __name__ == "__main__":
    main()
