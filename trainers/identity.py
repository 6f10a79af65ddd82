"""What made an output: the fingerprint a later command checks before it reuses the output.

Every directory or cache that a later command resumes or reuses (a run, a seed group, a sweep,
an evaluation, the baseline's predictions) records what produced it: the config keys that
change its result and the content hash of its data. A later command reuses it only when both
match; otherwise a cache is recomputed and a resumable directory is refused with one line
naming what changed (never a silent reuse of another configuration's results).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from data.errors import ConfigError
from data.shards import digest_files
from trainers.config import TrainConfig, config_dict
from trainers.metadata import flat_config

GROUP_FILE = "group.json"  # a seed group's index: tuning/seeds.py writes it, compare reads it

DATA_CONTENT = "data (file contents)"  # the pseudo-key a changed data fingerprint shows as


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def identity(resolved: dict[str, Any], keys: Iterable[str], free: Iterable[str] = (),
             data_sha256: str | None = None) -> dict[str, Any]:
    """The flat ``{dotted key: value}`` of ``resolved`` under ``keys`` and not under ``free``,
    plus the data's content hash when known."""
    keys, free = tuple(keys), tuple(free)
    flat = flat_config(json.loads(json.dumps(resolved, default=str)))
    out = {k: v for k, v in flat.items() if _under(k, keys) and not _under(k, free)}
    if data_sha256 is not None:
        out[DATA_CONTENT] = data_sha256
    return out


def digest(value: Any) -> str:
    """A short, stable hash of any JSON-able value."""
    blob = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@functools.cache
def _defaults() -> dict[str, Any]:
    return flat_config(json.loads(json.dumps(config_dict(TrainConfig()), default=str)))


# keys added after digests of the data config were first saved (evaluations' made_by): at
# their default they change nothing, so a digest leaves them out and what was saved before
# them stays current
ADDED_LATER = ("data.chat.delexicalize", "data.chat.placeholder")


