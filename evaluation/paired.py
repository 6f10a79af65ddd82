"""Paired, hierarchical bootstrap for "is B better than A?" on the same evaluation examples.

Each replicate resamples the examples once (the same draw for both sides: that is the pairing)
and, independently, the seeds of each side; the effect is mean-over-seeds(B) minus
mean-over-seeds(A). The spread therefore holds both sources of noise a scientist meets: which
examples happened to be in the test set, and which seeds happened to be run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
CHUNK = 250  # replicates per block: bounds memory at CHUNK × examples weights


@dataclass
class Effect:
    """B − A on one metric, with its bootstrap CI and two-sided p-value."""

    metric: str
    a: float
    b: float
    delta: float
    low: float
    high: float
    p_value: float
    n: int
    seeds_a: int
    seeds_b: int

    def as_dict(self) -> dict:
        return asdict(self)


def _weights(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """``count`` bootstrap resamples of ``n`` examples as multiplicity weights (count × n)."""
    idx = rng.integers(0, n, size=(count, n)) + (np.arange(count) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=count * n).reshape(count, n).astype(np.float64)


def weighted_accuracy(w: np.ndarray, gold: np.ndarray, pred: np.ndarray, n_classes: int
                      ) -> np.ndarray:
    return w @ (gold == pred).astype(np.float64) / w.sum(axis=1)


def weighted_macro_f1(w: np.ndarray, gold: np.ndarray, pred: np.ndarray, n_classes: int
                      ) -> np.ndarray:
    """Macro-F1 per weight row; like scikit-learn, over classes present in gold or prediction.

    F1_c = 2·TP_c / (gold_c + pred_c), counted with the resample's multiplicities.
    """
    eye = np.eye(n_classes)
    gold_1h, pred_1h = eye[gold], eye[pred]
    tp = w @ (gold_1h * (gold == pred)[:, None])
    support = w @ gold_1h + w @ pred_1h
    present = support > 0
    f1 = np.divide(2 * tp, support, out=np.zeros_like(tp), where=present)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def weighted_mean(w: np.ndarray, gold: np.ndarray, pred: np.ndarray, n_classes: int
                  ) -> np.ndarray:
    """The mean of per-example scores (a retrieval metric per query, say); ``gold`` unused."""
    return w @ pred.astype(np.float64) / w.sum(axis=1)


def weighted_pearson(w: np.ndarray, gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pearson's r of (gold, pred) per weight row: each example counted as often as drawn."""
    total = w.sum(axis=1, keepdims=True)
    dg = gold[None, :] - (w @ gold)[:, None] / total
    dp = pred[None, :] - (w @ pred)[:, None] / total
    cov = (w * dg * dp).sum(1)
    return cov / np.sqrt((w * dg * dg).sum(1) * (w * dp * dp).sum(1))


