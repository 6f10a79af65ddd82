"""``shardtune quantize run=<run> quant=<method>``: merge, quantise, reload, evaluate, gate.

1. The run's model is loaded and any adapter merged into full-precision weights (a QLoRA base
   is dequantised first); quantising before merging is refused.
2. Linear layers (task head excluded) are quantised and saved as a run-like directory
   ``<run>/quant/<method>/`` (config, labels, tokenizer, ``model/quantized.safetensors``).
3. The saved model is reloaded from disk and evaluated through the evaluation harness beside
   the full-precision model on the same split; the paired bootstrap gives the drop with a CI.
4. Size on disk, bytes of linear weights, CPU latency b1/b32, throughput and resident memory,
   each model measured in a process of its own; ``quantize.json`` + ``report.md``.
5. ``gate.max_drop``: exit code 1 when the drop is larger.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from data.errors import ConfigError
from distill.quant_config import QuantizeConfig
from evaluation.compare import compare
from evaluation.config import CompareConfig, CompareSpec, EvaluateConfig
from evaluation.evaluate import evaluate
from evaluation.generation import METRICS as GENERATION_METRICS
from evaluation.retrieval import METRICS as RETRIEVAL_METRICS
from evaluation.speed import measure_isolated, speed_texts
from trainers.config import PathsConfig
from trainers.models import load_run_config, load_trained
from trainers.quant_spec import QuantSpec
from trainers.quantize import (
    linear_bytes,
    merge_full_precision,
    quantize_linears,
    resolve_device,
    save_quantized,
    target_linears,
)
from trainers.storage import local_run

HIGHER_WORSE = ("perplexity", "loss")
GATE_METRICS = {"seq_cls": ("accuracy", "macro_f1"), "token_cls": ("entity_f1",),
                "causal_lm": ("perplexity",), "chat": GENERATION_METRICS,
                "embedding": RETRIEVAL_METRICS, "rerank": RETRIEVAL_METRICS,
                "similarity": ("spearman", "pearson")}
# compare pairs them per example, prompt or query
PAIRED = ("accuracy", "macro_f1", *GENERATION_METRICS, *RETRIEVAL_METRICS, "spearman",
          "pearson")


def source_dir(run: str, paths: PathsConfig) -> Path:
    src = Path(local_run(run, "run", paths)).expanduser()
    if not src.is_absolute():
        src = Path(paths.root) / src
    if not (src / "config.json").is_file():
        raise ConfigError("run", f"{src} is not a finished shardtune run (no config.json)",
                          "pass runs/<name> (or runs/<group>/seed<k>) of a finished run")
    if (src / "model" / "quantization.json").is_file():
        raise ConfigError("run", f"{src} is already quantised",
                          "quantise the full-precision run it came from")
    return src


def write_quantized(src: Path, spec: QuantSpec, out: Path) -> dict[str, Any]:
    """Steps 1–2: merged full-precision model → quantised, saved run-like directory."""
    device = resolve_device(spec)
    model, tokenizer, _, _ = load_trained(src)
    full = merge_full_precision(model)
    names = target_linears(full, list(spec.skip_modules))
    fp_bytes = linear_bytes(full, names)
    quantize_linears(full, spec, device, names)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("config.json", "label_map.json"):
        shutil.copy(src / name, out / name)
    tokenizer.save_pretrained(out / "tokenizer")
    save_quantized(full, spec, names, out / "model", {"source": str(src)})
    return {"modules": len(names), "linear_bytes_fp": fp_bytes,
            "linear_bytes_quant": linear_bytes(full, names)}


def gate_metric(asked: str, task: str, chat: bool = False, scored: bool = False) -> str:
    """The metric the gate compares: ``asked`` if the task reports it with a CI; the default
    (accuracy) becomes the task's headline metric (BLEU for chat runs, whose evaluation
    generates answers; nDCG@10 for retrieval embeddings and rerankers, Spearman for ``scored``
    similarity ones). Checked before any work is done."""
    task = "chat" if chat else "similarity" if task == "embedding" and scored else task
    if task not in GATE_METRICS:
        raise ConfigError("run", f"quantising a {task} run is not supported",
                          "quantise seq_cls, token_cls, causal_lm, sft, embedding or rerank runs")
    allowed = GATE_METRICS[task]
    if asked in allowed:
        return asked
    if asked == "accuracy":
        return allowed[0]
    raise ConfigError("gate.metric", f"{asked!r} is not reported for {task} runs",
                      f"one of: {', '.join(allowed)}")


def quantize(cfg: QuantizeConfig) -> dict[str, Any]:
    spec = cfg.quant
    src = source_dir(cfg.run, cfg.paths)
    task = load_run_config(src).task
    metric = gate_metric(cfg.gate.metric, task.kind.value, task.chat, task.embedding.scored)
    out = Path(cfg.out).expanduser() if cfg.out else src / "quant" / spec.method
    sizes = write_quantized(src, spec, out)

    def scored(run_dir: Path) -> dict[str, Any]:
        return evaluate(EvaluateConfig(run=str(run_dir), split=cfg.split, baseline=False,
                                       resamples=cfg.resamples, rerank=cfg.rerank,
                                       paths=cfg.paths))

    full, quant = scored(src), scored(out)  # the quantised model as reloaded from disk
    logged = {f"{cfg.split}/{k}": v["value"] for k, v in quant["metrics"].items()
              if isinstance(v, dict) and "value" in v}
    (out / "metrics.json").write_text(json.dumps({**logged, "quantized": spec.method,
                                                  "source": str(src)}, indent=1))
    a, b = full["metrics"][metric], quant["metrics"][metric]
    drop = (b["value"] - a["value"]) if metric in HIGHER_WORSE else (a["value"] - b["value"])
    result: dict[str, Any] = {
        "run": str(src), "out": str(out), "method": spec.method, "split": cfg.split,
        "metric": metric, "full": a, "quantized": b, "drop": drop, **sizes,
        "linear_ratio": sizes["linear_bytes_fp"] / max(sizes["linear_bytes_quant"], 1)}
    if metric in PAIRED:  # examples, prompts, queries or scored pairs: paired on the same ones
        paired = compare(CompareConfig(a=str(src), b=str(out), split=cfg.split,
                                       out=str(out / "compare"), paths=cfg.paths,
                                       compare=CompareSpec(metric=metric, min_effect=0.0)))
        effect = paired["effects"][metric]
        result["paired"] = {"delta": effect["delta"], "ci_low": effect["low"],
                            "ci_high": effect["high"], "p_value": effect["p_value"],
                            "n": effect["n"]}
    if cfg.speed and (texts := speed_texts(src, (cfg.split,), cfg.speed_rows)):
        result["speed"] = {"full": measure_isolated(src, texts),
                           "quantized": measure_isolated(out, texts)}
    gate = cfg.gate.max_drop
    result["gate"] = {"max_drop": gate, "passed": gate is None or drop <= gate + 1e-12}
    (out / "quantize.json").write_text(json.dumps(result, indent=1, default=float))
    result["report"] = str(write_report(result, out))
    return result


def _fmt(m: dict[str, Any]) -> str:
    return f"{m['value']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"


def _points(metric: str) -> float:
    """Factor to percentage points: accuracy/F1 are fractions, BLEU/chrF/ROUGE-L already
    points."""
    return 1.0 if metric in GENERATION_METRICS else 100.0


def write_report(result: dict[str, Any], out: Path) -> Path:
    metric = result["metric"]
    pts = _points(metric)
    lines = [f"# Quantisation `{result['method']}` of `{result['run']}`", "",
             f"Merged to full precision, then {result['modules']} linear layers quantised "
             f"({result['method']}); the model below was reloaded from `{out}/model`.", "",
             f"| model | {result['split']} {metric} (95% CI) | linear weights | size on disk | "
             "latency b=1 | latency b=32 | throughput b=32 | weights in memory (peak RSS) |",
             "|---|---|---|---|---|---|---|---|"]
    speed = result.get("speed", {})
    for name, bytes_key in (("full", "linear_bytes_fp"), ("quantized", "linear_bytes_quant")):
        s = speed.get(name)
        cells = ["–"] * 5 if s is None else [
            f"{s['disk_bytes'] / 2**20:.1f} MiB", f"{s['latency_b1_ms']:.1f} ms",
            f"{s['latency_b32_ms']:.1f} ms", f"{s['throughput_b32']:.0f} ex/s",
            f"{s['tensor_mib']:.1f} MiB ({s['peak_rss_mib']:.0f} MiB)"]
        lines.append(f"| {name} | {_fmt(result[name])} | {result[bytes_key] / 2**20:.2f} MiB | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Linear weights **{result['linear_ratio']:.2f}×** smaller; {metric} drop "
              f"**{pts * result['drop']:+.2f} pt**" if metric not in HIGHER_WORSE else
              f"{metric} rise **{result['drop']:+.4f}**"]
    if "paired" in result:
        p = result["paired"]
        unit = "prompts" if metric in GENERATION_METRICS else \
            "queries" if metric in RETRIEVAL_METRICS else "examples"
        lines.append(f"\nPaired bootstrap (quantised − full, {p['n']} {unit}): "
                     f"{pts * p['delta']:+.2f} pt [{pts * p['ci_low']:+.2f}, "
                     f"{pts * p['ci_high']:+.2f}], p = {p['p_value']:.3g}.")
    gate = result["gate"]
    if gate["max_drop"] is not None:
        lines += ["", f"Gate `gate.max_drop={gate['max_drop']}`: "
                  + ("**passed**" if gate["passed"] else "**FAILED**")]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def gate_message(result: dict[str, Any]) -> str:
    return (f"gate failed: {result['method']} {result['metric']} drop "
            f"{result['drop']:.4f} > gate.max_drop={result['gate']['max_drop']} "
            f"({_fmt(result['full'])} → {_fmt(result['quantized'])}); report: "
            f"{result['report']}")
