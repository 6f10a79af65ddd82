"""What the loop minimises: an objective built in each worker from the run, model and device.

The loop calls ``objective.loss(net, out, batch)`` where it would read ``out.loss``. The
default is the task's own loss (the Hugging Face head's cross-entropy); a distillation passes
its own factory (distill/objective.py), so the loop knows nothing of teachers. A factory is
a plain top-level callable: Ray pickles it into every worker.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch


class Objective(Protocol):
    wants_hidden: bool  # ask the model for hidden states (a hidden-state loss needs them)

    def loss(self, net: Any, out: Any, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """(the loss to back-propagate, named parts of it for the log)."""


ObjectiveFactory = Callable[[Any, torch.nn.Module, torch.device], Objective]


class TaskLoss:
    """The task's loss as the model computes it from ``labels``."""

    wants_hidden = False

    def loss(self, net: Any, out: Any, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        return out.loss, {}


def task_loss(run: Any, net: torch.nn.Module, device: torch.device) -> Objective:
    """The default factory."""
    return TaskLoss()