def without_later_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` without the :data:`ADDED_LATER` keys that hold their default."""
    defaults = _defaults()
    return {k: v for k, v in flat.items() if k not in ADDED_LATER or v != defaults.get(k)}


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ. A key only one side has counts, except the data hash (an
    older record may lack it) and a key a later version added that is at its default (the
    older version behaved as the default: ``task.chat`` false, ``data.chat.*``)."""
    keys = set(old) | set(new)
    if DATA_CONTENT not in old or DATA_CONTENT not in new:
        keys.discard(DATA_CONTENT)
    defaults = _defaults()
    added = {k for k in set(new) - set(old) if k in defaults and new[k] == defaults[k]}
    return sorted(k for k in keys - added if old.get(k) != new.get(k))


def describe(old: dict[str, Any], new: dict[str, Any], changed: list[str], most: int = 3) -> str:
    """``data.path ('a' → 'b'), trainer.eval_every (20 → 5) and 2 more``."""
    def short(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    shown = ", ".join(k if k == DATA_CONTENT else f"{k} ({short(old.get(k))} → "
                      f"{short(new.get(k))})" for k in changed[:most])
    return shown + (f" and {len(changed) - most} more" if len(changed) > most else "")


def refuse_if_changed(directory: Path, what: str, old: dict[str, Any] | None,
                      new: dict[str, Any], key: str = "run_name") -> None:
    """One-line error when ``directory`` holds ``what`` made by another configuration."""
    if old is None:
        return
    changed = changes(old, new)
    if changed:
        raise ConfigError(key, f"{directory} holds {what} of another configuration: "
                          f"{describe(old, new, changed)} changed",
                          f"use another {key}, or delete that directory to start over")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or unreadable (half-written)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, value: Any) -> None:
    """Write through a temporary file and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    os.replace(tmp, path)


@contextmanager
def replaced_on_success(target: Path) -> Iterator[Path]:
    """A fresh staging directory that replaces ``target`` only when the block succeeds.

    A failure inside the block leaves ``target`` (an earlier evaluation, say) byte-identical
    and removes the staging directory. Each writer stages apart (two runs making one cache
    at once, each finding none): the last one moved in is kept, whole; one whose move finds
    another's ``target`` just put in place keeps that one.
    """
    unique = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = target.with_name(f".{target.name}.{unique}.staging")
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.{unique}.old")
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError as exc:  # another writer's whole target moved in between: kept
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


# What a resumed run must share with the run it continues: whatever shapes the weights, the
# data order or the schedule. Workers, logging, tracking and stop/retry settings may change.
RESUME_KEYS = ("model", "task", "data", "peft", "optim", "distill", "trainer.epochs",
               "trainer.max_steps", "trainer.batch_size", "trainer.grad_accum",
               "trainer.bucket_batches", "trainer.batch_tokens", "trainer.strategy")
# how, not what (the last four: how evaluations test the run)
RESUME_FREE = ("data.materialize", "data.tokenize_actors", "data.task_rows",
               "data.driver_rows", "data.driver_bytes", "distill.inprocess_rows",
               "distill.speed_rows", "task.max_new_tokens", "task.num_beams",
               "task.rerank", "data.slot_pattern")


def resume_free(resolved: dict[str, Any]) -> tuple[str, ...]:
    """:data:`RESUME_FREE`, less ``data.slot_pattern`` when the data delexicalises: the slots
    it finds are then the values the model reads as placeholders."""
    data = resolved.get("data") or {}
    if (data.get("chat") or {}).get("delexicalize"):
        return tuple(k for k in RESUME_FREE if k != "data.slot_pattern")
    return RESUME_FREE


def run_identity(resolved: dict[str, Any], data_sha256: str | None,
                 code_relative: bool = False) -> dict[str, Any]:
    """What a run's checkpoints depend on: the keys above and the data's content hash.

    ``code_relative``: paths under the code directory (``paths.code``) as ``${paths.code}/…``
    (a run's resume check): a Ray job unpacks the code somewhere new on each submission, and
    data shipped with it (the sample) is the same data there. Pass the data hash of
    :func:`data_digest` with it."""
    out = identity(resolved, RESUME_KEYS, resume_free(resolved), data_sha256)
    return code_relative_identity(out, resolved) if code_relative else out


def code_relative_identity(ident: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """``ident`` with the paths under ``resolved``'s ``paths.code`` written relative to it."""
    code = (resolved.get("paths") or {}).get("code")
    return {k: _relative(v, code) for k, v in ident.items()}


def data_digest(fingerprint: dict[str, Any] | None, code: str | None) -> str | None:
    """The data's content hash with the files under ``code`` named relative to it: the
    fingerprint's own digest when none is (data elsewhere hashes as before)."""
    if not fingerprint or "files" not in fingerprint:
        return (fingerprint or {}).get("sha256")
    return digest_files([{**f, "uri": _relative(f["uri"], code)} for f in fingerprint["files"]])


def as_saved(old: dict[str, Any] | None, relative: dict[str, Any],
             written: dict[str, Any]) -> dict[str, Any]:
    """The form of this identity to compare with a saved one (a seed group's, a sweep's): the
    code-relative form, unless ``old`` was saved before identities named paths under the code
    directory relative to it (then as written: such a record compares as it always did)."""
    def mentions_code(value: Any) -> bool:
        values = value if isinstance(value, list) else [value]
        return any(isinstance(v, str) and v.startswith("${paths.code}/") for v in values)

    if old is not None and not any(mentions_code(v) for v in old.values()) and \
            any(mentions_code(v) for v in relative.values()):
        return written
    return relative


def _relative(value: Any, code: str | None) -> Any:
    if isinstance(value, list):
        return [_relative(v, code) for v in value]
    root = str(code).rstrip("/") + "/"
    if code and isinstance(value, str) and value.startswith(root):
        return "${paths.code}/" + value[len(root):]
    return value
