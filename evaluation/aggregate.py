"""Across-seed statistics: mean, spread and a bootstrap CI of the mean, per metric and slice.

One seed's number says little; a group of seeds says how much a configuration's result moves
with nothing but the seed changed. That spread is the yardstick every comparison needs.

A single seed has no spread across seeds: ``describe`` then returns a collapsed CI (the mean
twice), which must never be shown as a 95% CI. ``example_interval`` gives such a run its CI
over evaluation examples instead, and ``format_stat`` writes a table cell that says which
interval it shows, or ``n=1 seed`` when there is none.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from evaluation import stats as example_stats

CONFIDENCE = 0.95


def describe(values: list[float], resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean, sample std (ddof=1), min, max and a percentile-bootstrap CI of the mean.

    With fewer than two distinct values the CI collapses to the mean (nothing to resample);
    for one value (``n == 1``) that is no interval at all: show it with ``format_stat``.
    """
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    out = {"mean": mean, "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
           "min": float(x.min()), "max": float(x.max()), "n": len(x),
           "ci_low": mean, "ci_high": mean}
    if len(x) > 1 and np.ptp(x) > 0:
        ci = stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=CONFIDENCE,
                             method="percentile", random_state=np.random.default_rng(seed))
        out["ci_low"] = float(ci.confidence_interval.low)
        out["ci_high"] = float(ci.confidence_interval.high)
    return out


def aggregate_metrics(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``describe`` for every numeric metric that every seed reported."""
    keys = set.intersection(*(set(m) for m in per_seed)) if per_seed else set()
    out = {}
    for key in sorted(keys):
        values = [m[key] for m in per_seed]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = describe(values)
    return out


def aggregate_slices(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per slice (e.g. ``channel=chat``), its accuracy across seeds; worst mean first.

    A slice missing from some seed's table (it cannot be: same data) is reported with the
    seeds that have it, and ``n`` says how many.
    """
    values: dict[str, list[float]] = defaultdict(list)
    sizes: dict[str, int] = {}
    for table in per_seed:
        for row in table:
            values[row["slice"]].append(row["value"])
            sizes[row["slice"]] = row["n"]
    rows = [{"slice": name, "examples": sizes[name], **describe(vals)}
            for name, vals in values.items()]
    return sorted(rows, key=lambda r: (r["mean"], -r["examples"]))


def example_interval(run_dir: Path, split: str, metric: str, resamples: int = 1000,
                     seed: int = 0) -> dict[str, float] | None:
    """One run's 95% CI of ``metric`` over the examples of ``split`` (examples, not seeds).

    ``metric``: ``accuracy`` or a prefixed key such as ``test/accuracy``. Read from the
    evaluation's ``eval/<split>/metrics.json`` when it stored the metric with a CI; else a
    percentile bootstrap over ``eval/<split>/predictions.parquet`` (accuracy and macro-F1,
    as the evaluation computes them). None: neither is there, or the interval is degenerate
    (every resample gives the same value), which is no interval either.
    """
    name = metric.split("/", 1)[-1]
    folder = Path(run_dir) / "eval" / split
    found: dict[str, float] | None = None
    saved = folder / "metrics.json"
    if saved.exists():
        stored = json.loads(saved.read_text()).get("metrics", {}).get(name)
        if isinstance(stored, dict) and {"value", "ci_low", "ci_high"} <= set(stored):
            found = {k: stored[k] for k in ("value", "ci_low", "ci_high", "n") if k in stored}
    predictions = folder / "predictions.parquet"
    if found is None and name in ("accuracy", "macro_f1") and predictions.exists():
        frame = pd.read_parquet(predictions)
        if {"gold_label", "pred_label"} <= set(frame.columns):
            labels = sorted(set(frame["gold_label"]) | set(frame["pred_label"]))
            code = {label: i for i, label in enumerate(labels)}
            gold = frame["gold_label"].map(code).to_numpy()
            pred = frame["pred_label"].map(code).to_numpy()
            fn = example_stats.accuracy if name == "accuracy" else example_stats.macro_f1
            found = example_stats.bootstrap(fn, gold, pred, resamples, seed).as_dict()
    if found is None or not found["ci_high"] > found["ci_low"]:
        return None
    return found


def format_stat(stat: dict[str, float] | None, example: dict[str, float] | None = None,
                split: str = "test", digits: int = 4) -> str:
    """A table cell for a metric across seeds, saying which interval it shows.

    Several seeds: ``mean ± std [CI of the mean across seeds]``. One seed: its value with the
    95% CI over ``split`` examples when ``example`` (from ``example_interval``) is given, else
    ``(n=1 seed, no interval)``; never a collapsed interval.
    """
    if not stat:
        return "—"

    def f(x: float) -> str:
        return f"{x:.{digits}f}"

    if stat["n"] > 1:
        return f"{f(stat['mean'])} ± {f(stat['std'])} [{f(stat['ci_low'])}, {f(stat['ci_high'])}]"
    if example is None:
        return f"{f(stat['mean'])} (n=1 seed, no interval)"
    size = f"{example['n']} " if "n" in example else ""
    other = f"; evaluated {f(example['value'])}" \
        if abs(example["value"] - stat["mean"]) >= 0.5 * 10 ** -digits else ""
    return (f"{f(stat['mean'])} [{f(example['ci_low'])}, {f(example['ci_high'])}] "
            f"95% CI over {size}{split} examples (n=1 seed{other})")
