"""A checkpoint's name and its progress.json: the position and the manifest that says it is whole.

progress.json is written last and lists every other file's size: a checkpoint counts only when
it is there and every listed file has its listed size (see trainers/checkpoint.py). Torch-free:
the store (trainers/storage.py) judges remote checkpoints by the same rule.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

PROGRESS_FILE = "progress.json"
_CKPT_RE = re.compile(r"^checkpoint_(\d{6,})$")


@dataclass
class Progress:
    """Where the run stands; restored on resume and checked against the config."""

    seed: int
    epoch: int = 0  # epochs fully finished
    step: int = 0  # optimizer steps taken
    micro_in_epoch: int = 0  # micro-batches consumed in the current epoch
    samples: int = 0  # training examples seen (this rank)
    done: bool = False


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:06d}"


def checkpoint_step(path: Path | str) -> int | None:
    """The step in a checkpoint directory's name (``checkpoint_000040`` → 40)."""
    match = _CKPT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def seal(out: Path, progress: Progress) -> None:
    """Write progress.json last: the position plus every other file's size (the manifest)."""
    files = {str(f.relative_to(out)): f.stat().st_size
             for f in sorted(out.rglob("*")) if f.is_file() and f.name != PROGRESS_FILE}
    (out / PROGRESS_FILE).write_text(json.dumps({"progress": asdict(progress), "files": files}))


def read_progress(src: Path) -> tuple[Progress, dict[str, int] | None]:
    """(position, manifest); checkpoints written before the manifest existed have none."""
    data = json.loads((src / PROGRESS_FILE).read_text())
    if "progress" in data:
        return Progress(**data["progress"]), data["files"]
    return Progress(**data), None


def manifest_complete(progress_text: str, sizes: dict[str, int]) -> bool:
    """progress.json's manifest matches the files found (relative path → size)."""
    try:
        data = json.loads(progress_text)
        Progress(**data.get("progress", data))
    except (ValueError, TypeError, AttributeError):
        return False
    return all(sizes.get(name) == size for name, size in (data.get("files") or {}).items())


def is_complete(src: Path) -> bool:
    """progress.json present and every file it lists there with its listed size."""
    try:
        text = (src / PROGRESS_FILE).read_text()
        listed = json.loads(text).get("files") or {}
    except (OSError, ValueError, AttributeError):
        return False
    sizes = {}
    for name in listed:
        try:
            sizes[name] = (src / name).stat().st_size
        except OSError:
            return False
    return manifest_complete(text, sizes)
