"""A short Markdown report per run: what ran, on which data, and how it scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainers.config import TrainConfig


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


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
        "| split | rows | skipped | PII redacted | dropped by dedup |",
        "| --- | ---: | ---: | ---: | --- |",
        *[f"| {k} | {v['rows']} | {v['skipped']} | {v.get('pii_redacted', 0)} | "
          f"{v.get('dedup_dropped') or '—'} |" for k, v in data["splits"].items()],
        "",
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
