"""Seed groups: one configuration trained once per seed, side by side when Ray has room.

``shardtune train seeds=[0,1,2,3,4]`` reads and tokenises the data once, trains each seed as
its own run in ``runs/<run_name>/seed<k>/`` (resumable like any run), evaluates each on the
held-out split (predictions saved for ``shardtune compare``), then writes ``group.json`` (the
members and the group id: a hash of the config without the seed) and ``aggregate.json``
(mean, std, min/max, bootstrap CI across seeds per metric and per slice).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from data.errors import hide_user_error_logs
from evaluation.aggregate import aggregate_metrics, aggregate_slices
from evaluation.config import EvaluateConfig
from evaluation.evaluate import evaluate
from evaluation.fusion import fusion_setting
from evaluation.generation import METRICS as GENERATION_METRICS
from evaluation.outputs import is_current
from evaluation.retrieval import METRICS as RETRIEVAL_METRICS
from trainers.checkpoint import latest_checkpoint
from trainers.cluster_config import ClusterMode
from trainers.config import TrainConfig, config_dict, single_locations
from trainers.identity import (
    GROUP_FILE,
    as_saved,
    data_digest,
    read_json,
    refuse_if_changed,
    run_identity,
)
from trainers.loop import FINAL_METRICS
from trainers.manifest import PROGRESS_FILE
from trainers.metadata import config_group
from trainers.objective import ObjectiveFactory, task_loss
from trainers.scaling import wants_gpu
from trainers.stop import received, stop_flag, stopped
from trainers.train import Prepared, fit, prepare

AGGREGATE_FILE = "aggregate.json"
DRIVER_CPUS = 0.1  # a ray-mode seed's driver task only waits on its Train workers
# evaluation's figures a group aggregates across seeds beside training's own: classification's
# extra scores, retrieval's per-query means (nDCG@10, ...), generation's corpus scores (BLEU, ...),
# scored pairs' correlations (where training logged one already, its figure stands)
EVALUATED = ("micro_f1", "weighted_f1", "top3_accuracy", "top5_accuracy", "ece",
             *RETRIEVAL_METRICS, *GENERATION_METRICS, "spearman", "pearson")


def member(run: TrainConfig, seed: int) -> TrainConfig:
    """The run for one seed: ``runs/<run_name>/seed<k>``, tracked under the group's name."""
    return dataclasses.replace(run, seed=seed, seeds=[], group_name=run.run_name,
                               run_name=f"seed{seed}")


def concurrency(run: TrainConfig, n_runs: int) -> int:
    """How many seeds train at once: what the cluster can place side by side (or as told)."""
    import ray  # a slow import: only a group that trains needs it

    if run.cluster.concurrent_runs:
        return min(run.cluster.concurrent_runs, n_runs)
    if not run.data.materialize:  # each seed would re-tokenise and compete for the same CPUs
        return 1
    total = ray.cluster_resources()
    local = run.cluster.mode == ClusterMode.local
    workers = 1 if local else run.cluster.num_workers
    per_run = workers * run.cluster.cpus_per_worker + (0 if local else DRIVER_CPUS)
    fits = math.floor(total.get("CPU", 1) / per_run + 1e-9)
    if wants_gpu(run.cluster):
        fits = min(fits, math.floor(total.get("GPU", 0) / (workers * run.cluster.gpus_per_worker)))
    return max(1, min(fits, n_runs))


def _finished(one: TrainConfig) -> bool:
    """Trained to its end before: its newest complete checkpoint says done and holds the final
    metrics, so its fit only reports them. (A member kept only in an object store is not seen
    here and counts as unfinished: it gets a place as before.)"""
    newest = latest_checkpoint(Path(one.run_dir))
    if newest is None or not (newest / FINAL_METRICS).exists():
        return False
    return bool(json.loads((newest / PROGRESS_FILE).read_text())["progress"].get("done"))


def _fit_task(one: TrainConfig, prep: Prepared, stop_key: str, objective: ObjectiveFactory
              ) -> dict[str, Any]:
    hide_user_error_logs()
    return fit(one, prep, stop_key=stop_key, objective=objective)


def _fit_all(run: TrainConfig, members: list[TrainConfig], prep: Prepared, parallel: int,
             objective: ObjectiveFactory) -> list[dict[str, Any]]:
    """Sequentially in this process, or as Ray tasks, at most ``parallel`` at a time.

    In local mode a task does the training itself and reserves the CPUs (or GPU) one run
    needs; in ray mode it is a light driver (0.1 CPU) whose Train workers reserve their own.
    """
    if parallel == 1:
        return [fit(m, prep, objective=objective) for m in members]
    import ray  # see concurrency()

    if run.cluster.mode == ClusterMode.local:
        gpu = 1 if wants_gpu(run.cluster) else 0
        options = {"num_cpus": run.cluster.cpus_per_worker, "num_gpus": gpu}
    else:
        options = {"num_cpus": DRIVER_CPUS}
    remote = ray.remote(max_retries=0)(_fit_task).options(**options)
    prep_ref = ray.put(prep)
    pending, results = {}, {}
    queue = list(members)
    # one stop flag for the group: a SIGTERM to this driver reaches the runs in the tasks
    with stop_flag() as stop_key:
        while queue or pending:
            while queue and len(pending) < parallel and not received():
                m = queue.pop(0)
                pending[remote.remote(m, prep_ref, stop_key, objective)] = m.seed
            if not pending:  # stopped before the rest began: they start on the re-run
                break
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                results[pending.pop(ref)] = ray.get(ref)
    for m in members:
        summary = results.setdefault(m.seed, {"run_dir": m.run_dir, "metrics": {},
                                              "status": "stopped"})
        if summary["status"] == "stopped" and received():
            stopped(summary["run_dir"])  # the task's process recorded it, not this one
    return [results[m.seed] for m in members]


