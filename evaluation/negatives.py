"""Hard negatives for contrastive training (``shardtune mine``).

A model (the base encoder, or any trained embedding run) embeds the corpus and a BEIR split's
queries through the one scoring path (in this process for small corpora, Ray Data actors
otherwise); an exact search ranks the corpus for each query; each (query, relevant document)
pair gets the highest-ranked document that is neither judged relevant, nor among the first
``range_min`` ranks (where unjudged relevant documents sit: false negatives teach the model
the wrong thing), nor (with ``margin`` set) scored within ``margin`` of the pair's own
document. The result is a
cached folder, like teacher outputs: ``negatives.jsonl`` (ids, ranks, scores) beside
``provenance.json`` (the miner, the data's fingerprints, the settings, what was counted), and
training reads it with ``data.pairs.negatives_path``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.errors import ConfigError
from data.gguf import file_sha256
from data.locations import resolve_location
from data.pairs import NEGATIVES_FILE, PROVENANCE_FILE, beir_root
from data.retrieval import read_beir
from evaluation.config import EvaluateConfig, MineSpec
from evaluation.embedding_eval import Embed, embed_texts
from evaluation.retrieval import exact_search
from trainers.config import ModelConfig, TaskKind, TrainConfig
from trainers.embedding_spec import EmbeddingSpec
from trainers.identity import replaced_on_success
from trainers.models import build_base_model, inference_device, load_tokenizer, load_trained
from trainers.scaling import ensure_ray


class EmbedWithMiner(Embed):
    """Ray Data class UDF: the miner (a run directory or a model path / hub id) embeds texts.

    ``run_dir`` carries the miner's location (the one constructor every scoring UDF has);
    the class attributes, set by :func:`_miner_udf`, the tokeniser limit."""

    max_length = 256

    def __init__(self, run_dir: str, batch_size: int, threads: int = 1) -> None:
        if (Path(run_dir) / "run_meta.json").is_file():  # a shardtune run: its trained model
            self.model, self.tok, _, _ = load_trained(Path(run_dir))
        else:
            model = ModelConfig(name_or_path=run_dir)
            self.tok = load_tokenizer(model)
            self.model = build_base_model(model, TaskKind.embedding, [], self.tok,
                                          EmbeddingSpec(loss="in_batch")).eval()
        self.device = inference_device(self.model)
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.model.to(self.device)
        self.batch_size = batch_size


def _miner_udf(max_length: int) -> type:
    return type("EmbedWithMiner", (EmbedWithMiner,), {"max_length": max_length})


def pick_negatives(ranked: np.ndarray, scores: np.ndarray, doc_ids: list[str],
                   query_ids: list[str], qrels: dict[str, dict[str, int]],
                   positive_scores: dict[tuple[str, str], float], spec: MineSpec
                   ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One negative per (query, relevant document): the best-ranked candidate in
    ``[range_min, range_max)`` that is not judged relevant and, with ``margin`` set, scores at
    most the pair's own document's score minus ``margin``. Returns the records and the
    counts of what was not found or skipped (nothing is dropped silently)."""
    records, counts = [], {"pairs": 0, "no_candidate": 0, "skipped_relevant": 0,
                           "skipped_margin": 0}
    for row, query in enumerate(query_ids):
        relevant = {d for d, s in qrels[query].items() if s > 0}
        for doc in sorted(relevant):
            counts["pairs"] += 1
            ceiling = np.inf if spec.margin is None else \
                positive_scores[(query, doc)] - spec.margin
            chosen = None
            for rank in range(spec.range_min, min(spec.range_max, ranked.shape[1])):
                candidate = doc_ids[ranked[row, rank]]
                if candidate in relevant:
                    counts["skipped_relevant"] += 1
                elif scores[row, rank] > ceiling:
                    counts["skipped_margin"] += 1
                else:
                    chosen = rank
                    break
            if chosen is None:
                counts["no_candidate"] += 1
                continue
            records.append({"query_id": query, "doc_id": doc,
                            "negative_id": doc_ids[ranked[row, chosen]], "rank": chosen + 1,
                            "score": round(float(scores[row, chosen]), 6),
                            "positive_score": round(positive_scores[(query, doc)], 6)})
    return records, counts


