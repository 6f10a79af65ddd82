"""The offline teacher pass (``distill.teacher_mode=offline``) vs a bare loop, same rows.

A distillation with cached teacher outputs first runs the teacher over the tokenised training
split and writes its log-probabilities at T as parquet (distill/teacher.py: a Ray Data actor
above ``distill.inprocess_rows`` rows, in the driver below). The bare reference is what one
writes by hand for the same job: load the trained model as saved (base + LoRA adapters),
sort the rows by length, pad batches of 64, forward, log-softmax at T, write one parquet
file; a second bare arm folds the adapters in first, as shardtune's teacher does. Every arm
loads the teacher inside its timer and reads the same token ids; the arms run interleaved
(A B C D, D C B A, ...), so the machine's drift falls on all of them.

    python bench/bench_teacher_pass.py                 # BANKING77 train split, 3 rounds
    python bench/bench_teacher_pass.py --rows 2000     # a hash-sampled subset
    python bench/bench_teacher_pass.py --copies 3 --rounds 2   # 26,970 rows: past
                                                # distill.inprocess_rows (windows in the driver)

The teacher is a briefly trained LoRA MiniLM run (its weights do not change the speed).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fp32_matmul_peak, save  # noqa: E402
from data.batches import collate, model_inputs  # noqa: E402
from distill.config import DistillSpec  # noqa: E402
from distill.teacher import offline_outputs  # noqa: E402
from tests.conftest import compose_run  # noqa: E402
from trainers.models import load_tokenizer, load_trained  # noqa: E402
from trainers.train import prepare, train  # noqa: E402

BATCH = 64  # TeacherOutputs' batch size


def bare_pass(teacher: str, rows: dict[str, np.ndarray], temperature: float, pad_id: int,
              out: Path, merge: bool) -> float:
    """Hand-written: the trained model loaded as saved (base + LoRA adapters; ``merge``: the
    adapters folded in first, as shardtune does), rows sorted by length, batches of 64, the
    log-probabilities written as parquet."""
    start = time.perf_counter()
    model = load_trained(Path(teacher), merge_adapters=merge)[0].eval()
    order = np.argsort(rows["length"], kind="stable")
    logp: list[np.ndarray] = [np.empty(0)] * len(order)
    with torch.no_grad():
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            batch = collate({k: v[idx] for k, v in rows.items()}, pad_id)
            scores = torch.log_softmax(model(**model_inputs(batch)).logits.float()
                                       / temperature, -1)
            for j, row in enumerate(idx):
                logp[row] = scores[j].numpy()
    pd.DataFrame({"uid": rows["uid"], "teacher_logp": logp}).to_parquet(out)
    return time.perf_counter() - start


def shardtune_pass(dataset: Any, spec: DistillSpec, teacher: str, pad_id: int, out: Path
                   ) -> tuple[float, int]:
    """``offline_outputs`` as ``shardtune distill`` calls it (made, written, handed on)."""
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    made = offline_outputs(dataset, spec, teacher, out, {"bench": True}, "seq_cls", pad_id)
    seconds = time.perf_counter() - start
    return seconds, made.count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="data.max_examples (all: none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1,
                        help="the split this many times over (3: above distill.inprocess_rows)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_teacher_"))
    sample = [f"data.max_examples={args.rows}"] if args.rows else []
    teacher_run = compose_run(tmp, ["data=banking77", *sample, "trainer.max_steps=5",
                                    "trainer.ckpt_every=0", "run_name=teacher"])
    teacher = train(teacher_run)["run_dir"]
    run = compose_run(tmp, ["data=banking77", *sample, "data.driver_bytes=0", "run_name=s"])
    prep = prepare(run)  # Ray started; the split tokenised as a distillation's student reads it
    dataset = prep.datasets["train"]
    if args.copies > 1:
        dataset = dataset.union(*[dataset] * (args.copies - 1)).materialize()
    pad_id = load_tokenizer(run.model).pad_token_id
    frame = dataset.to_pandas()
    rows = {k: frame[k].to_numpy() for k in ("input_ids", "uid", "length", "labels")}
    spec = DistillSpec(teacher=teacher, temperature=2.0)
    arms = {"actor": dataclasses.replace(spec, inprocess_rows=0),
            "in_driver": spec}  # the default: one call up to 20,000 rows, windows above
    order = ["actor", "in_driver", "bare", "bare_merged"]
    times: dict[str, list[float]] = {arm: [] for arm in order}
    for r in range(args.rounds):
        for arm in (order if r % 2 == 0 else order[::-1]):
            if arm.startswith("bare"):
                times[arm].append(bare_pass(teacher, rows, spec.temperature, pad_id,
                                            tmp / "bare.parquet", merge=arm == "bare_merged"))
            else:
                seconds, count = shardtune_pass(dataset, arms[arm], teacher, pad_id,
                                                tmp / f"out_{arm}")
                assert count == len(frame), (count, len(frame))
                times[arm].append(seconds)
            print(f"round {r} {arm}: {len(frame) / times[arm][-1]:.1f} rows/s", flush=True)
    rate = {arm: [len(frame) / s for s in ts] for arm, ts in times.items()}
    median = {arm: statistics.median(v) for arm, v in rate.items()}
    result = {
        "scale": {"data": "banking77 train split", "copies": args.copies, "rows": len(frame),
                  "inprocess_rows": spec.inprocess_rows, "batch": BATCH,
                  "max_length": run.task.max_length, "rounds": args.rounds,
                  "threads": torch.get_num_threads()},
        "fp32_matmul_gflops": fp32_matmul_peak() / 1e9,
        "rows_per_s": rate, "median_rows_per_s": median,
        "ratio_actor_vs_bare": median["actor"] / median["bare"],
        "ratio_in_driver_vs_bare": median["in_driver"] / median["bare"],
        "ratio_in_driver_vs_bare_merged": median["in_driver"] / median["bare_merged"],
        "note": "each arm timed from the call to its outputs on disk and in hand (shardtune: a "
                "dataset of the rows with their outputs); teacher load inside every timer; "
                "interleaved A B C D, D C B A",
    }
    save("teacher_pass" + ("" if args.copies == 1 else f"_x{args.copies}"), result)
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()
           if k.startswith(("ratio", "median"))})


if __name__ == "__main__":
    main()
