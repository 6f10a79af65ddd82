"""ASHA + TPE vs the full grid over the same 12-point space, on a BANKING77 subset.

Reports the best validation accuracy each reaches and the compute each spends (trial-seconds:
the sum of every trial's wall time, each trial holding one Train worker). Both run with the
same concurrency on the same machine, one after the other.

    python bench/bench_sweep.py [--max-examples 1500] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
from common import CLI, ROOT, SHARED, save


def _sweep(work: Path, name: str, extra: list[str], common: list[str]) -> dict:
    start = time.perf_counter()
    subprocess.run([CLI, "sweep", "sweep=banking77_bench", f"sweep.name={name}",
                    f"sweep.export_dir={work / 'experiments'}", *common, *extra],
                   cwd=work, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    sweep_dir = work / "runs" / name
    table = pd.read_csv(sweep_dir / "results.csv")
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    return {"wall_s": wall, "trials": len(table), "status": summary["status"],
            "trial_seconds": float(table["time_s"].sum()),
            "best_val_accuracy": float(table["val/accuracy"].max()),
            "best_config": summary["best"]["config"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-examples", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    work = ROOT / "runs" / "bench_sweep"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    common = ["data=banking77", f"paths.datasets={SHARED}",
              f"data.max_examples={args.max_examples}", f"trainer.epochs={args.epochs}",
              "trainer.eval_every=10", "trainer.batch_size=32", "task.max_length=64",
              "sweep.trial_cpus=0.9", "sweep.max_concurrent_trials=2"]
    grid = _sweep(work, "grid", ["sweep.search=grid", "sweep.scheduler=fifo"], common)
    tpe = _sweep(work, "tpe_asha", [], common)
    save("sweep_asha_tpe_vs_grid", {
        "scale": f"banking77, ~{args.max_examples} examples per split (hash-sampled), "
                 f"{args.epochs} epoch(s), eval every 10 steps, 2 trials at a time, "
                 "1 Train worker (0.9 CPU) per trial",
        "space": "optim.lr in {5e-4, 1e-3, 2e-3, 4e-3} x peft.r in {4, 8, 16}",
        "grid": grid, "tpe_asha": tpe,
        "best_gap_pt": 100 * (grid["best_val_accuracy"] - tpe["best_val_accuracy"]),
        "compute_ratio": tpe["trial_seconds"] / grid["trial_seconds"],
    })


if __name__ == "__main__":
    main()
