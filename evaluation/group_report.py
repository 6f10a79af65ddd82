"""``shardtune report PATH ...``: run groups side by side, from the local tracker alone.

Reads each group's seeds (metrics.jsonl, metrics.json, run_meta.json, aggregate.json); no W&B
needed. Writes report.md with PNGs: learning curves with a seed band, the metric's
distribution per configuration, comparisons with CIs against the first entry, the worst slices,
and a trend across versions (entries ordered by when they finished) for regression tracking.
The entries and their sections are read by ``report_entries``; this module draws and writes.

Entries are grouped by the data they were evaluated on: the data set's fingerprint in
run_meta.json (``dataset.fingerprint.sha256``), the evaluated split and its row count (a
``data.max_examples`` subset of the same files is other examples). Each group is a section of
its own; tables, plots, comparisons (against the section's first entry) and the trend never
cross sections. Entries without a recorded fingerprint are listed, never compared or trended.
A single seed shows its 95% CI over evaluation examples (``aggregate.example_interval``), or
``n=1 seed`` without an interval: never the collapsed across-seed CI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.aggregate import format_stat
from evaluation.compare import compare
from evaluation.config import CompareConfig, ReportConfig
from evaluation.report_entries import Entry, Section, collect, sections

SLICE_METRIC_NAMES = {"rouge_l": "ROUGE-L", "accuracy": "accuracy"}


def _pyplot() -> Any:
    """pyplot on the Agg backend (chosen before pyplot loads), imported when a plot is drawn."""
    import matplotlib  # a heavy import, made when a plot is drawn, not when tuning imports this

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(entries: list[Entry], key: str, out: Path, tag: str = "") -> Path | None:
    """Mean over seeds per step, with the min–max band across seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for entry in entries:
        series = []
        for member in entry.members:
            rows = [json.loads(line) for line in (member / "metrics.jsonl").read_text()
                    .splitlines() if line.strip()]
            series.append({r["step"]: r[key] for r in rows if key in r and not r.get("summary")})
        steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
        if len(steps) < 2:
            continue
        values = np.array([[s[t] for t in steps] for s in series])
        line, = ax.plot(steps, values.mean(0), label=f"{entry.name} ({len(series)} seeds)")
        if len(series) > 1:
            ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2,
                            color=line.get_color())
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="optimizer step", ylabel=key, title=f"{key}: mean over seeds, band = min–max")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"curve_{key.replace('/', '_')}{tag}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _distribution(entries: list[Entry], metric: str, out: Path, tag: str = "") -> Path | None:
    plt = _pyplot()
    data = [e.values(e.key) for e in entries]
    if not any(data):
        return None
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(entries), 4))
    ax.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.plot(i + rng.uniform(-0.08, 0.08, len(values)), values, "o", alpha=0.7)
    ax.set_xticks(range(1, len(entries) + 1), [e.name for e in entries], rotation=20,
                  fontsize=8)
    ax.set(ylabel=metric, title=f"{metric} per configuration (one dot per seed)")
    fig.tight_layout()
    path = out / f"distribution{tag}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _interval(entry: Entry) -> tuple[dict[str, float] | None, tuple[float, float] | None, str]:
    """The entry's statistic, its 95% CI (None: no interval) and what the CI is over."""
    stat = entry.stat(entry.key)
    if stat is None:
        return None, None, "—"
    if stat["n"] > 1:
        return stat, (stat["ci_low"], stat["ci_high"]), f"{stat['n']} seeds"
    example = entry.example_ci(entry.key)
    if example is None:
        return stat, None, "n=1 seed, no interval"
    size = f"{example['n']} " if "n" in example else ""
    return stat, (example["ci_low"], example["ci_high"]), f"{size}{entry.split} examples"


