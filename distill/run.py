"""``shardtune distill teacher=<run> [student=layers]``: a smaller student on the shared loop.

1. The student starts as a layer subset of the (merged) teacher, a resized config, or a path;
   its initial weights are saved in ``runs/<run>/student_init`` so every arm starts equal.
2. The data is read and tokenised once with the student's tokenizer; in offline mode a Ray
   Data pass adds the teacher's outputs to the training split (cached with provenance): its
   distributions, or an embedding teacher's embeddings of each row's texts.
3. The student trains on Ray Train like any run, with seeds as a seed group
   (``runs/<run>/student/seed<k>``); the control (same init, same seeds, no KD) beside it.
4. ``distill_report.md``: teacher vs student vs control quality with CIs, the comparison
   student vs control, parameters, size on disk, CPU latency and throughput.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from data.errors import ConfigError
from distill.augment import transfer_rows as copied_rows
from distill.objective import distiller
from distill.report import write_distill_report
from distill.student import every_other, keep_layers, layer_count, merged_teacher, save_student
from distill.teacher import load_teacher, offline_outputs, provenance, teacher_dir
from distill.transfer import transfer_rows
from evaluation.outputs import data_identity
from trainers.cluster_config import ClusterMode
from trainers.config import ModelConfig, TrainConfig
from trainers.models import load_tokenizer, tokenizer_location
from trainers.schedule import plan_steps
from trainers.train import prepare
from tuning.seeds import train_group


def student_init(run: TrainConfig, out: Path, teacher: tuple[Any, Any, list[str]] | None = None
                 ) -> tuple[dict[str, Any], list[int] | None]:
    """Model config of the student (and the teacher layers it kept, for ``layers``).

    ``teacher``: (model, tokenizer, labels) when the caller has loaded it already.
    """
    spec = run.distill
    model = dataclasses.asdict(run.model)
    if spec.student == "path":
        return model, None
    teacher, tokenizer, _ = teacher or load_teacher(spec.teacher, run.task.kind)
    full = merged_teacher(teacher)
    if spec.student == "layers":
        keep = list(spec.student_layers) or every_other(layer_count(full))
        save_student(keep_layers(full, keep), tokenizer, out)
        return {**model, "name_or_path": str(out), "tokenizer": str(out), "init_config": None,
                "pooling": _pooling(spec.teacher, run)}, keep
    config = full.config.to_dict()
    config.update(spec.student_config)
    keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers",
            "num_attention_heads", "intermediate_size", "max_position_embeddings",
            "n_layer", "n_embd", "n_head", "num_key_value_heads", "type_vocab_size")
    tokenizer.save_pretrained(out)
    return {**model, "init_config": {k: config[k] for k in keys if k in config},
            "tokenizer": str(out), "pooling": _pooling(spec.teacher, run)}, None


def student_run(run: TrainConfig, root: Path, teacher: tuple[Any, Any, list[str]]
                ) -> tuple[TrainConfig, list[int] | None]:
    """The KD student's run (``<root>/student``, the run's seeds as a seed group), starting
    from ``student_init``'s weights, and the teacher layers it kept."""
    model, kept = student_init(run, root / "student_init", teacher)
    student = dataclasses.replace(
        run, model=dataclasses.replace(run.model, **{k: model[k] for k in (
            "name_or_path", "tokenizer", "init_config", "pooling")}),
        seeds=list(run.seeds) or [run.seed], run_name="student",
        paths=run.paths.below(run.run_name))
    return student, kept


def _pooling(teacher: str, run: TrainConfig) -> str:
    run_dir = teacher_dir(teacher)
    if run_dir is None:
        return run.model.pooling
    return json.loads((run_dir / "config.json").read_text())["model"]["pooling"]


def _check_vocab(teacher_tok: Any, student_model: ModelConfig) -> None:
    """The teacher reads the student's token ids, and token-level KD compares distributions
    over tokens: teacher and student must share one vocabulary. The student's tokenizer is
    found as training finds it (``pkg://`` locations and GGUF files included)."""
    student_tok = load_tokenizer(student_model)
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        raise ConfigError("model.tokenizer", f"the student's vocabulary ({len(student_tok)} "
                          f"tokens) differs from the teacher's ({len(teacher_tok)})",
                          "token-level KD needs one tokenizer: use the teacher's")


