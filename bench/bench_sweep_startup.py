"""Sweep trial start-up: Tune's trial start event → the trial's first optimizer step.

Runs the same small sweep (4 trials of a grid, one at a time, FIFO, each logging every step) once
per arm and reads, per trial, Tune's start time (``start_time`` in the experiment state), the
first ``train/loss`` line of the trial's ``metrics.jsonl`` (written after step 1) and the
process that ran it (``pid``). Also: the gap from one trial's last result to the next trial's
first step (what a sequential sweep loses between trials), each arm's wall time and the CPU
seconds of the whole process tree (Ray's workers included), sampled every 0.2 s.

    python bench/bench_sweep_startup.py [--trials 4] [--arm NAME[@CHECKOUT]=OVERRIDES ...]

Arms (default): ``reuse`` (a finished trial's actor serves the next trial) and ``fresh``
(``sweep.reuse_actors=false``: a new actor process per trial). ``NAME@CHECKOUT`` runs the CLI
of another checkout (its modules first on ``sys.path``): the before/after comparison in
docs/benchmarks.md adds ``--arm before@/tmp/before=`` (``git worktree add /tmp/before 1bb290f``,
where every trial was a Ray Train job) to the two defaults.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from common import ROOT, SHARED, save

LEARNING_RATES = [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 7e-3, 8e-3]  # one per trial


class TreeCPU:
    """User + system CPU seconds of a process and all its descendants, dead ones included
    (each process's last sample is kept; one that lives under 0.2 s is missed)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval, self.seen = pid, interval, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for proc in procs:
                try:
                    t = proc.cpu_times()
                    self.seen[(proc.pid, proc.create_time())] = t.user + t.system
                except psutil.Error:
                    pass
            time.sleep(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.seen.values())


def _trials(sweep_dir: Path) -> list[dict[str, Any]]:
    """Per trial, in start order: start → first step, the gap since the previous trial's last
    result, and the process that ran it."""
    state = json.loads(Path(sorted(glob.glob(str(sweep_dir / "tune" /
                                                 "experiment_state-*.json")))[-1]).read_text())
    rows = []
    for entry in state["trial_data"]:
        trial, meta = json.loads(entry[0]), json.loads(entry[1])
        first = None
        log = sweep_dir / f"trial_{trial['trial_id']}" / "metrics.jsonl"
        for line in log.read_text().splitlines() if log.is_file() else []:
            row = json.loads(line)
            if "train/loss" in row:
                first = row["time"]
                break
        rows.append({"trial_id": trial["trial_id"], "start": meta["start_time"],
                     "first_step": first, "last_result": meta.get("last_result_time"),
                     "pid": (meta.get("last_result") or {}).get("pid")})
    rows.sort(key=lambda r: r["start"])
    out, pids = [], set()
    for i, r in enumerate(rows):
        prev = rows[i - 1]["last_result"] if i else None
        out.append({"trial": i + 1, "trial_id": r["trial_id"], "pid": r["pid"],
                    "process": "reused" if r["pid"] in pids else "new",
                    "start_to_first_step_s": round(r["first_step"] - r["start"], 2)
                    if r["first_step"] else None,
                    "previous_end_to_first_step_s": round(r["first_step"] - prev, 2)
                    if r["first_step"] and prev else None})
        pids.add(r["pid"])
    return out


def _arm(name: str, overrides: list[str], code: Path, work: Path, trials: int) -> dict:
    space = "{optim.lr:{grid:[" + ",".join(f"{lr:.1e}" for lr in LEARNING_RATES[:trials]) + "]}}"
    cmd = [sys.executable, "-m", "shardtune.cli", "sweep", "sweep=smoke", f"sweep.space={space}",
           f"sweep.name={name}", "sweep.scheduler=fifo", "sweep.max_concurrent_trials=1",
           "sweep.trial_cpus=1", f"sweep.export_dir={work / 'exp'}", "data=agnews_subset",
           f"paths.datasets={SHARED}", "data.max_examples=300", "task.max_length=32",
           "trainer.batch_size=16", "trainer.max_steps=4", "trainer.eval_every=2",
           "trainer.log_every=1", f"paths.root={work}", *overrides]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu = TreeCPU(proc.pid)
    if proc.wait() != 0:
        raise SystemExit(f"arm {name} failed: see {work / 'runs' / name / 'console.log'}")
    wall, cpu_s = time.perf_counter() - start, cpu.stop()
    rows = _trials(work / "runs" / name)
    reused = [r["start_to_first_step_s"] for r in rows if r["process"] == "reused"]
    new = [r["start_to_first_step_s"] for r in rows if r["process"] == "new"]
    gaps = [r["previous_end_to_first_step_s"] for r in rows[1:]]
    return {"overrides": overrides, "wall_s": round(wall, 1), "cpu_s": round(cpu_s, 1),
            "start_to_first_step_s": {
                "new_process": round(statistics.median(new), 2) if new else None,
                "reused_process": round(statistics.median(reused), 2) if reused else None},
            "median_gap_between_trials_s": round(statistics.median(gaps), 2) if gaps else None,
            "trials": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--arm", action="append", default=[],
                        help="name[@checkout]=override,override (repeatable)")
    args = parser.parse_args()
    arms = args.arm or ["reuse=sweep.reuse_actors=true", "fresh=sweep.reuse_actors=false"]
    work = ROOT / "runs" / "bench_sweep_startup"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results = {}
    for arm in arms:
        label, _, given = arm.partition("=")
        name, _, checkout = label.partition("@")
        code = Path(checkout).resolve() if checkout else ROOT
        results[name] = {"code": str(code), "commit": _commit(code),
                         **_arm(name, [o for o in given.split(",") if o], code, work,
                                args.trials)}
    save("sweep_trial_startup", {
        "scale": f"{args.trials} trials of the smoke sweep's model (MiniLM-L6, LoRA) on "
                 "agnews_subset (300 examples, max length 32, batch 16, 4 steps, eval every 2,"
                 " log every step), one at a time, FIFO, 1 CPU per trial",
        "arms": results})


def _commit(code: Path) -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=code, check=True,
                              capture_output=True, text=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


if __name__ == "__main__":
    main()
