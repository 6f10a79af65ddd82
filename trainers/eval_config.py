"""Typed config for ``shardtune evaluate`` / ``shardtune baseline`` and release gates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from hydra.core.config_store import ConfigStore

from data.config import DataConfig
from trainers.config import PathsConfig
from trainers.errors import ConfigError

SPLITS = ("train", "validation", "test")


@dataclass
class GateConfig:
    """Release gates checked after evaluation; any failure exits non-zero.

    Args:
        min: Lowest acceptable value per headline metric, e.g. ``{macro_f1: 0.9}``; the point
            estimate is compared, and the report shows its CI.
        max_drop_vs_baseline: The model may trail the TF-IDF baseline by at most this much
            accuracy (0.0 = must not be worse).
        max_slice_drop: No slice may fall more than this below the overall accuracy.
        min_slice_size: Slices smaller than this are reported but not gated (too noisy).
        reference: Another run directory; the model may not fall below its accuracy by more
            than ``max_drop_vs_reference``.
        max_drop_vs_reference: Allowed accuracy drop against ``reference``.
    """

    min: Dict[str, float] = field(default_factory=dict)
    max_drop_vs_baseline: Optional[float] = None
    max_slice_drop: Optional[float] = None
    min_slice_size: int = 30
    reference: Optional[str] = None
    max_drop_vs_reference: float = 0.0


@dataclass
class EvaluateConfig:
    """What to evaluate and how.

    Args:
        run: A finished run directory (``runs/<run_name>``).
        split: ``test``, ``validation`` or ``train`` of the data config.
        data: Another data config (``data=<group>``); ``null`` = the run's own data.
        resamples: Bootstrap resamples for confidence intervals.
        actors: Ray Data actors doing batch inference (one GPU each when present).
        batch_size: Examples per forward pass.
        baseline: Fit the TF-IDF + logistic regression baseline on the same splits if the run
            has none yet, and show it beside the model.
    """

    run: str = "???"
    split: str = "test"
    data: Optional[DataConfig] = None
    gate: GateConfig = field(default_factory=GateConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    resamples: int = 1000
    actors: int = 1
    batch_size: int = 64
    baseline: bool = True

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError("split", f"must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.resamples < 100:
            raise ConfigError("resamples", f"must be >= 100, got {self.resamples}")
        if self.actors < 1 or self.batch_size < 1:
            raise ConfigError("actors" if self.actors < 1 else "batch_size", "must be >= 1")


@dataclass
class BaselineConfig:
    """``shardtune baseline``: the TF-IDF + logistic regression model alone, on a data config.

    Args:
        data: The data config (``data=<group>`` and ``data.*`` keys).
        split: Which split to score after fitting on train.
        resamples: Bootstrap resamples for confidence intervals.
    """

    data: DataConfig = field(default_factory=DataConfig)
    split: str = "test"
    gate: GateConfig = field(default_factory=GateConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    resamples: int = 1000

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError("split", f"must be one of {', '.join(SPLITS)}, got {self.split!r}")


def register_eval_configs() -> None:
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
    ConfigStore.instance().store(name="baseline_schema", node=BaselineConfig)
