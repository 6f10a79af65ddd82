"""``shardtune sweep sweep=<name>``: a resumable, budgeted Ray Tune search over train keys.

A trial of one worker (the default) trains in its own Tune actor, in Ray Train's local mode,
and Tune reuses a finished trial's actor for the next trial: torch, transformers and peft are
imported once per actor, not once per trial, and no Train controller or worker starts
(tuning/trial.py). A trial of several workers (``cluster=ray cluster.num_workers=N``) is a
full Ray Train job: a Tune function trainable runs ``TorchTrainer`` with
``TuneReportCallback`` (the Train V2 pattern). Either way the trial reports the validation
metric at every evaluation, which ASHA uses to stop weak trials early. The data is read and
tokenised once, in the driver, and shared with every trial through the object store.
Re-running the same command restores the Tune experiment: finished trials are not run again.

Ray and Tune are imported inside the functions that use them: they take seconds to import, and
checking a sweep definition (``validate``) needs neither.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from trainers.cluster_config import ClusterMode
from trainers.config import TrainConfig, config_dict, single_locations
from trainers.identity import (
    RESUME_FREE,
    RESUME_KEYS,
    as_saved,
    code_relative_identity,
    data_digest,
    identity,
    read_json,
    refuse_if_changed,
    write_json,
)
from trainers.loop import PLACEMENT_GROUP_KEY
from trainers.scaling import wants_gpu
from trainers.tracking import log_summary_run
from trainers.train import prepare
from tuning.config import SweepSpec
from tuning.space import apply_values, tune_space, validate
from tuning.sweep_console import trial_events
from tuning.sweep_report import rerun_top_k, write_results, write_summary
from tuning.trial import trainable as make_trainable

DRIVER_CPUS = 0.1  # a Ray Train job's trial function only waits on its workers
# Keys that change the tokenised data: a sweep over them prepares data per trial.
DATA_KEYS = ("data.", "task.", "model.")
IDENTITY_FILE = "identity.json"
# What a sweep's trials and their ranking depend on: a run's keys, every trainer key that sets
# the evaluation rhythm ASHA's rungs follow, the base seed and the search itself.
SWEEP_KEYS = (*RESUME_KEYS, "trainer", "seed", "sweep")
SWEEP_FREE = (*RESUME_FREE, "trainer.log_every", "trainer.keep_checkpoints",
              "trainer.max_failures", "sweep.name", "sweep.max_concurrent_trials",
              "sweep.trial_cpus", "sweep.export_dir", "sweep.seeds", "sweep.top_k",
              "sweep.time_budget_s", "sweep.reuse_actors")


def sweep_name(run: TrainConfig, overrides: list[str]) -> str:
    """A sweep's identity: ``run_name`` when the command gives one, else the sweep's name."""
    given = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("run_name=")]
    return given[-1] if given else run.sweep.name


def check_identity(sweep_dir: Path, run: TrainConfig, fingerprint: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Refuse to resume ``sweep_dir`` when another configuration (or other data) made it;
    returns this sweep's identity (paths under the code directory relative to it: a sweep
    resubmitted as a Ray job after a code edit is the same sweep)."""
    resolved = config_dict(run)
    new = code_relative_identity(identity(resolved, SWEEP_KEYS, SWEEP_FREE, data_digest(
        fingerprint, run.paths.code)), resolved)
    written = identity(resolved, SWEEP_KEYS, SWEEP_FREE, (fingerprint or {}).get("sha256"))
    old = read_json(sweep_dir / IDENTITY_FILE)  # written by this version or an older one
    old = old and single_locations(old)
    refuse_if_changed(sweep_dir, "a sweep", old, as_saved(old, new, written))
    return new


