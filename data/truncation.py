"""Count what truncation at ``task.max_length`` cut: examples and tokens, per split.

Every run reports these (run metadata, report, ``data check``); nothing is dropped silently.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data.inprocess import blocks
from data.tokenize import tag_split, tokenize_task


def _examples_cut(batch: dict[str, np.ndarray], keep: np.ndarray) -> int:
    """Examples truncated: a packed row of conversations says how many of its were."""
    if "truncated_rows" in batch:
        return int(batch["truncated_rows"][keep].sum())
    return int((batch["truncated"][keep] > 0).sum())


def _truncation(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = list(dict.fromkeys(batch["split"]))
    cuts = [batch["truncated"][batch["split"] == name] for name in names]
    hit = [_examples_cut(batch, batch["split"] == name) for name in names]
    return {"split": np.array(names, dtype=object),
            "examples": np.array(hit, dtype=np.int64),
            "tokens": np.array([int(c.sum()) for c in cuts], dtype=np.int64)}


def _block_truncation(block: Any) -> tuple[int, int]:
    from ray.data.block import BlockAccessor  # runs as a Ray task: Ray is loaded there

    rows = BlockAccessor.for_block(block)
    if rows.num_rows() == 0:  # other splits' rows filtered out of this block
        return 0, 0
    cut = np.asarray(rows.to_numpy("truncated"))
    if "truncated_rows" in rows.schema().names:
        return int(np.asarray(rows.to_numpy("truncated_rows")).sum()), int(cut.sum())
    return int((cut > 0).sum()), int(cut.sum())


def count_truncation(tokenized: dict[str, Any], here: bool = False
                     ) -> dict[str, tuple[int, int]]:
    """(examples truncated at ``task.max_length``, tokens they lost) per materialised tokenised
    split: one small Ray task per block, run where the block is (~20 ms; a Ray Data pass costs
    ~10x that, on every run), or with ``here`` (small data tokenised in this process) in this
    process, with no worker to start. Streamed splits: :func:`count_truncation_raw`."""
    import ray  # Ray loads only when a job runs: the CLI imports this module without it

    if here:
        return {name: _sum_counts([_block_truncation(block) for block in blocks(ds)])
                for name, ds in tokenized.items()}
    task = ray.remote(num_cpus=0)(_block_truncation)
    refs = {name: [task.remote(ref) for bundle in ds.iter_internal_ref_bundles()
                   for ref in bundle.block_refs] for name, ds in tokenized.items()}
    return {name: _sum_counts(ray.get(parts)) for name, parts in refs.items()}


def _sum_counts(counted: list[tuple[int, int]]) -> tuple[int, int]:
    return sum(c[0] for c in counted), sum(c[1] for c in counted)


def count_truncation_raw(datasets: dict[str, Any], tokenizer_path: str, task: str,
                         max_length: int, labels: list[str], pack: bool,
                         chat_template: str | None = None, train_on_prompt: bool = False
                         ) -> dict[str, tuple[int, int]]:
    """The same counts from untokenised splits: one pass that reads and tokenises them all
    (Ray tasks, the tokenizer cached in the reused workers; nothing is kept). For streamed
    data (``data.materialize=false``) and ``shardtune data check``."""
    names = list(datasets)
    tagged = [datasets[n].map_batches(tag_split, fn_kwargs={"split": n}, batch_size=None)
              for n in names]
    union = tagged[0].union(*tagged[1:]) if len(tagged) > 1 else tagged[0]
    kwargs = {"tokenizer_path": tokenizer_path, "task": task, "max_length": max_length,
              "pack": pack, "labels": tuple(labels), "chat_template": chat_template,
              "train_on_prompt": train_on_prompt}
    out = {name: (0, 0) for name in names}
    for row in union.map_batches(tokenize_task, fn_kwargs=kwargs, batch_size=1024,
                                 num_cpus=0.5).map_batches(_truncation,
                                                           batch_size=None).take_all():
        examples, tokens = out[row["split"]]
        out[row["split"]] = (examples + int(row["examples"]), tokens + int(row["tokens"]))
    return out
