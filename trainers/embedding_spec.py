"""Typed specs of the retrieval tasks: an embedding model's training (``task.embedding.*``)
and the first stage a reranker is evaluated on (``task.rerank.*``).

Torch-free so the config schema imports them; the models and losses live in
trainers/embedding.py, trainers/contrastive.py and trainers/reranker.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from data.errors import ConfigError
from trainers.storage import refuse_credentials

LOSSES = ("auto", "in_batch", "cosent", "cosine")


@dataclass
class EmbeddingSpec:
    """How a bi-encoder learns.

    Args:
        loss: ``auto`` (by the data: ``cosent`` for scored pairs, else ``in_batch``),
            ``in_batch`` (query/document pairs: every other document of the global batch is
            a negative; MultipleNegativesRanking/InfoNCE), ``cosent`` or ``cosine`` (pairs
            with a similarity score, e.g. STS-B: rank or regress the cosine).
        scale: Inverse temperature of the in-batch softmax (20 as sentence-transformers).
        learnable_scale: Learn the scale (CLIP's logit scale, capped at 100) instead.
        gather: On ``cluster=ray``, share every worker's documents as negatives (the global
            batch); off, each worker sees only its own batch's.
        normalize: L2-normalise embeddings (the cosine), as MiniLM was trained.
        cache_chunk: Embed at most this many texts at a time in training, re-running each
            chunk in backward (GradCache's memory profile: activations of one chunk, not of
            the batch; same gradients, one more forward). Lets ``trainer.batch_size`` (and with
            it the in-batch negatives) exceed what fits in memory. 0 = the whole batch at once.
    """

    loss: str = "auto"
    scale: float = 20.0
    learnable_scale: bool = False
    gather: bool = True
    normalize: bool = True
    cache_chunk: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError("task.embedding.loss", f"must be one of {', '.join(LOSSES)}, "
                              f"got {self.loss!r}")
        if not 0 < self.scale <= 100:
            raise ConfigError("task.embedding.scale", f"must be in (0, 100], got {self.scale}")
        if self.cache_chunk < 0:
            raise ConfigError("task.embedding.cache_chunk",
                              f"must be >= 0 (0 = off), got {self.cache_chunk}")

    def resolve(self, scored_data: bool) -> None:
        """Pick ``auto``'s loss, and refuse a loss that does not fit the data's pairs."""
        if self.loss == "auto":
            self.loss = "cosent" if scored_data else "in_batch"
        if scored_data != (self.loss != "in_batch"):
            wants = "scored pairs" if self.loss != "in_batch" else "query/positive pairs"
            has = "scored" if scored_data else "unscored"
            raise ConfigError("task.embedding.loss", f"{self.loss} needs {wants}, but the "
                              f"data's pairs are {has}",
                              "set data.pairs.score_field for scored pairs, or "
                              "task.embedding.loss=auto")

    @property
    def scored(self) -> bool:
        """Pairs carry a similarity score (STS-B) rather than being positives."""
        return self.loss not in ("auto", "in_batch")


@dataclass
class RerankSpec:
    """What a ``task=rerank`` run's evaluations rerank: the seed group's at the end of
    training, a distillation's (teacher, student and control alike), ``evaluate``'s and
    ``quantize``'s unless their own ``rerank.*`` keys say otherwise. How it is evaluated,
    not what it learns: changing it never refuses a resume.

    Args:
        retriever: The first stage whose candidates the cross-encoder reorders: ``bm25`` or
            a trained ``task=embedding`` run directory.
        top_k: Candidates per query the cross-encoder scores (its cost grows with it:
            SciFact's 300 test queries are 30,000 pairs at 100, 3,000 at 10). At most 100,
            the first stage's depth.
        fusion: ``none`` (the cross-encoder's order), ``validation`` (its score interpolated
            with the first stage's, the weight picked on the run's validation queries:
            evaluation/fusion.py) or a fixed weight in [0, 1] on the cross-encoder's score.
    """

    retriever: str = "bm25"
    top_k: int = 100
    fusion: str = "none"

    def __post_init__(self) -> None:
        check_rerank(self.retriever, self.top_k, "task.rerank", self.fusion)


def check_rerank(retriever: str | None, top_k: int | None, prefix: str,
                 fusion: str | None = None) -> None:
    """The checks of ``task.rerank.*`` and of the verbs' ``rerank.*`` (None: not set)."""
    if top_k is not None and not 1 <= top_k <= 100:
        raise ConfigError(f"{prefix}.top_k", f"must be in [1, 100], got {top_k}")
    if retriever is not None:
        refuse_credentials(retriever, f"{prefix}.retriever")
    if fusion is not None:
        fusion_weight(fusion, f"{prefix}.fusion")


def fusion_weight(fusion: str, key: str) -> float | None:
    """``rerank.fusion`` read as the cross-encoder's weight (None: ``none`` or
    ``validation``); anything else is refused naming the key."""
    if fusion in ("none", "validation"):
        return None
    try:
        weight = float(fusion)
    except ValueError:
        raise ConfigError(key, f"{fusion!r} is none, validation or a weight in [0, 1]") from None
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(key, f"the weight {weight} is outside [0, 1]")
    return weight
