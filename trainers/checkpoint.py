"""Checkpoints that hold the whole run: weights, optimizer, scheduler, RNG and data position.

Layout (identical in local and multi-worker mode)::

    runs/<run_name>/checkpoint_000040/
        adapter/              PEFT adapter (or full weights) in safetensors
        tokenizer/  label_map.json
        training_state.pt     optimizer + scheduler + torch RNG (loaded with weights_only=True)
        progress.json         written last: a checkpoint without it is incomplete and ignored

Ray Train persists checkpoints in multi-worker mode; local mode has no Ray persistence, so the
same directory is written here, atomically (write to a temporary name, then rename).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trainers.errors import ShardtuneError

PROGRESS_FILE = "progress.json"
STATE_FILE = "training_state.pt"
FULL_WEIGHTS = "full_weights.safetensors"
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


def unwrap(net: Any) -> Any:
    return net.module if hasattr(net, "module") else net


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


def save_state(out: Path, net: Any, optimizer: Any, scheduler: Any, progress: Progress,
               tokenizer: Any, labels: list[str]) -> None:
    """Write a complete checkpoint into ``out`` (progress.json last)."""
    out.mkdir(parents=True, exist_ok=True)
    model = unwrap(net)
    if hasattr(model, "peft_config"):
        model.save_pretrained(out / "adapter")
        _save_base_quantization(model, out / "adapter")
    else:  # full fine-tuning: an exportable model, plus exact weights for resume
        from safetensors.torch import save_model

        model.save_pretrained(out / "adapter", safe_serialization=True)
        save_model(model, str(out / FULL_WEIGHTS))
    tokenizer.save_pretrained(out / "tokenizer")
    (out / "label_map.json").write_text(json.dumps({"labels": labels}, indent=1))
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(state, out / STATE_FILE)
    (out / PROGRESS_FILE).write_text(json.dumps(asdict(progress)))


def load_state(src: Path, net: Any, optimizer: Any, scheduler: Any) -> Progress:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint directory."""
    try:
        progress = Progress(**json.loads((src / PROGRESS_FILE).read_text()))
        model = unwrap(net)
        adapter_dir = src / "adapter"
        if hasattr(model, "peft_config"):
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
            set_peft_model_state_dict(model, weights)
        else:
            from safetensors.torch import load_model

            load_model(model, str(src / FULL_WEIGHTS))
        state = torch.load(src / STATE_FILE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    except (OSError, KeyError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise ShardtuneError(
            f"checkpoint {src} is unreadable or corrupted ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})",
            "delete that checkpoint directory to resume from the one before it",
        ) from exc
    return progress


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run that finished writing, oldest first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir()
             if _CKPT_RE.match(p.name) and (p / PROGRESS_FILE).is_file()]
    return sorted(found, key=lambda p: int(_CKPT_RE.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:06d}"


def persist_local(tmp: Path, run_dir: Path, step: int, keep: int) -> Path:
    """Local mode: move a finished checkpoint into the run directory atomically, then prune."""
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / checkpoint_name(step)
    staging = run_dir / f".{final.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(tmp, staging)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    for old in complete_checkpoints(run_dir)[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final
