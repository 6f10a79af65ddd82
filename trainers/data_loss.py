"""What the loop checks about the rows it is fed, against what the driver counted at the start.

With ``data.materialize=true`` (default) the splits are read once and cannot change; streamed
(``data.materialize=false``) they are read again every epoch and every evaluation, so a shard
deleted, unreadable or rewritten since the start changes what the loop sees. Each check is
exact: a difference is an error, or with ``data.on_error=skip`` a warning line and a count in
the final metrics. Never silent.
"""

from __future__ import annotations

from data.errors import DataError
from trainers.collective import all_reduce

RESTORE = ("restore the data and re-run the same command to resume, or set data.on_error=skip "
           "to go on and count the difference")


def due_per_epoch(expected: int, world: int) -> int:
    """Training rows one epoch delivers across ``world`` ranks: Ray Train's equal split gives
    each rank ``expected // world`` rows and leaves ``expected % world`` out of the epoch (a
    different few each epoch when shuffled); nothing else may go missing."""
    return expected - expected % world


def rows_per_rank(expected: int, world: int) -> int:
    """Training rows one rank sees an epoch under that equal split."""
    return expected // world


def _differs(on_error: str, rank: int, where: str, message: str) -> None:
    if on_error != "skip":
        raise DataError(where, message, RESTORE)
    if rank == 0:
        print(f"warning: {where}: {message}; recorded in the final metrics", flush=True)


def train_rows_lost(on_error: str, epoch: int, seen: int, expected: int, world: int,
                    rank: int) -> int:
    """Training rows a finished epoch missed (negative: rows it saw beyond those counted at
    the start). An epoch cut short by ``trainer.max_steps`` or a stop is not checked: the rows
    it did not reach were not due."""
    seen = int(all_reduce([seen], world)[0])
    due = due_per_epoch(expected, world)
    lost = due - seen
    if lost > 0:
        _differs(on_error, rank, "train", f"epoch {epoch + 1} saw {seen:,} of the {due:,} "
                 f"training examples due: {lost:,} lost (a shard deleted or unreadable since "
                 "the run started?)")
    elif lost < 0:
        _differs(on_error, rank, "train", f"epoch {epoch + 1} saw {seen:,} training examples, "
                 f"{-lost:,} more than the {due:,} counted at the start (a shard added or "
                 "rewritten since the run started?)")
    return lost


def eval_rows_lost(on_error: str, split: str, seen: int, expected: int | None, world: int,
                   rank: int) -> int:
    """Rows an evaluation of ``split`` missed (every rank reads the split whole and scores
    every world-th batch: the ranks' counts add up to the split); negative: extra rows."""
    seen = int(all_reduce([seen], world)[0])
    if expected is None or seen == expected:
        return 0
    change = (f"{expected - seen:,} lost (a shard deleted or unreadable since the run "
              "started?)" if seen < expected else f"{seen - expected:,} more than counted at "
              "the start (a shard added or rewritten since the run started?)")
    _differs(on_error, rank, f"split '{split}'", f"evaluation saw {seen:,} of its {expected:,} "
             f"examples: {change}")
    return expected - seen
