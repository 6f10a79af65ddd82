"""A reranker's scores interpolated with its first stage's, the weight picked on held-out queries.

A cross-encoder trained on a few hundred pairs can order a strong first stage's top-k worse
than the first stage did (docs/benchmarks.md, issue #20); interpolating the two scores is the
usual remedy (Pyserini's hybrid runs, monoBERT/monoT5 with interpolation). Each query's
scores are min-max normalised over its own top-k, so a BM25 score and a logit share a scale:
``fused = w * reranker + (1 - w) * first stage``. ``w = 1`` is the reranker alone, ``w = 0``
the first stage's own order. The weight is never picked on the split being reported: on the
run's validation queries (``rerank.fusion=validation``) or given (``rerank.fusion=0.7``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from evaluation.retrieval import per_query_metrics

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # the grid validation searches


def _minmax(scores: np.ndarray) -> np.ndarray:
    low, high = float(scores.min()), float(scores.max())
    return (scores - low) / (high - low) if high > low else np.zeros_like(scores)


def fuse(candidates: Sequence[Sequence[int]], first: Sequence[Sequence[float]],
         reranker: Sequence[Sequence[float]], weight: float, k: int) -> list[list[int]]:
    """Each query's top ``k`` candidates re-sorted by the interpolated score (ties keep the
    first stage's order); candidates below ``k`` keep their place."""
    out = []
    for row, row_first, row_rerank in zip(candidates, first, reranker, strict=True):
        head = list(row[:k])
        if not head:
            out.append(list(row))
            continue
        rerank = np.asarray(row_rerank[:len(head)], dtype=np.float64)
        score = rerank if weight == 1.0 else (  # alone: the cross-encoder's own order
            weight * _minmax(rerank)
            + (1 - weight) * _minmax(np.asarray(row_first[:len(head)], dtype=np.float64)))
        order = np.argsort(-score, kind="stable")
        out.append([head[i] for i in order] + list(row[k:]))
    return out


def pick_weight(doc_ids: list[str], query_ids: list[str], qrels: dict[str, dict[str, int]],
                candidates: Sequence[Sequence[int]], first: Sequence[Sequence[float]],
                reranker: Sequence[Sequence[float]], k: int
                ) -> tuple[float, dict[str, float]]:
    """(the weight of :data:`WEIGHTS` with the best mean nDCG@10 on these queries, the first
    on a tie; every weight's mean nDCG@10)."""
    means = {}
    for weight in WEIGHTS:
        ranked = fuse(candidates, first, reranker, weight, k)
        per_query = per_query_metrics({q: [doc_ids[i] for i in row] for q, row in zip(
            query_ids, ranked, strict=True)}, qrels)
        means[str(weight)] = float(np.mean(per_query["ndcg@10"]))
    best = max(means, key=lambda w: means[w])  # dicts keep order: the first best wins
    return float(best), means


def fusion_setting(rerank_result: dict[str, Any]) -> str:
    """How an evaluation's reranked order was fused (``none`` when it was not, or before
    fusion existed): what seed groups and compare must see alike."""
    return (rerank_result.get("fusion") or {}).get("setting", "none")
