"""Worker-side batching: length buckets, dynamic padding, and a deterministic order.

Sorting each chunk of ``bucket`` micro-batches by length before cutting it into batches removes
most padding (short intent texts padded to the longest in a random batch waste ~65% of tokens);
the batches of a chunk are then shuffled so training still sees lengths in random order.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch

from data.tokenize import IGNORE_INDEX


def _pad(seqs: list[np.ndarray], value: int, multiple: int) -> torch.Tensor:
    longest = max(len(s) for s in seqs)
    longest = -(-longest // multiple) * multiple
    out = np.full((len(seqs), longest), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return torch.from_numpy(out)


def collate(rows: dict[str, np.ndarray], pad_id: int, pad_multiple: int = 1) -> dict[str, Any]:
    """Pad one micro-batch to its own longest sequence.

    ``pad_multiple=8`` rounds lengths up for tensor-core shapes on GPU; on CPU every extra
    column is wasted work, so the loop passes 1 there.
    """
    ids = list(rows["input_ids"])
    input_ids = _pad(ids, pad_id, pad_multiple)
    mask = _pad([np.ones(len(s), dtype=np.int64) for s in ids], 0, pad_multiple)
    labels_col = rows["labels"]
    if labels_col.dtype == object:  # per-token labels (token_cls, causal_lm)
        labels = _pad(list(labels_col), IGNORE_INDEX, pad_multiple)
    elif labels_col.dtype.kind == "f":  # a similarity score per pair (task=embedding)
        labels = torch.as_tensor(labels_col, dtype=torch.float32)
    else:
        labels = torch.as_tensor(labels_col, dtype=torch.long)
    out = {"input_ids": input_ids, "attention_mask": mask, "labels": labels,
           "uid": torch.as_tensor(rows["uid"], dtype=torch.long)}
    for prefix in ("doc_", "neg_"):  # the other sides of embedding pairs, padded on their own
        if f"{prefix}input_ids" in rows:
            side = list(rows[f"{prefix}input_ids"])
            if prefix == "neg_" and not any(len(x) for x in side):
                continue  # a split without hard negatives (tokenised beside one with them)
            if not all(len(x) for x in side):
                raise ValueError(f"a batch mixes rows with and without {prefix}input_ids")
            out[f"{prefix}input_ids"] = _pad(side, pad_id, pad_multiple)
            out[f"{prefix}attention_mask"] = _pad(
                [np.ones(len(x), dtype=np.int64) for x in side], 0, pad_multiple)
    for prefix in ("", "neg_"):  # reranker pairs: which tokens are the document (BERT-style)
        if f"{prefix}token_type_ids" in rows and f"{prefix}input_ids" in out:
            out[f"{prefix}token_type_ids"] = _pad(list(rows[f"{prefix}token_type_ids"]), 0,
                                                  pad_multiple)
    if "position_ids" in rows:  # packed conversations: padding is a segment of its own
        width = input_ids.shape[1]
        out["position_ids"] = torch.from_numpy(np.stack([
            np.concatenate([p, np.arange(width - len(p))]) for p in rows["position_ids"]
        ]).astype(np.int64))
    per_token = labels_col.dtype == object or labels_col.ndim > 1
    for name, dtype in (("teacher_logp", np.float32), ("teacher_index", np.int64)):
        if name in rows:  # offline distillation: the teacher's outputs ride with the batch
            out[name] = _teacher(list(rows[name]), [len(s) for s in ids], input_ids.shape[1],
                                 per_token, dtype)
    for name in ("teacher_query", "teacher_doc", "teacher_neg", "teacher_scale"):
        if name in rows:  # an embedding teacher's: one vector (or its scale) per row
            out[name] = torch.from_numpy(np.stack(list(rows[name])).astype(np.float32))
    return out


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What a model is called with. Packed conversations pass ``position_ids`` and neither an
    attention mask nor a cache: transformers then confines attention to each conversation
    (data/packing.py); every other batch passes its padding mask."""
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"],
                "use_cache": False}
    pairs = {k: v for k, v in batch.items()
             if k.startswith(("doc_", "neg_")) or k == "token_type_ids"}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], **pairs}


