"""Typed specs of a sweep (``conf/sweep/<name>.yaml``) and an ablation (``conf/ablation/``).

Both ride on the train config (``sweep:`` / ``ablation:`` keys, null unless chosen), so every
other key of a sweep or ablation is an ordinary train override.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from data.errors import ConfigError

SEARCHES = ("grid", "random", "tpe")
DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint", "qrandint")


def flatten_space(space: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{optim: {lr: {grid: [..]}}}`` (from ``+sweep.space.optim.lr.grid=[..]``) and
    ``{optim.lr: {grid: [..]}}`` (YAML) mean the same axis."""
    flat: Dict[str, Any] = {}
    for key, value in dict(space).items():
        name = f"{prefix}{key}"
        is_axis = isinstance(value, dict) and len(value) == 1 and \
            not isinstance(next(iter(value.values())), dict)
        items = {name: value} if is_axis or not isinstance(value, dict) else \
            flatten_space(value, name + ".")
        for axis, dist in items.items():
            if axis in flat:
                raise ConfigError(f"sweep.space.{axis}", "is given twice")
            flat[axis] = dist
    return flat


@dataclass
class SweepSpec:
    """A hyperparameter search over any train keys, run by Ray Tune.

    Args:
        name: The sweep's name: runs go to ``runs/<name>/``, the best config to
            ``conf/experiment/<name>_best.yaml``.
        space: ``{dotted.key: {distribution: args}}``; distributions: ``choice: [..]``,
            ``grid: [..]`` (every value, crossed with the other grid axes), ``uniform: [lo,
            hi]``, ``loguniform: [lo, hi]``, ``randint: [lo, hi]`` (hi exclusive),
            ``qrandint: [lo, hi, q]``.
        metric: Validation metric the search optimises; reported at every evaluation.
        mode: ``max`` or ``min``.
        search: ``grid`` (grid axes only), ``random``, or ``tpe`` (Optuna).
        max_trials: Trials to sample (random/tpe); grid runs every combination once
            (times ``max_trials`` repeats when > 1 is asked for explicitly: keep it 1).
        time_budget_s: Stop starting and running trials after this long; ``null`` = none.
        max_concurrent_trials: 0 = as many as the cluster can place.
        scheduler: ``asha`` (stop weak trials early) or ``fifo`` (run all to the end).
        grace_period: ASHA: evaluations every trial gets before it can be stopped.
        reduction_factor: ASHA: keep about 1/reduction_factor at each rung.
        seeds: Re-run the ``top_k`` configurations with these seeds and rank by mean with CI.
        top_k: How many configurations get the seed re-runs.
        trial_cpus: CPUs per worker of a trial: a one-worker trial trains in its Tune actor,
            which holds them; a trial of ``cluster.num_workers`` > 1 is a Ray Train job.
        export_dir: Where ``<name>_best.yaml`` goes; ``null`` = ``conf/experiment``.
        reuse_actors: Tune hands a finished one-worker trial's actor (its process, with torch
            and the model libraries imported) to the next trial: ~1 s from a trial's start to
            its first step instead of ~6. ``false``: a fresh process per trial (to measure it,
            or to rule out anything carried from one trial to the next).
    """

    name: str = "sweep"
    space: Dict[str, Any] = field(default_factory=dict)
    metric: str = "val/accuracy"
    mode: str = "max"
    search: str = "random"
    max_trials: int = 8
    time_budget_s: Optional[float] = None
    max_concurrent_trials: int = 0
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    seeds: List[int] = field(default_factory=list)
    top_k: int = 2
    trial_cpus: float = 1.0
    export_dir: Optional[str] = None
    reuse_actors: bool = True

    def __post_init__(self) -> None:
        self.space = flatten_space(self.space)
        if self.mode not in ("max", "min"):
            raise ConfigError("sweep.mode", f"must be max or min, got {self.mode!r}")
        if self.search not in SEARCHES:
            raise ConfigError("sweep.search", f"must be one of {', '.join(SEARCHES)}, got "
                              f"{self.search!r}")
        if self.scheduler not in ("asha", "fifo"):
            raise ConfigError("sweep.scheduler", f"must be asha or fifo, got "
                              f"{self.scheduler!r}")
        if self.max_trials < 1:
            raise ConfigError("sweep.max_trials", f"must be >= 1, got {self.max_trials}")
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ConfigError("sweep.grace_period" if self.grace_period < 1 else
                              "sweep.reduction_factor", "grace_period >= 1, reduction_factor >= 2")
        if not self.space:
            raise ConfigError("sweep.space", "is empty: nothing to search",
                              "e.g. sweep.space={optim.lr: {loguniform: [1e-4, 3e-3]}}")
        if self.top_k < 1:
            raise ConfigError("sweep.top_k", f"must be >= 1, got {self.top_k}")


@dataclass
class AblationSpec:
    """A baseline and named variants, each trained with the same seeds, compared to it.

    Args:
        name: Runs go to ``runs/<name>/<variant>/seed<k>``.
        baseline: Overrides (``key=value`` strings) every arm starts from.
        variants: ``{variant name: [overrides on top of the baseline]}``.
        seeds: Seeds of every arm.
        metric: Verdict metric (as in ``compare.metric``).
        min_effect: Smallest change that matters (as in ``compare.min_effect``).
    """

    name: str = "ablation"
    baseline: List[str] = field(default_factory=list)
    variants: Dict[str, List[str]] = field(default_factory=dict)
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    metric: str = "macro_f1"
    min_effect: float = 0.01

    def __post_init__(self) -> None:
        if not self.variants:
            raise ConfigError("ablation.variants", "is empty: nothing to compare",
                              "e.g. ablation.variants={r4: [peft.r=4]}")
        if not self.seeds:
            raise ConfigError("ablation.seeds", "needs at least one seed")
        for name in self.variants:
            if name == "baseline" or "/" in name:
                raise ConfigError(f"ablation.variants.{name}", "is not a usable variant name")
