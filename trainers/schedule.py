"""How long a run is and how its learning rate moves: the step plan, the optimizer, the LR
schedule and the optimizer step.

With fixed batches (``trainer.batch_size`` rows) an epoch's steps are known before it starts and
the schedule counts steps. With token-budget batches (``trainer.batch_tokens``) the count follows
the lengths each chunk happens to hold, so the schedule counts training examples instead: the
same warmup share and decay over the epochs' rows, however many steps they take
(``trainer.max_steps``, when set, still fixes the length in steps).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trainers.config import TrainConfig
from trainers.data_loss import rows_per_rank


def plan_steps(run: TrainConfig, train_rows: int, world: int) -> tuple[int | None, float]:
    """(micro-batches per epoch on one rank, total optimizer steps) for the LR schedule.

    Token-budget batches: (None, ``max_steps`` or infinity): the epochs decide."""
    if run.trainer.batch_tokens is not None:
        return None, run.trainer.max_steps or math.inf
    micro = max(math.ceil(rows_per_rank(train_rows, world) / run.trainer.batch_size), 1)
    per_epoch = math.ceil(micro / run.trainer.grad_accum)
    total = per_epoch * run.trainer.epochs
    if run.trainer.max_steps is not None:
        total = min(total, run.trainer.max_steps)
    return micro, total


def build_optimizer(net: Any, run: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": run.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=run.optim.lr, betas=tuple(run.optim.betas))


def build_scheduler(optimizer: torch.optim.Optimizer, run: TrainConfig, total: float,
                    epoch_rows: int) -> Any:
    """transformers' schedule over ``total`` steps, or, when the steps are not known
    (token budgets), over the epochs' examples (``epoch_rows`` a rank sees an epoch)."""
    from transformers import get_scheduler  # in the worker; importers stay transformers-free

    if math.isinf(total):
        total = max(epoch_rows * run.trainer.epochs, 1)
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
    return get_scheduler(name[run.optim.schedule], optimizer,
                         num_warmup_steps=int(run.optim.warmup_ratio * total),
                         num_training_steps=int(total))


def optimizer_step(net: Any, optimizer: Any, scheduler: Any, run: TrainConfig,
                   examples: float | None = None) -> None:
    """Clip, step, move the schedule on (to ``examples`` seen when it counts examples)."""
    if run.optim.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(
            [p for p in net.parameters() if p.requires_grad], run.optim.max_grad_norm
        )
    optimizer.step()
    if examples is not None:  # LambdaLR computes the rate from last_epoch + 1 after step()
        scheduler.last_epoch = int(examples) - 1
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
