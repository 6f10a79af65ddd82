"""Teacher-labelled perturbed copies of the training texts: where KD has something to add.

A fine-tuned teacher fits its own training set, so on those very texts its softened outputs
are nearly one-hot and say little beyond the labels. Perturbed copies (some words masked,
some dropped, one pair swapped: the cheap end of TinyBERT-style augmentation) are inputs it
has not fitted; its distribution there shows how it generalises, and the student learns to
match it. The copies carry no label (-100): only the KD term learns from them, and the
control never sees them, so what they add is the teacher's knowledge alone.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from data.tokenize import IGNORE_INDEX, tokenize_splits


def perturb(text: str, rng: np.random.Generator, p: float, mask_token: str | None) -> str:
    """Each word is masked with probability ``p`` (dropped if the tokenizer has no mask token)
    and dropped with ``p``; then one random adjacent pair is swapped. At least one original
    word survives."""
    words = text.split()
    if len(words) < 2:
        return text
    out = []
    for word in words:
        draw = rng.random()
        if draw < p:
            out.append(mask_token if mask_token else word)
        elif draw < 2 * p:
            continue
        else:
            out.append(word)
    if not [w for w in out if w != mask_token]:
        out = [words[int(rng.integers(len(words)))]]
    if len(out) > 1:
        i = int(rng.integers(len(out) - 1))
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def copy_rows(batch: dict[str, np.ndarray], copies: int, p: float, mask_token: str | None
              ) -> dict[str, np.ndarray]:
    """``copies`` perturbed versions of every row. A source row always gets the same copies
    (seeded by its source and copy number, not by the run's seed): every seed of a group sees
    the same inputs, and the offline teacher pass over them runs once."""
    texts, labels, sources = [], [], []
    for text, label, src in zip(batch["text"], batch["label"], batch["_src"], strict=True):
        for k in range(copies):
            rng = np.random.default_rng([zlib.crc32(str(src).encode()), k])
            texts.append(perturb(str(text), rng, p, mask_token))
            labels.append(label)  # a valid label to tokenise; replaced by -100 below
            sources.append(f"{src}#copy{k + 1}")
    return {"text": np.array(texts, dtype=object), "label": np.array(labels, dtype=object),
            "_src": np.array(sources, dtype=object)}


def _unlabel(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**batch, "labels": np.full(len(batch["labels"]), IGNORE_INDEX, dtype=np.int64)}


def transfer_rows(prep: Any, run: Any, tokenizer_path: str) -> tuple[Any, int]:
    """The training split plus its teacher-only copies, tokenised like it; and the new row count.

    Sequence classification only: a token-level task's copies would need word-aligned tags.
    """
    from transformers import AutoTokenizer  # loads every tokenizer family: only when augmenting

    spec = run.distill
    raw = prep.splits.datasets["train"].select_columns(["text", "label", "_src"])
    mask_token = AutoTokenizer.from_pretrained(tokenizer_path).mask_token
    copied = raw.map_batches(copy_rows, fn_kwargs={
        "copies": spec.augment, "p": spec.augment_p, "mask_token": mask_token},
        batch_size=1024)
    tokenized = tokenize_splits(
        {"transfer": copied}, tokenizer_path, "seq_cls", run.task.max_length,
        prep.splits.labels, run.task.pack, run.data.tokenize_actors, True,
        run.data.task_rows)["transfer"].map_batches(_unlabel, batch_size=None)
    train = prep.datasets["train"].union(tokenized).materialize()
    return train, prep.train_rows * (1 + spec.augment)
