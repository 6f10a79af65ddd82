"""Run metadata: what is needed to reproduce or audit a run, written beside its artefacts."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from trainers.config import TrainConfig, config_dict

# Keys that name or place a run but do not change what is trained.
NOT_CONFIG = ("seed", "seeds", "run_name", "group_name", "paths", "sweep", "ablation", "mine")
INDEX_FILE = "index.jsonl"
_PACKAGES = ("shardtune", "torch", "transformers", "peft", "ray", "accelerate", "hydra-core")


def _git(code_dir: str) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code_dir, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=code_dir,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def _versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def flat_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` → ``{"optim.lr": 1e-3}``: every leaf under its dotted key."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flat_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_group(run: TrainConfig) -> str:
    """Hash of the config minus seed, run name and paths: one config's seeds share it."""
    trimmed = {k: v for k, v in config_dict(run).items() if k not in NOT_CONFIG}
    blob = json.dumps(trimmed, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def run_metadata(run: TrainConfig, splits: Any) -> dict[str, Any]:
    return {
        "run_name": run.run_name,
        "group_name": run.group_name,
        "seed": run.seed,
        "config_group": config_group(run),
        "git": _git(run.paths.code),
        "versions": _versions(),
        "python": platform.python_version(),
        "host": platform.node(),
        "dataset": {
            "name": run.data.name,
            "fingerprint": splits.fingerprint,
            "labels": splits.labels,
            "splits": {k: split_counts(s, run.task.max_length)
                       for k, s in splits.summaries.items()},
            # files of the data directories not read (hidden or _-prefixed), by config key
            "hidden_files": {key: {"count": len(files), "first": files[:10]}
                             for key, files in getattr(splits, "hidden", {}).items()},
        },
        "code_dir": str(Path(run.paths.code).resolve()),
        # names a submitted job was given (shardtune submit), and whether each arrived;
        # values are never recorded
        "forwarded_env": {name: name in os.environ for name in
                          os.environ.get("SHARDTUNE_FORWARDED_ENV", "").split(",") if name},
    }


def split_counts(s: Any, max_length: int) -> dict[str, Any]:
    """Everything counted about one split (data/summary.py): what it holds, and every row or
    token that did not reach the model, by cause."""
    return {"rows": s.rows, "skipped": s.skipped, "first_errors": s.first_errors,
            "lost_shards": s.lost_shards, "rows_before_sampling": s.rows_before_sampling,
            "pii_redacted": s.pii_redacted, "delex_missed": s.delex_missed,
            "dedup_dropped": s.dedup_dropped,
            "dedup_conflicts": s.dedup_conflicts, "judgments_dropped": s.judgments_dropped,
            "truncated": {"max_length": max_length, "examples": s.truncated_examples,
                          "tokens": s.truncated_tokens},
            "label_types": dict(sorted(s.label_types.items())),
            "label_counts": dict(sorted(s.labels.items()))}


def append_index(run: TrainConfig, meta: dict[str, Any], metrics: dict[str, Any]) -> None:
    """One line per finished run in ``runs/index.jsonl``: the trend table reads it."""
    entry = {"time": time.time(), "run_dir": run.run_dir, "run_name": run.run_name,
             "group_name": run.group_name, "config_group": meta["config_group"],
             "seed": run.seed, "commit": meta["git"]["commit"],
             "metrics": {k: v for k, v in metrics.items()
                         if isinstance(v, (int, float)) and not k.startswith("dist/")}}
    index = Path(run.paths.runs) / INDEX_FILE
    with index.open("a") as f:  # one short append per run: safe for concurrent seeds
        f.write(json.dumps(entry) + "\n")