def trial_base(run: TrainConfig, spec: SweepSpec, use_gpu: bool) -> TrainConfig:
    """What every trial starts from: one worker trains in the trial's own actor (Train's local
    mode; tuning/trial.py), several (``cluster=ray``, or FSDP) as a Ray Train job; each worker
    gets ``sweep.trial_cpus`` and ``use_gpu`` as resolved for the cluster; a checkpoint at each
    evaluation (ASHA's rungs) and the sweep's tag."""
    job = run.cluster.mode == ClusterMode.ray and (
        run.cluster.num_workers > 1 or run.trainer.strategy.value == "fsdp")
    return apply_values(run, {"cluster.mode": "ray" if job else "local",
                              "cluster.num_workers": run.cluster.num_workers if job else 1,
                              "cluster.cpus_per_worker": spec.trial_cpus,
                              "cluster.use_gpu": use_gpu,
                              "trainer.ckpt_every": run.trainer.eval_every,
                              "tracking.tags": [*run.tracking.tags, f"sweep:{spec.name}"]})


def trial_resources(base: TrainConfig) -> dict[str, float]:
    """What Tune reserves for a trial's actor: a trial trained in it holds its worker's CPUs
    (and GPU); a Ray Train job's trial only waits, its workers hold their own."""
    cluster = base.cluster
    if cluster.mode == ClusterMode.ray:
        return {"cpu": DRIVER_CPUS}
    return {"cpu": cluster.cpus_per_worker, **({"gpu": cluster.gpus_per_worker}
                                                 if cluster.use_gpu else {})}


def concurrency(spec: SweepSpec, base: TrainConfig) -> int:
    """``sweep.max_concurrent_trials``, or as many trials as the cluster can place at once."""
    import ray

    if spec.max_concurrent_trials:
        return spec.max_concurrent_trials
    workers = base.cluster.num_workers if base.cluster.mode == ClusterMode.ray else 0
    per_trial = trial_resources(base)["cpu"] + workers * base.cluster.cpus_per_worker
    fits = math.floor(ray.cluster_resources().get("CPU", 1) / per_trial + 1e-9)
    if base.cluster.use_gpu:
        gpus = ray.cluster_resources().get("GPU", 0)
        fits = min(fits, math.floor(gpus / (max(workers, 1) * base.cluster.gpus_per_worker)))
    return max(1, fits)


def reuse_actors(spec: SweepSpec, base: TrainConfig) -> bool:
    """Whether Tune hands a finished trial's actor to the next trial. Never for a Ray Train
    job's trial: ASHA stops it while its function waits on the Train controller, and Tune
    would find the actor still busy when resetting it (which errors the next trial)."""
    return spec.reuse_actors and base.cluster.mode == ClusterMode.local


def release_callback() -> Any:
    """A Tune callback that removes the placement group of every trial that ends.

    Train V2 frees a stopped trial's workers through a detached cleaner that asks the State
    API (the dashboard) whether the Train controller is alive; on a Ray without a dashboard it
    never learns, and each trial ASHA stops would keep its CPUs/GPUs for good. Workers report
    their placement group id (``_placement_group``), so the driver can remove it itself. (A
    trial trained in its own actor has no Train workers: Tune frees what it holds.)
    """
    from ray.tune import Callback

    class ReleaseEndedTrials(Callback):
        def __init__(self) -> None:
            self.groups: dict[str, str] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            if result.get(PLACEMENT_GROUP_KEY):
                self.groups[trial.trial_id] = result[PLACEMENT_GROUP_KEY]

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._release(trial.trial_id)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._release(trial.trial_id)

        def _release(self, trial_id: str) -> None:
            import ray
            from ray.util.placement_group import PlacementGroup

            pg_hex = self.groups.pop(trial_id, None)
            if pg_hex is None:
                return
            state = ray.util.placement_group_table().get(pg_hex, {}).get("state")
            if state not in (None, "REMOVED"):
                ray.util.remove_placement_group(
                    PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_hex))))

    return ReleaseEndedTrials()


def _placement_groups_left(before: set[str], wait_s: float = 60.0
                           ) -> tuple[list[dict[str, Any]], float]:
    """Placement groups the sweep created that still hold resources.

    A trial stopped by ASHA takes its Train controller down with it; Ray then removes the
    controller's placement group asynchronously, so this waits (bounded) for that to happen.
    """
    import ray

    start = time.perf_counter()
    while True:
        left = [pg for pid, pg in ray.util.placement_group_table().items()
                if pid not in before and pg["state"] != "REMOVED"]
        waited = time.perf_counter() - start
        if not left or waited > wait_s:
            return left, waited
        time.sleep(0.5)


