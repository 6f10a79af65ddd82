"""``evaluate`` on an embedding run: rank a corpus (BEIR) or score sentence pairs (STS).

Beside the run, in the same report: BM25 on the same corpus and queries, and the base model
without fine-tuning, each with bootstrap CIs over queries and the run's paired difference to
them (the same queries resampled together). Embeddings come from the run's bi-encoder through
the same scoring path as every task (in this process for small splits, Ray Data actors
otherwise); search is exact (a batched matrix product).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from data.errors import ConfigError
from data.pairs import beir_root, dropped_judgments
from data.pipeline import in_validation
from data.retrieval import BeirSplit, read_beir
from data.tokenize import cut_and_order
from evaluation.config import EvaluateConfig
from evaluation.gates import check_gates
from evaluation.inference import place_for_inference, score_split
from evaluation.outputs import data_lost, rows_digest
from evaluation.retrieval import (
    METRICS,
    bm25_search,
    exact_search,
    judged_queries,
    per_query_metrics,
    sts_correlations,
    sts_paired_difference,
    summarise,
    worst_queries,
)
from trainers.identity import replaced_on_success
from trainers.models import build_base_model, load_trained, score_range

TOP_K = 100  # recall@100 and MAP@100 need the first hundred


class Embed:
    """Ray Data class UDF: the run's bi-encoder loads once per actor; texts → embeddings."""

    base = False  # EmbedBase: the pretrained encoder the run started from

    def __init__(self, run_dir: str, batch_size: int, threads: int = 1) -> None:
        model, self.tok, _, run = load_trained(Path(run_dir))
        if self.base:
            model = build_base_model(run.model, run.task.kind, [], self.tok,
                                     run.task.embedding, score_range(run)).eval()
        self.model = model
        self.device = place_for_inference(self.model, threads)
        self.max_length, self.batch_size = run.task.max_length, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        texts = [str(t) for t in batch["text"]]
        cut, order = cut_and_order(self.tok, texts, self.max_length)
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tok([texts[i] for i in idx], truncation=True,
                               max_length=self.max_length, padding=True, return_tensors="pt")
                out[idx] = self.model(input_ids=enc["input_ids"].to(self.device),
                                      attention_mask=enc["attention_mask"].to(self.device)
                                      ).logits.float().cpu().numpy()
        return {"id": batch["id"], "embedding": list(out), "truncated": cut}


class EmbedBase(Embed):
    base = True


