"""The few collectives the loop needs, on whichever backend Ray Train set up.

NCCL reduces CUDA tensors only: a CPU tensor handed to it fails. Gloo (CPU workers) takes CPU
tensors. Every helper here puts its tensor where the process group wants it.
"""

from __future__ import annotations

from typing import Any

import torch


def _device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(values: list[float], world: int, op: str = "sum",
               dtype: torch.dtype = torch.float64) -> list[float]:
    """Element-wise sum or max of ``values`` over all ranks (unchanged when world is 1)."""
    if world == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=dtype, device=_device())
    reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
    torch.distributed.all_reduce(tensor, op=reduce_op)
    return tensor.cpu().tolist()


def gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out
