"""Losses of the embedding/retrieval task, correct under DDP (one process per rank).

In-batch negatives get stronger with the batch, so every rank's positives and hard negatives
are gathered and serve as documents for every rank's queries. Two things go wrong in
sentence-transformers' versions of this, and are what the tests here pin down:

- gathering without a gradient path (plain ``all_gather``) leaves the other ranks' documents
  as constants: each rank's encoder then never learns from the other ranks' losses
  (sentence-transformers #2831, #3149). ``gather_with_grad`` sums the gradient back.
- gathering positives and negatives row by row lays them out ``P N N P N N ...`` while the
  labels assume ``P P ... N N ...``: queries are then trained towards a hard negative
  (sentence-transformers #3453). ``in_batch_logits`` gathers one block per rank and rearranges
  it so that the label of local query ``i`` on rank ``r`` is exactly ``r * B + i``.

Embeddings are expected L2-normalised by the encoder (before the gather), so a dot product is
the cosine similarity. ``embed_in_chunks`` gives the same parameter gradients for a global
batch whose activations exceed memory (GradCache). trainers/embedding.py wires these into the
model the loop trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch.utils.checkpoint import checkpoint

_MAX_DIMS = 8  # the shape check gathers a fixed-size tensor: every rank must send the same size


def _world_rank() -> tuple[int, int]:
    """(world size, rank), (1, 0) when torch.distributed is not in use."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(), dist.get_rank()


def _check_same_shape(x: torch.Tensor, world: int) -> None:
    """Raise on every rank (not hang, not garble) when the ranks' shapes differ.

    ``all_gather`` needs equal shapes; the batch sizes must also be equal for the averaged
    gradient to be the global mean (see ``gather_with_grad``). Costs one tiny collective.
    """
    if x.dim() > _MAX_DIMS:
        raise ValueError(f"gather_with_grad takes at most {_MAX_DIMS} dims, got {x.dim()}")
    mine = torch.full((_MAX_DIMS + 1,), -1, dtype=torch.int64, device=x.device)
    mine[0] = x.dim()
    mine[1:x.dim() + 1] = torch.tensor(x.shape, dtype=torch.int64)
    shapes = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(shapes, mine)
    seen = [tuple(s[1:s[0] + 1].tolist()) for s in shapes]
    if len(set(seen)) > 1:
        raise ValueError(f"gather_with_grad needs the same shape on every rank, got {seen} "
                         "(rank order): drop the last incomplete batch or pad it; ragged "
                         "batches would also make the averaged gradient differ from the "
                         "global-batch loss's")


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        world, rank = _world_rank()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        ctx.start, ctx.length = rank * x.shape[0], x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce works in place; grad is autograd's
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad.narrow(0, ctx.start, ctx.length)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated along dim 0 in rank order, with a gradient path back.

    Shapes must be equal on every rank (checked: a clear ``ValueError`` on every rank, not a
    hang); ragged batches are refused rather than supported, for the reason below.

    Backward sums the gathered tensor's gradient over ranks (``all_reduce``) and each rank
    keeps its own slice: rank r's embeddings receive d(sum over ranks of loss)/d(embeddings_r),
    since every rank's loss used them. Why that is exact: each rank's loss is the mean over
    its B local queries against all W*B gathered documents, so the global-batch loss is the
    mean of the W rank losses. Rank r's parameter gradient is then d(sum of losses)/d(theta)
    through its own embeddings; DDP averages it over ranks, which sums the paths through every
    rank's embeddings and divides by W: d(mean of losses)/d(theta), the global-batch gradient.
    A gather without this backward drops the paths through the other ranks' losses.

    Every rank must run backward through the result (its backward is a collective). Returns
    ``x`` itself when torch.distributed is not initialised or the world is one process.
    Uses only all_gather and all_reduce, which both gloo and NCCL have
    (``torch.distributed.nn.all_gather``'s backward needs reduce_scatter, which gloo lacks).
    """
    world, _ = _world_rank()
    if world == 1:
        return x
    _check_same_shape(x, world)
    return _GatherWithGrad.apply(x)


def in_batch_logits(queries: torch.Tensor, positives: torch.Tensor,
                    negatives: torch.Tensor | None = None,
                    scale: float | torch.Tensor = 20.0,
                    gather: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, W*B*(1+N)], labels [B]) of the local queries against all ranks' documents
    (``gather=False``: this rank's only, W=1: evaluation, whose ranks score unequal batches).

    Documents are ``cat(all ranks' positives [W*B], all ranks' negatives [W*B*N])``: one block
    ``[positives; negatives]`` per rank is gathered (one collective) and rearranged, so local
    query i on rank r has its own positive at column ``r*B + i``. Every other query's positive
    and every hard negative (of any query) is a negative. Inputs: queries and positives
    [B, H], negatives [B, N, H] (N >= 0), L2-normalised so the dot product is the cosine.
    """
    b, h = queries.shape
    if positives.shape != (b, h):
        raise ValueError(f"positives must be {(b, h)} like the queries, got "
                         f"{tuple(positives.shape)}")
    if negatives is None:
        negatives = positives.new_empty((b, 0, h))
    if negatives.dim() != 3 or negatives.shape[0] != b or negatives.shape[2] != h:
        raise ValueError(f"negatives must be [{b}, N, {h}], got {tuple(negatives.shape)}")
    n = negatives.shape[1]
    world, rank = _world_rank() if gather else (1, 0)
    block = torch.cat([positives, negatives.reshape(b * n, h)])  # [B*(1+N), H]
    per_rank = (gather_with_grad(block) if gather else block).view(world, b * (1 + n), h)
    docs = torch.cat([per_rank[:, :b].reshape(world * b, h),
                      per_rank[:, b:].reshape(world * b * n, h)])
    labels = torch.arange(b, device=queries.device) + rank * b
    return scale * queries @ docs.T, labels


def in_batch_negatives_loss(queries: torch.Tensor, positives: torch.Tensor,
                            negatives: torch.Tensor | None = None,
                            scale: float | torch.Tensor = 20.0) -> torch.Tensor:
    """Cross-entropy of each local query over all ranks' documents (``in_batch_logits``), its
    own positive being the target; mean over the local queries (MultipleNegativesRanking /
    InfoNCE). Under DDP, averaging the ranks' gradients gives the global-batch gradient."""
    logits, labels = in_batch_logits(queries, positives, negatives, scale)
    return F.cross_entropy(logits, labels)


class Scale(torch.nn.Module):
    """The temperature's inverse: learnable (as CLIP's logit scale) or fixed.

    Kept as log-scale so a learnt value stays positive; clamped to ``max_value`` (CLIP's 100)
    in ``forward``, since a scale that grows unchecked makes the softmax one-hot and the loss
    unstable. Fixed, it is a buffer: saved with the model, never in ``parameters()``.
    Learnable under DDP, its gradient must be averaged over ranks like the encoder's.
    """

    def __init__(self, init: float = 20.0, learnable: bool = True,
                 max_value: float = 100.0) -> None:
        super().__init__()
        if not 0 < init <= max_value:
            raise ValueError(f"scale init must be in (0, {max_value}], got {init}")
        self.max_log = math.log(max_value)
        log_init = torch.tensor(math.log(init))
        if learnable:
            self.log_scale = torch.nn.Parameter(log_init)
        else:
            self.register_buffer("log_scale", log_init)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log).exp()


