"""What runs in a sweep's trial actors: one trial, trained in the actor's own process.

A trial of one worker (every sweep but one with ``cluster=ray cluster.num_workers>1``) trains in
its Tune actor, in Ray Train's local mode: nothing else starts for it. As a Ray Train job it
started a Train controller, a worker, a dataset-split coordinator and a result queue, four
processes that each paid their imports (~8-10 s of CPU for the worker's torch, transformers and
peft) before the first step. And Tune hands a finished trial's actor to the next trial
(``reuse_actors``), which then finds all of it imported already.

Ray Train's ``ray.train.*`` calls refuse to run inside a Tune *function* trainable (Ray
#49454), so the trial is a class trainable, :class:`LocalTrial`: a thread runs ``fit`` and
each report waits until Tune asks for the next result, as in the function API, so ASHA decides
while the trial holds still at its rung. A trial of several workers is :func:`run_trial`, a
function trainable running a Ray Train job; its actor is never reused (tuning/sweep.py).

Tune and (through trainers.train) torch load when this module is imported: only a sweep that
starts, and its trial actors, import it.
"""

from __future__ import annotations

import dataclasses
import gc
import queue
import sys
import threading
from pathlib import Path
from typing import Any

import torch
from ray.train import UserCallback
from ray.tune import Trainable
from ray.tune.result import RESULT_DUPLICATE

from data.errors import hide_user_error_logs
from trainers import stop
from trainers.cluster_config import ClusterMode
from trainers.config import TrainConfig
from trainers.train import Prepared, fit, prepare
from tuning.space import apply_values

# How long a reused (or stopping) actor waits for the trial it held to end: to unwind from the
# report it waits at, or to finish exporting after its final one. Tune errors the next trial
# if the actor cannot be reset in time.
END_TIMEOUT_S = 30.0
FINAL_KEY = "params_total"  # only the loop's final report has it (sweep_report reads it too)


def trial_run(base: TrainConfig, config: dict[str, Any], trial_id: str, sweep_dir: str
              ) -> TrainConfig:
    """The base config plus this trial's values, named after the trial, under the sweep."""
    run = apply_values(base, config, run_name=f"trial_{trial_id}", group_name=None, seeds=[])
    return dataclasses.replace(run, paths=run.paths.below(Path(sweep_dir).name))


def run_trial(config: dict[str, Any], base: TrainConfig, sweep_dir: str,
              prep: Prepared | None) -> None:
    """A trial of several workers: a Ray Train job that reports to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    hide_user_error_logs()
    run = trial_run(base, config, tune.get_context().get_trial_id(), sweep_dir)
    fit(run, prep if prep is not None else prepare(run), callbacks=[TuneReportCallback()])


@dataclasses.dataclass(frozen=True)
class SharedData:
    """The driver's prepared data, by reference: each trial fetches a copy of its own, so
    nothing one trial changes in it can reach the next trial of a reused actor."""

    ref: Any  # ray.ObjectRef of trainers.train.Prepared

    def fetch(self) -> Prepared:
        import ray

        return ray.get(self.ref)


class TrialStopped(BaseException):
    """Raised at a report in a trial's thread when Tune stops the trial or hands its actor to
    the next one: not an ``Exception``, so no error handler on its way out takes it for one."""


class _Relay(UserCallback):
    """Train callback (called by local mode, trainers/train.py): each report goes to
    :meth:`LocalTrial.step`, then the loop waits for Tune's next request or its stop. Not
    after the loop's final report: the run then exports its adapter and metrics even when
    ASHA stops it there (that report is the trial's result either way)."""

    def __init__(self) -> None:
        self.reports: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.go_on = threading.Semaphore(0)
        self.stopping = threading.Event()

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        if self.stopping.is_set():
            raise TrialStopped
        result = dict(metrics[0])
        self.reports.put(("result", result))
        if FINAL_KEY in result:
            return
        self.go_on.acquire()
        if self.stopping.is_set():
            raise TrialStopped


def start_clean(threads: int) -> None:
    """Undo what an earlier trial of this process may have left behind. The loop seeds every
    RNG itself (``set_seed``); the driver's data arrives as a fresh copy (:class:`SharedData`);
    modules keep no per-run caches but the tokenizers keyed by path and file time."""
    stop.reset()  # a stop asked for belongs to the trial it was asked of
    hide_user_error_logs()
    torch.set_num_threads(threads)  # as when the actor started
    gc.collect()  # the previous trial's model and optimizer, before this one loads its own
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def finish_trackers() -> None:
    """Finish a W&B run a stopped trial left open (the loop finishes it only at its end):
    outside notebooks ``wandb.init`` returns the open run, so the next trial of this process
    would log into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.finish()


class LocalTrial(Trainable):
    """A one-worker trial trained in this actor's process; the actor may serve many trials."""

    def setup(self, config: dict[str, Any], base: TrainConfig, sweep_dir: str,
              data: SharedData | None) -> None:
        self._base, self._sweep_dir, self._data = base, sweep_dir, data
        self._threads = torch.get_num_threads()
        self._begin(config)

    def _begin(self, config: dict[str, Any]) -> None:
        self._relay, self._holding = _Relay(), False
        self._thread = threading.Thread(target=self._train, args=(dict(config), self._relay),
                                        name=f"trial-{self.trial_id}", daemon=True)
        self._thread.start()

    def _train(self, config: dict[str, Any], relay: _Relay) -> None:
        outcome: tuple[str, Any] = ("done", None)
        try:
            start_clean(self._threads)
            run = trial_run(self._base, config, self.trial_id, self._sweep_dir)
            fit(run, self._data.fetch() if self._data is not None else prepare(run),
                callbacks=[relay])
        except TrialStopped:
            outcome = ("stopped", None)
        except BaseException as exc:  # noqa: BLE001 - handed to step(), which raises it
            outcome = ("error", exc)
        finally:
            finish_trackers()
        relay.reports.put(outcome)

    def step(self) -> dict[str, Any]:
        if self._holding:  # the loop waits at its last report: let it go on to the next
            self._holding = False
            self._relay.go_on.release()
        kind, payload = self._relay.reports.get()
        if kind == "result":
            self._holding = True
            return payload
        if kind == "error":
            raise payload
        return {RESULT_DUPLICATE: True}  # fit returned: the last result was the final one

    def _end(self) -> bool:
        """Stop the trial's thread at its report (or find it ended); True once it has ended."""
        self._relay.stopping.set()
        self._relay.go_on.release()
        self._thread.join(END_TIMEOUT_S)
        return not self._thread.is_alive()

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Tune hands this actor to the next trial: end the one it held, start the next."""
        if not self._end():
            return False
        self._begin(new_config)
        return True

    def cleanup(self) -> None:
        self._end()


# Tune names each trial's directory (``run_trial_<id>_…``, read back by sweep_report) and checks
# a restored sweep's trainable by this name: the function trainable's, so both stay as they were.
LocalTrial.__name__ = "run_trial"


def trainable(base: TrainConfig, sweep_dir: str, prep: Prepared | None,
              resources: dict[str, float]) -> Any:
    """The sweep's Tune trainable, with the data and each trial's ``resources``."""
    import ray
    from ray import tune

    if base.cluster.mode == ClusterMode.local:
        data = SharedData(ray.put(prep)) if prep is not None else None
        inner = tune.with_parameters(LocalTrial, base=base, sweep_dir=sweep_dir, data=data)
    else:
        inner = tune.with_parameters(run_trial, base=base, sweep_dir=sweep_dir, prep=prep)
    return tune.with_resources(inner, resources)
