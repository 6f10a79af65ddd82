"""Across-seed statistics: mean, spread and a bootstrap CI of the mean, per metric and slice.

One seed's number says little; a group of seeds says how much a configuration's result moves
with nothing but the seed changed. That spread is the yardstick every comparison needs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def describe(values: list[float], resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean, sample std (ddof=1), min, max and a percentile-bootstrap CI of the mean.

    With fewer than two distinct values the CI collapses to the mean (nothing to resample).
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