def _teacher(values: list[np.ndarray], lengths: list[int], longest: int, per_token: bool,
             dtype: Any) -> torch.Tensor:
    """Per example (n, width), or per token (n, longest, width) zero-padded."""
    if not per_token:
        return torch.from_numpy(np.stack(values).astype(dtype))
    width = len(values[0]) // lengths[0]
    out = np.zeros((len(values), longest, width), dtype=dtype)
    for i, (v, n) in enumerate(zip(values, lengths, strict=True)):
        out[i, :n] = np.asarray(v, dtype=dtype).reshape(n, width)
    return torch.from_numpy(out)


def token_budget_pieces(order: np.ndarray, lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Cut ``order`` (row indices, in batch order) into consecutive batches of at most
    ``budget`` padded tokens (rows × the longest row); a row longer than the budget is a batch
    of its own (the config refuses a budget below ``task.max_length``)."""
    pieces: list[np.ndarray] = []
    start, longest = 0, 0
    for i, row in enumerate(order):
        wider = max(longest, int(lengths[row]))
        if i > start and (i - start + 1) * wider > budget:
            pieces.append(order[start:i])
            start, wider = i, int(lengths[row])
        longest = wider
    if start < len(order):
        pieces.append(order[start:])
    return pieces


def split_to(pieces: list[np.ndarray], count: int) -> list[np.ndarray]:
    """Halve the largest batch (the first of equals) until there are ``count``: how ranks with
    fewer token-budget batches in a chunk match the rank with most (DDP steps in lockstep).
    Halves keep the budget: fewer rows, no longer a row."""
    pieces = list(pieces)
    while len(pieces) < count:
        k = max(range(len(pieces)), key=lambda j: (len(pieces[j]), -j))
        if len(pieces[k]) < 2:
            raise ValueError(f"cannot make {count} batches of {sum(map(len, pieces))} rows")
        half = len(pieces[k]) // 2
        pieces[k:k + 1] = [pieces[k][:half], pieces[k][half:]]
    return pieces


def _chunks(shard: Any, chunk: int, seed: int, epoch: int, shuffle: bool
            ) -> Iterator[dict[str, np.ndarray]]:
    kwargs: dict[str, Any] = {"batch_size": chunk, "batch_format": "numpy"}
    if shuffle:
        kwargs.update(local_shuffle_buffer_size=chunk * 2, local_shuffle_seed=seed * 1000 + epoch)
    return shard.iter_batches(**kwargs)


def bucketed_batches(
    shard: Any, batch_size: int, bucket: int, seed: int, epoch: int, shuffle: bool = True
) -> Iterator[dict[str, np.ndarray]]:
    """Yield micro-batches of ``batch_size`` rows from a Ray Data shard (or Dataset).

    Deterministic for a given (seed, epoch) in local mode; the chunk size is a multiple of
    ``batch_size`` so every epoch has exactly ceil(rows / batch_size) micro-batches.
    """
    rng = np.random.default_rng([seed, epoch])
    for rows in _chunks(shard, batch_size * bucket, seed, epoch, shuffle):
        n = len(rows["length"])
        order = np.argsort(rows["length"], kind="stable") if bucket > 1 else np.arange(n)
        pieces = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        if shuffle:
            rng.shuffle(pieces)
        for idx in pieces:
            yield {k: v[idx] for k, v in rows.items()}


def budget_batches(
    shard: Any, batch_size: int, bucket: int, batch_tokens: int, seed: int, epoch: int,
    agree: Callable[[int], int] | None = None,
) -> Iterator[tuple[dict[str, np.ndarray], float]]:
    """Token-budget micro-batches: each chunk of ``bucket`` × ``batch_size`` rows, sorted by
    length, cut into batches of at most ``batch_tokens`` padded tokens (then shuffled).

    The count per chunk follows the lengths; ``agree`` (the most batches any rank cut from
    its chunk) makes every rank cut as many, so DDP steps stay in lockstep. Each batch comes
    with the epoch's position in rows after it, counted the same on every rank (the chunk's
    rows spread evenly over its batches): the clock a schedule over examples runs on.
    """
    rng = np.random.default_rng([seed, epoch])
    done = 0
    for rows in _chunks(shard, batch_size * bucket, seed, epoch, shuffle=True):
        n = len(rows["length"])
        order = np.argsort(rows["length"], kind="stable") if bucket > 1 else np.arange(n)
        pieces = token_budget_pieces(order, rows["length"], batch_tokens)
        if agree is not None:
            pieces = split_to(pieces, agree(len(pieces)))
        rng.shuffle(pieces)
        for j, idx in enumerate(pieces):
            yield {k: v[idx] for k, v in rows.items()}, done + n * (j + 1) / len(pieces)
        done += n