def cosine_similarity_loss(a: torch.Tensor, b: torch.Tensor, gold: torch.Tensor,
                           gold_range: tuple[float, float] = (0.0, 5.0)) -> torch.Tensor:
    """MSE between cos(a_i, b_i) and gold rescaled from ``gold_range`` (STS-B: 0..5) to [0, 1].

    Local, no gather: each pair's term depends on that pair alone, so DDP's average of the
    ranks' mean losses already is the global-batch mean. A gold outside the declared range
    raises (a wrong range would silently train towards wrong targets).
    """
    lo, hi = gold_range
    if not lo < hi:
        raise ValueError(f"gold_range must be (low, high) with low < high, got {gold_range}")
    if bool(((gold < lo) | (gold > hi)).any()):
        raise ValueError(f"gold scores outside the declared range {gold_range}: "
                         f"min {gold.min().item()}, max {gold.max().item()}")
    target = (gold.to(a.dtype) - lo) / (hi - lo)
    return F.mse_loss(F.cosine_similarity(a, b, dim=-1), target)


def cosent_loss(a: torch.Tensor, b: torch.Tensor, gold: torch.Tensor,
                scale: float = 20.0) -> torch.Tensor:
    """CoSENT: log(1 + sum over gold_i > gold_j of exp(scale * (cos_j - cos_i))).

    Penalises every pair of pairs whose cosines are ordered against their gold scores; only
    the order of gold matters, so any gold scale works. Local, no gather: there are no
    documents to share, the comparisons are among the local pairs; under DDP it trains as on
    one device with the per-rank batch (as sentence-transformers' CoSENTLoss does).
    """
    return cosent_on_cosines(F.cosine_similarity(a, b, dim=-1), gold, scale)


def cosent_on_cosines(cosines: torch.Tensor, gold: torch.Tensor, scale: float = 20.0
                      ) -> torch.Tensor:
    """CoSENT on the pairs' cosines already computed; ``gold`` may be any scores whose order
    is the target (a scored-pair student's KD term passes the teacher's cosines)."""
    cos = scale * cosines
    diff = cos[None, :] - cos[:, None]  # [i, j] = cos_j - cos_i
    wrong = diff[gold[:, None] > gold[None, :]]
    return torch.logsumexp(torch.cat([diff.new_zeros(1), wrong]), dim=0)


def embed_in_chunks(embed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    chunk: int) -> torch.Tensor:
    """``embed(input_ids, attention_mask)`` of a whole batch, holding the activations of at
    most ``chunk`` rows at a time: GradCache's memory profile (Gao et al. 2021) inside autograd.

    Each chunk runs under non-reentrant activation checkpointing: the forward keeps only the
    chunk's inputs and its embeddings, the loss over the whole (gathered) batch is computed on
    those embeddings as usual, and backward re-runs one chunk at a time (dropout masks replayed
    from the forward's RNG state) and back-propagates the embeddings' gradient through it. The
    gradients are those of the plain batch (tested, also across gloo ranks under DDP); the cost
    is one more forward per chunk. Being one forward and one backward, it needs nothing of the
    loop, DDP (non-reentrant checkpoints fire each parameter's gradient hook once) or the
    loss; a chunk as large as the batch is the plain forward. Each chunk is cut to its own
    longest row (when padded on the right), so bucketed batches pay no extra padding.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if not torch.is_grad_enabled() or len(input_ids) <= chunk:
        return embed(input_ids, attention_mask)
    parts = []
    for ids, mask in zip(input_ids.split(chunk), attention_mask.split(chunk), strict=True):
        width = max(int(mask.sum(1).max()), 1)  # the chunk's longest row ...
        if bool(mask[:, width:].any()):  # ... unless padded on the left: keep the width
            width = mask.shape[1]
        parts.append(checkpoint(embed, ids[:, :width], mask[:, :width], use_reentrant=False,
                                preserve_rng_state=True))
    return torch.cat(parts)
