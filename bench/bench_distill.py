"""Distillation on BANKING77: LoRA MiniLM-L6 teacher → 3-layer MiniLM student (every other
teacher layer), with KD and without (the control), over 3 seeds.

    python bench/bench_distill.py [--seeds 3] [--epochs 3] [--augment 1] [--teacher-epochs 3]

``--augment N``: N teacher-labelled perturbed copies of each training text (``distill.augment``),
in a run of its own (``student3_aug<N>``) beside the plain KD run's control.
``--teacher-epochs E``: a teacher trained E epochs instead of 3 (run ``teacher_e<E>``, students
``student<epochs>_t<E>``): a stronger teacher leaves the student more to learn from it.

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
    parser.add_argument("--teacher-epochs", type=int, default=3)
    args = parser.parse_args()
    if args.augment and args.teacher_epochs != 3:  # the copies' run compares with student3
        parser.error("--augment compares with the 3-epoch teacher's run: drop --teacher-epochs")
    work = ROOT / "runs" / "bench_distill"
    work.mkdir(parents=True, exist_ok=True)
    data = [f"paths.datasets={SHARED}", "data=banking77"]
    stronger = args.teacher_epochs != 3
    teacher = f"teacher_e{args.teacher_epochs}" if stronger else "teacher"
    teacher_s = _run(["train", "experiment=banking77_lora", f"run_name={teacher}",
                      f"trainer.epochs={args.teacher_epochs}", *data], work)
    seeds = ",".join(str(s) for s in range(args.seeds))
    name = f"student3_aug{args.augment}" if args.augment else "student3"
    if stronger:
        name = f"student{args.epochs}_t{args.teacher_epochs}"
    extra = [f"distill.augment={args.augment}", "distill.control=false",  # student3's control
             f"distill.outputs_dir={work / 'teacher_outputs_aug'}"] if args.augment else []
    student_s = _run(["distill", f"teacher={work / 'runs' / teacher}", *data, "peft=none",
                      "optim.lr=1e-4", f"trainer.epochs={args.epochs}", "trainer.ckpt_every=0",
                      f"seeds=[{seeds}]", f"run_name={name}", *extra], work)
    figures = json.loads((work / "runs" / name / "distill.json").read_text())
    if args.augment:  # KD with copies against the plain run's control, same seeds and init
        control = work / "runs" / "student3" / "control"
        _run(["compare", str(control), str(work / "runs" / name / "student"),
              "compare.metric=accuracy"], work)
        figures["vs_control"] = json.loads((work / "runs" / name / "student" / "compare" /
                                            "control" / "compare.json").read_text())
    suffix = "_aug" if args.augment else f"_teacher{args.teacher_epochs}" if stronger else ""
    save(f"distill_banking77{suffix}", {
        "scale": f"banking77 full (train 8,990 / val 1,013 / test 3,080), teacher "
                 f"experiment=banking77_lora ({args.teacher_epochs} epochs), students "
                 f"{args.epochs} epochs full fine-tuning lr 1e-4, seeds {seeds}",
        "teacher_train_s": teacher_s, "distill_s": student_s, **figures})


if __name__ == "__main__":
    main()
