"""Checkpoints that hold the whole run: weights, optimizer, scheduler, RNG and data position.

Layout (identical in local and multi-worker mode)::

    runs/<run_name>/checkpoint_000040/
        adapter/              PEFT adapter (or full weights) in safetensors
        tokenizer/  label_map.json
        training_state.pt     optimizer + scheduler + torch RNG (loaded with weights_only=True)
        progress.json         written last: the position, and the size of every other file

A checkpoint counts only when progress.json is there and every file it lists has its listed
size: Ray Train uploads a checkpoint file by file in no set order, so a worker or driver killed
mid-upload leaves a directory that looks plausible but must never be resumed from. Local mode
has no Ray persistence; the same directory is written here atomically (temporary name, rename).
The name and manifest rule itself (torch-free, shared with the store) is trainers/manifest.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_model

from data.errors import ShardtuneError
from trainers.collective import unwrap
from trainers.manifest import (
    PROGRESS_FILE,
    Progress,
    checkpoint_name,
    checkpoint_step,
    is_complete,
    read_progress,
    seal,
)

STATE_FILE = "training_state.pt"
FULL_WEIGHTS = "full_weights.safetensors"


def _save_base_quantization(model: Any, adapter_dir: Path) -> None:
    """QLoRA: beside the adapter, how its frozen base was quantised (the adapter only makes
    sense on that base: reload with peft=qlora and these settings)."""
    layer = next((m for m in model.modules() if type(m).__name__ == "Linear4bit"), None)
    if layer is None:
        return
    state = layer.weight.quant_state
    (adapter_dir / "base_quantization.json").write_text(json.dumps({
        "method": "bitsandbytes-4bit", "quant_type": layer.weight.quant_type,
        "double_quant": bool(getattr(state, "nested", False)),
        "compute_dtype": str(layer.compute_dtype).replace("torch.", ""),
        "layers": sum(type(m).__name__ == "Linear4bit" for m in model.modules())}, indent=1))


def rng_state() -> dict[str, Any]:
    """This process's torch RNG streams (dropout masks): one per rank in a checkpoint, since
    ranks draw different amounts (their batches differ in length) and drift apart."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_state(out: Path, net: Any, optimizer: Any, scheduler: Any, progress: Progress,
               tokenizer: Any, labels: list[str], rng_by_rank: list[dict[str, Any]],
               extra_files: dict[str, str] | None = None) -> None:
    """Write a complete checkpoint into ``out``; progress.json, with the manifest, last."""
    out.mkdir(parents=True, exist_ok=True)
    model = unwrap(net)
    if hasattr(model, "peft_config"):
        model.save_pretrained(out / "adapter")
        _save_base_quantization(model, out / "adapter")
    else:  # full fine-tuning: an exportable model, plus exact weights for resume
        model.save_pretrained(out / "adapter", safe_serialization=True)
        save_model(model, str(out / FULL_WEIGHTS))
    tokenizer.save_pretrained(out / "tokenizer")
    (out / "label_map.json").write_text(json.dumps({"labels": labels}, indent=1))
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng_by_rank": rng_by_rank}
    torch.save(state, out / STATE_FILE)
    for name, text in (extra_files or {}).items():
        (out / name).write_text(text)
    seal(out, progress)


