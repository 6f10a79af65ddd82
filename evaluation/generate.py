"""``evaluate`` for chat runs (``task=sft``): generate an answer per prompt, score it against
every reference that prompt has.

Rows that share a prompt (E2E: the references of one meaning representation) are grouped
first: each prompt is generated once and scored against all its references. Generation runs
through the same scoring UDF path as classification (in-process for small splits, Ray Data
actors otherwise): left-padded batches, greedy or beam search, ``max_new_tokens``, stopping at
the tokenizer's end-of-turn token. The base model's zero-shot answers, generated the same way,
are the baseline (as TF-IDF is for classification).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from data.delex import copy_values, relexicalize
from data.errors import ConfigError
from data.locations import resolve_location
from evaluation.gates import check_gates
from evaluation.generation import bootstrap, corpus_scores, per_example, prompt_groups
from evaluation.slots import slot_mentions, slot_report
from trainers.identity import digest, replaced_on_success
from trainers.models import inference_device, load_trained


def _prompt_and_answer(chat: str) -> tuple[list[dict[str, str]], str]:
    """The turns before the last answer (the prompt) and that answer (a reference)."""
    messages = json.loads(chat)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def group_prompts(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct prompt: its turns, every reference, the first row's source and
    metadata (slices), and how many rows it stands for.

    Delexicalised rows (``data.chat.delexicalize``): the prompt is what the model reads, the
    references are the data's own texts, and ``delex`` keeps the placeholders' values to
    write back into the answers. Prompts group by the data's prompt side (``text``) too: two
    MRs that differ only in a delexicalised value read alike but are answered apart."""
    parts = [_prompt_and_answer(c) for c in frame["chat"]]
    references = [a for _, a in parts]
    extra: dict[str, tuple[str, str]] = {}
    if "delex" in frame:
        references = [json.loads(d)["reference"] for d in frame["delex"]]
        extra["delex"] = ("delex", "first")
    frame = frame.assign(prompt=[json.dumps(p, ensure_ascii=False) for p, _ in parts],
                         reference=references)
    meta = [c for c in frame.columns if c.startswith("meta_")]
    grouped = frame.groupby(["prompt", "text"], sort=False)
    out = grouped.agg(_src=("_src", "first"), references=("reference", list),
                      rows=("reference", "size"), **extra,
                      **{c: (c, "first") for c in meta}).reset_index()
    return out


class Generate:
    """Ray Data class UDF: a run's model (or its base model) loads once, answers prompts."""

    def __init__(self, run_dir: str, batch_size: int, threads: int = 1,
                 max_new_tokens: int = 64, num_beams: int = 1, base: bool = False,
                 copy_values: list[str] | None = None, slot_pattern: str | None = None) -> None:
        from transformers import AutoModelForCausalLM  # the base model: only for the baseline

        self.model, self.tok, _, run = load_trained(Path(run_dir), merge_adapters=not base)
        if base:  # zero-shot baseline: the weights the run started from, no adapter
            self.model = AutoModelForCausalLM.from_pretrained(
                resolve_location(run.model.name_or_path, "model.name_or_path"))
        self.template = run.task.chat_template
        self.device = inference_device(self.model)
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.model.to(self.device).eval()
        self.batch_size, self.max_new_tokens, self.num_beams = \
            batch_size, max_new_tokens, num_beams
        # evaluate copy_values: the attributes whose values are mended, and their finder
        self.copy_values = list(copy_values or [])
        self.slots = re.compile(str(slot_pattern)) if self.copy_values else None
        for_generation(self.tok)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        answers, new_tokens, stopped = answer_chats(
            self.model, self.tok, batch["prompt"], self.template, self.max_new_tokens,
            self.num_beams, self.batch_size)
        out = {k: v for k, v in batch.items() if k != "references"}
        if "delex" in batch:  # the model wrote placeholders: the values go back in
            out["generated_delex"] = np.array(answers, dtype=object)
            answers = [relexicalize(a, json.loads(str(d))["values"])
                       for a, d in zip(answers, batch["delex"], strict=True)]
        if self.slots is not None:  # evaluate copy_values=[…]: values written whole
            answers, mended = copied_values(answers, batch["text"], self.slots,
                                            self.copy_values)
            out["values_mended"] = np.array(mended, dtype=np.int32)
        out.update(generated=np.array(answers, dtype=object),
                   new_tokens=np.array(new_tokens, dtype=np.int32),
                   stopped=np.array(stopped, dtype=bool))
        return out


def copied_values(answers: list[str], prompts: Any, slots: re.Pattern[str],
                  attributes: list[str]) -> tuple[list[str], list[int]]:
    """Each answer with its prompt's values of ``attributes`` (found by ``slots``, as written)
    that it writes in part written whole (``data.delex.copy_values``), and how many each."""
    out, mended = [], []
    for answer, prompt in zip(answers, prompts, strict=True):
        values = [v.strip() for k, v in slots.findall(str(prompt))
                  if k.strip() in attributes and v.strip()]
        text, n = copy_values(answer, values)
        out.append(text)
        mended.append(n)
    return out, mended