def _weighted_ranks(w: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each example's rank within each weight row's resample (ties: their mean rank, as
    scipy's spearmanr ranks), replicates × examples."""
    unique, inverse = np.unique(values, return_inverse=True)
    per_value = np.zeros((len(w), len(unique)))
    for row in range(len(w)):  # the resample's count of each distinct value
        per_value[row] = np.bincount(inverse, weights=w[row], minlength=len(unique))
    before = np.cumsum(per_value, axis=1) - per_value
    return (before + (per_value + 1) / 2)[:, inverse]


def weighted_spearman(w: np.ndarray, gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Spearman's rho per weight row: Pearson's r of the resample's ranks (STS-B's headline)."""
    rank_g, rank_p = _weighted_ranks(w, gold), _weighted_ranks(w, pred)
    total = w.sum(axis=1, keepdims=True)
    dg = rank_g - (w * rank_g).sum(1, keepdims=True) / total
    dp = rank_p - (w * rank_p).sum(1, keepdims=True) / total
    return (w * dg * dp).sum(1) / np.sqrt((w * dg * dg).sum(1) * (w * dp * dp).sum(1))


CORRELATIONS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "spearman": weighted_spearman, "pearson": weighted_pearson}


METRICS: dict[str, Callable[..., np.ndarray]] = {
    "accuracy": weighted_accuracy, "macro_f1": weighted_macro_f1, "mean": weighted_mean,
}


def paired_bootstrap(gold: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray,
                     metric: str = "macro_f1", resamples: int = 2000, seed: int = 0
                     ) -> Effect:
    """Effect of B over A on examples ``gold`` given per-seed predictions (seeds × examples).

    The p-value inverts the percentile interval: twice the share of replicates on the far
    side of zero (floored at 1/resamples).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    fn = METRICS[metric]
    gold = np.asarray(gold)
    preds_a, preds_b = np.atleast_2d(preds_a), np.atleast_2d(preds_b)
    n_classes = int(max(gold.max(), preds_a.max(), preds_b.max())) + 1

    def scorer(pred: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        return lambda w: fn(w, gold, pred, n_classes)

    return paired_scores(len(gold), [scorer(p) for p in preds_a], [scorer(p) for p in preds_b],
                         metric, resamples, seed)


def paired_scores(n: int, scorers_a: list[Callable[[np.ndarray], np.ndarray]],
                  scorers_b: list[Callable[[np.ndarray], np.ndarray]], metric: str,
                  resamples: int = 2000, seed: int = 0) -> Effect:
    """The bootstrap itself, for any metric: a scorer per seed maps multiplicity weights
    (replicates × ``n`` examples) to that seed's metric per replicate. Corpus metrics (BLEU:
    summed n-gram statistics) and means alike resample the same examples on both sides."""
    k_a, k_b = len(scorers_a), len(scorers_b)
    ones = np.ones((1, n))
    point_a = float(np.mean([score(ones)[0] for score in scorers_a]))
    point_b = float(np.mean([score(ones)[0] for score in scorers_b]))
    rng = np.random.default_rng(seed)
    deltas = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        count = min(CHUNK, resamples - start)
        w = _weights(rng, n, count)
        scores_a = np.stack([score(w) for score in scorers_a], axis=1)
        scores_b = np.stack([score(w) for score in scorers_b], axis=1)
        pick_a = rng.integers(0, k_a, size=(count, k_a))
        pick_b = rng.integers(0, k_b, size=(count, k_b))
        rows = np.arange(count)[:, None]
        deltas[start:start + count] = (scores_b[rows, pick_b].mean(1)
                                       - scores_a[rows, pick_a].mean(1))
    low, high = np.quantile(deltas, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    far_side = min(np.mean(deltas <= 0), np.mean(deltas >= 0))
    p_value = float(min(1.0, max(2 * far_side, 1 / resamples)))
    return Effect(metric, point_a, point_b, point_b - point_a, float(low), float(high),
                  p_value, n, k_a, k_b)


def seeds_only(values_a: list[float], values_b: list[float], metric: str) -> Effect:
    """mean(B) − mean(A) across seeds when no predictions pair the examples: Welch's t-test.

    With a handful of seeds a bootstrap of the seeds is over-confident (two values resample to
    almost no spread); the t interval is honest about how little a few seeds say.
    """
    a, b = np.asarray(values_a, float), np.asarray(values_b, float)
    delta = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:  # one seed a side: no spread to estimate
        return Effect(metric, float(a.mean()), float(b.mean()), delta, -np.inf, np.inf, 1.0,
                      0, len(a), len(b))
    res = stats.ttest_ind(b, a, equal_var=False)
    ci = res.confidence_interval(CONFIDENCE)
    p_value = float(res.pvalue) if np.isfinite(res.pvalue) else 1.0
    low = float(ci.low) if np.isfinite(ci.low) else delta
    high = float(ci.high) if np.isfinite(ci.high) else delta
    return Effect(metric, float(a.mean()), float(b.mean()), delta, low, high, p_value, 0,
                  len(a), len(b))


def adjust_p_values(p_values: list[float]) -> list[float]:
    """Benjamini–Hochberg: many slices tested at once should not cry wolf."""
    if not p_values:
        return []
    return [float(p) for p in stats.false_discovery_control(np.asarray(p_values))]


def verdict(effect: Effect, min_effect: float, higher_is_better: bool = True) -> str:
    """ship: B is better by at least ``min_effect`` and the CI excludes zero.
    stop: the CI rules out an improvement of ``min_effect`` (B is no better, or worse).
    iterate: anything else; the data cannot tell yet (more seeds or examples).
    """
    sign = 1 if higher_is_better else -1
    delta, low, high = sign * effect.delta, sign * effect.low, sign * effect.high
    low, high = min(low, high), max(low, high)
    if low > 0 and delta >= min_effect:
        return "ship"
    if high < min_effect:
        return "stop"
    return "iterate"
