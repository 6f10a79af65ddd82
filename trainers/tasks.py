"""What differs between tasks: how predictions are collected and scored. The loop is shared.

Every task's model returns ``loss`` and ``logits`` from a Hugging Face forward pass with
``labels``; evaluation only differs in what it keeps from the logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from data.tokenize import IGNORE_INDEX
from trainers.config import TaskKind
from trainers.ranking import SPLIT_METRICS, split_ranking


@dataclass
class EvalState:
    """Per-rank evaluation results; merged across ranks before scoring."""

    loss_sum: float = 0.0
    loss_count: int = 0
    gold: list[Any] = field(default_factory=list)
    pred: list[Any] = field(default_factory=list)
    uids: list[int] = field(default_factory=list)
    # embedding pairs: (query key, query vector, document key, document vector), and the
    # negatives as (key, vector), for the split-wide ranking (trainers/ranking.py)
    pairs: list[tuple[int, np.ndarray, int, np.ndarray]] = field(default_factory=list)
    distractors: list[tuple[int, np.ndarray]] = field(default_factory=list)

    def merge(self, other: EvalState) -> None:
        self.loss_sum += other.loss_sum
        self.loss_count += other.loss_count
        self.gold += other.gold
        self.pred += other.pred
        self.uids += other.uids
        self.pairs += other.pairs
        self.distractors += other.distractors


def text_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[int]:
    """One key per row from its unpadded token ids: equal texts, equal keys (in every process:
    a tuple of ints hashes the same everywhere, unlike a string)."""
    return [hash(tuple(ids[:int(n)])) for ids, n in
            zip(input_ids.tolist(), attention_mask.sum(1).tolist(), strict=True)]


def _embedded_pairs(state: EvalState, batch: dict[str, torch.Tensor],
                    embedded: tuple[torch.Tensor, ...]) -> None:
    queries, docs = (t.float().cpu().numpy() for t in embedded[:2])
    q_keys = text_keys(batch["input_ids"], batch["attention_mask"])
    d_keys = text_keys(batch["doc_input_ids"], batch["doc_attention_mask"])
    state.pairs += list(zip(q_keys, queries, d_keys, docs, strict=True))
    if len(embedded) > 2:
        negatives = embedded[2].float().cpu().numpy()
        n_keys = text_keys(batch["neg_input_ids"], batch["neg_attention_mask"])
        state.distractors += list(zip(n_keys, negatives, strict=True))


def accumulate(state: EvalState, task: TaskKind, batch: dict[str, torch.Tensor],
               loss: torch.Tensor, logits: torch.Tensor | None,
               embedded: tuple[torch.Tensor, ...] | None = None) -> None:
    """Add one evaluated batch: loss weighted by what the loss averaged over (a causal LM's
    logits are not needed, and not computed where the head ran on labelled positions).
    ``embedded``: an embedding batch's (query, document[, negative]) embeddings."""
    labels = batch["labels"]
    if task == TaskKind.seq_cls:
        weight = labels.numel()
        state.gold += labels.tolist()
        state.pred += logits.argmax(-1).tolist()
        state.uids += batch["uid"].tolist()
    elif task == TaskKind.token_cls:
        weight = int((labels != IGNORE_INDEX).sum())
        pred = logits.argmax(-1)
        for row_gold, row_pred in zip(labels.tolist(), pred.tolist(), strict=True):
            keep = [i for i, g in enumerate(row_gold) if g != IGNORE_INDEX]
            state.gold.append([row_gold[i] for i in keep])
            state.pred.append([row_pred[i] for i in keep])
        state.uids += batch["uid"].tolist()
    elif task == TaskKind.embedding:  # evaluation scores each batch alone (no gather)
        weight = len(labels)
        if logits.dim() == 2:  # in-batch rows: query i's own document is column i
            state.gold += list(range(len(labels)))
            state.pred += logits.argmax(-1).tolist()
            if embedded is not None:
                _embedded_pairs(state, batch, embedded)
        else:  # scored pairs: the cosine against the gold score
            state.gold += labels.tolist()
            state.pred += logits.tolist()
        state.uids += batch["uid"].tolist()
    elif task == TaskKind.rerank:  # (positive, negative) scores per query: pairwise order
        weight = len(labels)
        state.gold += [1] * len(labels)
        state.pred += (logits[:, 0] > logits[:, 1]).long().tolist()
        state.uids += batch["uid"].tolist()
    else:  # causal LM: HF shifts labels by one, so the loss averages over len-1 tokens per row
        shifted = labels[:, 1:]
        weight = int((shifted != IGNORE_INDEX).sum())
    state.loss_sum += float(loss) * weight
    state.loss_count += weight


