"""Evaluation statistics: headline metrics, bootstrap intervals, calibration, slices.

Intervals come from ``scipy.stats.bootstrap`` resampling examples (paired: gold and prediction
move together), so every headline number is reported with how much it could move on another
sample of the same size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

CONFIDENCE = 0.95


@dataclass
class Estimate:
    """A metric with its bootstrap interval."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high, "n": self.n}

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


def bootstrap(metric: Callable[[np.ndarray, np.ndarray], float], gold: np.ndarray,
              pred: np.ndarray, resamples: int = 1000, seed: int = 0) -> Estimate:
    """Percentile bootstrap CI of ``metric(gold, pred)`` over examples (paired resampling).

    Accuracy and macro-F1 of integer labels are scored for all resamples at once (the same
    resamples, the same interval; ~100× faster than one sklearn call per resample)."""
    gold, pred = np.asarray(gold), np.asarray(pred)
    value = float(metric(gold, pred))
    if len(gold) < 2:
        return Estimate(value, value, value, len(gold))
    batched = _BATCHED.get(metric)
    if batched is not None and not (gold.dtype.kind in "iu" and pred.dtype.kind in "iu"):
        batched = None if metric is macro_f1 else batched
    result = stats.bootstrap(
        (gold, pred), batched or (lambda g, p: metric(g, p)), paired=True,
        vectorized=batched is not None, batch=200, n_resamples=resamples,
        confidence_level=CONFIDENCE, method="percentile",
        random_state=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    low = value if np.isnan(low) else float(low)
    high = value if np.isnan(high) else float(high)
    return Estimate(value, min(low, value), max(high, value), len(gold))


def accuracy(gold: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(gold) == np.asarray(pred))) if len(gold) else float("nan")


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    return float(f1_score(gold, pred, average="macro", zero_division=0))


def _accuracy_batched(gold: np.ndarray, pred: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(gold == pred, axis=axis)


def _macro_f1_batched(gold: np.ndarray, pred: np.ndarray, axis: int = -1) -> np.ndarray:
    """sklearn's macro-F1 (over the labels present in gold or prediction) of each row."""
    gold, pred = np.moveaxis(gold, axis, -1), np.moveaxis(pred, axis, -1)
    shape = gold.shape[:-1]
    gold, pred = gold.reshape(-1, gold.shape[-1]), pred.reshape(-1, pred.shape[-1])
    rows, k = gold.shape[0], int(max(gold.max(), pred.max())) + 1
    offset = np.arange(rows)[:, None] * k
    count = rows * k
    tp = np.bincount((offset + gold)[gold == pred], minlength=count).reshape(rows, k)
    true = np.bincount((offset + gold).ravel(), minlength=count).reshape(rows, k)
    predicted = np.bincount((offset + pred).ravel(), minlength=count).reshape(rows, k)
    present = (true + predicted) > 0
    f1 = np.divide(2 * tp, true + predicted, out=np.zeros((rows, k)), where=present)
    return (f1.sum(axis=1) / present.sum(axis=1)).reshape(shape)


_BATCHED = {accuracy: _accuracy_batched, macro_f1: _macro_f1_batched}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray,
                               bins: int = 15) -> tuple[float, list[dict]]:
    """ECE with equal-width confidence bins; also the bins, for a reliability diagram."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    table, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = ((confidence > lo) | ((lo == 0.0) & (confidence == 0.0))) & (confidence <= hi)
        if not inside.any():
            continue
        acc, conf = correct[inside].mean(), confidence[inside].mean()
        ece += inside.mean() * abs(acc - conf)
        table.append({"low": lo, "high": hi, "n": int(inside.sum()), "accuracy": float(acc),
                      "confidence": float(conf)})
    return float(ece), table


def top_k_accuracy(gold: np.ndarray, probs: np.ndarray, k: int) -> float:
    if probs.shape[1] <= k:
        return 1.0
    top = np.argsort(-probs, axis=1)[:, :k]
    return float(np.mean([g in row for g, row in zip(gold, top, strict=True)]))


def classification_report(gold: np.ndarray, pred: np.ndarray, probs: np.ndarray,
                          labels: list[str], resamples: int = 1000) -> dict:
    """Every classification metric the evaluation report shows, headline ones with CIs."""
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=ids, zero_division=0)
    confidence = probs.max(axis=1)
    ece, reliability = expected_calibration_error(confidence, gold == pred)
    return {
        "accuracy": bootstrap(accuracy, gold, pred, resamples).as_dict(),
        "macro_f1": bootstrap(macro_f1, gold, pred, resamples).as_dict(),
        "micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
        "weighted_f1": float(f1_score(gold, pred, average="weighted", zero_division=0)),
        "top3_accuracy": top_k_accuracy(gold, probs, 3),
        "top5_accuracy": top_k_accuracy(gold, probs, 5),
        "ece": ece,
        "reliability": reliability,
        "per_class": [{"label": labels[i], "precision": float(precision[i]),
                       "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
                      for i in ids],
        "accuracy_check": float(accuracy_score(gold, pred)),
    }


def slice_table(groups: np.ndarray, gold: np.ndarray, pred: np.ndarray, column: str,
                resamples: int = 500) -> list[dict]:
    """Accuracy with CI for each value of ``groups``; worst first."""
    rows = []
    for value in sorted(set(groups.tolist())):
        inside = groups == value
        est = bootstrap(accuracy, gold[inside], pred[inside], resamples)
        rows.append({"slice": f"{column}={value}", "n": int(inside.sum()), **est.as_dict()})
    return sorted(rows, key=lambda r: (r["value"], -r["n"]))


def length_buckets(lengths: np.ndarray, buckets: int = 4) -> np.ndarray:
    """Quantile buckets of text length in tokens, labelled by their range."""
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, buckets + 1)).astype(int))
    if len(edges) < 2:
        return np.array([f"{int(lengths.min())}-{int(lengths.max())}"] * len(lengths))
    index = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
    names = [f"{edges[i]}-{edges[i + 1]}" for i in range(len(edges) - 1)]
    return np.array([names[i] for i in index])