def _trend(entries: list[Entry], metric: str, out: Path, tag: str = ""
           ) -> tuple[list[str], Path | None]:
    """Entries of one section (same data and split) in the order they finished."""
    ordered = sorted(entries, key=lambda e: e.finished)
    shown = [_interval(e) for e in ordered]
    lines = ["| # | version | commit | seeds | mean | 95% CI | CI over | change |",
             "|---|---|---|---|---|---|---|---|"]
    previous = None
    for i, (entry, (stat, ci, over)) in enumerate(zip(ordered, shown, strict=True), start=1):
        mean = stat["mean"] if stat else float("nan")
        change = "" if previous is None or stat is None else f"{mean - previous:+.4f}"
        interval = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "—"
        shown_mean = f"{mean:.4f}" if stat else "—"  # not recorded: no number, not nan
        lines.append(f"| {i} | {entry.name} | `{entry.commit}` | {len(entry.members)} | "
                     f"{shown_mean} | {interval} | {over} | {change} |")
        if stat is not None:
            previous = mean
    if len(ordered) < 2:
        return lines, None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(ordered)), 3.5))
    means = np.array([s["mean"] if s else np.nan for s, _, _ in shown])
    cis = [ci or (m, m) for m, (_, ci, _) in zip(means, shown, strict=True)]  # none: no bar
    err = np.array([[m - lo for m, (lo, _) in zip(means, cis, strict=True)],
                    [hi - m for m, (_, hi) in zip(means, cis, strict=True)]])
    ax.errorbar(range(len(ordered)), means, yerr=err, fmt="o-", capsize=4)
    ax.set_xticks(range(len(ordered)), [e.name for e in ordered], rotation=20, fontsize=8)
    ax.set(ylabel=metric, title=f"{metric} across versions (95% CI across seeds; "
                                "one seed: over examples)")
    fig.tight_layout()
    path = out / f"trend{tag}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return lines, path


def _worst_slices(entry: Entry) -> list[str]:
    """Several seeds: accuracy across seeds per slice. One seed: the evaluation's slices with
    their CI over examples (the across-seed table would show collapsed intervals)."""
    if len(entry.members) > 1:
        worst = entry.aggregate.get("slices", [])[:8]
        if not worst:
            return []
        return ["", f"### Worst slices: {entry.name} (accuracy across {len(entry.members)} "
                "seeds)", "", "| slice | examples | mean ± std | 95% CI |", "|---|---|---|---|",
                *[f"| {s['slice']} | {s['examples']} | {s['mean']:.3f} ± {s['std']:.3f} | "
                  f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}] |" for s in worst]]
    saved = entry.members[0] / "eval" / entry.split / "metrics.json"
    if saved.exists():
        evaluated = json.loads(saved.read_text())
        worst = evaluated.get("slices", [])[:8]
        if worst:  # a chat run's slices: mean ROUGE-L over the slice's prompts, no interval
            recorded = evaluated.get("slice_metric") \
                or ("rouge_l" if "rouge_l" in worst[0] else "accuracy")  # saved before it was
            metric = SLICE_METRIC_NAMES.get(recorded, recorded)
            if not any(s.get("ci_high", 0) > s.get("ci_low", 0) for s in worst):
                return ["", f"### Worst slices: {entry.name} ({metric}, n=1 seed, no interval)",
                        "", f"| slice | examples | {metric} |", "|---|---|---|",
                        *[f"| {s['slice']} | {s['n']} | {s['value']:.3f} |" for s in worst]]
            return ["", f"### Worst slices: {entry.name} ({metric}, n=1 seed; 95% CI over "
                    "the slice's examples)", "", f"| slice | examples | {metric} | 95% CI |",
                    "|---|---|---|---|",
                    *[f"| {s['slice']} | {s['n']} | {s['value']:.3f} | "
                      + (f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
                         if s.get("ci_high", 0) > s.get("ci_low", 0) else "—") + " |"
                      for s in worst]]
    worst = entry.aggregate.get("slices", [])[:8]
    if not worst:
        return []
    return ["", f"### Worst slices: {entry.name} (accuracy, n=1 seed, no interval)", "",
            "| slice | examples | accuracy |", "|---|---|---|",
            *[f"| {s['slice']} | {s['examples']} | {s['mean']:.3f} |" for s in worst]]


