"""The distillation report: is the student good enough, and what did it buy?

Quality with CIs (teacher on the test split; student and control across seeds), the paired
comparison student vs control (did KD help?) and student vs teacher (what was lost), then
parameters, size on disk, CPU latency at batch 1 and 32 and throughput, measured here.

Every interval says what it is over: the teacher's and a one-seed arm's are 95% CIs over the
split's examples (a single seed has no spread across seeds to show), a seed group's the 95%
CI of the mean across seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.student import merged_teacher
from distill.teacher import load_teacher, teacher_dir
from evaluation.aggregate import describe, example_interval
from evaluation.compare import compare
from evaluation.config import CompareConfig, CompareSpec, EvaluateConfig, RerankChoice
from evaluation.evaluate import evaluate
from evaluation.generation import METRICS as GENERATION_METRICS
from evaluation.speed import measure
from trainers.config import TrainConfig
from trainers.models import load_trained


def quality_metric(run: TrainConfig) -> str | None:
    """What the report scores the arms by: accuracy for classification, BLEU for chat runs
    (the generation gate's default), nDCG@10 for retrieval embeddings and rerankers, Spearman
    for scored-pair embeddings (STS-B); None: no quality table (the loop's own metrics
    stand)."""
    if run.task.kind.value == "seq_cls":
        return "accuracy"
    if run.task.kind.value == "embedding" and run.task.embedding.scored:
        return "spearman"
    if run.task.kind.value in ("embedding", "rerank"):
        return "ndcg@10"
    return "bleu" if run.task.chat else None


def arm_metric(group: dict[str, Any], split: str, metric: str) -> dict[str, float]:
    """An arm's ``metric`` across its seeds: the loop's aggregate where it logs the metric,
    else each member's saved evaluation of ``split`` (generation scores are made there)."""
    logged = "val" if split == "validation" else split  # how the loop names the split's metrics
    if f"{logged}/{metric}" in group["metrics"]:
        return group["metrics"][f"{logged}/{metric}"]
    values = [json.loads((Path(m["run_dir"]) / "eval" / split / "metrics.json").read_text())
              ["metrics"][metric]["value"] for m in group["per_seed"]]
    return describe(values)


def quality_table(teacher: dict[str, float], summary: dict[str, Any], split: str,
                  figures: dict[str, Any], metric: str = "accuracy") -> list[str]:
    """Teacher, student and control ``metric`` on ``split``, each with the interval it has.

    ``teacher``: the evaluation's metric (value and CI over examples). A seed group shows
    mean ± std and the CI of the mean across seeds; a one-seed arm its CI over the examples
    (from its saved evaluation), or no interval: never the collapsed across-seed CI.
    """
    f = ".2f" if metric in GENERATION_METRICS else ".4f"  # BLEU & co. are in points
    size = f"{teacher['n']} " if "n" in teacher else ""
    lines = [f"| model | {split} {metric} | 95% CI | CI over | seeds |", "|---|---|---|---|---|",
             f"| teacher | {teacher['value']:{f}} | [{teacher['ci_low']:{f}}, "
             f"{teacher['ci_high']:{f}}] | {size}{split} examples | 1 |"]
    for name in ("student", "control"):
        group = summary.get(name)
        if not group:
            continue
        m = arm_metric(group, split, metric)
        figures[f"{name}_{metric}"] = m
        if m["n"] > 1:
            lines.append(f"| {name} | {m['mean']:{f}} ± {m['std']:{f}} | "
                         f"[{m['ci_low']:{f}}, {m['ci_high']:{f}}] | seeds | {m['n']} |")
            continue
        example = example_interval(Path(group["per_seed"][0]["run_dir"]), split, metric)
        figures[f"{name}_{metric}"] = {  # what compress shows for a one-seed student
            **m, "examples_ci": example and {**example, "split": split}}
        if example is None:
            lines.append(f"| {name} | {m['mean']:{f}} | — | n=1 seed, no interval | 1 |")
        else:
            n = f"{example['n']} " if "n" in example else ""
            lines.append(f"| {name} | {m['mean']:{f}} | [{example['ci_low']:{f}}, "
                         f"{example['ci_high']:{f}}] | {n}{split} examples (n=1 seed) | 1 |")
    return lines


def transfer_line(t: dict[str, Any], path: str, control: bool) -> str:
    """What the transfer set gave the student, and everything it did not keep."""
    return (f"Transfer prompts `{path}`: {t['read']} rows read; the student learned the "
            f"teacher's answers to **{t['answered']}** prompts ({t['rows']} training rows, "
            f"{t['truncated_tokens']} tokens cut at task.max_length); not kept: {t['bad']} bad "
            f"rows, {t['repeated']} repeats, {t['held_out']} validation/test prompts, "
            f"{t['unfinished']} answers unfinished at task.max_new_tokens."
            + (" The control trained as many steps on the answered rows alone."
               if control else ""))


def write_distill_report(run: TrainConfig, summary: dict[str, Any], root: Path,
                         texts: list[str] | list[tuple[str, str]]) -> Path:
    """``texts``: held-out texts (already read by the caller) for the speed measurements; a
    reranker's are (query, document) pairs."""
    spec = run.distill
    tdir = teacher_dir(spec.teacher)
    lines = [f"# Distillation `{root.name}`", "",
             f"Teacher `{spec.teacher}` → student ({spec.student}"
             + (f", teacher layers {summary['student_layers']}" if summary["student_layers"]
                else "") + f"); α={spec.alpha}, T={spec.temperature}, {spec.kl} KL, "
             f"teacher {spec.teacher_mode}.", ""]
    split = summary["student"]["eval_split"]
    figures: dict[str, Any] = {"split": split}
    if summary.get("transfer"):
        figures["transfer"] = t = summary["transfer"]
        lines += [transfer_line(t, spec.transfer_path, bool(summary.get("control"))), ""]
    metric = quality_metric(run)
    if metric and tdir is not None:
        teacher_eval = evaluate(EvaluateConfig(  # answers generated, candidates reranked
            run=str(tdir), split=split, baseline=False, data=run.data, paths=run.paths,
            max_new_tokens=run.task.max_new_tokens, num_beams=run.task.num_beams,
            rerank=RerankChoice(run.task.rerank.retriever, run.task.rerank.top_k,
                                run.task.rerank.fusion)))
        score = teacher_eval["metrics"][metric]
        figures["metric"], figures[f"teacher_{metric}"] = metric, score
        lines += quality_table(score, summary, split, figures, metric)
        student = figures[f"student_{metric}"]["mean"]
        figures["retention"] = student / score["value"] if score["value"] else None
        lines += ["", f"The student keeps **{100 * figures['retention']:.1f}%** of the "
                  f"teacher's {metric}." if score["value"] else
                  f"The teacher scores 0 {metric}: no retention figure."]
        pairs = [("control", "student", "did KD help? student (B) vs control (A)")]
        pairs.append(("teacher", "student", "what was lost: student (B) vs teacher (A)"))
        for a, b, title in pairs:
            if a == "control" and not summary.get("control"):
                continue
            a_path = str(tdir) if a == "teacher" else str(root / a)
            result = compare(CompareConfig(a=a_path, b=str(root / b), split=split,
                                           out=str(root / "compare" / f"{b}_vs_{a}"),
                                           compare=CompareSpec(metric=metric, min_effect=(
                                               1.0 if metric in GENERATION_METRICS  # points
                                               else CompareSpec.min_effect)),
                                           paths=run.paths))
            figures[f"{b}_vs_{a}"] = {"verdict": result["verdict"],
                                      **result["effects"][metric]}
            lines += ["", f"- {title}: **{result['verdict']}** — {result['headline']}"]
    teacher, tokenizer, _ = load_teacher(spec.teacher, run.task.kind)
    student_model = load_trained(Path(summary["student"]["per_seed"][0]["run_dir"]))[0]
    speed = {"teacher": measure(merged_teacher(teacher), tokenizer, texts, run.task.max_length),
             "student": measure(merged_teacher(student_model), tokenizer, texts,
                                run.task.max_length)}
    figures["speed"] = speed
    figures["throughput_ratio"] = speed["student"]["throughput_b32"] / \
        speed["teacher"]["throughput_b32"]
    lines += ["", "| | parameters | size on disk | CPU latency b=1 | CPU latency b=32 | "
              "throughput b=32 |", "|---|---|---|---|---|---|"]
    for name, s in speed.items():
        lines.append(f"| {name} | {s['params'] / 1e6:.1f} M | {s['disk_bytes'] / 2**20:.1f} MiB "
                     f"| {s['latency_b1_ms']:.1f} ms | {s['latency_b32_ms']:.1f} ms | "
                     f"{s['throughput_b32']:.0f} ex/s |")
    lines += ["", f"Student throughput: **{figures['throughput_ratio']:.2f}×** the teacher's "
              f"(both merged to plain weights; {len(texts)} test texts, CPU)."]
    (root / "distill.json").write_text(json.dumps(figures, indent=1, default=float))
    path = root / "distill_report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
