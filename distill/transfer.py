"""Transfer prompts: inputs without answers that the teacher answers and the student learns.

A chat teacher trained on a few hundred answered prompts knows more than those answers show:
what it says to prompts nobody answered is its generalisation, and the classic way to hand that
on is a transfer set (Hinton et al. 2015) of inputs the student would otherwise never see.
``distill.transfer_path`` names such prompts (the training data's shape and fields, no answer
needed). The teacher answers each once (greedy or beam, the run's ``task.max_new_tokens``,
cached with provenance); the answers join the training split as chats, so the student learns
them as sequence-level KD (Kim & Rush 2016) with the teacher's top-k distribution at every
answer token beside them (the offline pass covers them like any row). The control never sees
them and trains as many steps on the answered rows alone.

Nothing is dropped silently: prompts that repeat, that are a validation or test prompt (which
would leak the held-out answers' teacher into training), answers that hit ``max_new_tokens``
before the end-of-turn token (a cut answer would teach the student to stop mid-sentence) and
bad rows under ``data.on_error=skip`` are counted into ``distill.json`` and the report.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from data.chat import prompt_text, to_messages
from data.config import DataConfig, OnError
from data.delex import as_model_reads
from data.errors import ConfigError, DataError
from data.inprocess import from_blocks, to_block
from data.shards import RowError, detect_format, expand_paths, iter_records
from data.tokenize import tokenize_splits
from distill.teacher import PROVENANCE, check_provenance, fingerprint, load_teacher
from evaluation.generate import answer_chats, for_generation
from trainers.config import TaskKind
from trainers.identity import replaced_on_success
from trainers.scaling import inference_here, inference_window

ANSWERS = "answers.parquet"
ANSWER_TYPES = {"prompt": object, "text": object, "_src": object, "answer": object,
                "new_tokens": np.int32, "stopped": bool}


def read_prompts(path: str, data: DataConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per distinct prompt of ``path`` (``prompt``: its turns as JSON, ``text``: its
    prompt side, ``_src``: where it was first read) and the counts of what was not kept."""
    skip = data.on_error == OnError.skip
    rows, counts = [], {"read": 0, "bad": 0}
    for shard in expand_paths([path], "distill.transfer_path", data.format):
        fmt = detect_format(shard, data.format)
        for where, record in iter_records(shard, fmt, data.columns, skip_bad=skip):
            counts["read"] += 1
            try:
                if isinstance(record, RowError):
                    raise record
                messages = to_messages(record, data.chat, where, answered=False)
            except DataError:
                if not skip:
                    raise
                counts["bad"] += 1
                continue
            text = prompt_text(messages)  # as the data has it: the held-out check reads it
            if delex := as_model_reads(messages, data):  # the teacher reads placeholders
                messages = delex.messages
            rows.append({"prompt": json.dumps(messages, ensure_ascii=False),
                         "text": text, "_src": where})
    frame = pd.DataFrame(rows, columns=["prompt", "text", "_src"])
    distinct = frame.drop_duplicates("prompt").reset_index(drop=True)
    counts["repeated"] = len(frame) - len(distinct)
    return distinct, counts


def held_out_texts(splits: dict[str, Any]) -> set[str]:
    """The prompt sides of the validation and test rows: no transfer prompt may be one."""
    out: set[str] = set()
    for name in ("validation", "test"):
        if name in splits:
            for batch in splits[name].select_columns(["text"]).iter_batches(
                    batch_format="numpy"):
                out.update(str(t) for t in batch["text"])
    return out


class TransferAnswers:
    """Ray Data class UDF (and the in-process path): the teacher answers rendered prompts."""

    def __init__(self, location: str, task: str, template: str | None, max_new_tokens: int,
                 num_beams: int, batch_size: int, threads: int = 1, loaded: Any = None) -> None:
        self.model, tok, _ = loaded or load_teacher(location, TaskKind(task))
        self.tok = for_generation(copy.copy(tok))  # the caller's tokenizer stays as it was
        if torch.cuda.is_available():
            self.model.to("cuda")
        elif loaded is None:
            torch.set_num_threads(threads)
        self.template, self.max_new_tokens, self.num_beams, self.batch_size = \
            template, max_new_tokens, num_beams, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        answers, new_tokens, stopped = answer_chats(
            self.model, self.tok, batch["prompt"], self.template, self.max_new_tokens,
            self.num_beams, self.batch_size)
        return {**batch, "answer": np.array(answers, dtype=object),
                "new_tokens": np.array(new_tokens, dtype=np.int32),
                "stopped": np.array(stopped, dtype=bool)}