def _section(sec: Section, cfg: ReportConfig, out: Path, tag: str) -> list[str]:
    entries = sec.entries
    key = entries[0].key
    second = key.replace("accuracy", "macro_f1") if "accuracy" in key else None
    lines = [f"| configuration | seeds | {key} | {second or ''} | min – max |",
             "|---|---|---|---|---|"]
    for e in entries:
        m = e.stat(e.key)
        other = e.key.replace("accuracy", "macro_f1") if second else None
        m2 = e.stat(other) if other else None
        span = f"{m['min']:.4f} – {m['max']:.4f}" if m and m["n"] > 1 else "—"
        lines.append(f"| {e.name} | {len(e.members)} | "
                     f"{format_stat(m, e.example_ci(e.key), e.split)} | "
                     f"{format_stat(m2, e.example_ci(other), e.split) if other else ''} | "
                     f"{span} |")
    if all(e.stat(e.key) is None for e in entries):  # e.g. chat runs under test/accuracy
        named = [k for k in entries[0].recorded() if k.split("/")[0] in ("test", "val")]
        lines += ["", f"No run here records `{key}`; pass `metric=` one they do"
                  + (f": {', '.join(f'`{k}`' for k in named[:8])}." if named else ".")]
    for curve in ("train/loss", "val/accuracy"):
        plot = _curves(entries, curve, out, tag)
        if plot:
            lines += ["", f"![{curve}]({plot.name})"]
    plot = _distribution(entries, key, out, tag)
    if plot:
        lines += ["", f"![distribution]({plot.name})"]
    if not sec.known:
        return lines + ["", "These runs record no data fingerprint (run_meta.json "
                        "`dataset.fingerprint.sha256`), or their seeds disagree on it: nothing "
                        "says they were evaluated on the same data, so they are neither compared "
                        "nor trended."]
    if len(entries) > 1:
        lines += ["", f"### Comparisons against {entries[0].name}", ""]
        for other in entries[1:]:
            try:
                res = compare(CompareConfig(a=str(entries[0].path), b=str(other.path),
                                            split=sec.split, compare=cfg.compare,
                                            paths=cfg.paths,
                                            out=str(out / f"compare_{other.name}")))
                lines.append(f"- **{res['verdict']}**: {res['headline']} "
                             f"([details](compare_{other.name}/compare.md))")
            except Exception as exc:  # noqa: BLE001 - one failed pair must not sink the report
                lines.append(f"- {other.name}: not compared ({exc})")
    for e in entries:
        lines += _worst_slices(e)
    table, plot = _trend(entries, key, out, tag)
    lines += ["", "### Trend across versions (ordered by finish time)", "", *table]
    if plot:
        lines += ["", f"![trend]({plot.name})"]
    return lines


def write_report(cfg: ReportConfig) -> Path:
    entries = collect(cfg.runs)
    out = Path(cfg.out) if cfg.out else Path(cfg.paths.runs) / "report"
    out.mkdir(parents=True, exist_ok=True)
    groups = sections(entries, cfg.metric, cfg.split)
    lines = ["# shardtune report", "",
             f"{len(entries)} configuration(s) on {len(groups)} data set(s) and split(s); "
             f"headline metric `{cfg.metric}`; mean ± std [95% bootstrap CI of the mean across "
             "seeds]. A single seed has no spread across seeds: it shows its 95% CI over the "
             "evaluation examples, or `n=1 seed` when its evaluation is not saved.", "",
             "One section per data set (name and fingerprint from run_meta.json), split and "
             "row count: entries on different data are never compared, differenced or "
             "trended together."]
    for i, sec in enumerate(groups, start=1):
        tag = "" if len(groups) == 1 else f"_{i}"
        lines += ["", f"## {sec.title}", "", *_section(sec, cfg, out, tag)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
