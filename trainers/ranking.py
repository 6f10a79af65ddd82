"""Ranking metrics shared by training and evaluation: one definition of nDCG, MRR, recall, MAP.

``query_metrics`` follows trec_eval as ranx and BEIR report it (evaluation/retrieval.py scores
whole corpora with it). ``split_ranking`` is what an embedding run's validation reports: every
query of the split ranked against every document of the split, so the figure a sweep or ASHA
reads does not depend on the evaluation batch size as the in-batch accuracy does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100", "map@100")
# what the split-wide ranking reports, as val/split_<metric> (and test/ at the end)
SPLIT_METRICS = ("ndcg@10", "mrr@10", "recall@10")


def query_metrics(ranking: Sequence[str], relevance: Mapping[str, int]) -> dict[str, float]:
    """Every metric of ``METRICS`` for one ranked list of document ids.

    As trec_eval: a document is relevant when its score is > 0; nDCG's gain is the score
    itself (graded, linear) with a ``log2(rank + 1)`` discount, normalised by the best order
    of the judged documents; MAP@100 divides by all relevant documents, retrieved or not
    (``map_cut_100``). A document listed twice counts at its first rank only.
    """
    relevant = {d: s for d, s in relevance.items() if s > 0}
    if not relevant:
        raise ValueError("a query needs at least one relevant document to be scored")
    ranked = list(dict.fromkeys(ranking))  # drop repeats, keep first ranks
    gains = np.array([relevant.get(d, 0) for d in ranked[:100]], dtype=float)
    hits = gains > 0
    discount = 1.0 / np.log2(np.arange(2, 12))
    dcg = float(np.sum(gains[:10] * discount[:len(gains[:10])]))
    ideal = np.sort(np.array(list(relevant.values()), dtype=float))[::-1][:10]
    idcg = float(np.sum(ideal * discount[:len(ideal)]))
    first = np.flatnonzero(hits[:10])
    ranks = np.flatnonzero(hits) + 1  # 1-based ranks of the relevant documents in the top 100
    precision_at_hits = np.arange(1, len(ranks) + 1) / ranks
    return {
        "ndcg@10": dcg / idcg,
        "mrr@10": 1.0 / (first[0] + 1) if len(first) else 0.0,
        "recall@10": float(hits[:10].sum()) / len(relevant),
        "recall@100": float(hits.sum()) / len(relevant),
        "map@100": float(precision_at_hits.sum()) / len(relevant),
    }


def split_ranking(pairs: Sequence[tuple[int, np.ndarray, int, np.ndarray]],
                  distractors: Sequence[tuple[int, np.ndarray]] = (),
                  chunk: int = 1024) -> dict[str, float]:
    """Mean ``SPLIT_METRICS`` of a split's pairs ranked as a small retrieval task, with how
    many distinct queries and documents took part.

    ``pairs``: (query key, query embedding, document key, document embedding) per evaluated
    pair; keys identify texts (equal keys, one text: a query asked twice is one query whose
    relevant documents are all its pairs' documents, a document shared by queries is one
    document). ``distractors``: (key, embedding) of documents that are nobody's positive, such
    as mined hard negatives; they join the pool as non-relevant. Scores are dot products
    (cosines for normalised embeddings), exact, ``chunk`` queries at a time.
    """
    if not pairs:
        return {}
    relevant: dict[int, set[int]] = {}
    query_vec: dict[int, np.ndarray] = {}
    pool: dict[int, np.ndarray] = {}
    for q_key, q_vec, d_key, d_vec in pairs:
        relevant.setdefault(q_key, set()).add(d_key)
        query_vec.setdefault(q_key, q_vec)
        pool.setdefault(d_key, d_vec)
    for d_key, d_vec in distractors:
        pool.setdefault(d_key, d_vec)
    doc_keys = list(pool)
    docs = torch.as_tensor(np.stack([pool[k] for k in doc_keys])).float()
    q_keys = list(query_vec)
    queries = torch.as_tensor(np.stack([query_vec[k] for k in q_keys])).float()
    top = min(10, len(doc_keys))
    rows: list[dict[str, float]] = []
    for start in range(0, len(q_keys), chunk):
        best = torch.topk(queries[start:start + chunk] @ docs.T, top, dim=1).indices.tolist()
        for q_key, found in zip(q_keys[start:start + chunk], best, strict=True):
            rows.append(query_metrics([str(doc_keys[i]) for i in found],
                                      {str(d): 1 for d in relevant[q_key]}))
    return {**{name: float(np.mean([row[name] for row in rows])) for name in SPLIT_METRICS},
            "queries": float(len(q_keys)), "documents": float(len(doc_keys))}
