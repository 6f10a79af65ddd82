"""Markdown + PNG for one comparison: the verdict first, then metrics, then slices."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pt(metric: str, value: float) -> str:
    return f"{100 * value:+.1f}" if "accuracy" in metric or "f1" in metric else f"{value:+.4f}"


def forest_plot(slices: list[dict[str, Any]], out: Path, metric: str = "accuracy",
                limit: int = 25) -> Path | None:
    """Slice deltas with CIs, worst first: a regression stands out as a bar left of zero."""
    rows = [s for s in slices if s.get("tested")][:limit]
    if not rows:
        return None
    import matplotlib  # matplotlib loads when the plot is drawn, Agg chosen first

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 100 if "accuracy" in metric or "f1" in metric else 1  # fractions → points
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * len(rows)))
    y = list(range(len(rows)))[::-1]
    for yi, row in zip(y, rows, strict=True):
        color = "tab:red" if row.get("regression") else \
            "tab:green" if row.get("improvement") else "tab:grey"
        ax.plot([scale * row["low"], scale * row["high"]], [yi, yi], color=color, lw=2)
        ax.plot(scale * row["delta"], yi, "o", color=color)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{r['slice']} (n={r['n']})" for r in rows], fontsize=7)
    ax.set(xlabel=f"{metric} delta B − A (points, 95% CI)", title="Per-slice deltas, worst first")
    fig.tight_layout()
    path = out / "slice_deltas.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_compare_report(result: dict[str, Any], out: Path) -> Path:
    lines = [f"# Comparison: {Path(result['b']).name} vs {Path(result['a']).name}", "",
             f"**{result['verdict'].upper()}** — {result['headline']}", ""]
    if result.get("reason"):
        lines += [f"Verdict changed to *iterate*: {result['reason']}.", ""]
    if result.get("note"):
        lines += [f"Note: {result['note']}.", ""]
    where = f"each run's `{result['data']}/`" if result.get("data") else "the runs' own"
    lines += [f"- A (reference): `{result['a']}` ({result['seeds']['a']} run(s))",
              f"- B (candidate): `{result['b']}` ({result['seeds']['b']} run(s))",
              f"- data: {where}, {result['split']} split; ship = CI excludes 0 and B − A ≥ "
              f"{result['min_effect']}; stop = CI rules out that much; iterate = undecided", "",
              "| metric | A | B | B − A | 95% CI | p |", "|---|---|---|---|---|---|"]
    for metric, e in result["effects"].items():
        lines.append(f"| {metric} | {e['a']:.4f} | {e['b']:.4f} | {_pt(metric, e['delta'])} | "
                     f"[{_pt(metric, e['low'])}, {_pt(metric, e['high'])}] | "
                     f"{e['p_value']:.3g} |")
    slices, metric = result["slices"], result.get("slice_metric", "accuracy")
    if slices:
        plot = forest_plot(slices, out, metric)
        flagged = [s for s in slices if s.get("regression")]
        lines += ["", f"## Slices ({metric}, points; p BH-adjusted over tested slices)", ""]
        if flagged:
            lines.append(f"**{len(flagged)} slice(s) regress significantly:** "
                         + ", ".join(f"{s['slice']} {_pt(metric, s['delta'])}"
                                     for s in flagged))
            lines.append("")
        if plot:
            lines += [f"![slice deltas]({plot.name})", ""]
        lines += ["| slice | n | A | B | B − A | 95% CI | p (adj.) | |",
                  "|---|---|---|---|---|---|---|---|"]
        shown = [s for s in slices if s.get("tested")][:30]
        for s in shown:
            mark = "regression" if s.get("regression") else \
                "improvement" if s.get("improvement") else ""
            lines.append(f"| {s['slice']} | {s['n']} | {s['a']:.3f} | {s['b']:.3f} | "
                         f"{_pt(metric, s['delta'])} | [{_pt(metric, s['low'])}, "
                         f"{_pt(metric, s['high'])}] | {s['p_adjusted']:.3g} | {mark} |")
        small = [s for s in slices if not s.get("tested")]
        if small:
            lines += ["", f"{len(small)} slice(s) below compare.min_slice_size were not tested."]
    path = out / "compare.md"
    path.write_text("\n".join(lines) + "\n")
    return path