def load_state(src: Path, net: Any, optimizer: Any, scheduler: Any, rank: int = 0) -> Progress:
    """Restore weights, optimizer, scheduler and this rank's RNG from a checkpoint directory
    (a run resumed on fewer ranks than it was saved with reuses rank 0's stream)."""
    try:
        progress = read_progress(src)[0]
        model = unwrap(net)
        adapter_dir = src / "adapter"
        if hasattr(model, "peft_config"):
            from peft import set_peft_model_state_dict  # peft takes seconds: adapters only

            weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
            set_peft_model_state_dict(model, weights)
        else:
            load_model(model, str(src / FULL_WEIGHTS))
        state = torch.load(src / STATE_FILE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "rng_by_rank" in state:
            rng = state["rng_by_rank"][rank if rank < len(state["rng_by_rank"]) else 0]
        else:  # checkpoints from before per-rank streams
            rng = {"torch": state["torch_rng"], "cuda": state.get("cuda_rng")}
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError,
            pickle.UnpicklingError) as exc:
        reason = (f"{STATE_FILE} is not a weights-only torch file"
                  if isinstance(exc, pickle.UnpicklingError) else
                  f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise ShardtuneError(
            f"checkpoint {src} is unreadable or corrupted ({reason})",
            "delete that checkpoint directory to resume from the one before it",
        ) from exc
    return progress


def scan(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(complete, half-written) checkpoint directories of a run, oldest first: one pass."""
    if not run_dir.is_dir():
        return [], []
    found = sorted((p for p in run_dir.iterdir() if checkpoint_step(p) is not None),
                   key=checkpoint_step)
    done = [p for p in found if is_complete(p)]
    return done, [p for p in found if p not in done]


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run that finished writing, oldest first."""
    return scan(run_dir)[0]


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories left half-written (a kill during a save or upload)."""
    return scan(run_dir)[1]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def persist_local(tmp: Path, run_dir: Path, step: int, keep: int) -> Path:
    """Local mode: move a finished checkpoint into the run directory atomically, then prune."""
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / checkpoint_name(step)
    staging = run_dir / f".{final.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(tmp, staging)
    except BaseException:  # a full disk, a kill: the half-copied files go, the older ones stay
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    for old in complete_checkpoints(run_dir)[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException, *where: Path) -> bool:
    """A write that failed for lack of space: an OSError (ENOSPC, EDQUOT) or safetensors' text
    for one; torch's zip writer says only 'unexpected pos', so any failure counts when one of
    the directories ``where`` is left with less than 1 MiB."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _DISK_FULL:
            return True
        if any(text in str(cur) for text in ("No space left on device", "Disk quota exceeded")):
            return True
        cur = cur.__cause__ or cur.__context__
    for path in where:
        while not path.exists() and path != path.parent:
            path = path.parent
        with contextlib.suppress(OSError):
            if shutil.disk_usage(path).free < 1 << 20:
                return True
    return False


@contextlib.contextmanager
def stop_when_disk_full(run_dir: Path, step: int, *scratch: Path) -> Iterator[None]:
    """Writing checkpoint ``step`` of the run in ``run_dir`` (staged in ``scratch``): a full
    disk stops the run with one line that names the resume point. The new checkpoint never
    counts (no progress.json, or its staging copy removed), so the newest complete one stays
    the resume point."""
    try:
        yield
    except Exception as exc:
        if not disk_full(exc, run_dir, *scratch):
            raise
        previous = latest_checkpoint(run_dir)
        file = next((e.filename for e in (exc, exc.__cause__, exc.__context__)
                     if isinstance(e, OSError) and e.filename), None)
        if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
            file = exc.args[0][0][1]  # copytree: (source, destination, why) per file
        resume = (f"it resumes from {previous.name}" if previous is not None
                  else "it resumes from the newest complete checkpoint, if any")
        raise ShardtuneError(
            f"no space left on device while writing {checkpoint_name(step)}"
            + (f" ({file})" if file else f" of {run_dir}"),
            "free space, lower trainer.keep_checkpoints or move paths.root, then re-run the "
            f"same command: {resume}") from exc


def persist_store(final: Path, store: Any, keep: int) -> None:
    """Local mode with ``paths.store``: upload a sealed checkpoint (progress.json last, so a
    kill mid-upload leaves a half-written one that never counts), then prune the store."""
    store.upload_dir(final, final.name, last=PROGRESS_FILE)
    for old in store.checkpoints()[0][:-keep]:
        if old != final.name:
            store.delete_dir(old)


@contextlib.contextmanager
def resume_point(run_dir: Path, store: Any = None) -> Iterator[Path | None]:
    """The newest complete checkpoint: Ray's restored one, the run directory's or the store's.

    After a worker group restart Ray hands back the last checkpoint its controller registered;
    a checkpoint uploaded just before the kill is on disk but may not be registered yet, and
    resuming from the older one would repeat a whole interval. On a new machine only the
    store (``paths.store``) has the run. Half-written ones never count.
    """
    import ray.train  # Ray loads only when a job runs: tests import this module without it

    on_disk = latest_checkpoint(run_dir)
    best = checkpoint_step(on_disk) if on_disk is not None else -1
    restored = ray.train.get_checkpoint()
    remote = store.checkpoints()[0] if store is not None else []
    restored_step = checkpoint_step(restored.path) if restored is not None else None
    remote_step = checkpoint_step(remote[-1]) if remote else None
    if restored_step is not None and restored_step > best and restored_step >= (remote_step
                                                                                or -1):
        with restored.as_directory() as d:
            yield Path(d)
    elif remote_step is not None and remote_step > best:
        with tempfile.TemporaryDirectory() as tmp:
            store.download_dir(remote[-1], Path(tmp))
            yield Path(tmp)
    else:
        yield on_disk
