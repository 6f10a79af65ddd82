"""What ``shardtune report`` compares: run groups and single runs read from the local tracker
(``Entry``, ``collect``), and the sections they fall into (``Section``, ``sections``).

Entries are grouped by the data they were evaluated on: the data set's fingerprint in
run_meta.json (``dataset.fingerprint.sha256``), the evaluated split and its row count (a
``data.max_examples`` subset of the same files is other examples). Each group is a section of
its own; entries without a recorded fingerprint form a section that is never compared or trended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.errors import DataError
from evaluation.aggregate import aggregate_metrics, describe, example_interval
from trainers.identity import GROUP_FILE

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

    def recorded(self) -> list[str]:
        """The numeric metrics every member records (what ``metric=`` could name instead)."""
        tables = self.per_seed or self.aggregate.get("per_seed") or []
        keys = [set(k for k, v in m.items() if isinstance(v, (int, float))) for m in tables]
        return sorted(set.intersection(*keys)) if keys else []

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
