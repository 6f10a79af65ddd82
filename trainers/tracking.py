"""Metric trackers: a local JSONL file (always) and Weights & Biases (opt-in), rank 0 only.

The W&B API key is read by wandb from WANDB_API_KEY; shardtune never reads, logs or stores it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Protocol

from trainers.config import TrainConfig

METRICS_FILE = "metrics.jsonl"


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def summary(self, metrics: dict[str, Any]) -> None: ...
    def finish(self) -> None: ...


class NullTracker:
    """What ranks other than 0 get: the same surface, no output."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class LocalTracker:
    """Append-only JSONL of metrics per step; on resume, drops lines past the resumed step."""

    def __init__(self, run_dir: Path, resume_step: int) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / METRICS_FILE
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = self.path.open("a")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._file.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        self._file.flush()

    def summary(self, metrics: dict[str, Any]) -> None:
        self.log({"summary": True, **metrics}, metrics.get("step", 0))

    def finish(self) -> None:
        self._file.close()


class WandbTracker:
    """One W&B run per training run, resumable: the id derives from the run directory."""

    def __init__(self, run: TrainConfig, config: dict[str, Any], group: str | None) -> None:
        import wandb

        run_id = hashlib.sha1(run.run_dir.encode()).hexdigest()[:16]
        self._run = wandb.init(
            project=run.tracking.project, entity=run.tracking.entity, id=run_id,
            resume="allow", name=f"{run.run_name}-seed{run.seed}", job_type="train",
            group=group, tags=list(run.tracking.tags), config=config,
            dir=run.run_dir,
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        self._run.summary.update(metrics)

    def finish(self) -> None:
        self._run.finish()


class MultiTracker:
    def __init__(self, trackers: list[Any]) -> None:
        self.trackers = trackers

    def log(self, metrics: dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def summary(self, metrics: dict[str, Any]) -> None:
        for t in self.trackers:
            t.summary(metrics)

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()


def open_tracker(run: TrainConfig, rank: int, resume_step: int, config: dict[str, Any],
                 group: str | None = None) -> Any:
    if rank != 0:
        return NullTracker()
    trackers: list[Any] = [LocalTracker(Path(run.run_dir), resume_step)]
    if run.tracking.wandb:
        trackers.append(WandbTracker(run, config, group))
    return MultiTracker(trackers)
