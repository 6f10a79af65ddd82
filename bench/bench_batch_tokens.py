"""Token-budget batches (``trainer.batch_tokens``) against fixed batch sizes, at equal quality
(issue #22): training throughput and wall time per arm, test accuracy with the paired CI of
each budget arm against the fixed-size one, all in one run.

Arms (LoRA MiniLM, BANKING77 subset, same epochs, seed, learning rate and length bucketing):
- ``fixed``: ``trainer.batch_size`` rows a batch (the default);
- ``budget_same``: a token budget of ``batch_size`` × the mean padded length the fixed arm had,
  so the step count is about the same and only the batches' make-up differs;
- ``budget_large``: ``batch_size`` × ``task.max_length`` tokens: short texts make batches of
  several times ``batch_size`` rows, fewer steps.

    python bench/bench_batch_tokens.py                       # CPU scale: ~15 min on 2 cores
    python bench/bench_batch_tokens.py --examples 10003 --epochs 3   # full train split (GPU)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CLI, SHARED, save  # noqa: E402
from tests.conftest import compose_run  # noqa: E402
from trainers.train import train  # noqa: E402


def arm(tmp: Path, name: str, common: list[str], extra: list[str]) -> dict:
    """Train one arm; throughput from its logged windows, quality from its test metrics."""
    summary = train(compose_run(tmp, [*common, *extra, f"run_name={name}"]))
    lines = [json.loads(x) for x in (Path(summary["run_dir"]) / "metrics.jsonl").read_text()
             .splitlines()]
    steps = [x for x in lines if "train/tokens_per_s" in x]
    seconds = steps[-1]["time"] - steps[0]["time"]  # first logged window to the last
    final = summary["metrics"]
    return {"steps": final["step"], "train_seconds": seconds,
            "samples_per_s": sum(x["train/samples_per_s"] for x in steps) / len(steps),
            "real_tokens_per_s": sum(x["train/real_tokens_per_s"] for x in steps) / len(steps),
            "rows_per_batch": sum(x["train/rows_per_batch"] for x in steps) / len(steps),
            "tokens_per_batch": sum(x["train/tokens_per_batch"] for x in steps) / len(steps),
            "max_tokens_per_batch": max(x["train/tokens_per_batch"] for x in steps),
            "test_accuracy": final["test/accuracy"], "test_macro_f1": final["test/macro_f1"],
            "run_dir": summary["run_dir"]}


def paired(tmp: Path, a: str, b: str) -> dict:
    """``shardtune compare`` of two arms: accuracy's B − A with its paired bootstrap CI."""
    subprocess.run([CLI, "compare", a, b, "compare.metric=accuracy", f"paths.root={tmp}"],
                   check=True, capture_output=True)
    result = json.loads((Path(b) / "compare" / Path(a).name / "compare.json").read_text())
    return {k: result["effects"][k] for k in ("accuracy", "macro_f1")} | {
        "verdict": result["verdict"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_tokens_"))
    common = ["data=banking77", f"paths.datasets={SHARED}", f"data.max_examples={args.examples}",
              f"trainer.epochs={args.epochs}", f"trainer.batch_size={args.batch}",
              f"task.max_length={args.max_length}", "trainer.log_every=5", "trainer.ckpt_every=0",
              "peft.r=16", "peft.alpha=32", "optim.lr=5e-3"]
    fixed = arm(tmp, "fixed", common, [])
    same = round(args.batch * fixed["tokens_per_batch"] / fixed["rows_per_batch"])
    same = max(same, args.max_length)
    budget_same = arm(tmp, "budget_same", common, [f"trainer.batch_tokens={same}"])
    large = args.batch * args.max_length
    budget_large = arm(tmp, "budget_large", common, [f"trainer.batch_tokens={large}"])
    figures = {
        "scale": {"data": "banking77, hash-sampled", "examples": args.examples,
                  "epochs": args.epochs, "batch_size": args.batch,
                  "max_length": args.max_length, "budgets": {"same": same, "large": large}},
        "fixed": fixed, "budget_same": budget_same, "budget_large": budget_large,
        "ratio_real_tokens": {k: v["real_tokens_per_s"] / fixed["real_tokens_per_s"]
                              for k, v in (("same", budget_same), ("large", budget_large))},
        "ratio_train_seconds": {k: v["train_seconds"] / fixed["train_seconds"]
                                for k, v in (("same", budget_same), ("large", budget_large))},
        "paired_vs_fixed": {"same": paired(tmp, fixed["run_dir"], budget_same["run_dir"]),
                            "large": paired(tmp, fixed["run_dir"], budget_large["run_dir"])},
    }
    save("batch_tokens", figures)


if __name__ == "__main__":
    main()
