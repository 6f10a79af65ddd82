"""What a shipped model costs to serve: latency, throughput, size, memory (CPU).

``measure`` times a loaded model in this process; ``measure_isolated`` loads a saved model in
a fresh process so its peak memory is its own (a process's peak RSS never goes down, so two
models measured in one process would share a figure).
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import torch

from data.pairs import beir_root
from data.retrieval import read_beir
from trainers.models import load_run_config, load_trained
from trainers.quantize import merge_full_precision

SINGLE_TEXTS = 100  # timed one at a time (latency at batch 1)
BATCHED_TEXTS = 640  # at most, timed 32 at a time (latency and throughput at batch 32)


def measure(model: Any, tokenizer: Any, texts: list[str] | list[tuple[str, str]],
            max_length: int, disk_bytes: int | None = None) -> dict[str, float]:
    """Median CPU latency at batch 1 (the first 100 texts) and 32 (up to 640), throughput at
    32, parameters, bytes on disk, and how many texts each figure timed. A reranker's texts
    are (query, document) pairs, read as one sequence as it serves them."""
    if not getattr(model, "cpu_only", False):
        model = model.to("cpu")
    model = model.eval()

    def run(batch: list[str] | list[tuple[str, str]]) -> None:
        sides = ([b[0] for b in batch], [b[1] for b in batch]) if isinstance(batch[0], tuple) \
            else (batch,)
        enc = tokenizer(*sides, truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])

    with torch.no_grad():
        # one untimed pass per batch shape timed below (the first call of a shape pays for
        # allocations): two more batches of 32 moved MiniLM's medians by less than their
        # run-to-run noise, and took longer than the timed part of a 32-text measurement
        run(texts[:32])
        run(texts[:1])
        single = []
        for text in texts[:SINGLE_TEXTS]:
            start = time.perf_counter()
            run([text])
            single.append(time.perf_counter() - start)
        batched = []
        for i in range(0, min(len(texts), BATCHED_TEXTS), 32):
            start = time.perf_counter()
            run(texts[i:i + 32])
            batched.append(time.perf_counter() - start)
    if disk_bytes is None:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            disk_bytes = sum(f.stat().st_size for f in Path(tmp).rglob("*.safetensors"))
    return {"params": sum(p.numel() for p in model.parameters()), "disk_bytes": disk_bytes,
            "texts": min(len(texts), BATCHED_TEXTS), "texts_b1": min(len(texts), SINGLE_TEXTS),
            "latency_b1_ms": 1000 * statistics.median(single),
            "latency_b32_ms": 1000 * statistics.median(batched),
            "throughput_b32": 32 * len(batched) / sum(batched)}


def speed_texts(run_dir: Path, splits: tuple[str, ...] = ("test", "validation"),
                limit: int = BATCHED_TEXTS) -> list[str] | list[tuple[str, str]]:
    """Held-out texts to time a model on: those of the run's saved predictions (first split
    that has them; a retrieval run's: the split's documents, what it embeds most; a
    reranker's: (query, document) pairs, what it scores); [] when there are none or they
    carry no text."""
    import pandas as pd  # kept out of the measuring process: its base RSS is torch's alone

    for split in splits:
        path = Path(run_dir) / "eval" / split / "predictions.parquet"
        if path.exists():
            frame = pd.read_parquet(path)
            if "query_id" in frame:
                return _documents(Path(run_dir), split, limit)
            return [str(t) for t in frame["text"].head(limit)] if "text" in frame else []
    return []


def _documents(run_dir: Path, split: str, limit: int) -> list[str] | list[tuple[str, str]]:
    """The first ``limit`` documents of the corpus a retrieval run's ``split`` ranks; for a
    reranker each paired with the split's queries in turn."""
    run = load_run_config(run_dir)
    root, name = beir_root(run.data.split_paths(split)[0])
    beir = read_beir(root, name)
    docs = beir.doc_texts[:limit]
    if run.task.kind.value != "rerank" or not beir.query_texts:
        return docs
    queries = beir.query_texts
    return [(queries[i % len(queries)], doc) for i, doc in enumerate(docs)]


def tensor_bytes(model: Any) -> int:
    """Bytes of every tensor the model holds (quantised packed weights included)."""
    total = 0
    for value in model.state_dict().values():
        parts = value if isinstance(value, (tuple, list)) else (value,)
        total += sum(t.numel() * t.element_size() for t in parts if isinstance(t, torch.Tensor))
    return total


def _rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


class _PeakRSS:
    """Highest RSS of this process seen by a sampling thread (getrusage's ru_maxrss would
    carry the parent's peak over fork + exec)."""

    def __init__(self) -> None:
        self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mib())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _rss_mib())


def _measure_saved(run_dir: str, texts: list[str], threads: int) -> dict[str, float]:
    """In a fresh process: load ``run_dir``'s model (adapters merged), then ``measure``."""
    torch.set_num_threads(threads)
    before = _rss_mib()
    peak = _PeakRSS()
    model, tokenizer, _, run = load_trained(Path(run_dir))
    model = merge_full_precision(model)
    loaded = _rss_mib() - before
    quant = Path(run_dir) / "model" / "quantized.safetensors"
    size = quant.stat().st_size if quant.exists() else None
    figures = measure(model, tokenizer, texts, run.task.max_length, size)
    figures["model_rss_mib"] = loaded
    figures["tensor_mib"] = tensor_bytes(model) / 2**20
    figures["peak_rss_mib"] = peak.stop()  # load + inference, in a fresh interpreter
    figures["base_rss_mib"] = before  # the interpreter with torch imported, no model
    return figures


def measure_isolated(run_dir: str | Path, texts: list[str]) -> dict[str, float]:
    """``measure`` plus the model's resident memory, in a process of its own.

    Forked from a server process that imported this module (torch, transformers) once, the
    first time: a spawned process re-imported them for every model measured (~5 s each on 2
    cores). The child is fresh for every model, so each peak is its own as before."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # read when the server starts: once a process
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(_measure_saved, str(run_dir), texts,
                           torch.get_num_threads()).result()