def for_generation(tok: Any) -> Any:
    """The tokenizer set to generate: left padding (generation continues from the right
    end) and a pad token."""
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def answer_chats(model: Any, tok: Any, chats: Any, template: str | None, max_new_tokens: int,
                 num_beams: int, batch_size: int) -> tuple[list[str], list[int], list[bool]]:
    """Each prompt (its turns as JSON) rendered with the generation prompt and answered:
    :func:`generate_answers` up to the end-of-turn token."""
    return generate_answers(model, tok, render_prompts(tok, chats, template),
                            end_of_turn_ids(tok), max_new_tokens, num_beams, batch_size)


def render_prompts(tok: Any, chats: Any, template: str | None) -> list[str]:
    """Each prompt (its turns as JSON) as text, the generation prompt after it."""
    return [tok.apply_chat_template(json.loads(str(c)), tokenize=False,
                                    add_generation_prompt=True, chat_template=template)
            for c in chats]


def end_of_turn_ids(tok: Any) -> list[int]:
    """The token ids an answer stops at: end of sequence and ChatML's end of turn."""
    return [i for i in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
            if isinstance(i, int) and i != tok.unk_token_id]


def generate_answers(model: Any, tok: Any, prompts: list[str], stop: list[int],
                     max_new_tokens: int, num_beams: int, batch_size: int
                     ) -> tuple[list[str], list[int], list[bool]]:
    """(answer text up to the first end-of-turn token, tokens generated before it, whether it
    came) per rendered prompt; left-padded, length-sorted batches, greedy or beam search."""
    if num_beams > 1 and not stop:  # transformers' beam search fails deep inside without one
        raise ConfigError("num_beams", f"beam search ({num_beams} beams) needs an end-of-turn "
                          "token to stop at, and the tokenizer has none (no eos, no "
                          "<|im_end|>)", "generate greedily (num_beams=1), or use a chat "
                          "model's tokenizer")
    answers, new_tokens, stopped = [""] * len(prompts), [0] * len(prompts), \
        [False] * len(prompts)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            idx = order[start:start + batch_size]
            enc = tok([prompts[i] for i in idx], add_special_tokens=False, padding=True,
                      return_tensors="pt").to(device)
            out = model.generate(input_ids=enc["input_ids"],
                                 attention_mask=enc["attention_mask"],
                                 max_new_tokens=max_new_tokens, num_beams=num_beams,
                                 do_sample=False, eos_token_id=stop,
                                 pad_token_id=tok.pad_token_id)
            for row, ids in zip(idx, out[:, enc["input_ids"].shape[1]:], strict=True):
                answers[row], new_tokens[row], stopped[row] = cut_at_stop(tok, ids.tolist(), stop)
    return answers, new_tokens, stopped


def cut_at_stop(tok: Any, ids: list[int], stop: list[int]) -> tuple[str, int, bool]:
    """One generated sequence as an answer: its text up to the first end-of-turn token, the
    tokens before it, and whether it came."""
    ends = [k for k, t in enumerate(ids) if t in stop]
    ids = ids[:ends[0]] if ends else ids
    return tok.decode(ids, skip_special_tokens=True).strip(), len(ids), bool(ends)


class GenerateBase(Generate):
    """The same generation from the run's base model: the zero-shot baseline."""

    def __init__(self, run_dir: str, batch_size: int, threads: int = 1,
                 max_new_tokens: int = 64, num_beams: int = 1,
                 copy_values: list[str] | None = None, slot_pattern: str | None = None) -> None:
        super().__init__(run_dir, batch_size, threads, max_new_tokens, num_beams, base=True,
                         copy_values=copy_values, slot_pattern=slot_pattern)


def score_generations(frame: pd.DataFrame, resamples: int) -> dict[str, Any]:
    """Corpus and per-example scores of ``frame`` (one row per prompt, ``generated`` and
    ``references``), each metric with its bootstrap interval over prompts."""
    hyps = [str(h) for h in frame["generated"]]
    refs = [list(r) for r in frame["references"]]
    examples = per_example(hyps, refs)
    corpus = corpus_scores(hyps, refs, examples)
    intervals = bootstrap(hyps, refs, examples, n=resamples)
    metrics: dict[str, Any] = {name: {"value": value, "ci_low": intervals[name]["low"],
                                      "ci_high": intervals[name]["high"]}
                               for name, value in corpus.items()}
    metrics.update(examples=len(hyps), references=int(sum(len(r) for r in refs)),
                   stopped=float(np.mean(frame["stopped"])),
                   mean_new_tokens=float(np.mean(frame["new_tokens"])))
    return {"metrics": metrics, "per_example": examples}