def _search(spec: SweepSpec, seed: int) -> tuple[Any, int]:
    """(search algorithm or None, num_samples)."""
    if spec.search == "tpe":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=spec.metric, mode=spec.mode, seed=seed), spec.max_trials
    if spec.search == "grid":
        return None, 1
    return None, spec.max_trials


def _scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="training_iteration", grace_period=spec.grace_period,
                         reduction_factor=spec.reduction_factor, max_t=10_000)


def sweep(run: TrainConfig, overrides: list[str]) -> dict[str, Any]:
    """Run (or resume) the sweep; write the results table, plots and the best config."""
    import ray
    from ray import tune

    start = time.perf_counter()
    spec: SweepSpec = dataclasses.replace(run.sweep, name=sweep_name(run, overrides))
    sweep_dir = Path(run.paths.runs) / spec.name
    has_validation = bool(run.data.validation_path) or run.data.val_fraction > 0
    validate(spec, run, has_validation)  # before anything starts
    check_identity(sweep_dir, run)  # the config before any data is read, the data after
    prep = prepare(run)  # starts Ray, checks the model, reads and tokenises the data once
    sweep_identity = check_identity(sweep_dir, run, prep.splits.fingerprint)
    base = trial_base(run, spec, wants_gpu(run.cluster))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json(sweep_dir / IDENTITY_FILE, sweep_identity)
    shares_data = not any(k.startswith(DATA_KEYS) for k in spec.space)
    trainable = make_trainable(base, str(sweep_dir), prep if shares_data else None,
                               trial_resources(base))
    storage = str(sweep_dir)
    tune_dir = sweep_dir / "tune"
    # Tune saves its experiment state every ~10+ s by default; a driver killed inside that
    # window forgets trials that had ended. The state is small: save it every 2 s.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    if tune.Tuner.can_restore(str(tune_dir)):
        # the run config (with the release callback) is restored from the experiment state
        tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_errored=True)
        resumed = True
    else:
        search, samples = _search(spec, run.seed)
        parallel = concurrency(spec, base)
        if search is None:  # grid / random: Tune's generator, seeded for repeatable draws
            from ray.tune.search import BasicVariantGenerator

            search = BasicVariantGenerator(random_state=run.seed, max_concurrent=parallel)
        tuner = tune.Tuner(
            trainable, param_space=tune_space(spec),
            tune_config=tune.TuneConfig(
                metric=spec.metric, mode=spec.mode, search_alg=search,
                scheduler=_scheduler(spec), num_samples=samples,
                max_concurrent_trials=None if spec.search != "tpe" else parallel,
                time_budget_s=spec.time_budget_s, reuse_actors=reuse_actors(spec, base)),
            run_config=tune.RunConfig(name="tune", storage_path=storage, verbose=0,
                                      # a trial's checkpoints are its run's, in its directory
                                      checkpoint_config=tune.CheckpointConfig(
                                          checkpoint_at_end=False),
                                      callbacks=[release_callback(),
                                                 trial_events(list(spec.space), spec.metric)],
                                      failure_config=tune.FailureConfig(max_failures=0)))
        resumed = False
    before = set(ray.util.placement_group_table())
    grid = tuner.fit()
    leftover, waited = _placement_groups_left(before)
    (sweep_dir / "placement_groups_after.json").write_text(json.dumps(
        {"left": leftover, "waited_s": waited}, default=str))
    summary = write_results(spec, grid, sweep_dir, base, overrides, run)
    summary.update(resumed=resumed, wall_s=time.perf_counter() - start,
                   placement_groups_left=len(leftover))
    (sweep_dir / "sweep.json").write_text(json.dumps(summary, indent=1, default=str))
    if spec.seeds and summary["best"] is not None:
        summary["top_k"] = rerun_top_k(spec, summary, base, run)
    if run.tracking.wandb:
        log_summary_run(run, "sweep", spec.name, {"best": summary["best"],
                                                  "trials": summary["trials"]},
                        summary["table"])
    summary["report"] = str(write_summary(summary, sweep_dir))
    (sweep_dir / "sweep.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
