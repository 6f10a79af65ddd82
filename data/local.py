"""A data set held in this process as Arrow blocks, for runs that never start Ray.

A local run on files the driver reads anyway (``data.driver_bytes``, ``data.driver_rows``)
uses Ray for nothing but holding its rows: starting it (GCS, raylet, agents, a worker) costs
~7 CPU-seconds, ~4.5 s of wall on 2 idle cores, before the first step. Such a run keeps its
splits as :class:`LocalDataset`, which answers the part of Ray Data's ``MaterializedDataset``
that the pipeline, the loop and evaluation use, over the same blocks Ray Data would hold, so
rows, order, batches and counts are the same (tests/test_local_data.py). Anything larger,
remote or lazy takes Ray Data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

Batch = dict[str, np.ndarray]


class LocalDataset:
    """Arrow blocks in this process, with the ``ray.data.Dataset`` methods shardtune calls."""

    def __init__(self, blocks: list[pa.Table]) -> None:
        self._blocks = [b for b in blocks if b.num_rows] or blocks[:1]

    def blocks(self) -> list[pa.Table]:
        return list(self._blocks)

    def count(self) -> int:
        return sum(b.num_rows for b in self._blocks)

    def schema(self) -> pa.Schema:
        return self._table().schema

    def materialize(self) -> LocalDataset:
        return self

    def select_columns(self, cols: list[str]) -> LocalDataset:
        return LocalDataset([b.select(cols) for b in self._blocks])

    def to_pandas(self) -> Any:
        from ray.data.block import BlockAccessor  # Ray Data's own conversion (tensor columns)

        return BlockAccessor.for_block(self._table()).to_pandas()

    def take_all(self) -> list[dict[str, Any]]:
        return self._table().to_pylist()

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        return iter(self.take_all())

    def map_batches(self, fn: Callable[..., Batch], fn_kwargs: dict[str, Any] | None = None,
                    batch_size: int = 2048, **_: Any) -> LocalDataset:
        """``fn`` over each block in turn (shardtune's batch functions work row by row)."""
        return LocalDataset([to_block(fn(_numpy(b), **(fn_kwargs or {})))
                             for b in self._blocks])

    def iter_batches(self, batch_size: int | None = 256, batch_format: str = "numpy",
                     drop_last: bool = False, local_shuffle_buffer_size: int | None = None,
                     local_shuffle_seed: int | None = None, **_: Any) -> Iterator[Batch]:
        """Batches cut, and shuffled, by Ray Data's own in-process batchers from the same
        blocks in the same order: the batches ``ds.iter_batches`` gives, row for row."""
        from ray.data._internal.batcher import Batcher

        if batch_format != "numpy":
            raise ValueError(f"LocalDataset gives numpy batches, not {batch_format!r}")
        batcher = _shuffling_batcher(batch_size, local_shuffle_buffer_size, local_shuffle_seed) \
            if local_shuffle_buffer_size is not None else Batcher(batch_size=batch_size)
        for block in self._blocks:
            batcher.add(block)
            while batcher.has_batch():
                yield _numpy(batcher.next_batch())
        batcher.done_adding()
        while batcher.has_batch() or (batcher.has_any() and not drop_last):
            yield _numpy(batcher.next_batch())

    def _table(self) -> pa.Table:
        if len(self._blocks) == 1:
            return self._blocks[0]
        # a column all null in one file takes the type the other files give it
        return pa.concat_tables(self._blocks, promote_options="default")


def to_block(batch: Batch) -> Any:
    """A batch function's output as the block Ray Data's ``map_batches`` would make of it."""
    from ray.data.block import BlockAccessor  # Ray's own conversion; no Ray start

    return BlockAccessor.batch_to_block(batch)


def to_ray(ds: Any) -> Any:
    """A data set held here moved into Ray's object store (Ray running); others as they are."""
    if not isinstance(ds, LocalDataset):
        return ds
    import ray.data  # only once Ray runs

    return ray.data.from_arrow(ds.blocks())


def _shuffling_batcher(batch_size: int | None, buffer: int, seed: int | None) -> Any:
    """Ray Data's shuffle buffer, built without asking the (absent) Ray node for its object
    store size: Ray uses that only for a warning about spilling, which has no object store
    to spill here; asking would start a Ray just for it."""
    from ray.data._internal import batcher

    asks = batcher.get_total_obj_store_mem_on_node
    batcher.get_total_obj_store_mem_on_node = lambda: float("inf")
    try:
        return batcher.ShufflingBatcher(batch_size=batch_size, shuffle_buffer_min_size=buffer,
                                        shuffle_seed=seed)
    finally:
        batcher.get_total_obj_store_mem_on_node = asks


def _numpy(table: pa.Table) -> Batch:
    from ray.data.block import BlockAccessor  # Ray's own Arrow → numpy conversion, no Ray start

    return BlockAccessor.for_block(table).to_batch_format("numpy")
