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
    """Append-only JSONL of metrics per step.

    On resume the lines past the resumed step are dropped (those steps run again, and each
    step is logged once) and one ``{"event": "resumed"}`` line records how many steps were
    repeated and when: the evidence of what a crash cost.
    """

    def __init__(self, run_dir: Path, resume_step: int) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / METRICS_FILE
        self._file = None
        if not self.path.exists():
            self._file = self.path.open("a")
            return
        rows = [_parse(line) for line in self.path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r is not None]  # a line cut short by a kill is dropped
        kept = [r for r in rows if r.get("step", 0) <= resume_step]
        last = max((r["step"] for r in rows if "event" not in r), default=0)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a")
        if rows:
            self.log({"event": "resumed", "repeated_steps": max(last - resume_step, 0)},
                     resume_step)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._file.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        self._file.flush()

    def summary(self, metrics: dict[str, Any]) -> None:
        self.log({"summary": True, **metrics}, metrics.get("step", 0))

    def finish(self) -> None:
        self._file.close()


def restore_metrics_log(run_dir: Path, checkpoint: Path) -> None:
    """A run resumed from the store on another machine gets its metrics history back (the
    checkpoint carries a copy); LocalTracker then drops the lines past the resumed step."""
    local, saved = run_dir / METRICS_FILE, checkpoint / METRICS_FILE
    if saved.is_file() and not local.is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(saved.read_text())


def _parse(line: str) -> dict[str, Any] | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def wandb_run_id(run: TrainConfig) -> str:
    """Stable per run directory, so a resumed run continues the same W&B run."""
    return hashlib.sha1(run.run_dir.encode()).hexdigest()[:16]


def job_type(config: dict[str, Any]) -> str:
    """W&B job type from the tracked config: a distilled student, a sweep trial, a train."""
    if config.get("distill") is not None:
        return "distill"
    return "sweep" if config.get("sweep") is not None else "train"


def display_name(run: TrainConfig) -> str:
    """``<run or group name>-seed<k>``: every seed of a group is told apart in W&B."""
    return f"{run.group_name or run.run_name}-seed{run.seed}"


class WandbTracker:
    """One W&B run per training run, resumable: the id derives from the run directory."""

    def __init__(self, run: TrainConfig, config: dict[str, Any], group: str | None) -> None:
        import wandb  # optional and slow to import: only with tracking.wandb on

        run_id = wandb_run_id(run)
        self._run = wandb.init(
            project=run.tracking.project, entity=run.tracking.entity, id=run_id,
            resume="allow", name=display_name(run), job_type=job_type(config),
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


def upload_artifacts(run: TrainConfig, paths: list[Path], group: str | None,
                     config: dict[str, Any]) -> None:
    """The finished run's files as one ``model`` artifact, on the same (resumed) W&B run."""
    import wandb  # optional and slow to import: only with tracking.wandb on

    with wandb.init(project=run.tracking.project, entity=run.tracking.entity,
                    id=wandb_run_id(run), resume="allow", name=display_name(run),
                    job_type=job_type(config), group=group, dir=run.run_dir) as wb:
        artifact = wandb.Artifact(display_name(run), type="model",
                                  metadata={"config_group": group, "seed": run.seed})
        for path in paths:
            if path.is_dir():
                artifact.add_dir(str(path), name=path.name)
            elif path.exists():
                artifact.add_file(str(path))
        wb.log_artifact(artifact)


def log_summary_run(run: TrainConfig, kind: str, name: str, summary: dict[str, Any],
                    rows: list[dict[str, Any]]) -> None:
    """One W&B run per sweep or ablation (``kind``) holding its results table."""
    import wandb  # optional and slow to import: only with tracking.wandb on

    run_id = hashlib.sha1(f"{run.paths.runs}/{kind}/{name}".encode()).hexdigest()[:16]
    with wandb.init(project=run.tracking.project, entity=run.tracking.entity, name=name,
                    job_type=kind, tags=[*run.tracking.tags, f"{kind}:{name}"],
                    group=f"{kind}:{name}", dir=run.paths.runs, id=run_id,
                    resume="allow") as wb:
        if rows:
            columns = sorted({k for r in rows for k in r})
            wb.log({"results": wandb.Table(columns=columns,
                                           data=[[str(r.get(c, "")) for c in columns]
                                                 for r in rows])})
        wb.summary.update(summary)
