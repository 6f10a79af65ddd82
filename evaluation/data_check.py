"""``shardtune data check``: read a data config as a run would and report what is in it.

The checks themselves (duplicates, near duplicates, leakage, PII, label balance) are in
data/check.py; this is the verb's driver: it starts Ray, reads the splits through the same
pipeline as training and counts what the run's tokenizer would truncate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data.check import check_dataset_splits, render_markdown
from data.pipeline import build_splits
from data.truncation import count_truncation_raw
from trainers.models import tokenizer_location
from trainers.scaling import ensure_ray


def lost_in_reading(run: Any, splits: Any) -> dict[str, Any]:
    """What reading the data as the run would leaves out: files not read (hidden, ``_``),
    shards unreadable and rows skipped (``data.on_error=skip``), and examples truncated at
    ``task.max_length`` (the run's tokenizer, as training tokenises)."""
    task = run.task.kind.value
    truncation = {name: (0, 0) for name in splits.datasets}
    if task != "causal_lm" or not run.task.pack:  # packed blocks lose no token
        truncation = count_truncation_raw(splits.datasets, tokenizer_location(run.model), task,
                                          run.task.max_length, splits.labels, run.task.pack)
    return {"max_length": run.task.max_length, "truncation": truncation,
            "hidden_files": splits.hidden,
            "read": {name: {"skipped": s.skipped, "lost_shards": s.lost_shards,
                            "first_errors": s.first_errors}
                     for name, s in splits.summaries.items()}}


def check_command(run: Any) -> int:
    """``shardtune data check [data=<group>] [data.path=...]``: full report, printed and saved."""
    ensure_ray(run.cluster)
    splits = build_splits(run.data, run.task.kind.value)
    report = check_dataset_splits(splits, fast=False, slot_pattern=run.data.slot_pattern,
                                  delexicalized=run.data.chat.delexicalize)
    report.update(lost_in_reading(run, splits))
    for split, (examples, tokens) in report.pop("truncation").items():
        report["splits"][split].update(truncated_examples=examples, truncated_tokens=tokens)
    out = Path(run.paths.runs) / "data_check" / run.data.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_check.json").write_text(json.dumps(report, indent=1, default=str))
    text = render_markdown(report, run.data.name)
    (out / "data_check.md").write_text(text)
    print(text, flush=True)  # as written: rich would read E2E's name[...] as markup, drop it
    print(f"written: {out / 'data_check.md'}")
    return 0
