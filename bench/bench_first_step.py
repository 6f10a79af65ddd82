"""Command → first optimizer step of the default local run (issue #22's start-up goal).

Runs ``shardtune train`` on the embedded sample ``--runs`` times, each in a fresh run folder,
and times the console's first ``step 1/`` line and Ray's start-up line from the moment the
command starts. To compare two versions of the code, run it on each, interleaved (A B A B):
this machine's speed drifts by tens of percent over an hour.

    python bench/bench_first_step.py --runs 2 --label after
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time

from common import CLI, ROOT, fp32_matmul_peak, save


def first_step(extra: list[str]) -> dict[str, float]:
    root = tempfile.mkdtemp()
    start = time.monotonic()
    proc = subprocess.Popen([CLI, "train", f"paths.root={root}", "trainer.log_every=1",
                             "trainer.max_steps=2", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    marks: dict[str, float] = {}
    for line in proc.stdout:
        now = time.monotonic() - start
        if line.startswith("ray: started") and "ray_started_s" not in marks:
            marks["ray_started_s"] = now
        if line.startswith("step 1/") and "first_step_s" not in marks:
            marks["first_step_s"] = now
    proc.wait()
    if proc.returncode != 0 or "first_step_s" not in marks:
        raise SystemExit(f"the run failed (exit {proc.returncode})")
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--label", default="current")
    args = parser.parse_args()
    peak = fp32_matmul_peak()
    runs = [first_step([]) for _ in range(args.runs)]
    for r in runs:
        print(f"ray started {r['ray_started_s']:.1f} s, first step {r['first_step_s']:.1f} s")
    figures = {"label": args.label, "runs": runs, "fp32_gflops": peak / 1e9,
               "median_first_step_s": statistics.median(r["first_step_s"] for r in runs)}
    print(f"median {figures['median_first_step_s']:.1f} s (matmul {peak / 1e9:.0f} GFLOP/s)")
    save(f"first_step_{args.label}", figures)


if __name__ == "__main__":
    main()
