"""``shardtune report PATH ...``: run groups side by side, from the local tracker alone.

Reads each group's seeds (metrics.jsonl, metrics.json, run_meta.json, aggregate.json); no W&B
needed. Writes report.md with PNGs: learning curves with a seed band, the metric's
distribution per configuration, comparisons with CIs against the first entry, the worst slices,
and a trend across versions (entries ordered by when they finished) for regression tracking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainers.aggregate import aggregate_metrics, describe
from trainers.errors import DataError
from trainers.eval_config import CompareConfig, ReportConfig

GROUP_FILE = "group.json"


@dataclass
class Entry:
    """A configuration in the report: a seed group, or one run standing alone."""

    name: str
    path: Path
    members: list[Path]
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    aggregate: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> float:
        return max((m / "metrics.json").stat().st_mtime for m in self.members)

    @property
    def commit(self) -> str:
        meta = json.loads((self.members[0] / "run_meta.json").read_text())
        return meta.get("git", {}).get("commit", "unknown")[:10]


def _entry(path: Path) -> Entry | None:
    if (path / GROUP_FILE).exists():
        members = [Path(m) for m in json.loads((path / GROUP_FILE).read_text())["members"]]
    elif (path / "config.json").exists():
        members = [path]
    else:
        return None
    members = [m for m in members if (m / "metrics.json").exists()]
    if not members:
        return None
    entry = Entry(path.name, path, members)
    entry.per_seed = [json.loads((m / "metrics.json").read_text()) for m in members]
    agg_file = path / "aggregate.json"
    entry.aggregate = json.loads(agg_file.read_text()) if agg_file.exists() else {
        "metrics": aggregate_metrics(entry.per_seed), "slices": []}
    return entry


def collect(paths: list[str]) -> list[Entry]:
    """Groups and runs named, or found one level below a folder such as ``runs/``."""
    entries: list[Entry] = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if not path.is_dir():
            raise DataError(str(path), "no such run, group or folder")
        found = _entry(path)
        if found is None:
            found_below = [e for e in (_entry(p) for p in sorted(path.iterdir()) if p.is_dir())
                           if e is not None]
            if not found_below:
                raise DataError(str(path), "holds no finished run or run group",
                                "train one first, or point at runs/<name>")
            entries += sorted(found_below, key=lambda e: e.finished)
        else:
            entries.append(found)
    return entries


def _curves(entries: list[Entry], key: str, out: Path) -> Path | None:
    """Mean over seeds per step, with the min–max band across seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    path = out / f"curve_{key.replace('/', '_')}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _distribution(entries: list[Entry], metric: str, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [[m[metric] for m in e.per_seed if metric in m] for e in entries]
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
    path = out / "distribution.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _trend(entries: list[Entry], metric: str, out: Path) -> tuple[list[str], Path | None]:
    ordered = sorted(entries, key=lambda e: e.finished)
    stats = [describe([m[metric] for m in e.per_seed if metric in m] or [float("nan")])
             for e in ordered]
    lines = ["| # | version | commit | seeds | mean | 95% CI | change |",
             "|---|---|---|---|---|---|---|"]
    previous = None
    for i, (entry, s) in enumerate(zip(ordered, stats, strict=True), start=1):
        change = "" if previous is None else f"{s['mean'] - previous:+.4f}"
        lines.append(f"| {i} | {entry.name} | `{entry.commit}` | {s['n']} | {s['mean']:.4f} | "
                     f"[{s['ci_low']:.4f}, {s['ci_high']:.4f}] | {change} |")
        previous = s["mean"]
    if len(ordered) < 2:
        return lines, None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(ordered)), 3.5))
    means = np.array([s["mean"] for s in stats])
    err = np.array([[s["mean"] - s["ci_low"] for s in stats], [s["ci_high"] - s["mean"]
                                                                for s in stats]])
    ax.errorbar(range(len(ordered)), means, yerr=err, fmt="o-", capsize=4)
    ax.set_xticks(range(len(ordered)), [e.name for e in ordered], rotation=20, fontsize=8)
    ax.set(ylabel=metric, title=f"{metric} across versions (95% CI across seeds)")
    fig.tight_layout()
    path = out / "trend.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return lines, path


def _fmt(stat: dict[str, float] | None) -> str:
    if not stat:
        return "—"
    return (f"{stat['mean']:.4f} ± {stat['std']:.4f} [{stat['ci_low']:.4f}, "
            f"{stat['ci_high']:.4f}]")


def write_report(cfg: ReportConfig) -> Path:
    from trainers.compare import compare

    entries = collect(cfg.runs)
    out = Path(cfg.out) if cfg.out else Path(cfg.paths.runs) / "report"
    out.mkdir(parents=True, exist_ok=True)
    metric = cfg.metric
    second = metric.replace("accuracy", "macro_f1") if "accuracy" in metric else None
    lines = ["# shardtune report", "", f"{len(entries)} configuration(s); headline metric "
             f"`{metric}`; mean ± std [95% bootstrap CI of the mean across seeds].", "",
             f"| configuration | seeds | {metric} | {second or ''} | min – max |",
             "|---|---|---|---|---|"]
    for e in entries:
        agg = e.aggregate["metrics"]
        m = agg.get(metric)
        span = f"{m['min']:.4f} – {m['max']:.4f}" if m else "—"
        lines.append(f"| {e.name} | {len(e.members)} | {_fmt(m)} | "
                     f"{_fmt(agg.get(second)) if second else ''} | {span} |")
    for key in ("train/loss", "val/accuracy"):
        plot = _curves(entries, key, out)
        if plot:
            lines += ["", f"![{key}]({plot.name})"]
    plot = _distribution(entries, metric, out)
    if plot:
        lines += ["", f"![distribution]({plot.name})"]
    if len(entries) > 1:
        lines += ["", f"## Comparisons against {entries[0].name}", ""]
        for other in entries[1:]:
            try:
                res = compare(CompareConfig(a=str(entries[0].path), b=str(other.path),
                                            split=cfg.split, compare=cfg.compare,
                                            paths=cfg.paths,
                                            out=str(out / f"compare_{other.name}")))
                lines.append(f"- **{res['verdict']}**: {res['headline']} "
                             f"([details](compare_{other.name}/compare.md))")
            except Exception as exc:  # noqa: BLE001 - one failed pair must not sink the report
                lines.append(f"- {other.name}: not compared ({exc})")
    for e in entries:
        worst = e.aggregate.get("slices", [])[:8]
        if worst:
            lines += ["", f"## Worst slices: {e.name} (accuracy across seeds)", "",
                      "| slice | examples | mean ± std | 95% CI |", "|---|---|---|---|"]
            lines += [f"| {s['slice']} | {s['examples']} | {s['mean']:.3f} ± {s['std']:.3f} | "
                      f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}] |" for s in worst]
    table, plot = _trend(entries, metric, out)
    lines += ["", "## Trend across versions (ordered by finish time)", "", *table]
    if plot:
        lines += ["", f"![trend]({plot.name})"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
