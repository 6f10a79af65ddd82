"""Retrieval and sentence-similarity evaluation: search, per-query metrics, bootstrap CIs.

Metrics follow trec_eval (``ndcg_cut``, ``recip_rank``, ``recall``, ``map_cut``) as ranx and
BEIR report them, computed per query so that every headline number gets a bootstrap interval
over queries (the same percentile bootstrap as ``evaluation.stats``) and the worst queries can
be shown next to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats

from evaluation.stats import CONFIDENCE, Estimate, bootstrap
from trainers.ranking import METRICS, query_metrics  # one definition: the loop's validation

Qrels = Mapping[str, Mapping[str, int]]


def exact_search(query_emb: Any, doc_emb: Any, k: int,
                 batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` documents of each query by dot product: (scores, indices), both
    ``[queries, min(k, docs)]`` numpy arrays, best first.

    Exhaustive on purpose: a corpus of a few thousand documents fits one matmul, and an exact
    search keeps approximate-index error out of the metric. Queries go ``batch`` at a time so
    the score matrix stays ``batch × docs``. Inputs are numpy arrays or torch tensors (any
    device; computed in float32 on the documents' device); L2-normalised embeddings make the
    scores cosine similarities.
    """
    docs = torch.as_tensor(doc_emb)
    queries = torch.as_tensor(query_emb, device=docs.device)
    if docs.ndim != 2 or queries.ndim != 2 or docs.shape[1] != queries.shape[1]:
        raise ValueError(f"need [queries, dim] and [docs, dim] embeddings, got "
                         f"{tuple(queries.shape)} and {tuple(docs.shape)}")
    if k < 1 or batch < 1:
        raise ValueError(f"k and batch must be >= 1, got k={k}, batch={batch}")
    docs, queries = docs.float(), queries.float()
    top = min(k, docs.shape[0])
    scores, indices = [], []
    with torch.inference_mode():
        for start in range(0, queries.shape[0], batch):
            best = torch.topk(queries[start:start + batch] @ docs.T, top, dim=1)
            scores.append(best.values.cpu())
            indices.append(best.indices.cpu())
    if not scores:
        return np.zeros((0, top), np.float32), np.zeros((0, top), np.int64)
    return torch.cat(scores).numpy(), torch.cat(indices).numpy()


def bm25_search(doc_texts: Sequence[str], query_texts: Sequence[str],
                k: int) -> list[list[int]]:
    """Indices into ``doc_texts`` of each query's top-``k`` BM25 documents, best first.

    The lexical baseline a fine-tuned embedder has to beat. bm25s with its defaults
    (Lucene-style BM25, k1=1.5, b=0.75), lower-cased ``\\w\\w+`` tokens, its English stopword
    list and no stemmer. A ranking holds only documents sharing a term with the query (score
    > 0), as a search engine's would, so it may be shorter than ``k``.
    """
    return bm25_scored(doc_texts, query_texts, k)[0]


def bm25_scored(doc_texts: Sequence[str], query_texts: Sequence[str], k: int
                ) -> tuple[list[list[int]], list[list[float]]]:
    """:func:`bm25_search`'s rankings and, row for row, their BM25 scores."""
    import bm25s  # optional heavy dependency (numba-backed), used only by this baseline

    if not doc_texts:
        raise ValueError("bm25_search needs at least one document")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(doc_texts), stopwords="en", show_progress=False),
                    show_progress=False)
    if not query_texts:
        return [], []
    # strings, not ids: the queries' own vocabulary would not match the index's
    tokens = bm25s.tokenize(list(query_texts), stopwords="en", return_ids=False,
                            show_progress=False)
    found, scores = retriever.retrieve(tokens, k=min(k, len(doc_texts)), show_progress=False)
    kept = [[(int(d), float(s)) for d, s in zip(row, row_scores, strict=True) if s > 0]
            for row, row_scores in zip(found, scores, strict=True)]
    return [[d for d, _ in row] for row in kept], [[s for _, s in row] for row in kept]


def judged_queries(qrels: Qrels) -> list[str]:
    """The queries metrics are computed for, in qrels order: those with a relevant document
    (nDCG and recall are undefined without one). ``per_query_metrics`` arrays follow it."""
    return [q for q, docs in qrels.items() if any(score > 0 for score in docs.values())]


def per_query_metrics(run: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, np.ndarray]:
    """metric -> one value per query of ``judged_queries(qrels)``, in that order.

    A judged query missing from ``run`` scores 0 everywhere (trec_eval ``-c``): leaving it out
    would flatter a system that fails to answer. Queries of ``run`` that qrels do not judge are
    ignored.
    """
    order = judged_queries(qrels)
    rows = [query_metrics(run.get(q, ()), qrels[q]) for q in order]
    return {m: np.array([row[m] for row in rows], dtype=float) for m in METRICS}


