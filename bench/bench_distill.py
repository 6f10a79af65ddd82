"""Distillation on BANKING77: LoRA MiniLM-L6 teacher → 3-layer MiniLM student (every other
teacher layer), with KD and without (the control), over 3 seeds.

    python bench/bench_distill.py [--seeds 3] [--epochs 3] [--augment 1]

``--augment N``: N teacher-labelled perturbed copies of each training text (``distill.augment``),
in a run of its own (``student3_aug<N>``) beside the plain KD run's control.

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
    parser.add_argument("--augment", type=int, default=0)
    args = parser.parse_args()
    work = ROOT / "runs" / "bench_distill"
    work.mkdir(parents=True, exist_ok=True)
    data = [f"paths.datasets={SHARED}", "data=banking77"]
    teacher_s = _run(["train", "experiment=banking77_lora", "run_name=teacher", *data], work)
    seeds = ",".join(str(s) for s in range(args.seeds))
    name = f"student3_aug{args.augment}" if args.augment else "student3"
    extra = [f"distill.augment={args.augment}", "distill.control=false",  # student3's control
             f"distill.outputs_dir={work / 'teacher_outputs_aug'}"] if args.augment else []
    student_s = _run(["distill", f"teacher={work / 'runs' / 'teacher'}", *data, "peft=none",
                      "optim.lr=1e-4", f"trainer.epochs={args.epochs}", "trainer.ckpt_every=0",
                      f"seeds=[{seeds}]", f"run_name={name}", *extra], work)
    figures = json.loads((work / "runs" / name / "distill.json").read_text())
    if args.augment:  # KD with copies against the plain run's control, same seeds and init
        control = work / "runs" / "student3" / "control"
        _run(["compare", str(control), str(work / "runs" / name / "student"),
              "compare.metric=accuracy"], work)
        figures["vs_control"] = json.loads((work / "runs" / name / "student" / "compare" /
                                            "control" / "compare.json").read_text())
    save(f"distill_banking77{'_aug' if args.augment else ''}", {
        "scale": f"banking77 full (train 8,990 / val 1,013 / test 3,080), teacher "
                 f"experiment=banking77_lora (3 epochs), students {args.epochs} epochs full "
                 f"fine-tuning lr 1e-4, seeds {seeds}",
        "teacher_train_s": teacher_s, "distill_s": student_s, **figures})


if __name__ == "__main__":
    main()
