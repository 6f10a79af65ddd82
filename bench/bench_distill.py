"""Distillation on BANKING77: LoRA MiniLM-L6 teacher → 3-layer MiniLM student (every other
teacher layer), with KD and without (the control), over 3 seeds.

    python bench/bench_distill.py [--seeds 3] [--epochs 3]

Goal (docs/benchmarks.md): the student keeps ≥ 98% of the teacher's test accuracy at ≥ 1.8×
its CPU throughput, and beats the same student trained without KD.
"""

from __future__ import annotations

import argparse
import json

from common import ROOT, SHARED, save
from common import run_cli as _run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    work = ROOT / "runs" / "bench_distill"
    work.mkdir(parents=True, exist_ok=True)
    data = [f"paths.datasets={SHARED}", "data=banking77"]
    teacher_s = _run(["train", "experiment=banking77_lora", "run_name=teacher", *data], work)
    seeds = ",".join(str(s) for s in range(args.seeds))
    student_s = _run(["distill", f"teacher={work / 'runs' / 'teacher'}", *data, "peft=none",
                      "optim.lr=1e-4", f"trainer.epochs={args.epochs}", "trainer.ckpt_every=0",
                      f"seeds=[{seeds}]", "run_name=student3"], work)
    figures = json.loads((work / "runs" / "student3" / "distill.json").read_text())
    save("distill_banking77", {
        "scale": f"banking77 full (train 8,990 / val 1,013 / test 3,080), teacher "
                 f"experiment=banking77_lora (3 epochs), students {args.epochs} epochs full "
                 f"fine-tuning lr 1e-4, seeds {seeds}",
        "teacher_train_s": teacher_s, "distill_s": student_s, **figures})


if __name__ == "__main__":
    main()
