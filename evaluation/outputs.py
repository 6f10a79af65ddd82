"""Where an evaluation goes and whether a saved one is still current.

A run's own data (its data config and the same file contents) is evaluated into
``runs/<run>/eval/<split>/``; any other data into ``runs/<run>/eval-<name>/<split>/``, where
``<name>`` is ``name=`` or the data's name and fingerprint, so a new batch never overwrites the
run's test results. Each ``metrics.json`` records what made it (the model's weights hash, the
data config and file contents); a later command reuses saved predictions only when those still
match, and evaluates again otherwise.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from data.config import DataConfig
from data.errors import ConfigError
from trainers.identity import (
    digest,
    identity,
    read_json,
    resume_free,
    without_later_defaults,
)
from trainers.models import load_run_config
from trainers.storage import check_data_uris

EVAL_DIR = "eval"
WEIGHTS = ("adapter", "merged")  # what a run's predictions depend on besides its config


def data_config(run_data: DataConfig, chosen: DataConfig | None, overrides: list[str]
                ) -> DataConfig:
    """The data to evaluate on: ``data=<group>`` when chosen, else the run's own data config
    with the command's ``data.*`` keys applied (``data.test_path=new.jsonl`` alone works)."""
    if chosen is not None or not overrides:
        return chosen or run_data
    base = OmegaConf.structured(run_data)
    try:
        for item in overrides:
            key, _, value = item.lstrip("+").partition("=")
            OmegaConf.update(base, key.removeprefix("data."), OmegaConf.from_dotlist(
                [f"v={value}"]).v, merge=False)
        data = OmegaConf.to_object(base)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or item.partition("=")[0]
        raise ConfigError(f"data.{key.removeprefix('data.')}", str(exc).splitlines()[0]) \
            from None
    check_data_uris(data)  # a presigned URL or SAS token would land in metrics.json
    return data


def _real(value: Any) -> Any:
    """Local paths in their resolved form: ``a/../b`` and ``b`` are one file."""
    if isinstance(value, list):
        return [_real(v) for v in value]
    if isinstance(value, str) and "://" not in value:
        return os.path.realpath(value)
    return value


def contents(fingerprint: dict[str, Any] | None) -> str | None:
    """The data files' content hashes, whatever path spelled them."""
    if not fingerprint:
        return None
    return digest(sorted((f["sha256"], f["bytes"]) for f in fingerprint.get("files", [])))


def data_identity(data: DataConfig, fingerprint: dict[str, Any] | None) -> dict[str, Any]:
    """The data config keys that change which examples are read, and the files' contents."""
    tree = OmegaConf.to_container(OmegaConf.structured(data), enum_to_str=True)
    for key in ("path", "validation_path", "test_path"):
        tree[key] = _real(tree[key])
    keys = identity({"data": tree}, ("data",), resume_free({"data": tree}) + ("data.name",))
    return {"config": digest(without_later_defaults(keys)), "files": contents(fingerprint)}


def weights_hash(run_dir: Path) -> str:
    """A hash of the run's exported weights: predictions are stale once they change."""
    total = hashlib.sha256()
    for folder in WEIGHTS:
        for path in sorted((run_dir / folder).rglob("*.safetensors")):
            total.update(path.name.encode())
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    total.update(chunk)
    return total.hexdigest()[:16]


def own_data(run_dir: Path, run_data: DataConfig, data: DataConfig,
             fingerprint: dict[str, Any]) -> bool:
    """Whether ``data`` is the run's own: the same config keys and the same file contents."""
    meta = read_json(run_dir / "run_meta.json") or {}
    trained_on = contents(meta.get("dataset", {}).get("fingerprint"))
    return data_identity(data, None) == data_identity(run_data, None) and \
        trained_on in (None, contents(fingerprint))


def output_dir(run_dir: Path, split: str, own: bool, data: DataConfig,
               fingerprint: dict[str, Any], name: str | None) -> Path:
    """``eval/<split>`` for the run's own data, ``eval-<name>/<split>`` for any other."""
    if own and name is None:
        return run_dir / EVAL_DIR / split
    return named_dir(run_dir, name or f"{data.name}-{digest(data_identity(data, fingerprint))[:8]}",
                     split)


def named_dir(run_dir: Path, name: str, split: str) -> Path:
    """Where ``evaluate … name=<name>`` keeps a run's answers of ``split``."""
    return run_dir / f"{EVAL_DIR}-{name}" / split


