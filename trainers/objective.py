"""What the loop minimises: an objective built in each worker from the run, model and device.

The loop calls ``objective.forward(net, batch)`` and then ``objective.loss(net, out,
batch)``. The default is the task's own loss (the Hugging Face head's cross-entropy; for a
causal LM computed on the labelled positions only, trainers/lm_head.py); a distillation
passes its own factory (distill/objective.py), so the loop knows nothing of teachers. A
factory is a plain top-level callable: Ray pickles it into every worker.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Protocol

import torch

from data.batches import model_inputs
from trainers.config import TaskKind
from trainers.lm_head import labelled_head_applies, labelled_lm_loss


class Objective(Protocol):
    wants_hidden: bool  # ask the model for hidden states (a hidden-state loss needs them)

    def forward(self, net: Any, batch: dict[str, torch.Tensor]) -> Any:
        """The model's outputs for the batch, as ``loss`` reads them."""

    def loss(self, net: Any, out: Any, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """(the loss to back-propagate, named parts of it for the log)."""


ObjectiveFactory = Callable[[Any, torch.nn.Module, torch.device], Objective]


def model_forward(net: Any, batch: dict[str, torch.Tensor], hidden: bool = False) -> Any:
    """The model on the batch with its labels (its own loss in ``.loss``)."""
    return net(**model_inputs(batch), labels=batch["labels"],
               **({"output_hidden_states": True} if hidden else {}))


class TaskLoss:
    """The task's loss as the model computes it from ``labels``."""

    wants_hidden = False

    def __init__(self, labelled_head: bool = False) -> None:
        self.labelled_head = labelled_head  # a causal LM's head on its labelled positions

    def forward(self, net: Any, batch: dict[str, torch.Tensor]) -> Any:
        if self.labelled_head:
            return SimpleNamespace(
                loss=labelled_lm_loss(net, model_inputs(batch), batch["labels"]))
        return model_forward(net, batch)

    def loss(self, net: Any, out: Any, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        return out.loss, {}


def task_loss(run: Any, net: torch.nn.Module, device: torch.device) -> Objective:
    """The default factory."""
    return TaskLoss(run.task.kind == TaskKind.causal_lm
                    and labelled_head_applies(net, run.trainer.strategy.value))
