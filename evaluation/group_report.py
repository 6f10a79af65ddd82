"""``shardtune report PATH ...``: run groups side by side, from the local tracker alone.

Reads each group's seeds (metrics.jsonl, metrics.json, run_meta.json, aggregate.json); no W&B
needed. Writes report.md with PNGs: learning curves with a seed band, the metric's
distribution per configuration, comparisons with CIs against the first entry, the worst slices,
and a trend across versions (entries ordered by when they finished) for regression tracking.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.errors import DataError
from evaluation.aggregate import aggregate_metrics, describe, example_interval, format_stat
from evaluation.config import CompareConfig, ReportConfig

GROUP_FILE = "group.json"
SPLIT_PREFIXES = {"test": "test", "val": "validation", "validation": "validation",
                  "train": "train"}


@dataclass
class Entry:
    """A configuration in the report: a seed group, or one run standing alone."""

    name: str
    path: Path
    members: list[Path]
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    aggregate: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # the headline metric as this entry records it (set by ``sections``)
    split: str = "test"  # the split that number was measured on
    _examples: dict[str, Any] = field(default_factory=dict, repr=False)

    def _meta(self, member: Path) -> dict[str, Any]:
        path = member / "run_meta.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def data(self) -> tuple[str | None, str | None]:
        """(data set name, fingerprint sha256); sha256 None: not recorded, or the members
        disagree (then nothing says what the group was evaluated on)."""
        found = set()
        for member in self.members:
            data = self._meta(member).get("dataset") or {}
            found.add((data.get("name"), (data.get("fingerprint") or {}).get("sha256")))
        if len(found) != 1:
            return None, None
        return found.pop()

    def rows(self, split: str) -> int | None:
        data = self._meta(self.members[0]).get("dataset") or {}
        return ((data.get("splits") or {}).get(split) or {}).get("rows")

    @property
    def eval_split(self) -> str | None:
        """The split the seed group was evaluated on after training (aggregate.json), or the
        one split a single run was evaluated on (its eval/ folder)."""
        if self.aggregate.get("eval_split"):
            return self.aggregate["eval_split"]
        folder = self.members[0] / "eval"
        found = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        return found[0] if len(found) == 1 else None

    def values(self, key: str) -> list[float]:
        """Per seed: metrics.json, else the group's per-seed table (evaluation metrics)."""
        for table in (self.per_seed, self.aggregate.get("per_seed") or []):
            if table and all(isinstance(m.get(key), (int, float)) for m in table):
                return [float(m[key]) for m in table]
        return []

    def stat(self, key: str) -> dict[str, float] | None:
        found = self.aggregate.get("metrics", {}).get(key)
        if found:
            return found
        values = self.values(key)
        return describe(values) if values else None

    def example_ci(self, key: str) -> dict[str, float] | None:
        """A one-seed entry's CI over the split's examples; None for several seeds."""
        if len(self.members) != 1:
            return None
        if (key, self.split) not in self._examples:
            self._examples[key, self.split] = example_interval(self.members[0], self.split, key)
        return self._examples[key, self.split]

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


@dataclass
class Section:
    """Entries evaluated on the same data: one data set (fingerprint), split and row count."""

    name: str | None
    sha256: str | None
    split: str
    rows: int | None
    entries: list[Entry] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.sha256 is not None

    @property
    def title(self) -> str:
        if not self.known:
            return f"data not recorded · {self.split} split"
        rows = f" ({self.rows} rows)" if self.rows is not None else ""
        return f"{self.name} · data {self.sha256[:12]} · {self.split} split{rows}"


def _headline(entry: Entry, metric: str, default_split: str) -> tuple[str, str]:
    """The key under which ``entry`` records ``metric``, and the split it was measured on.

    ``test/accuracy`` of a group evaluated on validation (its data has no test split) is its
    ``validation/accuracy`` (or the loop's ``val/accuracy``): another split, another section.
    """
    prefix, _, name = metric.partition("/")
    if not name or prefix not in SPLIT_PREFIXES:
        return metric, entry.eval_split or default_split
    split = SPLIT_PREFIXES[prefix]
    own = entry.eval_split
    if entry.stat(metric) is not None or own in (None, split):
        return metric, split
    for alias, target in SPLIT_PREFIXES.items():
        if target == own and entry.stat(f"{alias}/{name}") is not None:
            return f"{alias}/{name}", own
    return metric, split


def sections(entries: list[Entry], metric: str, default_split: str) -> list[Section]:
    """Entries grouped by data set, split and rows, in order of first appearance."""
    found: dict[tuple, Section] = {}
    for entry in entries:
        entry.key, entry.split = _headline(entry, metric, default_split)
        name, sha = entry.data
        rows = entry.rows(entry.split)
        key = (sha, entry.split, rows) if sha else (None, entry.split, None)
        if key not in found:
            found[key] = Section(name, sha, entry.split, rows if sha else None)
        found[key].entries.append(entry)
    return list(found.values())


def _curves(entries: list[Entry], key: str, out: Path, tag: str = "") -> Path | None:
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
    path = out / f"curve_{key.replace('/', '_')}{tag}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _distribution(entries: list[Entry], metric: str, out: Path, tag: str = "") -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        lines.append(f"| {i} | {entry.name} | `{entry.commit}` | {len(entry.members)} | "
                     f"{mean:.4f} | {interval} | {over} | {change} |")
        if stat is not None:
            previous = mean
    if len(ordered) < 2:
        return lines, None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        worst = json.loads(saved.read_text()).get("slices", [])[:8]
        if worst:
            return ["", f"### Worst slices: {entry.name} (accuracy, n=1 seed; 95% CI over "
                    "the slice's examples)", "", "| slice | examples | accuracy | 95% CI |",
                    "|---|---|---|---|",
                    *[f"| {s['slice']} | {s['n']} | {s['value']:.3f} | "
                      + (f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
                         if s["ci_high"] > s["ci_low"] else "—") + " |" for s in worst]]
    worst = entry.aggregate.get("slices", [])[:8]
    if not worst:
        return []
    return ["", f"### Worst slices: {entry.name} (accuracy, n=1 seed, no interval)", "",
            "| slice | examples | accuracy |", "|---|---|---|",
            *[f"| {s['slice']} | {s['examples']} | {s['mean']:.3f} |" for s in worst]]


def _section(sec: Section, cfg: ReportConfig, out: Path, tag: str) -> list[str]:
    from evaluation.compare import compare

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