def summarise(per_query: Mapping[str, np.ndarray], resamples: int = 1000,
              seed: int = 0) -> dict[str, Estimate]:
    """Mean of each metric with a 95% percentile bootstrap interval over queries.

    The interval answers "how much would this move on another set of queries of this size",
    which decides whether two systems' difference is worth reporting."""
    out = {}
    for metric, values in per_query.items():
        values = np.asarray(values, dtype=float)
        value = float(values.mean()) if len(values) else float("nan")
        if len(values) < 2 or np.all(values == values[0]):
            out[metric] = Estimate(value, value, value, len(values))
            continue
        result = stats.bootstrap((values,), np.mean, vectorized=True, n_resamples=resamples,
                                 confidence_level=CONFIDENCE, method="percentile",
                                 random_state=np.random.default_rng(seed))
        low, high = (value if np.isnan(x) else float(x) for x in result.confidence_interval)
        out[metric] = Estimate(value, min(low, value), max(high, value), len(values))
    return out


def _spearman(gold: np.ndarray, pred: np.ndarray) -> float:
    return float(stats.spearmanr(gold, pred).statistic)


def _pearson(gold: np.ndarray, pred: np.ndarray) -> float:
    return float(stats.pearsonr(gold, pred).statistic)


def sts_correlations(pred_scores: Sequence[float], gold_scores: Sequence[float],
                     resamples: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """Spearman (STS-B's headline: only the order of similarities matters) and Pearson
    correlation of predicted and gold scores, with paired bootstrap intervals over pairs."""
    pred = np.asarray(pred_scores, dtype=float)
    gold = np.asarray(gold_scores, dtype=float)
    if pred.shape != gold.shape or pred.ndim != 1 or len(pred) < 3:
        raise ValueError(f"need two equal-length lists of >= 3 scores, got {pred.shape} and "
                         f"{gold.shape}")
    return {"spearman": bootstrap(_spearman, gold, pred, resamples, seed),
            "pearson": bootstrap(_pearson, gold, pred, resamples, seed)}


def sts_paired_difference(pred_scores: Sequence[float], other_scores: Sequence[float],
                          gold_scores: Sequence[float], resamples: int = 1000,
                          seed: int = 0) -> dict[str, Estimate]:
    """Spearman and Pearson of ``pred`` minus those of ``other`` on the same gold scores, each
    with a percentile bootstrap interval over the same resampled pairs (both systems scored
    on each resample): whether a fine-tuned model beats its base on this data."""
    pred, other = np.asarray(pred_scores, float), np.asarray(other_scores, float)
    gold = np.asarray(gold_scores, float)
    if not pred.shape == other.shape == gold.shape or len(gold) < 3:
        raise ValueError(f"need three equal-length lists of >= 3 scores, got {pred.shape}, "
                         f"{other.shape} and {gold.shape}")
    out = {}
    for name, corr in (("spearman", _spearman), ("pearson", _pearson)):
        def diff(g: np.ndarray, a: np.ndarray, b: np.ndarray, corr=corr) -> float:
            return corr(g, a) - corr(g, b)

        value = diff(gold, pred, other)
        result = stats.bootstrap((gold, pred, other), diff, paired=True, vectorized=False,
                                 n_resamples=resamples, confidence_level=CONFIDENCE,
                                 method="percentile", random_state=np.random.default_rng(seed))
        low, high = (value if np.isnan(x) else float(x) for x in result.confidence_interval)
        out[name] = Estimate(value, min(low, value), max(high, value), len(gold))
    return out


def worst_queries(per_query: Mapping[str, np.ndarray], run: Mapping[str, Sequence[str]],
                  qrels: Qrels, query_texts: Mapping[str, str], doc_texts: Mapping[str, str],
                  n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` queries with the lowest nDCG@10 (ties in qrels order), for the report's error
    analysis: the query, what came first instead, and which documents were wanted and where
    the best of them ranked (None: not retrieved). ``query_texts`` and ``doc_texts`` map ids
    to text (``BeirSplit.queries_by_id()`` / ``docs_by_id()``)."""
    order = judged_queries(qrels)
    ndcg = np.asarray(per_query["ndcg@10"])
    if len(ndcg) != len(order):
        raise ValueError(f"per_query has {len(ndcg)} values but qrels judge {len(order)} "
                         "queries: were they computed from the same qrels?")
    rows = []
    for i in np.argsort(ndcg, kind="stable")[:n]:
        query_id = order[i]
        ranked = list(dict.fromkeys(run.get(query_id, ())))
        relevant = [d for d, s in qrels[query_id].items() if s > 0]
        ranks = [ranked.index(d) + 1 for d in relevant if d in ranked]
        top = ranked[0] if ranked else None
        rows.append({
            "query_id": query_id, "query": query_texts.get(query_id, ""),
            "ndcg@10": float(ndcg[i]), "first_id": top,
            "first_text": doc_texts.get(top, "")[:80] if top is not None else "",
            "first_is_relevant": top in relevant,
            "relevant_ids": relevant, "best_relevant_rank": min(ranks) if ranks else None,
        })
    return rows