def embed_texts(udf: type, cfg: EvaluateConfig, run_dir: Path, ids: list[str],
                texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings in the order given, tokens truncation cut from each text)."""
    import ray.data  # Ray loads only when a job runs

    dataset = ray.data.from_items([{"id": i, "text": t} for i, t in zip(ids, texts,
                                                                       strict=True)])
    # in this process, the whole split is one call: sorted by length over all of it
    rows = len(texts) if len(texts) <= cfg.inprocess_rows else cfg.batch_size * 16
    frame = score_split(udf, cfg, run_dir, dataset, max(rows, 1),
                        num_gpus=1 if torch.cuda.is_available() else 0, num_cpus=1)
    frame = frame.set_index("id").loc[ids]
    return np.stack(frame["embedding"].to_numpy()), frame["truncated"].to_numpy()


def paired(run: dict[str, np.ndarray], other: dict[str, np.ndarray], resamples: int
            ) -> dict[str, Any]:
    """The run minus another system, per metric, with a CI over the same resampled queries."""
    return {m: e.as_dict() for m, e in summarise(
        {m: run[m] - other[m] for m in METRICS}, resamples).items()}


def ranking(ids: list[str], indices: np.ndarray | list[list[int]], query_ids: list[str]
             ) -> dict[str, list[str]]:
    return {q: [ids[i] for i in row] for q, row in zip(query_ids, indices, strict=True)}


def held_out(split: BeirSplit, fraction: float | None) -> BeirSplit:
    """The queries data/pipeline.py's ``val_fraction`` hash holds out of a training split for
    validation (the split itself when ``fraction`` is None: a split of its own)."""
    if fraction is None:
        return split
    ids = [q for q, text in zip(split.query_ids, split.query_texts, strict=True)
           if in_validation(text, fraction)]
    if not ids:
        raise ConfigError("split", f"the validation split holds no query: none of the "
                          f"{len(split.query_ids)} training queries falls in the "
                          f"data.val_fraction={fraction} hold-out",
                          "give data.validation_path, or a larger data.val_fraction")
    return dataclasses.replace(split, query_ids=ids, query_texts=[
        split.queries_by_id()[q] for q in ids], qrels={q: split.qrels[q] for q in ids})


def evaluate_retrieval(cfg: EvaluateConfig, run_dir: Path, run: Any, paths: list[str],
                       data_name: str, out_dir: Path, made_by: dict[str, Any],
                       hold_out: float | None = None) -> dict[str, Any]:
    """Rank the whole corpus for each judged query of a BEIR split (``hold_out``: the
    validation queries held out of the training qrels); score run, BM25, base."""
    root, split = beir_root(paths[0])
    beir = held_out(read_beir(root, split), hold_out)
    doc_emb, doc_cut = embed_texts(Embed, cfg, run_dir, beir.doc_ids, beir.doc_texts)
    query_emb, query_cut = embed_texts(Embed, cfg, run_dir, beir.query_ids, beir.query_texts)
    _, top = exact_search(query_emb, doc_emb, TOP_K)
    ranked = ranking(beir.doc_ids, top, beir.query_ids)
    systems = {"bm25": per_query_metrics(ranking(
        beir.doc_ids, bm25_search(beir.doc_texts, beir.query_texts, TOP_K), beir.query_ids),
        beir.qrels)}
    if cfg.baseline and run.model.init_config is None:  # a random-init model has no base
        base_docs, _ = embed_texts(EmbedBase, cfg, run_dir, beir.doc_ids, beir.doc_texts)
        base_queries, _ = embed_texts(EmbedBase, cfg, run_dir, beir.query_ids, beir.query_texts)
        systems["base_model"] = per_query_metrics(ranking(
            beir.doc_ids, exact_search(base_queries, base_docs, TOP_K)[1], beir.query_ids),
            beir.qrels)
    result, frame = ranking_result(cfg, run_dir, run, data_name, beir, ranked, systems,
                                   np.concatenate([doc_cut, query_cut]), made_by)
    return write(cfg, result, frame, out_dir)


def ranking_result(cfg: EvaluateConfig, run_dir: Path, run: Any, data_name: str,
                   beir: Any, ranked: dict[str, list[str]], systems: dict[str, Any],
                   cut: np.ndarray, made_by: dict[str, Any]
                   ) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the result, the per-query frame) of a ranking of a BEIR split beside other systems'
    per-query metrics; ``cut``: tokens truncation cut from each text the model read."""
    per_query = per_query_metrics(ranked, beir.qrels)
    lost = {"skipped_rows": 0, "lost_shards": [], "max_length": run.task.max_length,
            "truncated_examples": int((cut > 0).sum()), "truncated_tokens": int(cut.sum()),
            "judgments_dropped": dropped_judgments(beir.counts)}
    order = judged_queries(beir.qrels)
    frame = pd.DataFrame({"query_id": order, **{m: per_query[m] for m in METRICS},
                          "retrieved": [ranked.get(q, [])[:10] for q in order]})
    result = {"run": str(run_dir), "split": cfg.split, "data": data_name,
              "metrics": {**{m: e.as_dict() for m, e in summarise(per_query,
                                                                 cfg.resamples).items()},
                          "queries": len(order), "documents": len(beir.doc_ids)},
              "baseline": {name: {m: e.as_dict() for m, e in summarise(
                  scores, cfg.resamples).items()} for name, scores in systems.items()},
              "versus": {name: paired(per_query, scores, cfg.resamples)
                         for name, scores in systems.items()},
              "worst_queries": worst_queries(per_query, ranked, beir.qrels,
                                             beir.queries_by_id(), beir.docs_by_id()),
              "slices": [], "made_by": {**made_by, "rows": rows_digest(frame.rename(
                  columns={"query_id": "_src"}))}, "lost": lost}
    return result, frame


