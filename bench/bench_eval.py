"""``evaluate`` batch-inference throughput vs a bare batched inference loop, same model/data.

The model is a briefly trained LoRA MiniLM run on BANKING77 (weights do not change the speed).
Both loops score the same rows with the same batch size and max length on the same threads;
``evaluate`` in this process (its default: one call up to ``inprocess_rows``, 20,000, windows
of that many above) and through a Ray Data actor, beside bare loops over rows sorted by
characters (adapters as saved, and merged, as ``evaluate`` loads them), sorted by token count
(merged: ``evaluate``'s own order) and in file order, interleaved.

    python bench/bench_eval.py                  # BANKING77 train split (8,990 rows), 3 rounds
    python bench/bench_eval.py --copies 3 --rounds 2   # 26,970 rows: past inprocess_rows
                                                       # (windows here; no file-order arm)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, fp32_matmul_peak, save  # noqa: E402
from data.local import LocalDataset, to_ray  # noqa: E402
from data.pipeline import build_splits  # noqa: E402
from evaluation.config import EvaluateConfig  # noqa: E402
from evaluation.evaluate import _predict  # noqa: E402
from tests.conftest import compose_run  # noqa: E402
from trainers.models import load_trained  # noqa: E402
from trainers.scaling import ensure_ray  # noqa: E402
from trainers.train import train  # noqa: E402


def bare_inference(run_dir: Path, texts: list[str], batch: int, sort: str | None,
                   merged: bool = False) -> float:
    """What one writes by hand: load the model (base + adapters as saved, or with the adapters
    merged into the weights), order the texts (``chars``: by characters; ``tokens``: by token
    count, from one tokenisation of them all; None: as given), tokenise a batch, forward,
    softmax; returns examples/s (the load timed, as evaluate's is)."""
    start = time.perf_counter()
    model, tok, _, run = load_trained(run_dir, merge_adapters=merged)
    limit = run.task.max_length
    if sort == "tokens":
        lengths = [min(len(ids), limit) for ids in tok(texts, verbose=False)["input_ids"]]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
    elif sort == "chars":
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    else:
        order = list(range(len(texts)))
    with torch.no_grad():
        for i in range(0, len(order), batch):
            chunk = [texts[j] for j in order[i:i + batch]]
            enc = tok(chunk, truncation=True, max_length=limit, padding=True,
                      return_tensors="pt")
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            out.logits.softmax(-1)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1,
                        help="the split this many times over (3: above inprocess_rows)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    run = compose_run(tmp, ["data=banking77", f"paths.datasets={SHARED}",
                            "trainer.max_steps=5", "run_name=eval_bench"])
    summary = train(run)
    run_dir = Path(summary["run_dir"])
    ensure_ray(run.cluster)  # the actor arm needs it; the in-process arm runs beside it
    splits = build_splits(run.data, "seq_cls")
    # as `shardtune evaluate` gets them: rows this process read (the in-process arm), and
    # the same rows in Ray's object store for the actors (what a split past inprocess_rows,
    # or one read by Ray Data on a cluster, goes through)
    train_split = splits.datasets["train"]
    blocks = train_split.blocks() if isinstance(train_split, LocalDataset) \
        else ray.get(train_split.to_arrow_refs())
    here = LocalDataset(blocks * args.copies)
    dataset = to_ray(here)
    texts = [r["text"] for r in dataset.take_all()]
    arms = {"evaluate_in_process": EvaluateConfig(run=str(run_dir), batch_size=64),
            "evaluate_actor": EvaluateConfig(run=str(run_dir), batch_size=64, inprocess_rows=0)}
    bare = ["bare_sorted", "bare_sorted_merged", "bare_token_sorted_merged"] + (
        ["bare_file_order"] if args.copies == 1 else [])
    order = [*arms, *bare]
    rates: dict[str, list[float]] = {arm: [] for arm in order}
    for r in range(args.rounds):  # interleaved A B C D, D C B A: drift falls on every arm
        for arm in (order if r % 2 == 0 else order[::-1]):
            if arm in arms:
                frame, seconds = _predict(arms[arm], run_dir,
                                          here if arm == "evaluate_in_process" else dataset)
                assert len(frame) == len(texts)
                rates[arm].append(len(frame) / seconds)
            else:
                sort = {"bare_file_order": None, "bare_token_sorted_merged": "tokens"}
                rates[arm].append(bare_inference(run_dir, texts, 64, sort.get(arm, "chars"),
                                                 merged=arm.endswith("merged")))
            print(f"round {r} {arm}: {rates[arm][-1]:.1f} examples/s", flush=True)
    median = {arm: statistics.median(v) for arm, v in rates.items()}
    save("eval_throughput" + ("" if args.copies == 1 else f"_x{args.copies}"), {
        "scale": {"data": "banking77 train split", "copies": args.copies, "rows": len(texts),
                  "batch": 64, "max_length": run.task.max_length, "rounds": args.rounds,
                  "inprocess_rows": arms["evaluate_in_process"].inprocess_rows},
        "fp32_matmul_gflops": fp32_matmul_peak() / 1e9,
        "examples_per_s": rates, "median_examples_per_s": median,
        "note": "evaluate timed from the first row requested to the last prediction (the "
                "actor arm: actor start and model load included; the in-process arm: model "
                "load included); the bare loops load the model inside their timer too",
        "ratio_in_process_vs_bare_sorted": median["evaluate_in_process"] / median["bare_sorted"],
        "ratio_actor_vs_bare_sorted": median["evaluate_actor"] / median["bare_sorted"],
        "ratio_in_process_vs_bare_sorted_merged":
            median["evaluate_in_process"] / median["bare_sorted_merged"],
        "ratio_in_process_vs_bare_token_sorted_merged":
            median["evaluate_in_process"] / median["bare_token_sorted_merged"],
        "ratio_actor_vs_bare_token_sorted_merged":
            median["evaluate_actor"] / median["bare_token_sorted_merged"],
        "ratio_in_process_vs_bare_file_order":
            median["evaluate_in_process"] / median["bare_file_order"] if args.copies == 1
            else None,
    })


if __name__ == "__main__":
    main()