def _weights_digest(folder: Path) -> str:
    """sha256 over the weight files under a model or run folder (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.suffix in (".safetensors", ".bin", ".gguf") and "checkpoint_" not in str(path):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:16]


def _cache_dir(run: TrainConfig, spec: MineSpec, miner: str, qrels: Path,
               fingerprints: dict[str, str]) -> Path:
    key = json.dumps({"miner": miner, "max_length": run.task.max_length,
                      "range": [spec.range_min, spec.range_max], "margin": spec.margin,
                      **fingerprints}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(run.paths.root) / "negatives" / f"{qrels.parent.parent.name}-{qrels.stem}-{digest}"


def mine(run: TrainConfig, spec: MineSpec) -> tuple[Path, dict[str, Any]]:
    """Mine the training split's hard negatives (or reuse the cached folder of the same
    miner, data and settings): (folder, provenance)."""
    if run.task.kind != TaskKind.embedding or run.data.format.value != "beir":
        raise ConfigError("data.format", f"mine ranks a BEIR corpus for task=embedding (got "
                          f"task={run.task.kind.value}, data.format={run.data.format.value})",
                          "e.g. shardtune mine task=embedding data=scifact")
    paths = run.data.path if isinstance(run.data.path, list | tuple) else [run.data.path]
    paths = [str(p) for p in paths]
    if len(paths) != 1:
        raise ConfigError("data.path", f"mine takes one qrels file, got {len(paths)}")
    root, split = beir_root(paths[0])
    qrels = root / "qrels" / f"{split}.tsv"
    miner = resolve_location(spec.miner or run.model.name_or_path,
                             "mine.miner" if spec.miner else "model.name_or_path")
    if Path(miner).is_dir():
        miner = str(Path(miner).resolve())
    fingerprints = {name: file_sha256(root / name)[:16]
                    for name in ("corpus.jsonl", "queries.jsonl")}
    fingerprints["qrels"] = file_sha256(qrels)[:16]
    if Path(miner).is_dir():  # a local model or run: retrained in place, it mines afresh
        fingerprints["miner_weights"] = _weights_digest(Path(miner))
    out = _cache_dir(run, spec, miner, qrels, fingerprints)
    if (out / PROVENANCE_FILE).is_file():
        return out, {**json.loads((out / PROVENANCE_FILE).read_text()), "cached": True}
    ensure_ray(run.cluster)
    beir = read_beir(root, split)
    cfg = EvaluateConfig(run=miner, batch_size=spec.batch_size, actors=spec.actors,
                         inprocess_rows=spec.inprocess_rows)
    udf = _miner_udf(run.task.max_length)
    doc_emb = embed_texts(udf, cfg, Path(miner), beir.doc_ids, beir.doc_texts)[0]
    query_emb = embed_texts(udf, cfg, Path(miner), beir.query_ids, beir.query_texts)[0]
    scores, ranked = exact_search(query_emb, doc_emb, spec.range_max)
    where = {d: i for i, d in enumerate(beir.doc_ids)}
    positive_scores = {(q, d): float(query_emb[row] @ doc_emb[where[d]])
                       for row, q in enumerate(beir.query_ids)
                       for d, s in beir.qrels[q].items() if s > 0}
    records, counts = pick_negatives(ranked, scores, beir.doc_ids, beir.query_ids, beir.qrels,
                                     positive_scores, spec)
    provenance = {"qrels": str(qrels.resolve()), "miner": miner,
                  "max_length": run.task.max_length, "range_min": spec.range_min,
                  "range_max": spec.range_max, "margin": spec.margin,
                  "fingerprints": fingerprints, "counts": counts,
                  "documents": len(beir.doc_ids), "queries": len(beir.query_ids),
                  "created_by": f"shardtune mine (pid {os.getpid()})"}
    with replaced_on_success(out) as tmp:
        (tmp / NEGATIVES_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1))
    return out, {**provenance, "cached": False}
