"""The few collectives the loop needs, on whichever backend Ray Train set up.

NCCL reduces CUDA tensors only: a CPU tensor handed to it fails. Gloo (CPU workers) takes CPU
tensors. Every helper here puts its tensor where the process group wants it.

torch is imported inside the helpers that need it: the CLI imports ``trainers.stop`` (its
signal handling), which imports this module, and answers ``--help`` without torch.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _device() -> torch.device:
    import torch  # see the module docstring

    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(values: list[float], world: int, op: str = "sum",
               dtype: torch.dtype | None = None) -> list[float]:
    """Element-wise sum or max of ``values`` over all ranks (unchanged when world is 1);
    reduced as ``dtype`` (float64 when None)."""
    if world == 1:
        return list(values)
    import torch  # see the module docstring

    tensor = torch.tensor(values, dtype=dtype or torch.float64, device=_device())
    reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
    torch.distributed.all_reduce(tensor, op=reduce_op)
    return tensor.cpu().tolist()


def gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if world == 1:
        return [obj]
    import torch  # see the module docstring

    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def unwrap(net: Any) -> Any:
    """The model inside DDP's wrapper (``net`` itself when not wrapped)."""
    return net.module if hasattr(net, "module") else net


def weights_hash(net: Any) -> str:
    """A short hash of the trainable weights: equal on every rank when DDP kept them in step."""
    digest = hashlib.sha256()
    for name, p in sorted(unwrap(net).named_parameters()):
        if p.requires_grad:
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def distributed_checks(net: Any, seen_uids: list[int], world: int) -> dict[str, Any]:
    """Evidence that DDP worked: disjoint data per rank and identical weights after training;
    and each rank's torch threads, which every throughput figure of the run depends on."""
    import torch  # see the module docstring

    hashes = gather(weights_hash(net), world)
    uid_sets = [set(u) for u in gather(seen_uids, world)]
    overlap = sum(len(a & b) for i, a in enumerate(uid_sets) for b in uid_sets[i + 1:])
    return {"dist/world_size": world, "dist/weights_equal": float(len(set(hashes)) == 1),
            "dist/weights_hash": hashes[0], "dist/rows_per_rank": [len(s) for s in uid_sets],
            "dist/overlap": overlap, "dist/torch_threads": gather(torch.get_num_threads(), world)}