def evaluate_similarity(cfg: EvaluateConfig, run_dir: Path, run: Any, rows: pd.DataFrame,
                        summary: Any, data_name: str, out_dir: Path, made_by: dict[str, Any]
                        ) -> dict[str, Any]:
    """Cosine of each scored pair against its gold score: Spearman and Pearson with CIs."""
    keys = [str(s) for s in rows["_src"]]
    left, left_cut = embed_texts(Embed, cfg, run_dir, [f"{k}#1" for k in keys],
                                 list(rows["text"]))
    right, right_cut = embed_texts(Embed, cfg, run_dir, [f"{k}#2" for k in keys],
                                   list(rows["document"]))
    gold = rows["score"].astype(float).to_numpy()
    frame = pd.DataFrame({"_src": keys, "gold": gold, "cosine": (left * right).sum(1),
                          "truncated": left_cut + right_cut})
    result = {"run": str(run_dir), "split": cfg.split, "data": data_name,
              "metrics": {**{m: e.as_dict() for m, e in sts_correlations(
                  frame["cosine"], gold, cfg.resamples).items()}, "pairs": len(frame)},
              "baseline": None, "slices": [], "made_by": {**made_by, "rows": rows_digest(frame)},
              "lost": data_lost(frame, summary, run.task.max_length)}
    if cfg.baseline and run.model.init_config is None:
        base_l, _ = embed_texts(EmbedBase, cfg, run_dir, [f"{k}#1" for k in keys],
                                list(rows["text"]))
        base_r, _ = embed_texts(EmbedBase, cfg, run_dir, [f"{k}#2" for k in keys],
                                list(rows["document"]))
        base = (base_l * base_r).sum(1)
        result["baseline"] = {"base_model": {m: e.as_dict() for m, e in sts_correlations(
            base, gold, cfg.resamples).items()}}
        result["versus"] = {"base_model": {m: e.as_dict() for m, e in sts_paired_difference(
            frame["cosine"], base, gold, cfg.resamples).items()}}
    return write(cfg, result, frame, out_dir)


def _fmt(e: dict[str, Any]) -> str:
    return f"{e['value']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}]"


def write(cfg: EvaluateConfig, result: dict[str, Any], frame: pd.DataFrame, out_dir: Path
           ) -> dict[str, Any]:
    result["gates"] = check_gates(cfg.gate, result)
    with replaced_on_success(out_dir) as staging:
        frame.to_parquet(staging / "predictions.parquet")
        (staging / "report.md").write_text(_report(result))
        (staging / "metrics.json").write_text(json.dumps(result, indent=1, default=float))
    result["report"] = str(out_dir / "report.md")
    result["out_dir"] = str(out_dir)
    return result


def _report(result: dict[str, Any]) -> str:
    m, base = result["metrics"], result.get("baseline") or {}
    names = [k for k in m if isinstance(m[k], dict)]
    lines = [f"# Evaluation: `{Path(result['run']).name}` on `{result['data']}` / "
             f"{result['split']}", "",
             "| system | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names),
             "| this run | " + " | ".join(_fmt(m[n]) for n in names) + " |"]
    lines += [f"| {name} | " + " | ".join(_fmt(s[n]) for n in names) + " |"
              for name, s in base.items()]
    lines.append("")
    for name, diff in (result.get("versus") or {}).items():
        metric = "ndcg@10" if "ndcg@10" in diff else "spearman"
        d = diff[metric]
        verdict = "better" if d["ci_low"] > 0 else "worse" if d["ci_high"] < 0 else "no clear"
        over = "queries" if metric == "ndcg@10" else "pairs"
        lines.append(f"- {'nDCG@10' if metric == 'ndcg@10' else 'Spearman'} minus {name}: "
                     f"{_fmt(d)} over the same {over} ({verdict} difference at 95%)")
    if result.get("rerank"):
        r = result["rerank"]
        lines.append(f"- reranked the top {r['top_k']} of {r['retriever']}: {r['pairs_scored']} "
                     f"pairs of {r.get('queries_scored', '')} queries, "
                     f"{r['ms_per_query']:.0f} ms per query tokenising and scoring "
                     f"({r['pairs_per_s']:.1f} pairs/s; {r['wall_s']:.1f} s in all with model "
                     "loads)")
        if r.get("fusion"):
            f = r["fusion"]
            picked = (f"picked on {f['validation_queries']} validation queries" if
                      f.get("validation_queries") else "given")
            lines.append(f"- ranked by {f['weight']:g} x the cross-encoder's score + "
                         f"{1 - f['weight']:.3g} x the first stage's (each min-max scaled per "
                         f"query; the weight {picked})")
    lost = result["lost"]
    lines += ["", f"Truncated at task.max_length={lost['max_length']}: "
              f"{lost['truncated_examples']} texts lost {lost['truncated_tokens']} tokens."]
    if lost.get("judgments_dropped"):
        lines.append("Judgments not kept: " + ", ".join(
            f"{k} {v}" for k, v in sorted(lost["judgments_dropped"].items())))
    if result.get("worst_queries"):
        lines += ["", "## Worst queries (nDCG@10)", "", "| query | nDCG@10 | ranked first "
                  "| relevant (best rank) |", "| --- | ---: | --- | --- |"]
        for w in result["worst_queries"]:
            lines.append(f"| {w['query'][:80]} | {w['ndcg@10']:.3f} | {w['first_id']}: "
                         f"{w['first_text'][:60]} | {', '.join(w['relevant_ids'])[:40]} "
                         f"({w['best_relevant_rank'] or 'not in top 100'}) |")
    return "\n".join(lines) + "\n"