def answered_prompts(prompts: pd.DataFrame, run: Any, out_dir: Path, teacher: Any,
                     wanted: dict[str, Any]) -> pd.DataFrame:
    """The teacher's answer to every prompt: reused from ``out_dir`` when its provenance
    matches ``wanted``, else generated (here, or a Ray Data actor: see
    ``inference_here``)."""
    spec = run.distill
    stamp = out_dir / PROVENANCE
    if stamp.exists() and not spec.recompute:
        check_provenance(json.loads(stamp.read_text()), wanted, out_dir)
        return pd.read_parquet(out_dir / ANSWERS).astype(ANSWER_TYPES)
    print(f"distill: the teacher answers {len(prompts)} transfer prompts (once; cached in "
          f"{out_dir})", flush=True)  # minutes on a CPU: say what the wait is
    settings = {"location": spec.teacher, "task": run.task.kind.value,
                "template": run.task.chat_template, "max_new_tokens": run.task.max_new_tokens,
                "num_beams": run.task.num_beams, "batch_size": run.trainer.eval_batch_size}
    if inference_here(len(prompts), spec.inprocess_rows):  # windows of inprocess_rows prompts
        answer = TransferAnswers(**settings, loaded=teacher)
        window = inference_window(len(prompts), spec.inprocess_rows)
        made = pd.concat([pd.DataFrame(answer({k: part[k].to_numpy(dtype=object)
                                               for k in part.columns}))
                          for part in (prompts.iloc[i:i + window]
                                       for i in range(0, max(len(prompts), 1), window))],
                         ignore_index=True)
    else:
        import ray  # only the actor path needs Ray here
        import ray.data

        gpus = 1 if torch.cuda.is_available() else 0
        threads = max(int(ray.cluster_resources().get("CPU", 1)), 1)
        made = ray.data.from_pandas(prompts).map_batches(
            TransferAnswers, fn_constructor_kwargs={**settings, "threads": threads},
            batch_size=256, concurrency=1, num_gpus=gpus, num_cpus=0 if gpus else 1,
            batch_format="numpy").to_pandas()
    made = made.astype(ANSWER_TYPES)  # one frame from either path (Ray's is arrow-typed)
    with replaced_on_success(out_dir) as staging:  # whole, even with two runs at once
        made.to_parquet(staging / ANSWERS)
        (staging / PROVENANCE).write_text(json.dumps(wanted, indent=1))  # last
    return made


def answers_stamp(prompts: pd.DataFrame, run: Any, tokenizer_hash: str) -> dict[str, Any]:
    """What cached answers must have been made from: the teacher, these prompts, how they
    were rendered and the generation settings."""
    digest = hashlib.sha256("\n".join(sorted(prompts["prompt"])).encode()).hexdigest()
    return {"teacher": run.distill.teacher, "teacher_fingerprint": fingerprint(
                run.distill.teacher), "prompts": digest, "tokenizer": tokenizer_hash,
            "chat_template": run.task.chat_template,
            "max_new_tokens": run.task.max_new_tokens, "num_beams": run.task.num_beams}


def transfer_rows(prep: Any, run: Any, tokenizer_path: str, teacher: Any, out_dir: Path,
                  tokenizer_hash: str) -> tuple[Any, int, dict[str, Any]]:
    """The training split plus the teacher-answered transfer chats, tokenised like it; its
    new row count; and the counts of what the transfer set kept and dropped."""
    prompts, counts = read_prompts(run.distill.transfer_path, run.data)
    held_out = held_out_texts(prep.splits.datasets)
    leaked = prompts["text"].isin(held_out)
    counts["held_out"] = int(leaked.sum())
    prompts = prompts[~leaked].reset_index(drop=True)
    if prompts.empty:
        raise ConfigError("distill.transfer_path", f"{run.distill.transfer_path}: no prompt "
                          f"left to answer ({counts['read']} rows read, {counts['bad']} bad, "
                          f"{counts['repeated']} repeated, {counts['held_out']} validation or "
                          "test prompts)", "give prompts the held-out splits do not hold")
    wanted = answers_stamp(prompts, run, tokenizer_hash)
    answers = answered_prompts(prompts, run, out_dir, teacher, wanted)
    made_from = {k: v for k, v in wanted.items() if k != "teacher"}  # not how it is spelt
    counts["identity"] = hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()
                                        ).hexdigest()[:16]  # what the rows were made from
    finished = answers["stopped"].astype(bool) & (answers["answer"].str.strip() != "")
    counts["unfinished"] = int((~finished).sum())
    kept = answers[finished]
    counts["answered"] = len(kept)
    if kept.empty:
        raise ConfigError("distill.transfer_path", f"the teacher finished none of its "
                          f"{len(answers)} answers within task.max_new_tokens="
                          f"{run.task.max_new_tokens}", "raise task.max_new_tokens")
    chats = [json.dumps([*json.loads(p), {"role": "assistant", "content": a}],
                        ensure_ascii=False) for p, a in zip(kept["prompt"], kept["answer"],
                                                            strict=True)]
    rows = from_blocks([to_block({
        "chat": np.array(chats, dtype=object), "text": kept["text"].to_numpy(dtype=object),
        "_src": np.array([f"{s}#transfer" for s in kept["_src"]], dtype=object)})])
    tokenized = tokenize_splits(
        {"transfer": rows}, tokenizer_path, "sft", run.task.max_length, [], run.task.pack,
        run.data.tokenize_actors, True, run.data.task_rows, run.task.chat_template,
        run.data.chat.train_on_prompt, run.data.driver_rows)["transfer"]
    counts["rows"] = tokenized.count()  # packed: several chats a row
    counts["truncated_tokens"] = int(sum(
        int(np.sum(b["truncated"])) for b in tokenized.iter_batches(batch_format="numpy")))
    counts["answers"] = str(out_dir / ANSWERS)
    train = prep.datasets["train"].union(tokenized).materialize()
    return train, prep.train_rows + counts["rows"], counts
