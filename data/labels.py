"""Checks on the label column once a data set is read: one spelling per class, at least two
classes, no label a split has that training lacks, and one value type per column (a JSON ``1``
and ``"1"`` would otherwise both become the class ``"1"``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from data.errors import DataError
from data.summary import ROWS_PER_BLOCK

# What a label's JSON/parquet value was (``_ltype``); CSV/TSV/CoNLL hold text and carry none.
KINDS = {"str": "a string", "int": "a number", "bool": "a boolean"}


def label_kind(label: Any) -> str:
    """The value type of a class label as the file held it: str, int (also 3.0) or bool."""
    if isinstance(label, (bool, np.bool_)):
        return "bool"
    return "str" if isinstance(label, str) else "int"


def first_row(ds: Any, column: str, value: str, tags: bool = False) -> tuple[str, str] | None:
    """(``file:line``, label) of the first valid row whose ``column`` is ``value`` (holds it,
    for ``tags``)."""
    def pick(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = batch.get(column, [None] * len(batch["_error"]))
        labels = batch.get("label", [""] * len(batch["_error"]))
        found = [(src, label) for src, got, label, error
                 in zip(batch["_src"], values, labels, batch["_error"], strict=True)
                 if not error and got is not None
                 and (value in list(got) if tags else str(got) == value)]
        return {"src": np.array([f[0] for f in found[:1]], dtype=object),
                "label": np.array([str(f[1]) for f in found[:1]], dtype=object)}

    found = ds.map_batches(pick, batch_size=ROWS_PER_BLOCK).take_all()  # no early exit: it logs
    return (str(found[0]["src"]), str(found[0]["label"])) if found else None


def _normal(label: str) -> str:
    return " ".join(label.split()).casefold()


def check_label_types(summaries: dict[str, Any], datasets: dict[str, Any],
                      label_field: str) -> None:
    """One value type per label column across the data set's JSON and parquet files: an error
    naming the first row of the rarer type and one of the commoner."""
    kinds: Counter = Counter()
    for summary in summaries.values():
        kinds.update(summary.label_types)
    if len(kinds) < 2:
        return
    common, rare = sorted(kinds, key=lambda kind: (-kinds[kind], kind))[:2]

    def where(kind: str) -> tuple[str, str]:
        for split, summary in summaries.items():
            if summary.label_types.get(kind):
                found = first_row(datasets[split], "_ltype", kind)
                if found:
                    return found
        return (f"data.label_field '{label_field}'", "?")  # pragma: no cover - counted above

    (src, label), (other_src, other) = where(rare), where(common)
    raise DataError(src, f"label {_shown(label, rare)} is {KINDS[rare]}, but {kinds[common]} "
                    f"labels of '{label_field}' are {KINDS[common].split(' ', 1)[1]}s (first: "
                    f"{_shown(other, common)} at {other_src}): 1 and '1' would be read as one "
                    "class", "write every label of the column as one type (all strings or all "
                    "integers)")


def _shown(label: str, kind: str) -> str:
    return repr(label) if kind == "str" else label


def check_labels(summaries: dict[str, Any], labels: list[str], task: str, train: Any) -> None:
    """``train``: the training split's :class:`data.pipeline.Source`."""
    if task in ("causal_lm", "sft", "embedding", "rerank"):  # no label vocabulary
        return
    alike: dict[str, list[str]] = {}
    for label in labels:
        alike.setdefault(_normal(label), []).append(label)
    clash = next((group for group in alike.values() if len(group) > 1), None)
    if clash:  # one class spelled two ways, or two classes: the data must say which
        counts = summaries["train"].labels
        common, rare = sorted(clash, key=lambda label: (-counts[label], label))[:2]
        found = first_row(train.rows, "tags" if task == "token_cls" else "label", rare,
                          tags=task == "token_cls")
        raise DataError(found[0] if found else train.where,
                        f"label {rare!r} differs from label {common!r} only in case or "
                        f"whitespace ({counts[rare]} vs {counts[common]} training rows)",
                        "make them one spelling in the data; shardtune does not merge labels")
    if task == "seq_cls" and len(labels) < 2:
        raise DataError(
            train.where, f"the training split has {len(labels)} class ({', '.join(labels)}): "
            "a classifier needs at least 2", f"check data.label_field and {train.key}",
        )
    known = set(labels)
    spelled = {_normal(label): label for label in labels}
    for split, summary in summaries.items():
        unseen = sorted(set(summary.labels) - known)
        if unseen:
            near = [f"{label!r} (training has {spelled[_normal(label)]!r})"
                    for label in unseen[:5] if _normal(label) in spelled]
            raise DataError(
                f"split '{split}'",
                f"labels not seen in training: {', '.join(unseen[:5])}"
                + (f"; differ only in case or whitespace: {', '.join(near)}" if near else ""),
                "add examples of them to the training data or drop them",
            )
