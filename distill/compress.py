"""``shardtune compress teacher=<run> [quant=int8]``: distil → quantise, a gate after each.

Stage 1 (``compress.distill``) is ``shardtune distill`` (student + control seed groups); its
gate compares the students' mean accuracy with the teacher's. Stage 2 (``compress.quantize``)
is ``shardtune quantize`` on the first student seed (or on the teacher when stage 1 is off);
its gate compares the quantised model with that full-precision seed, paired. The first failed
gate stops the chain and is named. ``compress_report.md`` puts every stage side by side, each
model's speed measured the same way (a process of its own).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data.errors import ConfigError
from distill.quant_config import QuantGate
from distill.quant_run import QuantizeConfig, quantize
from distill.run import distill
from distill.teacher import teacher_dir
from evaluation.aggregate import format_stat
from evaluation.speed import measure_isolated, speed_texts
from trainers.config import TrainConfig
from trainers.quant_spec import QuantSpec


def compress(run: TrainConfig) -> dict[str, Any]:
    spec = run.compress
    root = Path(run.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    if run.distill is None:
        raise ConfigError("distill.teacher", "compress needs a teacher",
                          "shardtune compress teacher=runs/<run>")
    tdir = teacher_dir(run.distill.teacher)
    if tdir is None:
        raise ConfigError("distill.teacher", "compress needs a finished run as the teacher "
                          "(its data and evaluation)", "pass teacher=runs/<run>")
    result: dict[str, Any] = {"run_dir": str(root), "teacher": str(tdir), "stages": [],
                              "failed": None}
    model_dir = tdir
    if spec.distill:
        summary = distill(run)
        figures = json.loads((root / "distill.json").read_text())
        teacher_acc = figures["teacher_accuracy"]["value"]
        student = figures["student_accuracy"]
        result["rows"] = [("teacher", figures["teacher_accuracy"]),
                          ("student (mean of seeds)", student)]
        drop = teacher_acc - student["mean"]
        passed = spec.max_drop_distill is None or drop <= spec.max_drop_distill + 1e-12
        result["stages"].append({"stage": "distill", "drop": drop, "passed": passed,
                                 "max_drop": spec.max_drop_distill,
                                 "report": summary["report"]})
        model_dir = Path(summary["student"]["per_seed"][0]["run_dir"])
        if not passed:
            result["failed"] = "distill"
            return _finish(result, root)
    if spec.quantize:
        quant = run.quant or QuantSpec()
        q = quantize(QuantizeConfig(run=str(model_dir), quant=quant, split="test",
                                    out=str(root / "quantized"), paths=run.paths,
                                    speed=spec.speed, speed_rows=spec.speed_rows,
                                    gate=QuantGate(max_drop=spec.max_drop_quantize)))
        result["stages"].append({"stage": "quantize", "drop": q["drop"],
                                 "passed": q["gate"]["passed"],
                                 "max_drop": spec.max_drop_quantize, "report": q["report"]})
        rows = result.setdefault("rows", [])
        name = "student seed" if spec.distill else "teacher (full precision)"
        rows += [(f"{name} `{model_dir.name}`", q["full"]),
                 (f"quantised ({quant.method})", q["quantized"])]
        result["speed"] = {rows[-2][0]: q.get("speed", {}).get("full"),
                           rows[-1][0]: q.get("speed", {}).get("quantized")}
        if not q["gate"]["passed"]:
            result["failed"] = "quantize"
    if spec.speed and spec.distill and run.task.kind.value == "seq_cls":
        result.setdefault("speed", {})["teacher"] = measure_isolated(
            tdir, speed_texts(model_dir, limit=spec.speed_rows))
    return _finish(result, root)


def _quality(m: dict[str, Any] | None) -> str:
    """Across seeds: mean ± std [CI of the mean]; one seed: its CI over examples (distill.json
    ``examples_ci``) or ``n=1 seed``; one evaluation: value [CI over examples]."""
    if m is None:
        return "–"
    if "mean" in m:
        example = m.get("examples_ci")
        return format_stat(m, example, (example or {}).get("split", "test"))
    return f"{m['value']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"


def _finish(result: dict[str, Any], root: Path) -> dict[str, Any]:
    lines = [f"# Compression `{root.name}`", "", f"Teacher `{result['teacher']}`.", "",
             "| model | accuracy (95% CI) | size on disk | latency b=1 | latency b=32 | "
             "throughput b=32 | weights in memory |", "|---|---|---|---|---|---|---|"]
    speed = result.get("speed", {})
    for name, quality in result.get("rows", []):
        s = speed.get(name)
        cells = ["–"] * 5 if not s else [
            f"{s['disk_bytes'] / 2**20:.1f} MiB", f"{s['latency_b1_ms']:.1f} ms",
            f"{s['latency_b32_ms']:.1f} ms", f"{s['throughput_b32']:.0f} ex/s",
            f"{s['tensor_mib']:.1f} MiB"]
        lines.append(f"| {name} | {_quality(quality)} | " + " | ".join(cells) + " |")
    lines += ["", "| stage | drop vs its input | gate | result | report |", "|---|---|---|---|---|"]
    for st in result["stages"]:
        gate = "none" if st["max_drop"] is None else f"≤ {st['max_drop']}"
        lines.append(f"| {st['stage']} | {100 * st['drop']:+.2f} pt | {gate} | "
                     f"{'passed' if st['passed'] else '**FAILED**'} | {st['report']} |")
    if result["failed"]:
        lines += ["", f"Stopped: the **{result['failed']}** gate failed."]
    path = root / "compress_report.md"
    path.write_text("\n".join(lines) + "\n")
    (root / "compress.json").write_text(json.dumps(result, indent=1, default=str))
    result["report"] = str(path)
    return result


def stage_message(result: dict[str, Any]) -> str:
    stage = next(s for s in result["stages"] if s["stage"] == result["failed"])
    return (f"gate failed at stage '{stage['stage']}': drop {stage['drop']:.4f} > "
            f"{stage['max_drop']} (compress.max_drop_{stage['stage']}); report: "
            f"{result['report']}")

