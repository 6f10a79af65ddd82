"""Command → first optimizer step of the default local run (issue #22's start-up goal).

Runs ``shardtune train`` on the embedded sample ``--runs`` times, each in a fresh run folder,
and times the console's first ``step 1/`` line and Ray's start-up line from the moment the
command starts. To compare two versions of the code, run it on each, interleaved (A B A B):
this machine's speed drifts by tens of percent over an hour.

    python bench/bench_first_step.py --runs 2 --label after

A setting's effect, interleaved in one invocation (A = the setting, B = the default):

    python bench/bench_first_step.py --runs 4 --label driver_rows --ab data.driver_rows=0
    python bench/bench_first_step.py --runs 4 --label no_ray --ab data.driver_bytes=0
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
        if line.startswith("ray: not started"):  # a run that needs no Ray (data/local.py)
            marks["no_ray_s"] = now
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
    parser.add_argument("--ab", nargs="*", default=None,
                        help="overrides of arm A; runs alternate A, default, A, default, ...")
    args = parser.parse_args()
    peak = fp32_matmul_peak()
    arms = {"default": []} if args.ab is None else {"A": args.ab, "default": []}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
    for _ in range(args.runs):
        for name, extra in arms.items():
            runs[name].append(first_step(extra))
            r = runs[name][-1]
            ray = (f"ray started {r['ray_started_s']:.1f} s" if "ray_started_s" in r
                   else "no ray")
            print(f"{name}: {ray}, first step {r['first_step_s']:.1f} s", flush=True)
    figures = {"label": args.label, "fp32_gflops": peak / 1e9,
               "arms": {name: {"overrides": arms[name], "runs": rs, "median_first_step_s":
                               statistics.median(r["first_step_s"] for r in rs)}
                        for name, rs in runs.items()}}
    for name, arm in figures["arms"].items():
        print(f"{name} {arm['overrides']}: median {arm['median_first_step_s']:.1f} s "
              f"(matmul {peak / 1e9:.0f} GFLOP/s)")
    save(f"first_step_{args.label}", figures)


if __name__ == "__main__":
    main()
