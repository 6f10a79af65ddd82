"""The distillation loss, one formula for every task:

    loss = α · CE(student, labels) + (1 − α) · T² · KL_T

KL_T compares softened distributions (logits / T) position by position: per example for
classification, per token for NER and causal LM (where the teacher may keep only its top-k
tokens; both sides are then renormalised over those k). ``forward`` is KL(teacher ‖ student),
``reverse`` KL(student ‖ teacher). Token positions whose label is ignored (-100) do not count;
an example-level label of -100 (a teacher-only copy, ``distill.augment``) drops only its CE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor, direction: str) -> torch.Tensor:
    """KL per position (summed over the last axis); inputs are log-probabilities."""
    if direction == "forward":
        return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
    return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)


def kd_term(student_logits: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor,
            temperature: float, direction: str = "forward",
            teacher_index: torch.Tensor | None = None) -> torch.Tensor:
    """T² · mean KL over unmasked positions.

    ``teacher_logp``: the teacher's log-probabilities at temperature T over the full label
    set, or over its top-k tokens when ``teacher_index`` gives their vocabulary ids.
    """
    logits = student_logits.float() / temperature
    if teacher_index is not None:  # top-k support: renormalise both sides over it
        logits = logits.gather(-1, teacher_index.long())
        teacher_logp = teacher_logp - torch.logsumexp(teacher_logp, -1, keepdim=True)
    student_logp = F.log_softmax(logits, -1)
    per_position = _kl(student_logp, teacher_logp.float(), direction)
    weights = mask.float()
    return temperature ** 2 * (per_position * weights).sum() / weights.sum().clamp(min=1.0)


def ce_term(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(student_logits.float().reshape(-1, student_logits.shape[-1]),
                           labels.reshape(-1), ignore_index=IGNORE_INDEX)


def distill_loss(student_logits: torch.Tensor, labels: torch.Tensor,
                 teacher_logp: torch.Tensor, alpha: float, temperature: float,
                 direction: str = "forward", teacher_index: torch.Tensor | None = None,
                 causal: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """α·CE + (1−α)·T²·KL; returns the loss and its parts for logging.

    ``causal``: logits at position t predict token t+1, so both the labels and the teacher
    outputs are read shifted, as the model's own LM loss does.
    """
    if causal:
        student_logits = student_logits[:, :-1]
        labels = labels[:, 1:]
        teacher_logp = teacher_logp[:, :-1]
        teacher_index = teacher_index[:, :-1] if teacher_index is not None else None
    labelled = labels != IGNORE_INDEX
    # one position per example (classification): every example has a teacher distribution,
    # also the unlabelled ones (distill.augment); per token, -100 marks padding/sub-words
    mask = torch.ones_like(labelled) if labels.dim() == 1 else labelled
    ce = ce_term(student_logits, labels) if alpha > 0 and labelled.any() \
        else student_logits.sum() * 0.0
    kd = kd_term(student_logits, teacher_logp, mask, temperature, direction, teacher_index) \
        if alpha < 1 else student_logits.sum() * 0.0
    loss = alpha * ce + (1 - alpha) * kd
    return loss, {"ce": float(ce.detach()), "kd": float(kd.detach())}


def hidden_term(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                attention_mask: torch.Tensor, kind: str,
                projection: torch.nn.Module | None = None) -> torch.Tensor:
    """MSE or (1 − cosine) between hidden states over real tokens."""
    student_hidden = projection(student_hidden) if projection is not None else student_hidden
    mask = attention_mask.unsqueeze(-1).float()
    if kind == "mse":
        err = ((student_hidden.float() - teacher_hidden.float()) ** 2).mean(-1, keepdim=True)
    else:
        err = 1 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(),
                                      dim=-1).unsqueeze(-1)
    return (err * mask).sum() / mask.sum().clamp(min=1.0)
