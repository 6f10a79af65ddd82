"""Counts from one pass over a split: rows, skipped rows and lost shards, labels and their
value types, PII redactions; the run adds what it did to the split (sampling, dedup,
truncation at ``task.max_length``). Everything here ends up in run_meta.json and report.md."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from data.inprocess import ROWS_PER_BLOCK, local_batches, runs_here


@dataclass
class SplitSummary:
    """Counts from one pass over a split: rows, skipped rows, label distribution; then what
    the run did to it (sampled, deduplicated, truncated at task.max_length)."""

    rows: int = 0
    skipped: int = 0  # bad rows (on_error=skip), not counting the rows of lost_shards
    first_errors: list[str] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    pii_redacted: int = 0
    delex_missed: int = 0  # answers that kept a delexicalised value (data/delex.py)
    dedup_dropped: dict[str, int] = field(default_factory=dict)
    dedup_conflicts: list[str] = field(default_factory=list)
    lost_shards: list[str] = field(default_factory=list)  # unreadable files (on_error=skip)
    label_types: Counter = field(default_factory=Counter)  # JSON/parquet label value types
    rows_before_sampling: int | None = None  # data.max_examples: the split's rows before it
    truncated_examples: int = 0  # examples cut at task.max_length (data/tokenize.py)
    truncated_tokens: int = 0  # tokens those examples lost
    judgments_dropped: dict[str, int] = field(default_factory=dict)  # BEIR qrels not kept


def _summarize(batch: dict[str, np.ndarray]) -> dict[str, list]:
    n = len(batch["_error"])
    lost = [str(s) for s, shard in zip(batch["_src"], batch.get("_lost_shard", [None] * n),
                                       strict=True) if shard]
    errors = [e for e in batch["_error"] if e]
    labels: Counter = Counter()
    kinds: Counter = Counter()
    if "_ltype" in batch:
        kinds.update(str(k) for k, e in zip(batch["_ltype"], batch["_error"], strict=True)
                     if not e and k)
    if "label" in batch:
        labels.update(str(v) for v, e in zip(batch["label"], batch["_error"], strict=True) if not e)
    if "tags" in batch:
        for tags, e in zip(batch["tags"], batch["_error"], strict=True):
            if not e:
                labels.update(str(t) for t in tags)
    return {
        "rows": [len(batch["_error"]) - len(errors)],
        "skipped": [len(errors) - len(lost)],
        "first_errors": [json.dumps(errors[:3])],
        "labels": [json.dumps(labels)],
        "lost": [json.dumps(lost)],
        "kinds": [json.dumps(kinds)],
        "pii": [int(sum(int(x or 0) for x in batch["_pii"])) if "_pii" in batch else 0],
        "delex_missed": [int(sum(int(x or 0) for x in batch["_delex_missed"]))
                         if "_delex_missed" in batch else 0],
    }


def summarize(ds, driver_rows: int = 0) -> SplitSummary:
    """One pass over a split: counts and labels, without materialising the rows (here, not in
    Ray tasks, for a materialised split of up to ``driver_rows`` rows: data/inprocess.py)."""
    summary = SplitSummary()
    parts = ({k: v[0] for k, v in _summarize(batch).items()} for batch in local_batches(ds)
             ) if runs_here(ds, driver_rows) else ds.map_batches(
        _summarize, batch_size=ROWS_PER_BLOCK).iter_rows()
    for part in parts:
        summary.rows += int(part["rows"])
        summary.skipped += int(part["skipped"])
        summary.first_errors.extend(json.loads(part["first_errors"]))
        summary.labels.update(json.loads(part["labels"]))
        summary.pii_redacted += int(part["pii"])
        summary.delex_missed += int(part["delex_missed"])
        summary.lost_shards.extend(json.loads(part["lost"]))
        summary.label_types.update(json.loads(part["kinds"]))
    summary.first_errors = summary.first_errors[:5]
    return summary
