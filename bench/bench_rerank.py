"""Reranker latency per query at top-k 20 and 100: ``evaluate``'s scoring path vs a bare loop.

Both score the same (query, BM25 candidate) pairs with the same trained cross-encoder, batch
size and threads; the bare loop is a length-sorted batched forward written by hand. CPU scale:
the first 10 SciFact test queries (the full 300 at top-100 is 30,000 pairs of ~280 tokens,
about an hour on 2 cores; the command for a GPU is below).

    python bench/bench_rerank.py --run runs/scifact_rerank                 # 10 queries
    python bench/bench_rerank.py --run runs/scifact_rerank --queries 300   # GPU clusters
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, save  # noqa: E402
from data.retrieval import read_beir  # noqa: E402
from evaluation.config import EvaluateConfig  # noqa: E402
from evaluation.rerank_eval import score_candidates  # noqa: E402
from evaluation.retrieval import bm25_search  # noqa: E402
from trainers.models import load_trained  # noqa: E402
from trainers.scaling import ensure_ray  # noqa: E402


def bare(run_dir: Path, pairs: list[tuple[str, str]], batch: int) -> float:
    """Seconds to tokenise and score ``pairs`` with the run's model in a hand-written loop."""
    model, tok, _, run = load_trained(run_dir)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(order), batch):
            part = [pairs[j] for j in order[i:i + batch]]
            enc = tok([q for q, _ in part], [d for _, d in part], truncation=True,
                      max_length=run.task.max_length, padding=True, return_tensors="pt")
            model(**enc)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a task=rerank run directory")
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    run_dir = Path(args.run).resolve()
    beir = read_beir(SHARED / "scifact", "test")
    beir.query_ids, beir.query_texts = (beir.query_ids[:args.queries],
                                        beir.query_texts[:args.queries])
    candidates = bm25_search(beir.doc_texts, beir.query_texts, 100)
    from trainers.cluster_config import ClusterConfig

    ensure_ray(ClusterConfig())
    figures: dict = {"queries": len(beir.query_ids), "threads": torch.get_num_threads(),
                     "batch": args.batch}
    for k in (20, 100):
        cfg = EvaluateConfig(run=str(run_dir), batch_size=args.batch,
                             inprocess_rows=10**9)  # in this process, as the bare loop
        cfg.rerank.top_k = k
        _, timing, cut = score_candidates(cfg, run_dir, beir.query_texts, beir.doc_texts,
                                          candidates)
        seconds = timing["busy_s"]  # tokenising and scoring, as the bare loop times
        pairs = [(q, beir.doc_texts[d]) for q, row in zip(beir.query_texts, candidates,
                                                           strict=True) for d in row[:k]]
        bare_s = bare(run_dir, pairs, args.batch)
        figures[f"top_{k}"] = {"pairs": len(pairs), "shardtune_ms_per_query":
                               1000 * seconds / len(beir.query_ids),
                               "bare_ms_per_query": 1000 * bare_s / len(beir.query_ids),
                               "ratio_bare_over_shardtune": bare_s / seconds,
                               "pairs_truncated": int((cut > 0).sum())}
    save("rerank_latency", figures)


if __name__ == "__main__":
    main()