def rows_digest(frame: Any) -> str:
    """A hash of the evaluated rows (ids and texts, in id order): two evaluations pair
    example by example only when it is equal."""
    cols = [c for c in ("_src", "text") if c in frame]
    rows = frame[cols].astype(str).sort_values(cols[0]).to_numpy().tolist()
    return digest(rows)


def generation_settings(run: Any, cfg: Any = None) -> dict[str, Any]:
    """How a chat run's answers are generated: ``evaluate``'s overrides, else the run's own
    ``task.max_new_tokens`` / ``task.num_beams``; ``copy_values`` only when set (answers
    saved before it existed stay current). Recorded with the answers, so answers made with
    other settings are never reused or paired as if they were the same."""
    override = {k: getattr(cfg, k, None) for k in ("max_new_tokens", "num_beams")}
    settings: dict[str, Any] = {k: v if v is not None else getattr(run.task, k)
                                for k, v in override.items()}
    if copied := list(getattr(cfg, "copy_values", None) or []):
        settings["copy_values"] = copied
    return settings


def replaced_answers(out_dir: Path, settings: dict[str, Any]) -> str | None:
    """The console line for answers saved in ``out_dir`` with generation settings other than
    ``settings``, which an evaluation is about to write over (a seed group's, or ``evaluate``
    without ``name=`` after a ``num_beams=4`` one); None when there are none."""
    made_by = (read_json(out_dir / "metrics.json") or {}).get("made_by") or {}
    saved = made_by.get("generation")
    if not saved or saved == settings or not (out_dir / "predictions.parquet").is_file():
        return None

    def shown(s: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(s.items()))

    return (f"warning: {out_dir} holds answers generated with {shown(saved)}: replacing them "
            f"with answers generated with {shown(settings)} (evaluate … name=<label> keeps "
            "answers made otherwise in a folder of their own)")


def is_current(out_dir: Path, run_dir: Path, any_generation: bool = False) -> bool:
    """Saved predictions in ``out_dir`` were made by the run's present weights and, for a chat
    run, its present generation settings (predictions saved before either was recorded count
    as current, as they did then). ``any_generation``: answers made with other settings count
    too (``compare`` pairs what was saved, e.g. a ``num_beams=4`` evaluation, and checks that
    both sides were made alike; evaluating again would overwrite it)."""
    if not (out_dir / "predictions.parquet").is_file():
        return False
    made_by = (read_json(out_dir / "metrics.json") or {}).get("made_by")
    if made_by is None or "generation" not in made_by or any_generation:
        return made_by is None or made_by.get("weights") == weights_hash(run_dir)
    return made_by.get("weights") == weights_hash(run_dir) and \
        made_by["generation"] == generation_settings(load_run_config(run_dir))


def data_lost(frame: Any, summary: Any, max_length: int) -> dict[str, Any]:
    """What of the split the scores do not cover: rows skipped and shards unreadable while
    reading it (``data.on_error=skip``), and what truncation at ``task.max_length`` hid from
    the model (token_cls: words past the cut, scored as predicted ``O``)."""
    cut = frame["truncated"] if "truncated" in frame else None
    lost = {"skipped_rows": summary.skipped, "lost_shards": list(summary.lost_shards),
            "max_length": max_length,
            "truncated_examples": int((cut > 0).sum()) if cut is not None else 0,
            "truncated_tokens": int(cut.sum()) if cut is not None else 0}
    if "words_cut" in frame:
        lost["truncated_words"] = int(frame["words_cut"].sum())
    return lost


def lost_line(lost: dict[str, Any] | None) -> str:
    """One sentence for a report: what the scores do not cover, or that nothing was left out."""
    if not lost:
        return ""
    parts = []
    if lost["skipped_rows"] or lost["lost_shards"]:
        parts.append(f"{lost['skipped_rows']} bad rows skipped and {len(lost['lost_shards'])} "
                     "unreadable shard(s) left out (data.on_error=skip)")
    if lost["truncated_examples"]:
        words = (f"; {lost['truncated_words']} words past the cut count as predicted O"
                 if lost.get("truncated_words") else "")
        parts.append(f"{lost['truncated_examples']} examples truncated at task.max_length="
                     f"{lost['max_length']} ({lost['truncated_tokens']} tokens not seen{words})")
    return ("Not scored: " + "; ".join(parts) + ".") if parts else (
        f"Every row was read and no example was truncated at task.max_length="
        f"{lost['max_length']}.")
