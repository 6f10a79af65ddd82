"""Evaluation report: Markdown with PNG plots (matplotlib, headless), worst things first."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.outputs import lost_line


def _plots(result: dict[str, Any], frame: pd.DataFrame, labels: list[str], out: Path) -> None:
    import matplotlib  # matplotlib loads when the plots are drawn, Agg chosen first

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = result["metrics"]["reliability"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label="model")
    ax.set(xlabel="confidence", ylabel="accuracy",
           title=f"Reliability (ECE {result['metrics']['ece']:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=110)
    plt.close(fig)

    n = len(labels)
    matrix = np.zeros((n, n))
    np.add.at(matrix, (frame["gold"].to_numpy(), frame["pred"].to_numpy()), 1)
    matrix = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = min(4 + n * 0.12, 16)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels, fontsize=7)
    ax.set(xlabel="predicted", ylabel="gold", title="Confusion matrix (row-normalised)")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=110)
    plt.close(fig)


def _est(d: dict | None) -> str:
    if not d:
        return "—"
    return f"{d['value']:.4f} [{d['ci_low']:.4f}, {d['ci_high']:.4f}]"


def _cell(text: str, width: int = 90) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def write_eval_report(result: dict[str, Any], frame: pd.DataFrame, labels: list[str],
                      out: Path) -> Path:
    _plots(result, frame, labels, out)
    m, base = result["metrics"], result.get("baseline") or {}
    lines = [f"# Evaluation: `{Path(result['run']).name}` on `{result['data']}` / "
             f"{result['split']}", "",
             f"{m['examples']} examples, {m['examples_per_s']:.1f} examples/s. "
             "95% bootstrap intervals in brackets.", "",
             *([lost_line(result["lost"]), ""] if result.get("lost") else []),
             "| metric | model | TF-IDF + LR baseline |", "| --- | ---: | ---: |",
             f"| accuracy | {_est(m['accuracy'])} | {_est(base.get('accuracy'))} |",
             f"| macro-F1 | {_est(m['macro_f1'])} | {_est(base.get('macro_f1'))} |",
             f"| micro-F1 | {m['micro_f1']:.4f} | |",
             f"| weighted-F1 | {m['weighted_f1']:.4f} | |",
             f"| top-3 / top-5 accuracy | {m['top3_accuracy']:.4f} / {m['top5_accuracy']:.4f} | |",
             f"| expected calibration error | {m['ece']:.4f} | |", ""]
    if result.get("gates"):
        lines += ["## Gates", "", "| gate | verdict | detail |", "| --- | --- | --- |"]
        lines += [f"| {g['gate']} | {'pass' if g['passed'] else '**FAIL**'} | {g['detail']} |"
                  for g in result["gates"]]
        lines.append("")
    lines += ["## Slices (worst first)", "", "| slice | n | accuracy [95% CI] | baseline |",
              "| --- | ---: | ---: | ---: |"]
    for s in result["slices"][:20]:
        b = f"{s['baseline']:.4f}" if "baseline" in s else "—"
        lines.append(f"| {s['slice']} | {s['n']} | {_est(s)} | {b} |")
    per_class = sorted(m["per_class"], key=lambda r: r["f1"])[:15]
    lines += ["", "## Weakest classes", "", "| class | precision | recall | F1 | support |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['label']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
              f"{r['support']} |" for r in per_class]
    wrong = frame[frame["gold"] != frame["pred"]]
    pairs = Counter(zip(wrong["gold"], wrong["pred"], strict=True)).most_common(10)
    lines += ["", "## Top confusions", "", "| gold | predicted | count |", "| --- | --- | ---: |"]
    lines += [f"| {labels[g]} | {labels[p]} | {c} |" for (g, p), c in pairs]
    lines += ["", "## Most confident mistakes", "",
              "| id | text | gold | predicted | confidence |", "| --- | --- | --- | --- | ---: |"]
    for _, row in wrong.sort_values("confidence", ascending=False).head(10).iterrows():
        lines.append(f"| {_cell(row['_src'], 40)} | {_cell(row['text'])} | {labels[row['gold']]} "
                     f"| {labels[row['pred']]} | {row['confidence']:.3f} |")
    lines += _errors_in_worst_slices(result, frame, labels, wrong)
    lines += ["", "![reliability](reliability.png)", "", "![confusion](confusion.png)", "",
              "Files: `predictions.parquet` (per example: `_src` id, text, gold, predicted, "
              "probabilities), `metrics.json`.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _errors_in_worst_slices(result: dict[str, Any], frame: pd.DataFrame, labels: list[str],
                            wrong: pd.DataFrame) -> list[str]:
    """A few mistakes from each of the three worst slices (metadata and length slices)."""
    lines = ["", "## Errors in the worst slices", ""]
    shown = 0
    for s in result["slices"]:
        column, _, value = s["slice"].partition("=")
        if column == "length" or column == "gold":
            mask = None if column == "length" else frame["gold"].map(lambda i: labels[i]) == value
        else:
            mask = frame.get(f"meta_{column}", pd.Series(dtype=str)).astype(str) == value
        if mask is None:
            continue
        errors = wrong[mask.reindex(wrong.index, fill_value=False)].head(3)
        if errors.empty:
            continue
        lines.append(f"**{s['slice']}** (accuracy {s['value']:.3f}, n={s['n']}):")
        lines += [f"- `{_cell(r['text'], 80)}`: gold {labels[r['gold']]}, predicted "
                  f"{labels[r['pred']]}" for _, r in errors.iterrows()]
        lines.append("")
        shown += 1
        if shown == 3:
            break
    return lines if shown else []
