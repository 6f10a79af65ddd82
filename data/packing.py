"""Packing short conversations into full rows without letting them see each other.

Several tokenised conversations share one row of at most ``max_length`` tokens; each keeps its
own ``position_ids`` (restarting at 0) and its own labels. transformers (>= 5) reads restarting
``position_ids`` with no 2-D attention mask and no cache (``use_cache=False``: with a cache it
does not look) as packed sequences and builds a block-diagonal causal mask (SDPA and eager
on CPU; flash-attention's varlen kernel on GPU where installed), so attention stays inside
each conversation and a packed batch gives every conversation the loss
it has alone (tests/test_packing.py). The mask is never lost in packing: labels travel with
their tokens (karpathy/nanochat #582 lost them), and each conversation's first label is
ignored, since the shifted loss would predict it from the conversation before. Batches of
packed rows go through the one collation (data/batches.py: padding is a segment of its own).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data.chat import IGNORE


def pack(examples: list[dict[str, Any]], max_length: int) -> list[dict[str, np.ndarray]]:
    """Greedy, in order: a conversation joins the current row while it fits, else starts the
    next one. Each is at most ``max_length`` already (truncated and counted by the tokeniser).
    Rows carry ``input_ids``, ``labels``, ``position_ids`` and ``segments`` (how many)."""
    rows: list[dict[str, np.ndarray]] = []
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    segments = 0

    def close() -> None:
        if ids:
            rows.append({"input_ids": np.asarray(ids, np.int64),
                         "labels": np.asarray(labels, np.int64),
                         "position_ids": np.asarray(positions, np.int64),
                         "segments": np.int64(segments)})

    for example in examples:
        n = len(example["input_ids"])
        if n > max_length:
            raise ValueError(f"an example of {n} tokens is longer than max_length={max_length}")
        if len(ids) + n > max_length:
            close()
            ids, labels, positions, segments = [], [], [], 0
        ids += list(example["input_ids"])
        # a conversation's first token would be predicted from the previous one's last
        labels += [IGNORE, *list(example["labels"])[1:]]
        positions += range(n)
        segments += 1
    close()
    return rows