def write_generation_report(result: dict[str, Any], frame: pd.DataFrame, out: Path,
                            worst: int = 10) -> Path:
    """report.md: scores with intervals, the baseline beside them, the worst answers."""
    m, base = result["metrics"], result.get("baseline")
    lines = [f"# Evaluation: `{Path(result['run']).name}` on `{result['data']}` / "
             f"{result['split']}", "",
             f"{m['examples']} prompts, {m['references']} references; {m['stopped']:.0%} of "
             f"answers ended with the end-of-turn token (mean {m['mean_new_tokens']:.1f} "
             f"new tokens).{_relexicalized(frame)}{_copied(frame)}", "",
             "| metric | model | 95% CI | base model (zero-shot) |",
             "| --- | ---: | --- | ---: |"]
    for name in ("bleu", "bleu_uncased", "rouge_l", "chrf", "exact_match"):
        value = m[name]
        beside = f"{base[name]['value']:.2f}" if base else "—"
        lines.append(f"| {name} | {value['value']:.2f} | [{value['ci_low']:.2f}, "
                     f"{value['ci_high']:.2f}] | {beside} |")
    lines += ["", f"## The {worst} lowest ROUGE-L answers", "",
              "| prompt | answer | a reference | ROUGE-L |", "| --- | --- | --- | ---: |"]
    for _, row in frame.nsmallest(worst, "rouge_l").iterrows():
        cells = [str(row["text"]), str(row["generated"]), str(list(row["references"])[0])]
        cells = [c.replace("|", "\\|").replace("\n", " ")[:160] for c in cells]
        lines.append(f"| {cells[0]} | {cells[1]} | {cells[2]} | {row['rouge_l']:.1f} |")
    if result.get("slots"):
        lines += slot_report(result["slots"])
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=1, default=float))
    return path


def _copied(frame: pd.DataFrame) -> str:
    """A sentence on values written whole after generation (evaluate copy_values), if any."""
    if "values_mended" not in frame:
        return ""
    return (f" {int(frame['values_mended'].sum())} prompt values written in part were written "
            f"whole in {int((frame['values_mended'] > 0).sum())} answers (copy_values).")


def _relexicalized(frame: pd.DataFrame) -> str:
    """A sentence on answers written with placeholders (data.chat.delexicalize), if any."""
    if "generated_delex" not in frame:
        return ""
    changed = int((frame["generated_delex"] != frame["generated"]).sum())
    return (f" The model read and wrote placeholders (data.chat.delexicalize); {changed} "
            "answers had their values put back before scoring, against the data's own "
            "references.")


def finish_generation(cfg: Any, run_dir: Path, data_name: str, out_dir: Path,
                      made_by: dict[str, Any], prompts: pd.DataFrame, frame: pd.DataFrame,
                      base: pd.DataFrame | None, lost: Any,
                      slot_pattern: str | None = None) -> dict[str, Any]:
    """Score the generated answers (and the base model's), write predictions.parquet,
    metrics.json and report.md into ``out_dir`` atomically; return the result. With
    ``slot_pattern`` (``data.slot_pattern``), also which slot values the answers name."""
    refs = prompts.set_index("_src")["references"]  # _src: the prompt's first row, unique
    frame = frame.assign(references=[list(refs[p]) for p in frame["_src"]])
    scored = score_generations(frame, cfg.resamples)
    frame = frame.assign(**scored["per_example"])
    result: dict[str, Any] = {
        "run": str(run_dir), "split": cfg.split, "data": data_name,
        "metrics": scored["metrics"], "baseline": None, "slices": _slices(frame),
        "slice_metric": "rouge_l",
        "made_by": {**made_by, "rows": digest(sorted(frame["_src"].astype(str)))},
        "lost": lost, "slots": None}
    if "values_mended" in frame:  # evaluate copy_values=[…]
        result["values_mended"] = int(frame["values_mended"].sum())
    if slot_pattern:
        result["slots"] = slot_mentions(frame["text"], frame["generated"], frame["references"],
                                        slot_pattern)
    if base is not None:
        base = base.assign(references=[list(refs[p]) for p in base["_src"]])
        result["baseline"] = {"name": "base model, zero-shot",
                              **score_generations(base, cfg.resamples)["metrics"]}
    result["gates"] = check_gates(cfg.gate, result)
    with replaced_on_success(out_dir) as staging:
        frame.assign(references=[json.dumps(r, ensure_ascii=False) for r in
                                 frame["references"]]).to_parquet(
            staging / "predictions.parquet")
        report = write_generation_report(result, frame, staging).name
    result["report"] = str(out_dir / report)
    result["out_dir"] = str(out_dir)
    return result


def _slices(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Mean per-example ROUGE-L and BLEU by metadata column and by references per prompt."""
    groups = prompt_groups(frame, frame["references"].map(len))
    out = []
    for column, values in groups.items():
        for value in sorted(set(values)):
            part = frame[values == value]
            out.append({"slice": f"{column}={value}", "n": len(part),
                        "value": float(part["rouge_l"].mean()),  # the slice's headline
                        "rouge_l": float(part["rouge_l"].mean()),
                        "bleu": float(part["bleu"].mean())})
    return sorted(out, key=lambda s: s["rouge_l"])
