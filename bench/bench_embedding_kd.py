"""An embedding student's KD training with the teacher online vs its embeddings cached offline.

``shardtune distill task=embedding`` teaches a bi-encoder student the teacher's similarity
distribution over each batch's candidates. Online, the teacher embeds every row's query,
positive and hard negative at every step of every epoch; offline (the default), one teacher
pass caches those embeddings with the rows and each step builds the teacher's logits from
them. Both arms here: the same student init, data, seed and schedule, timed from the call to
the trained student on disk, the teacher's load (and, offline, its pass) inside the timer;
interleaved (online, offline / offline, online). The KD targets are the same numbers, so the
two students' losses must agree: the run records both.

    python bench/bench_embedding_kd.py                       # SciFact train pairs, 3 epochs
    python bench/bench_embedding_kd.py --epochs 1 --rounds 1 # a quick look
    python bench/bench_embedding_kd.py --negatives <the folder shardtune mine printed>

The teacher is a briefly trained LoRA MiniLM retriever (its weights do not change the speed);
the student keeps its layers 0, 2, 4, fully fine-tuned, as the session-23 SciFact recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fp32_matmul_peak, save  # noqa: E402
from distill.objective import distiller  # noqa: E402
from distill.run import student_run  # noqa: E402
from distill.teacher import load_teacher, offline_outputs  # noqa: E402
from shardtune.compose import verb_config  # noqa: E402
from tests.conftest import SHARED, compose_run  # noqa: E402
from trainers.models import load_tokenizer  # noqa: E402
from trainers.train import fit, prepare, train  # noqa: E402


def losses(run_dir: Path) -> list[float]:
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(r)["train/loss"] for r in rows if "train/loss" in r]


def arm(student: Any, prep: Any, mode: str, out: Path, pad_id: int) -> float:
    """One student trained with the teacher ``mode`` (its run directory under ``out``)."""
    run = dataclasses.replace(student, run_name=mode, paths=dataclasses.replace(
        student.paths, runs=str(out)), distill=dataclasses.replace(
        student.distill, teacher_mode=mode))
    shutil.rmtree(out / mode, ignore_errors=True)
    start = time.perf_counter()
    if mode == "offline":
        outputs = out / "teacher_outputs"
        shutil.rmtree(outputs, ignore_errors=True)
        train_split = offline_outputs(prep.datasets["train"], run.distill, run.distill.teacher,
                                      outputs, {"bench": True}, "embedding", pad_id)
        prep = dataclasses.replace(prep, datasets={**prep.datasets, "train": train_split})
    fit(run, prep, objective=distiller)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--negatives", default=None,
                        help="data.pairs.negatives_path: a `shardtune mine` folder (a third "
                             "text per row, which the online teacher embeds at every step)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_embedding_kd_"))
    data = ["task=embedding", "data=scifact", f"task.max_length={args.max_length}",
            "trainer.batch_size=32", "trainer.ckpt_every=0", "trainer.eval_every=0",
            *([f"data.pairs.negatives_path={args.negatives}"] if args.negatives else [])]
    teacher = train(compose_run(tmp, [*data, "trainer.max_steps=3", "run_name=teacher"])
                    )["run_dir"]
    run = verb_config("distill", [*data, f"teacher={teacher}", "distill.student_layers=[0,2,4]",
                                  "peft=none", "optim.lr=5e-5", f"trainer.epochs={args.epochs}",
                                  f"paths.root={tmp}", f"paths.datasets={SHARED}",
                                  "run_name=student"])
    student, _ = student_run(run, tmp, load_teacher(teacher, run.task.kind))  # as distill's
    prep = prepare(student)
    pad_id = load_tokenizer(student.model).pad_token_id
    rows = prep.train_rows
    order = ["online", "offline"]
    times: dict[str, list[float]] = {mode: [] for mode in order}
    for r in range(args.rounds):
        for mode in (order if r % 2 == 0 else order[::-1]):
            times[mode].append(arm(student, prep, mode, tmp / "arms", pad_id))
            print(f"round {r} {mode}: {times[mode][-1]:.1f} s, "
                  f"{rows * args.epochs / times[mode][-1]:.2f} rows/s", flush=True)
    median = {mode: statistics.median(ts) for mode, ts in times.items()}
    loss = {mode: losses(tmp / "arms" / mode) for mode in order}
    result = {
        "scale": {"data": "scifact train pairs (after the 10% hold-out)", "rows": rows,
                  "hard_negatives": bool(args.negatives),
                  "epochs": args.epochs, "batch": 32, "max_length": args.max_length,
                  "student_layers": [0, 2, 4], "rounds": args.rounds,
                  "threads": torch.get_num_threads()},
        "fp32_matmul_gflops": fp32_matmul_peak() / 1e9,
        "seconds": times, "median_s": median,
        "speedup_offline_over_online": median["online"] / median["offline"],
        "logged_losses": loss,
        "max_abs_loss_difference": max(abs(a - b) for a, b in zip(
            loss["online"], loss["offline"], strict=True)),
        "note": "each arm timed from its call to the trained student on disk: teacher load, "
                "the offline arm's teacher pass, training, export; interleaved",
    }
    save(f"embedding_kd_{args.epochs}ep", result)
    print({k: v for k, v in result.items() if k in ("median_s", "speedup_offline_over_online",
                                                    "max_abs_loss_difference")})


if __name__ == "__main__":
    main()