def score(state: EvalState, task: TaskKind, labels: list[str]) -> dict[str, float]:
    """Headline metrics for a merged EvalState."""
    loss = state.loss_sum / max(state.loss_count, 1)
    out: dict[str, float] = {"loss": loss}
    if task == TaskKind.causal_lm:
        out["tokens"] = float(state.loss_count)
    else:
        out["examples"] = float(len(state.uids))
    if task == TaskKind.seq_cls:
        from sklearn.metrics import accuracy_score, f1_score  # per task: seqeval has f1_score too

        out["accuracy"] = float(accuracy_score(state.gold, state.pred))
        out["macro_f1"] = float(
            f1_score(state.gold, state.pred, average="macro", labels=list(range(len(labels))),
                     zero_division=0)
        )
    elif task == TaskKind.token_cls:
        from seqeval.metrics import f1_score, precision_score, recall_score  # entity level

        gold = [[labels[i] for i in row] for row in state.gold]
        pred = [[labels[i] for i in row] for row in state.pred]
        out["entity_f1"] = float(f1_score(gold, pred, zero_division=0))
        out["entity_precision"] = float(precision_score(gold, pred, zero_division=0))
        out["entity_recall"] = float(recall_score(gold, pred, zero_division=0))
        out["token_accuracy"] = float(
            np.mean([g == p for gr, pr in zip(gold, pred, strict=True)
                     for g, p in zip(gr, pr, strict=True)]) if gold else 0.0
        )
    elif task == TaskKind.embedding:
        gold, pred = np.asarray(state.gold), np.asarray(state.pred)
        if gold.dtype.kind in "iu":  # in-batch retrieval: the own document ranked first
            out["in_batch_accuracy"] = float(np.mean(gold == pred)) if len(gold) else 0.0
            ranked = split_ranking(state.pairs, state.distractors)
            out.update({f"split_{name}": value for name, value in ranked.items()})
        elif len(gold) > 1:
            from scipy.stats import spearmanr  # per task, like the metrics above

            out["spearman"] = float(spearmanr(pred, gold).statistic)
    elif task == TaskKind.rerank:  # the positive scored above the negative
        out["pair_accuracy"] = float(np.mean(state.pred)) if state.pred else 0.0
    else:
        out["perplexity"] = float(math.exp(min(loss, 50.0)))
    return out


# What ``score`` reports per task during training (val/<name>): what a sweep may optimise.
# An embedding run reports the in-batch and split-wide ranking figures for unscored pairs,
# Spearman for scored ones (task.embedding.loss).
REPORTED = {TaskKind.seq_cls: ("accuracy", "macro_f1", "loss"),
            TaskKind.token_cls: ("entity_f1", "entity_precision", "entity_recall",
                                 "token_accuracy", "loss"),
            TaskKind.causal_lm: ("perplexity", "loss"),
            TaskKind.embedding: (*(f"split_{m}" for m in SPLIT_METRICS), "in_batch_accuracy",
                                 "spearman", "loss"),
            TaskKind.rerank: ("pair_accuracy", "loss")}

HEADLINE = {TaskKind.seq_cls: "accuracy", TaskKind.token_cls: "entity_f1",
            TaskKind.causal_lm: "perplexity", TaskKind.embedding: "loss",
            TaskKind.rerank: "pair_accuracy"}
