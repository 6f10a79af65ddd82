"""Recovery after a worker kill: a 2-worker CPU job on BANKING77, one worker SIGKILLed just
after a checkpoint, against the same job uninterrupted. Or a graceful stop (what SIGTERM to the
driver does) at a step, then the same command again.

    python bench/bench_faults.py [--examples 2000] [--steps 60] [--ckpt-every 10]
                                 [--kill-after 20] [--kill-at-step 25] [--stop-at-step 25]

``--kill-after K``: kill as soon as checkpoint K is complete (nothing to repeat);
``--kill-at-step S``: kill once step S is logged (S minus the last checkpoint steps repeated).

Figures: seconds from the kill to the next completed step, steps repeated, the job's extra
wall time, and whether the recovered weights equal the uninterrupted run's (they must). For a
stop: seconds from the request to the command's return (checkpoint included), the step it
stopped at, steps repeated by the re-run and the re-run's time to its first step.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, SHARED, save  # noqa: E402
from tests.conftest import compose_run  # noqa: E402
from trainers import stop  # noqa: E402
from trainers.checkpoint import is_complete  # noqa: E402
from trainers.scaling import start_local_ray  # noqa: E402
from trainers.train import train  # noqa: E402


def _stop_and_rerun(run, args: argparse.Namespace) -> dict:
    """Ask for a graceful stop once ``--stop-at-step`` is logged; then train again."""
    log = Path(run.run_dir) / "metrics.jsonl"
    result: dict = {}
    started = time.time()
    job = threading.Thread(target=lambda: result.update(train(run)))
    job.start()
    while not any(f'"step": {args.stop_at_step},' in line
                  for line in (log.read_text().splitlines() if log.exists() else [])):
        time.sleep(0.02)
    asked = time.time()
    stop.request()
    job.join()
    stopped = time.time()
    stop.reset()
    final = train(run)
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    resumed = [r for r in rows if r.get("event") == "resumed"]
    after = [r for r in rows[rows.index(resumed[0]) + 1:] if "train/loss" in r]
    return {"wall_s": time.time() - started, "final_step": final["metrics"]["step"],
            "weights_hash": final["metrics"]["dist/weights_hash"],
            "stopped_at_step": result["metrics"]["step"], "request_to_exit_s": stopped - asked,
            "steps_repeated": sum(r["repeated_steps"] for r in resumed),
            "rerun_to_first_step_s": after[0]["time"] - stopped}


def _run(tmp: Path, name: str, args: argparse.Namespace, kill: bool) -> dict:
    import psutil  # only the kill needs it

    run = compose_run(tmp, [
        "data=banking77", f"paths.datasets={SHARED}", f"data.max_examples={args.examples}",
        "data.test_path=null", f"trainer.max_steps={args.steps}", "trainer.epochs=50",
        "trainer.batch_size=32", "trainer.log_every=1", f"trainer.ckpt_every={args.ckpt_every}",
        "cluster=ray", "cluster.num_workers=2", "cluster.cpus_per_worker=0.5",
        "trainer.max_failures=1", f"run_name={name}"])
    if kill and args.stop_at_step:
        return _stop_and_rerun(run, args)
    result: dict = {}
    started = time.time()
    job = threading.Thread(target=lambda: result.update(train(run)))
    job.start()
    killed_at = None
    if kill:
        ckpt = Path(run.run_dir) / f"checkpoint_{args.kill_after:06d}"
        log = Path(run.run_dir) / "metrics.jsonl"
        while not (ckpt.is_dir() and is_complete(ckpt)):
            time.sleep(0.02)
        while args.kill_at_step and not any(
                f'"step": {args.kill_at_step},' in line
                for line in (log.read_text().splitlines() if log.exists() else [])):
            time.sleep(0.02)
        workers = [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline", "create_time"])
                   if (p.info["cmdline"] or [""])[0] == "ray::RayTrainWorker"
                   and p.info["create_time"] >= started - 1]
        killed_at = time.time()
        os.kill(workers[-1], signal.SIGKILL)
    job.join()
    wall = time.time() - started
    rows = [json.loads(x) for x in (Path(run.run_dir) / "metrics.jsonl").read_text().splitlines()]
    out = {"wall_s": wall, "final_step": result["metrics"]["step"],
           "weights_hash": result["metrics"]["dist/weights_hash"]}
    if killed_at is not None:
        resumed = [r for r in rows if r.get("event") == "resumed"]
        after = rows[rows.index(resumed[0]) + 1:]  # the steps the restarted workers took
        after = [r for r in after if "train/loss" in r]
        out.update({"resumed_from_step": [r["step"] for r in resumed],
                    "steps_repeated": sum(r["repeated_steps"] for r in resumed),
                    "kill_to_next_step_s": after[0]["time"] - killed_at,
                    "kill_to_restart_s": resumed[0]["time"] - killed_at})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--ckpt-every", type=int, default=10)
    parser.add_argument("--kill-after", type=int, default=20)
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--stop-at-step", type=int, default=None)
    args = parser.parse_args()

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # read when Ray Train is imported
    start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench_faults_"))
    straight = _run(tmp, "straight", args, False)
    killed = _run(tmp, "stopped" if args.stop_at_step else "killed", args, True)
    when = (f"once step {args.kill_at_step} is logged" if args.kill_at_step else
            f"once checkpoint {args.kill_after} is complete")
    if args.stop_at_step:
        save("faults_graceful_stop", {
            "scale": f"banking77 {args.examples} examples, 2 CPU workers (0.5 CPU each), batch "
                     f"32, {args.steps} steps, checkpoint every {args.ckpt_every}; a graceful "
                     f"stop asked for once step {args.stop_at_step} is logged (what SIGTERM to "
                     "the driver does), then the same command again",
            "straight": straight, "stopped": killed,
            "extra_wall_s": killed["wall_s"] - straight["wall_s"],
            "weights_identical": killed["weights_hash"] == straight["weights_hash"]})
        return
    save("faults_worker_kill" + (f"_step{args.kill_at_step}" if args.kill_at_step else ""), {
        "scale": f"banking77 {args.examples} examples, 2 CPU workers (0.5 CPU each), batch 32, "
                 f"{args.steps} steps, checkpoint every {args.ckpt_every}, one worker SIGKILLed "
                 f"{when}; Train health check every 2 s (Ray's default)",
        "straight": straight, "killed": killed,
        "extra_wall_s": killed["wall_s"] - straight["wall_s"],
        "weights_identical": killed["weights_hash"] == straight["weights_hash"]})


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
