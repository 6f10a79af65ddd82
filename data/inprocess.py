"""Small materialised splits mapped and counted in this process instead of Ray tasks.

Every Ray Data execution (a map, a count by a batch function, an iteration) costs ~0.2 s of
scheduling on an idle 2-core machine, for a hundred rows as for a million, and preparing a
run's data takes about ten of them (read, split, sample, count, dedup, tokenise). Once a split
is materialised and small (``data.driver_rows`` rows), its blocks already sit in the object
store: fetched here, the same batch functions run on them in this process (~20 ms) and the
result is a materialised data set again. The rows and their order are those of
``map_batches`` with ``preserve_order`` (tests/test_pipeline.py); larger or lazy data sets
take the Ray Data path unchanged. A run that never starts Ray (data/local.py) holds the same
blocks as a :class:`~data.local.LocalDataset` instead.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from data.local import LocalDataset, to_block

ROWS_PER_BLOCK = 2048  # rows a batch function sees at a time through Ray Data
Batch = dict[str, np.ndarray]
# set while a run needs no Ray (data/local.py), even where one runs in this process (a
# notebook's, the test session's): a context variable, so another thread's run is not affected
_HELD_HERE = contextvars.ContextVar("shardtune_data_held_here", default=False)


@contextlib.contextmanager
def held_here() -> Iterator[None]:
    """Blocks made inside are held in this process (LocalDataset), Ray running or not."""
    token = _HELD_HERE.set(True)
    try:
        yield
    finally:
        _HELD_HERE.reset(token)


def runs_here(ds: Any, driver_rows: int) -> bool:
    """A data set held here, or a materialised one of at most ``driver_rows`` rows (0:
    never), not empty."""
    if isinstance(ds, LocalDataset):
        return True
    from ray.data.dataset import MaterializedDataset  # Ray loads only when data is read

    return bool(driver_rows) and isinstance(ds, MaterializedDataset) and \
        0 < ds.count() <= driver_rows  # materialised: the count is block metadata


def blocks(ds: Any) -> list[Any]:
    """A materialised data set's Arrow blocks, fetched into this process."""
    if isinstance(ds, LocalDataset):
        return ds.blocks()
    import ray  # Ray loads only when data is read

    return ray.get(ds.to_arrow_refs())


def local_batches(ds: Any) -> Iterator[Batch]:
    """A materialised data set's blocks as numpy batches, fetched into this process."""
    from ray.data.block import BlockAccessor  # Ray loads only when data is read

    for table in blocks(ds):
        if table.num_rows:
            yield BlockAccessor.for_block(table).to_batch_format("numpy")


def from_blocks(tables: list[Any]) -> Any:
    """Blocks made here as a data set: held here in a run that needs no Ray (data/local.py)
    or while Ray is not running, in Ray's object store otherwise."""
    import ray  # Ray loads only when data is read

    if _HELD_HERE.get() or not ray.is_initialized():
        return LocalDataset(tables)
    import ray.data

    return ray.data.from_arrow(tables)


def map_batches(ds: Any, fn: Callable[..., Batch], driver_rows: int, **kwargs: Any) -> Any:
    """``ds.map_batches(fn, fn_kwargs=kwargs)``: here for a small materialised ``ds``
    (materialised again), through Ray Data otherwise. ``fn`` works row by row."""
    if not runs_here(ds, driver_rows):
        return ds.map_batches(fn, fn_kwargs=kwargs, batch_size=ROWS_PER_BLOCK)
    made = [to_block(fn(batch, **kwargs)) for batch in local_batches(ds)]
    return LocalDataset(made) if isinstance(ds, LocalDataset) else from_blocks(made)

