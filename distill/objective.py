"""What the shared loop calls instead of ``out.loss`` when a run distils.

Offline: the teacher's log-probabilities arrive in the batch (``teacher_logp``, and
``teacher_index`` for top-k LM outputs). Online: the frozen teacher runs here, under
``no_grad``, on the same batch; it is never handed to the optimizer or to DDP. An embedding
student learns the teacher's similarity distribution over each query's candidates, the same
gathered documents its own contrastive loss ranks, built from the teacher's embeddings of the
batch's texts (cached offline, or computed here); a scored-pair (STS) student, the order of
the teacher's cosines over the batch's pairs, by CoSENT as its own loss learns the gold
scores' order (T does not apply: cosines are not a distribution; a mean squared error to
them, tried first, is 100× smaller than CoSENT and left the student equal to its control,
docs/benchmarks.md). A reranker student
learns the teacher's softmax over each row's (positive, negative) scores, the two columns of
its own pairwise loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from data.batches import model_inputs
from distill.loss import distill_loss, hidden_term
from distill.teacher import EMBEDDED_SIDES, embed_sides, load_teacher
from trainers.config import TaskKind
from trainers.contrastive import cosent_on_cosines, in_batch_logits
from trainers.lm_head import labelled_head_applies, labelled_logits
from trainers.objective import model_forward


def distiller(run: Any, net: torch.nn.Module, device: torch.device) -> Distiller:
    """The loop's objective factory for a student (trainers/objective.py): the KD loss, and
    the student-to-teacher projection a hidden-state loss needs, owned by the student."""
    objective = Distiller(run, device, labelled_head=run.task.kind == TaskKind.causal_lm
                          and labelled_head_applies(net, run.trainer.strategy.value))
    if objective.wants_hidden and objective.teacher is not None:
        objective.attach_projection(net, net.config.hidden_size,
                                    objective.teacher.config.hidden_size)
    return objective


class Distiller:
    def __init__(self, run: Any, device: torch.device, labelled_head: bool = False) -> None:
        self.spec = run.distill
        self.labelled_head = labelled_head  # a causal LM student's head on labelled positions
        self.task = run.task.kind.value
        self.teacher = None
        if self.spec.teacher_mode == "online":
            self.teacher, _, _ = load_teacher(self.spec.teacher, run.task.kind)
            self.teacher.to(device)
        self.wants_hidden = self.spec.hidden_loss != "none"
        self.gather = run.task.embedding.gather  # as the student's in-batch logits
        self.scored = self.task == "embedding" and run.task.embedding.scored
        # CoSENT's scale, for a scored-pair student's KD term
        self.scale = run.task.embedding.scale if self.scored else None

    def attach_projection(self, net: Any, student_width: int, teacher_width: int) -> None:
        """A learned map from student to teacher width, owned by the student so DDP syncs it."""
        if student_width != teacher_width:
            net.kd_projection = torch.nn.Linear(student_width, teacher_width)

    def teacher_outputs(self, batch: dict[str, torch.Tensor]) -> tuple[Any, Any, Any]:
        """(log-probs at T, top-k ids or None, hidden states or None)."""
        if self.teacher is None:
            return batch["teacher_logp"], batch.get("teacher_index"), None
        with torch.no_grad():
            out = self.teacher(**model_inputs(batch), output_hidden_states=self.wants_hidden)
            logp = torch.log_softmax(out.logits.float() / self.spec.temperature, -1)
        return logp, None, out.hidden_states if self.wants_hidden else None

    def teacher_embeddings(self, batch: dict[str, torch.Tensor]
                           ) -> tuple[dict[str, torch.Tensor], torch.Tensor | float]:
        """Embedding students: the teacher's embeddings of the batch's texts by side
        (``teacher_query``, ``teacher_doc``, ``teacher_neg``) and its scale: cached with the
        rows offline, computed here online (a PeftModel hands embed() and scale on)."""
        if self.teacher is None:
            return ({k: batch[k] for k in EMBEDDED_SIDES if k in batch},
                    batch["teacher_scale"][0])
        with torch.no_grad():
            return embed_sides(self.teacher, batch), self.teacher.scale()

    def similarity_logp(self, batch: dict[str, torch.Tensor], gather: bool
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding students: (the teacher's log-softmax at T over each query's candidate
        documents, the positives' columns), laid out as the student's in-batch logits (the
        same gathered positives and hard negatives, trainers/contrastive.py)."""
        sides, scale = self.teacher_embeddings(batch)
        negatives = sides["teacher_neg"].unsqueeze(1) if "teacher_neg" in sides else None
        with torch.no_grad():
            logits, labels = in_batch_logits(sides["teacher_query"], sides["teacher_doc"],
                                             negatives, scale, gather=gather)
        return torch.log_softmax(logits.float() / self.spec.temperature, -1), labels

    def pair_cosines(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scored-pair students (STS): the teacher's cosine of each pair."""
        sides, _ = self.teacher_embeddings(batch)
        return F.cosine_similarity(sides["teacher_query"], sides["teacher_doc"], dim=-1)

    def forward(self, net: Any, batch: dict[str, torch.Tensor]) -> Any:
        """The student's outputs: its logits at every position (and hidden states), or for a
        causal LM only where the loss reads them (``keep``: trainers/lm_head.py)."""
        if self.labelled_head:
            return labelled_logits(net, model_inputs(batch), batch["labels"])
        return model_forward(net, batch, self.wants_hidden)

    def loss(self, net: Any, out: Any, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        if self.scored:  # α·its own pair loss + (1−α)·CoSENT ordered by the teacher's cosines
            kd = cosent_on_cosines(out.logits.float(), self.pair_cosines(batch), self.scale)
            loss = self.spec.alpha * out.loss + (1 - self.spec.alpha) * kd
            return loss, {"ce": float(out.loss.detach()), "kd": float(kd.detach())}
        if self.task == "embedding":  # α·contrastive CE + (1−α)·T²·KL over the candidates
            teacher_logp, labels = self.similarity_logp(batch, self.gather)
            return distill_loss(out.logits, labels, teacher_logp, self.spec.alpha,
                                self.spec.temperature, self.spec.kl)
        teacher_logp, teacher_index, teacher_hidden = self.teacher_outputs(batch)
        labels, causal = batch["labels"], self.task == "causal_lm"
        keep = getattr(out, "keep", None)
        if keep is not None:  # logits at the labelled positions only: the rest read there too
            labels, causal = labels[:, 1:][keep], False
            teacher_logp = teacher_logp[:, :-1][keep]
            teacher_index = teacher_index[:, :-1][keep] if teacher_index is not None else None
        loss, parts = distill_loss(out.logits, labels, teacher_logp, self.spec.alpha,
                                   self.spec.temperature, self.spec.kl, teacher_index,
                                   causal=causal)
        if teacher_hidden is not None and out.hidden_states is not None:
            student_hidden = out.hidden_states
            projection = getattr(_plain(net), "kd_projection", None)
            pairs = _layer_pairs(len(student_hidden) - 1, len(teacher_hidden) - 1)
            hidden = sum(hidden_term(student_hidden[s], teacher_hidden[t],
                                     batch["attention_mask"], self.spec.hidden_loss, projection)
                         for s, t in pairs) / len(pairs)
            loss = loss + self.spec.hidden_weight * hidden
            parts["hidden"] = float(hidden.detach())
        return loss, parts


def _plain(net: Any) -> Any:
    return getattr(net, "module", net)


def _layer_pairs(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student block s (1-based output index) ↔ teacher block round(s·T/S): evenly spaced."""
    return [(s, round(s * teacher_layers / student_layers)) for s in range(1, student_layers + 1)]
