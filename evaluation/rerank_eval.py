"""``evaluate`` on a rerank run: a first stage ranks the corpus, the cross-encoder reorders
its top-k.

The first stage (``rerank.retriever``) is BM25 or a trained embedding run; the run's
cross-encoder scores each query's top ``rerank.top_k`` candidates (through the same
scoring path as every task: in this process for a few pairs, Ray Data actors otherwise) and
they are re-sorted; candidates below the top-k keep the first stage's order, so recall@100
measures the first stage when k < 100. With ``rerank.fusion`` the cross-encoder's score is
interpolated with the first stage's (evaluation/fusion.py), the weight picked on the run's
validation queries (scored in the same pass) or given. Reported beside it: the first stage
(and BM25, and the cross-encoder alone when fused) with bootstrap CIs over queries, the
paired difference, and the reranker's time per query.
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
from evaluation.embedding_eval import (
    TOP_K,
    Embed,
    embed_texts,
    held_out,
    ranking,
    ranking_result,
    write,
)
from evaluation.fusion import fuse, pick_weight
from evaluation.inference import place_for_inference, score_split
from evaluation.retrieval import (
    bm25_scored,
    bm25_search,
    exact_search,
    per_query_metrics,
)
from trainers.config import TaskKind
from trainers.embedding_spec import fusion_weight
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


def first_stage(cfg: EvaluateConfig, beir: BeirSplit, more_queries: list[str] | None = None
                ) -> tuple[str, list[list[int]], list[list[float]]]:
    """(its name, each query's top ``TOP_K`` document indices best first, their scores): the
    split's queries, then ``more_queries`` (validation queries on the same corpus, searched in
    the same pass so the corpus is embedded once)."""
    texts = beir.query_texts + list(more_queries or [])
    run_dir = check_retriever(cfg)
    if run_dir is None:
        found, scores = bm25_scored(beir.doc_texts, texts, TOP_K)
        return BM25, found, scores
    docs, _ = embed_texts(Embed, cfg, run_dir, beir.doc_ids, beir.doc_texts)
    ids = beir.query_ids + [f"held-out:{i}" for i in range(len(texts) - len(beir.query_ids))]
    queries, _ = embed_texts(Embed, cfg, run_dir, ids, texts)
    scores, top = exact_search(queries, docs, TOP_K)
    return run_dir.name, top.tolist(), scores.tolist()


def score_candidates(cfg: EvaluateConfig, run_dir: Path, query_texts: list[str],
                     doc_texts: list[str], candidates: list[list[int]]
                     ) -> tuple[list[list[float]], dict[str, float], np.ndarray]:
    """(the cross-encoder's score of each query's top-k candidates, row for row, its time:
    ``wall_s`` including model loads and actor starts, ``busy_s`` tokenising and scoring,
    tokens truncation cut per scored pair, in query order)."""
    import ray.data  # Ray loads only when a job runs

    k = cfg.rerank.top_k
    pairs = [{"id": f"{qi}:{di}", "query": query, "document": doc_texts[di]}
             for qi, (query, row) in enumerate(zip(query_texts, candidates, strict=True))
             for di in row[:k]]
    if not pairs:
        return [[] for _ in candidates], {"wall_s": 0.0, "busy_s": 0.0}, np.zeros(0, np.int32)
    start = time.perf_counter()
    frame = score_split(ScorePairs, cfg, run_dir, ray.data.from_items(pairs),
                        cfg.batch_size * 16, num_gpus=1 if torch.cuda.is_available() else 0,
                        num_cpus=1)
    seconds = {"wall_s": time.perf_counter() - start, "busy_s": float(frame["busy_s"].sum())}
    frame = frame.set_index("id").loc[[p["id"] for p in pairs]]
    score = dict(zip(frame.index, frame["score"], strict=True))
    return ([[float(score[f"{qi}:{di}"]) for di in row[:k]] for qi, row in enumerate(candidates)],
            seconds, frame["truncated"].to_numpy())


def validation_queries(run: Any, root: Path, split: str = "test") -> BeirSplit:
    """The run's held-out queries (its ``data.validation_path``, or the train split's queries
    its ``val_fraction`` hash held out), which must rank the corpus being evaluated, and never
    be what the evaluation reports (``split``)."""
    data, key = run.data, "rerank.fusion"
    if split != "test":
        raise ConfigError(key, f"validation picks the weight on the run's held-out training "
                          f"queries, which split={split} reports on",
                          "evaluate split=test, or give the weight: rerank.fusion=0.5")
    if data.format != "beir":
        raise ConfigError(key, f"validation needs a run trained on BEIR qrels, this one read "
                          f"data.format={getattr(data.format, 'value', data.format)}",
                          "give the weight: rerank.fusion=0.5")
    if data.validation_path:
        held_root, held_split = beir_root(data.split_paths("validation")[0])
        queries = read_beir(held_root, held_split)
    elif data.val_fraction > 0:
        held_root, train_split = beir_root(data.split_paths("train")[0])
        queries = held_out(read_beir(held_root, train_split), data.val_fraction)
    else:
        raise ConfigError(key, "validation needs held-out queries, and the run was trained "
                          "with data.val_fraction=0 and no data.validation_path",
                          "give the weight: rerank.fusion=0.5")
    if held_root.resolve() != root.resolve():
        raise ConfigError(key, f"the run's validation queries rank {held_root}'s corpus, not "
                          f"the evaluated {root}'s", "give the weight: rerank.fusion=0.5")
    if not queries.query_ids:
        raise ConfigError(key, "the run's validation split holds no query",
                          "give the weight: rerank.fusion=0.5")
    return queries


def rerank(cfg: EvaluateConfig, run: Any, run_dir: Path, beir: BeirSplit, root: Path
           ) -> tuple[str, list[list[int]], list[list[int]], dict[str, Any]]:
    """(the first stage's name, its rankings, the reranked ones, what was done: timings,
    pairs, truncation ``cut`` per pair of the split, the fusion weight and how it was got)."""
    k, fusion = cfg.rerank.top_k, cfg.rerank.fusion or "none"
    picking = validation_queries(run, root, cfg.split) if fusion == "validation" else None
    name, candidates, first = first_stage(cfg, beir, picking.query_texts if picking else None)
    scores, seconds, cut = score_candidates(cfg, run_dir, beir.query_texts + (
        picking.query_texts if picking else []), beir.doc_texts, candidates)
    n = len(beir.query_ids)
    done: dict[str, Any] = {**seconds, "pairs_scored": int(len(cut)),
                            "queries_scored": len(candidates), "fusion": None}
    weight = fusion_weight(fusion, "rerank.fusion")
    if picking is not None:
        weight, by_weight = pick_weight(beir.doc_ids, picking.query_ids, picking.qrels,
                                        candidates[n:], first[n:], scores[n:], k)
        done["fusion"] = {"setting": fusion, "weight": weight, "picked_on": "validation queries",
                          "validation_queries": len(picking.query_ids),
                          "validation_ndcg@10": by_weight}
    elif weight is not None:
        done["fusion"] = {"setting": fusion, "weight": weight, "picked_on": "given"}
    done["cut"] = cut[:sum(len(row[:k]) for row in candidates[:n])]
    candidates, first, scores = candidates[:n], first[:n], scores[:n]
    done["alone"] = fuse(candidates, first, scores, 1.0, k)
    reranked = done["alone"] if weight is None else fuse(candidates, first, scores, weight, k)
    return name, candidates, reranked, done


def evaluate_rerank(cfg: EvaluateConfig, run_dir: Path, run: Any, paths: list[str],
                    data_name: str, out_dir: Path, made_by: dict[str, Any],
                    hold_out: float | None = None) -> dict[str, Any]:
    """Rerank the first stage's top-k for each query of a BEIR split (``hold_out``: the
    validation queries held out of the training qrels); score both (and BM25, and the
    cross-encoder alone when its score is fused with the first stage's)."""
    root, split = beir_root(paths[0])
    beir = held_out(read_beir(root, split), hold_out)
    k = cfg.rerank.top_k
    name, candidates, reranked, done = rerank(cfg, run, run_dir, beir, root)
    cut, alone = done.pop("cut"), done.pop("alone")
    systems = {f"first stage ({name}, top {k})": per_query_metrics(
        ranking(beir.doc_ids, candidates, beir.query_ids), beir.qrels)}
    if done["fusion"] is not None:
        systems[f"cross-encoder alone (top {k})"] = per_query_metrics(
            ranking(beir.doc_ids, alone, beir.query_ids), beir.qrels)
    if name != BM25:
        systems[BM25] = per_query_metrics(ranking(
            beir.doc_ids, bm25_search(beir.doc_texts, beir.query_texts, TOP_K),
            beir.query_ids), beir.qrels)
    result, frame = ranking_result(cfg, run_dir, run, data_name, beir,
                                   ranking(beir.doc_ids, reranked, beir.query_ids), systems,
                                   cut, made_by)
    busy, scored = done["busy_s"], done["pairs_scored"]
    result["rerank"] = {"retriever": cfg.rerank.retriever, "top_k": k, **done,
                        "ms_per_query": 1000 * busy / max(done["queries_scored"], 1),
                        "pairs_per_s": scored / busy if busy else 0.0}
    return write(cfg, result, frame, out_dir)