def distill(run: TrainConfig) -> dict[str, Any]:
    spec = run.distill
    if spec.hidden_loss != "none" and run.task.kind.value in ("embedding", "rerank"):
        raise ConfigError("distill.hidden_loss", f"task={run.task.kind.value} students learn "
                          "the teacher's scores; a hidden-state term is built for "
                          "classification, NER and LM students", "set distill.hidden_loss=none")
    if spec.augment and run.task.kind.value != "seq_cls":
        raise ConfigError("distill.augment", f"copies are made for seq_cls, not "
                          f"{run.task.kind.value}", "set distill.augment=0")
    if spec.transfer_path and not run.task.chat:
        raise ConfigError("distill.transfer_path", "transfer prompts are answered by a chat "
                          f"teacher (task=sft), not task={run.task.kind.value}",
                          "set distill.transfer_path=null")
    root = Path(run.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    teacher = load_teacher(spec.teacher, run.task.kind)  # once: labels, tokenizer, init
    teacher_labels = teacher[2]
    student, kept = student_run(run, root, teacher)
    # the teacher reads the student's token ids (offline and online): one vocabulary
    _check_vocab(teacher[1], student.model)
    prep = prepare(student)
    if run.task.kind.value != "causal_lm" and prep.splits.labels != teacher_labels:
        raise ConfigError("data", f"the data's labels ({len(prep.splits.labels)}) are not the "
                          f"teacher's ({len(teacher_labels)})", "distil on the teacher's data")
    plain, transfer = prep, None
    out_dir = Path(spec.outputs_dir) if spec.outputs_dir else (
        (teacher_dir(spec.teacher) or root) / "teacher_outputs" / run.data.name)
    if spec.augment:
        train, rows = copied_rows(prep, student, tokenizer_location(student.model))
        added = {"distill.augment": {"rows": rows - prep.train_rows, "copies": spec.augment}}
        prep = dataclasses.replace(prep, datasets={**prep.datasets, "train": train},
                                   train_rows=rows, added={**prep.added, **added})
    if spec.transfer_path:
        train, rows, transfer = transfer_rows(
            prep, student, tokenizer_location(student.model), teacher,
            out_dir.with_name(f"{out_dir.name}_transfer_answers"), _tokenizer_hash(student))
        counts = {k: transfer[k] for k in ("rows", "read", "bad", "repeated", "held_out",
                                           "unfinished", "answered", "truncated_tokens")}
        prep = dataclasses.replace(prep, datasets={**prep.datasets, "train": train},
                                   train_rows=rows, added={**prep.added,
                                                           "distill.transfer_path": counts})
    if spec.teacher_mode == "offline":
        stamp = outputs_stamp(student, prep, transfer and transfer["identity"])
        train = offline_outputs(prep.datasets["train"], spec, spec.teacher, out_dir, stamp,
                                run.task.kind.value, load_tokenizer(student.model).pad_token_id)
        prep = dataclasses.replace(prep, datasets={**prep.datasets, "train": train})
    kd = train_group(student, prep, objective=distiller)
    if kd["status"] != "done":  # stopped (a signal): re-running the command resumes it
        return {"run_dir": str(root), "status": "stopped"}
    control = None
    if spec.control:
        trainer = control_schedule(student.trainer, spec.augment)
        if transfer:  # as many steps as the student, on the answered rows alone
            trainer = equal_steps(student, prep.train_rows, plain.train_rows)
        control_run = dataclasses.replace(student, distill=None, run_name="control",
                                          trainer=trainer)
        control = train_group(control_run, plain)
        if control["status"] != "done":
            return {"run_dir": str(root), "status": "stopped"}
    summary = {"run_dir": str(root), "status": "done", "teacher": spec.teacher,
               "student_layers": kept, "student": kd["group"],
               "control": control["group"] if control else None, "transfer": transfer}
    split = "test" if "test" in plain.splits.datasets else "validation"
    rows = plain.splits.datasets[split].take(spec.speed_rows)
    texts = [(str(r["text"]), str(r["document"])) for r in rows] \
        if run.task.kind.value == "rerank" else [str(r["text"]) for r in rows]  # what it serves
    summary["report"] = str(write_distill_report(run, summary, root, texts))
    summary["metrics"] = {k: v["mean"] for k, v in kd["group"]["metrics"].items()}
    return summary


def outputs_stamp(student: TrainConfig, prep: Any, transfer: str | None = None
                  ) -> dict[str, Any]:
    """What cached teacher outputs must have been made from to be reused: the teacher, the
    training split (its files and every data key that picks its rows: a hold-out fraction,
    a sample size, the pair fields), the student's tokenizer, task, length, T and k, and the
    transfer answers its rows hold (``None``: none; the cache holds the rows it was made
    over, so a run without them must not reuse outputs made with them, nor the reverse)."""
    spec = student.distill
    return {**provenance(spec, str(teacher_dir(spec.teacher) or spec.teacher),
                         data_identity(student.data, prep.splits.fingerprint),
                         _tokenizer_hash(student), student.task.kind.value,
                         student.task.max_length), "transfer": transfer}


def control_schedule(trainer: Any, augment: int) -> Any:
    """The control trains as many steps as the KD student: with ``augment`` copies an epoch of
    the student is 1 + augment epochs of the control (measured: at equal epochs the extra
    steps alone beat the control, docs/benchmarks.md). ``max_steps`` caps both alike."""
    if not augment or trainer.max_steps is not None:
        return trainer
    return dataclasses.replace(trainer, epochs=trainer.epochs * (1 + augment))


def equal_steps(student: TrainConfig, kd_rows: int, plain_rows: int) -> Any:
    """The control's schedule for a student whose split holds transfer rows (not a whole
    multiple of the answered ones): the student's optimizer steps as ``max_steps`` (the LR
    schedule spans them), and the epochs over the answered rows it takes to reach them."""
    trainer = student.trainer
    if trainer.batch_tokens is not None:  # steps unknown ahead: as many epochs of rows
        return dataclasses.replace(trainer, epochs=math.ceil(
            trainer.epochs * kd_rows / max(plain_rows, 1)))
    world = 1 if student.cluster.mode == ClusterMode.local else student.cluster.num_workers
    steps = plan_steps(student, kd_rows, world)[1]
    per_epoch = plan_steps(dataclasses.replace(student, trainer=dataclasses.replace(
        trainer, epochs=1, max_steps=None)), plain_rows, world)[1]
    return dataclasses.replace(trainer, max_steps=int(steps),
                               epochs=max(math.ceil(steps / per_epoch), 1))


def _tokenizer_hash(student: TrainConfig) -> str:
    """What the teacher outputs are aligned to: the student's token ids."""
    vocab = load_tokenizer(student.model).get_vocab()
    return hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()[:16]