def _evaluate_member(one: TrainConfig, split: str, prep: Prepared, reuse: bool = False
                     ) -> dict[str, Any]:
    """The member's evaluation: reused when it finished earlier and was evaluated then (a
    reranker's: on the first stage and top-k its ``task.rerank`` names now)."""
    run_dir, saved = one.run_dir, Path(one.run_dir) / "eval" / split / "metrics.json"
    if reuse and is_current(saved.parent, Path(run_dir)):
        result = json.loads(saved.read_text())
        ranked = result.get("rerank")
        wanted = one.task.rerank
        # answers scored before a score existed (bleu_uncased, session 31) are evaluated
        # again: the group aggregates only what every member reports
        scored = not one.task.chat or set(GENERATION_METRICS) <= set(result["metrics"])
        if scored and (ranked is None or (ranked["retriever"], ranked["top_k"],
                                          fusion_setting(ranked)) == (
                wanted.retriever, wanted.top_k, wanted.fusion)):
            return result
    return evaluate(EvaluateConfig(run=run_dir, split=split, baseline=False, paths=one.paths),
                    splits=prep.splits)


def group_identity(run: TrainConfig, fingerprint: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """What a seed group's members depend on, paths under the code directory relative to it
    (a group resubmitted as a Ray job after a code edit is the same group)."""
    return run_identity(config_dict(run), data_digest(fingerprint, run.paths.code),
                        code_relative=True)


def check_group(run: TrainConfig, fingerprint: dict[str, Any] | None = None) -> None:
    """Refuse to continue ``runs/<run_name>/`` when another configuration (or other data) made
    the seed group there: its finished seeds would be aggregated with the new ones."""
    saved = read_json(Path(run.run_dir) / GROUP_FILE)
    if saved is None:
        return
    # saved by this version or an older one (Hydra's tree): one form of the data locations
    old = single_locations(saved.get("identity") or run_identity(saved.get("config", {}), None))
    written = run_identity(config_dict(run), (fingerprint or {}).get("sha256"))
    refuse_if_changed(Path(run.run_dir), "a seed group", old,
                      as_saved(old, group_identity(run, fingerprint), written))


def train_group(run: TrainConfig, prep: Prepared | None = None,
                objective: ObjectiveFactory = task_loss) -> dict[str, Any]:
    """Train, evaluate and aggregate every seed of ``run.seeds``.

    ``prep``: data already prepared (a distillation passes the split with teacher outputs).
    ``objective``: what each seed's loop minimises (a distillation passes the KD loss).
    """
    start = time.perf_counter()
    check_group(run)  # the config before any data is read, the data after
    prep = prep or prepare(run)
    check_group(run, prep.splits.fingerprint)
    members = [member(run, s) for s in run.seeds]
    group_dir = Path(run.run_dir)
    group_dir.mkdir(parents=True, exist_ok=True)
    config = config_dict(run)
    group_id = config_group(run)
    index = {"group_name": run.run_name, "config_group": group_id, "seeds": list(run.seeds),
             "members": [m.run_dir for m in members], "status": "running",
             "identity": group_identity(run, prep.splits.fingerprint),
             "config": {k: v for k, v in config.items() if k not in ("seed", "seeds")}}
    (group_dir / GROUP_FILE).write_text(json.dumps(index, indent=1, default=str))
    # seeds that finished before only report: the rest get what the cluster has (one left
    # on a 2-core machine trains on both cores in this process, not on one in a task)
    parallel = concurrency(run, max(sum(not _finished(m) for m in members), 1))
    summaries = _fit_all(run, members, prep, parallel, objective)
    unfinished = [s for s in summaries if s["status"] != "done"]
    if unfinished:
        return {"run_dir": str(group_dir), "status": "stopped",
                "metrics": unfinished[0]["metrics"], "members": summaries}
    split = "test" if "test" in prep.splits.datasets else "validation"
    per_seed, slices = [], []
    for one, summary in zip(members, summaries, strict=True):
        metrics = {k: v for k, v in summary["metrics"].items() if k != "already_done"}
        evaluated = _evaluate_member(one, split, prep,
                                     reuse=bool(summary["metrics"].get("already_done")))
        for key, value in evaluated["metrics"].items():  # what training did not measure
            if key in EVALUATED:
                metrics.setdefault(f"{split}/{key}",
                                   value["value"] if isinstance(value, dict) else value)
        per_seed.append(metrics)
        slices.append(evaluated["slices"])
    aggregate = {"group_name": run.run_name, "config_group": group_id, "seeds": list(run.seeds),
                 "eval_split": split, "concurrent_runs": parallel,
                 "wall_s": time.perf_counter() - start,
                 "metrics": aggregate_metrics(per_seed), "slices": aggregate_slices(slices),
                 "per_seed": [{"seed": m.seed, "run_dir": m.run_dir, **pm}
                              for m, pm in zip(members, per_seed, strict=True)]}
    (group_dir / AGGREGATE_FILE).write_text(json.dumps(aggregate, indent=1, default=str))
    index["status"] = "done"
    (group_dir / GROUP_FILE).write_text(json.dumps(index, indent=1, default=str))
    return {"run_dir": str(group_dir), "status": "done", "group": aggregate,
            "metrics": {k: v["mean"] for k, v in aggregate["metrics"].items()},
            "members": summaries}
