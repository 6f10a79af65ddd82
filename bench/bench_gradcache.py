"""Memory of one large contrastive batch with and without ``task.embedding.cache_chunk``.

Each setting is one ``shardtune train`` command (its own process tree, so the peak is its
own): SciFact (query, abstract) pairs, MiniLM fully fine-tuned, in-batch negatives over the
whole batch, the same seed, batch, max length and steps. Reported: the process tree's peak
RSS (sampled every 0.25 s; Ray's own processes are in both), the difference, seconds per
step from the logged steps, and each step's loss (chunks are cut to their own longest row,
so dropout draws differ slightly: losses agree closely, not exactly).

    python bench/bench_gradcache.py                          # CPU scale: batch 64, 3 steps
    python bench/bench_gradcache.py --batch 1024 --chunk 64  # a GPU's large global batch
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CLI, ROOT, SHARED, TreeRSS, save  # noqa: E402


def train(tmp: Path, name: str, batch: int, max_length: int, steps: int,
          chunk: int) -> dict:
    """One training command under a tree-RSS sampler; its peak, wall and logged steps."""
    args = ["train", "task=embedding", "data=scifact", f"paths.datasets={SHARED}",
            f"paths.root={tmp}", "data.val_fraction=0", "data.test_path=null", "peft=none",
            f"trainer.batch_size={batch}", f"task.max_length={max_length}",
            f"trainer.max_steps={steps}", "trainer.log_every=1", "trainer.ckpt_every=0",
            "trainer.eval_every=0", "optim.lr=2e-5", f"task.embedding.cache_chunk={chunk}",
            f"run_name={name}"]
    start = time.perf_counter()
    with TreeRSS() as rss:
        subprocess.run([CLI, *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    lines = [json.loads(x) for x in (tmp / "runs" / name / "metrics.jsonl").read_text()
             .splitlines()]
    steps_logged = [x for x in lines if "train/loss" in x]
    times = [x["time"] for x in steps_logged]
    return {"peak_tree_rss_mb": rss.peak_mb, "wall_s": time.perf_counter() - start,
            "losses": [x["train/loss"] for x in steps_logged],
            "s_per_step_after_first": (times[-1] - times[0]) / max(len(times) - 1, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_gradcache_"))
    plain = train(tmp, "plain", args.batch, args.max_length, args.steps, 0)
    cached = train(tmp, "cached", args.batch, args.max_length, args.steps, args.chunk)
    save("gradcache_memory", {
        "scale": {"batch": args.batch, "chunk": args.chunk, "max_length": args.max_length,
                  "steps": args.steps, "model": "MiniLM-L6, full fine-tuning",
                  "data": "SciFact train pairs"},
        "plain": plain, "cache_chunk": cached,
        "peak_saved_mb": plain["peak_tree_rss_mb"] - cached["peak_tree_rss_mb"],
        "time_ratio": cached["s_per_step_after_first"] / plain["s_per_step_after_first"],
    })


if __name__ == "__main__":
    main()
