"""``evaluate`` on a rerank run: a first stage ranks the corpus, the cross-encoder reorders
its top-k.

The first stage (``rerank.retriever``) is BM25 or a trained embedding run; the run's
cross-encoder scores each query's top ``rerank.top_k`` candidates (through the same
scoring path as every task: in this process for a few pairs, Ray Data actors otherwise) and
they are re-sorted; candidates below the top-k keep the first stage's order, so recall@100
measures the first stage when k < 100. Reported beside it: the first stage (and BM25) with
bootstrap CIs over queries, the paired difference, and the reranker's time per query.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.errors import ConfigError
from data.pairs import beir_root
from data.retrieval import BeirSplit, read_beir
from data.tokenize import tokens_cut
from evaluation.config import EvaluateConfig
from evaluation.embedding_eval import TOP_K, Embed, embed_texts, ranking, ranking_result, write
from evaluation.inference import place_for_inference, score_split
from evaluation.retrieval import (
    bm25_search,
    exact_search,
    per_query_metrics,
)
from trainers.config import TaskKind
from trainers.models import load_run_config, load_trained

BM25 = "bm25"


class ScorePairs:
    """Ray Data class UDF: the run's cross-encoder loads once per actor; (query, document)
    pairs → relevance scores."""

    def __init__(self, run_dir: str, batch_size: int, threads: int = 1) -> None:
        self.model, self.tok, _, run = load_trained(Path(run_dir))
        self.device = place_for_inference(self.model, threads)
        self.max_length, self.batch_size = run.task.max_length, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        began = time.perf_counter()
        queries = [str(t) for t in batch["query"]]
        documents = [str(t) for t in batch["document"]]
        order = np.argsort([len(q) + len(d) for q, d in zip(queries, documents, strict=True)],
                           kind="stable")  # little padding
        scores = np.zeros(len(queries), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(queries), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tok([queries[i] for i in idx], [documents[i] for i in idx],
                               truncation=True, max_length=self.max_length, padding=True,
                               return_tensors="pt").to(self.device)
                scores[idx] = self.model(**enc).logits.float().cpu().numpy()
        busy = time.perf_counter() - began  # tokenising and scoring, not loading
        return {"id": batch["id"], "score": scores, "busy_s": np.full(len(queries), busy / len(
            queries)), "truncated": tokens_cut(self.tok, queries, self.max_length,
                                               text_pair=documents)}


def check_retriever(cfg: EvaluateConfig) -> Path | None:
    """The first stage's run directory (None: BM25); refused before any data is read when it
    is not an embedding run."""
    if cfg.rerank.retriever == BM25:
        return None
    run_dir = Path(cfg.rerank.retriever).expanduser().resolve()
    try:
        kind = load_run_config(run_dir).task.kind
    except ConfigError as exc:
        raise ConfigError("rerank.retriever", exc.problem, exc.hint) from None
    if kind != TaskKind.embedding:
        raise ConfigError("rerank.retriever", f"{run_dir} is a {kind.value} run, not an "
                          "embedding run", "pass bm25 or runs/<an embedding run>")
    return run_dir


def first_stage(cfg: EvaluateConfig, beir: BeirSplit) -> tuple[str, list[list[int]]]:
    """(its name, each judged-or-not query's top ``TOP_K`` document indices, best first)."""
    run_dir = check_retriever(cfg)
    if run_dir is None:
        return BM25, bm25_search(beir.doc_texts, beir.query_texts, TOP_K)
    docs, _ = embed_texts(Embed, cfg, run_dir, beir.doc_ids, beir.doc_texts)
    queries, _ = embed_texts(Embed, cfg, run_dir, beir.query_ids, beir.query_texts)
    return run_dir.name, exact_search(queries, docs, TOP_K)[1].tolist()


def rerank(cfg: EvaluateConfig, run_dir: Path, beir: BeirSplit, candidates: list[list[int]]
           ) -> tuple[list[list[int]], dict[str, float], np.ndarray]:
    """(each query's candidates re-sorted by the cross-encoder within the top-k, its time:
    ``wall_s`` including model loads and actor starts, ``busy_s`` tokenising and scoring,
    tokens truncation cut per scored pair)."""
    import ray.data  # Ray loads only when a job runs

    k = cfg.rerank.top_k
    pairs = [{"id": f"{qi}:{di}", "query": query, "document": beir.doc_texts[di]}
             for qi, (query, row) in enumerate(zip(beir.query_texts, candidates, strict=True))
             for di in row[:k]]
    if not pairs:
        return candidates, {"wall_s": 0.0, "busy_s": 0.0}, np.zeros(0, dtype=np.int32)
    start = time.perf_counter()
    frame = score_split(ScorePairs, cfg, run_dir, ray.data.from_items(pairs),
                        cfg.batch_size * 16, num_gpus=1 if torch.cuda.is_available() else 0,
                        num_cpus=1)
    seconds = {"wall_s": time.perf_counter() - start, "busy_s": float(frame["busy_s"].sum())}
    score = dict(zip(frame["id"], frame["score"], strict=True))
    reranked = [sorted(row[:k], key=lambda d, q=qi: -score[f"{q}:{d}"]) + list(row[k:])
                for qi, row in enumerate(candidates)]
    return reranked, seconds, frame["truncated"].to_numpy()


def evaluate_rerank(cfg: EvaluateConfig, run_dir: Path, run: Any, paths: list[str],
                    data_name: str, out_dir: Path, made_by: dict[str, Any]) -> dict[str, Any]:
    """Rerank the first stage's top-k for each query of a BEIR split; score both (and BM25)."""
    root, split = beir_root(paths[0])
    beir = read_beir(root, split)
    name, candidates = first_stage(cfg, beir)
    reranked, seconds, cut = rerank(cfg, run_dir, beir, candidates)
    ranked = ranking(beir.doc_ids, reranked, beir.query_ids)
    systems = {f"first stage ({name}, top {cfg.rerank.top_k})": per_query_metrics(
        ranking(beir.doc_ids, candidates, beir.query_ids), beir.qrels)}
    if name != BM25:
        systems[BM25] = per_query_metrics(ranking(
            beir.doc_ids, bm25_search(beir.doc_texts, beir.query_texts, TOP_K),
            beir.query_ids), beir.qrels)
    result, frame = ranking_result(cfg, run_dir, run, data_name, beir, ranked, systems, cut,
                                   made_by)
    queries = max(len(beir.query_ids), 1)
    result["rerank"] = {"retriever": cfg.rerank.retriever, "top_k": cfg.rerank.top_k,
                        "pairs_scored": int(len(cut)), **seconds,
                        "ms_per_query": 1000 * seconds["busy_s"] / queries,
                        "pairs_per_s": len(cut) / seconds["busy_s"] if seconds["busy_s"]
                        else 0.0}
    return write(cfg, result, frame, out_dir)
