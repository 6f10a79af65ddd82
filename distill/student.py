"""Student initialisation: a layer subset of the teacher (embeddings and head copied), the
teacher's architecture resized, or any model path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from data.errors import ConfigError

LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def _config_of(model: Any) -> Any:
    return getattr(model, "config", None) or model.encoder.config


def find_layers(model: Any) -> tuple[Any, str, torch.nn.ModuleList]:
    """(parent module, attribute name, the list of transformer blocks)."""
    config = _config_of(model)
    count = next((getattr(config, k) for k in LAYER_COUNT_KEYS if hasattr(config, k)), None)
    for _name, module in model.named_modules():
        for attr, child in module.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == count:
                return module, attr, child
    raise ConfigError("distill.student", f"cannot find the {count} transformer blocks of "
                      f"{type(model).__name__}", "use distill.student=config or path")


def keep_layers(teacher: Any, keep: list[int]) -> Any:
    """A deep copy of ``teacher`` with only the blocks in ``keep`` (in that order)."""
    student = copy.deepcopy(teacher)
    parent, attr, layers = find_layers(student)
    if not keep or any(i < 0 or i >= len(layers) for i in keep):
        raise ConfigError("distill.student_layers", f"must pick from 0..{len(layers) - 1}, "
                          f"got {keep}")
    kept = torch.nn.ModuleList([layers[i] for i in keep])
    for new_index, block in enumerate(kept):  # decoder caches index layers by position
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    setattr(parent, attr, kept)
    for config in {id(c): c for c in (_config_of(student), getattr(student, "config", None))
                   if c is not None}.values():
        for key in LAYER_COUNT_KEYS:
            if hasattr(config, key):
                setattr(config, key, len(keep))
    return student


def every_other(count: int) -> list[int]:
    return list(range(0, count, 2))


def merged_teacher(teacher: Any) -> Any:
    """Adapters folded into full-precision weights (a plain module to copy layers from)."""
    from peft import PeftModel  # peft takes seconds to import: only merging a teacher needs it

    if isinstance(teacher, PeftModel):
        return teacher.merge_and_unload()
    return teacher


def save_student(student: Any, tokenizer: Any, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def layer_count(model: Any) -> int:
    return len(find_layers(model)[2])
