"""``evaluate`` batch-inference throughput vs a bare batched inference loop, same model/data.

The model is a briefly trained LoRA MiniLM run on BANKING77 (weights do not change the speed).
Both loops score the same rows with the same batch size and max length on the same threads.

    python bench/bench_eval.py                  # BANKING77 train split (8,990 rows)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, save  # noqa: E402
from data.pipeline import build_splits  # noqa: E402
from evaluation.config import EvaluateConfig  # noqa: E402
from evaluation.evaluate import _predict  # noqa: E402
from tests.conftest import compose_run  # noqa: E402
from trainers.models import load_trained  # noqa: E402
from trainers.train import train  # noqa: E402


def bare_inference(run_dir: Path, texts: list[str], batch: int, sort: bool) -> float:
    """What one writes by hand: tokenise a batch, forward, softmax; returns examples/s."""
    model, tok, _, run = load_trained(run_dir)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort else range(len(texts))
    order = list(order)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(order), batch):
            chunk = [texts[j] for j in order[i:i + batch]]
            enc = tok(chunk, truncation=True, max_length=run.task.max_length, padding=True,
                      return_tensors="pt")
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            out.logits.softmax(-1)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    run = compose_run(tmp, ["data=banking77", f"paths.datasets={SHARED}",
                            "trainer.max_steps=5", "run_name=eval_bench"])
    summary = train(run)
    run_dir = Path(summary["run_dir"])
    splits = build_splits(run.data, "seq_cls")
    dataset = splits.datasets["train"]
    texts = [r["text"] for r in dataset.take_all()]
    cfg = EvaluateConfig(run=str(run_dir), batch_size=64, resamples=100)
    frame, seconds = _predict(cfg, run_dir, dataset)
    assert len(frame) == len(texts)
    bare_sorted = bare_inference(run_dir, texts, 64, sort=True)
    bare_plain = bare_inference(run_dir, texts, 64, sort=False)
    ours = len(frame) / seconds
    save("eval_throughput", {
        "scale": {"data": "banking77 train split", "rows": len(texts), "batch": 64,
                  "max_length": run.task.max_length},
        "evaluate_examples_per_s": ours,
        "evaluate_note": "Ray Data map_batches, 1 actor, timed from the first row requested "
                         "to the last (actor start and model load included)",
        "bare_loop_examples_per_s": bare_plain,
        "bare_loop_sorted_examples_per_s": bare_sorted,
        "ratio_vs_bare": ours / bare_plain,
        "ratio_vs_bare_sorted": ours / bare_sorted,
    })


if __name__ == "__main__":
    main()
