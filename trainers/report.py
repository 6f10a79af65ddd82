"""A short Markdown report per run: what ran, on which data, and how it scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainers.config import TrainConfig


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _rows(split: dict[str, Any]) -> str:
    before = split.get("rows_before_sampling")
    return f"{split['rows']} (of {before})" if before is not None else str(split["rows"])


def _truncated(split: dict[str, Any]) -> str:
    cut = split.get("truncated") or {}
    return f"{cut.get('examples', 0)} ({cut.get('tokens', 0)})"


def _data_notes(run: TrainConfig, meta: dict[str, Any]) -> list[str]:
    """Below the data table: what each count means where it is not zero."""
    data, notes = meta["dataset"], []
    if run.data.max_examples:
        notes.append(f"- rows (of N): data.max_examples={run.data.max_examples} sampled them "
                     "from N by a hash of the text")
    notes.append(f"- truncated: examples cut at task.max_length={run.task.max_length} (tokens "
                 "they lost); packed causal-LM blocks lose none")
    for split, v in data["splits"].items():
        for shard in v.get("lost_shards") or []:
            notes.append(f"- {split}: `{shard}` was unreadable and skipped whole "
                         "(data.on_error=skip)")
        if (v.get("dedup_dropped") or {}).get("conflicting"):
            notes.append(f"- {split}: {v['dedup_dropped']['conflicting']} dropped duplicates had "
                         f"another label than the row kept, e.g. {v['dedup_conflicts'][0]}")
        if v.get("judgments_dropped"):
            notes.append(f"- {split}: relevance judgments not kept, by reason: " + ", ".join(
                f"{reason} {n}" for reason, n in sorted(v["judgments_dropped"].items())))
        if v.get("delex_missed"):
            notes.append(f"- {split}: {v['delex_missed']} answer(s) do not write a "
                         f"delexicalised value ({', '.join(run.data.chat.delexicalize)}) "
                         "verbatim and keep it as written (data.chat.delexicalize)")
        kinds = v.get("label_types") or {}
        if set(kinds) - {"str"}:
            notes.append(f"- {split}: labels read from {', '.join(sorted(kinds))} values "
                         "(class names are their text: 1 → '1', true → 'True')")
    for key, hidden in (data.get("hidden_files") or {}).items():
        notes.append(f"- {key}: {hidden['count']} hidden or _-prefixed file(s) not read, e.g. "
                     f"`{hidden['first'][0]}`")
    for source, counts in (meta.get("train_rows_added") or {}).items():
        notes.append(f"- train: {counts['rows']} row(s) joined from {source} ("
                     + ", ".join(f"{k} {v}" for k, v in counts.items() if k != "rows") + ")")
    split = meta.get("train_split") or {}
    if split.get("rows_left_out_per_epoch"):
        notes.append(f"- train: {split['workers']} workers take equal shares; "
                     f"{split['rows_left_out_per_epoch']} row(s) per epoch are left out (a "
                     "different few each epoch)")
    return notes + ([""] if notes else [])


def write_report(run: TrainConfig, meta: dict[str, Any], metrics: dict[str, Any],
                 run_dir: Path) -> Path:
    data = meta["dataset"]
    lines = [
        f"# Run `{run.run_name}`",
        "",
        f"- task: `{run.task.kind.value}`, model: `{run.model.name_or_path}`, "
        f"adapter: `{run.peft.method.value}` (r={run.peft.r}, alpha={run.peft.alpha})",
        f"- seed: {run.seed}, config group: `{meta['config_group']}`, "
        f"git: `{meta['git']['commit'][:12]}`{' (dirty)' if meta['git']['dirty'] else ''}",
        f"- cluster: `{run.cluster.mode.value}`"
        + (f" x{run.cluster.num_workers}" if run.cluster.mode.value == "ray" else ""),
        f"- data: `{data['name']}`, fingerprint `{data['fingerprint']['sha256'][:16]}`",
        "",
        "## Data",
        "",
        "| split | rows | skipped | lost shards | truncated (tokens) | PII redacted | "
        "dropped by dedup |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        *[f"| {k} | {_rows(v)} | {v['skipped']} | {len(v.get('lost_shards') or [])} | "
          f"{_truncated(v)} | {v.get('pii_redacted', 0)} | {v.get('dedup_dropped') or '—'} |"
          for k, v in data["splits"].items()],
        "",
        *_data_notes(run, meta),
        "## Metrics",
        "",
        "| metric | value |",
        "| --- | ---: |",
        *[f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items())
          if isinstance(v, (int, float)) and not isinstance(v, bool)],
        "",
        "## Artefacts",
        "",
        "- `adapter/` (PEFT format), `tokenizer/`, `label_map.json`",
        "- `metrics.jsonl` (every logged step), `metrics.json` (final), `run_meta.json`, "
        "`config.json`",
        "",
    ]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines))
    return out
