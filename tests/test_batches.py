"""Token-budget batches (``trainer.batch_tokens``): the cut, the cross-rank agreement that keeps
DDP in lockstep, the schedule that counts examples, and a run end to end."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from data.batches import budget_batches, split_to, token_budget_pieces
from data.errors import ConfigError
from tests.conftest import FAST, PLUMBING_MODEL, compose_run, logged, train_run


class FakeShard:
    """What the loop reads from Ray Data: chunks of rows as numpy columns."""

    def __init__(self, lengths: list[int]) -> None:
        self.lengths = np.asarray(lengths)

    def iter_batches(self, batch_size: int, **_: Any):
        for start in range(0, len(self.lengths), batch_size):
            length = self.lengths[start:start + batch_size]
            yield {"length": length, "uid": np.arange(start, start + len(length))}


def _padded(lengths: np.ndarray, piece: np.ndarray) -> int:
    return len(piece) * int(lengths[piece].max())


def test_pieces_fill_the_budget_and_keep_every_row_once():
    lengths = np.array([3, 40, 5, 5, 12, 64, 7, 9, 30, 2, 64, 18])
    order = np.argsort(lengths, kind="stable")
    pieces = token_budget_pieces(order, lengths, 64)
    assert sorted(np.concatenate(pieces).tolist()) == list(range(len(lengths)))
    assert all(_padded(lengths, p) <= 64 for p in pieces)
    for piece, nxt in zip(pieces, pieces[1:], strict=False):  # greedy: the next row won't fit
        assert (len(piece) + 1) * int(lengths[nxt[0]]) > 64
    assert [len(p) for p in pieces] == [6, 2, 1, 1, 1, 1]  # short texts, large batches
    halves = split_to(pieces, 10)
    assert len(halves) == 10 and all(_padded(lengths, p) <= 64 for p in halves)
    assert sorted(np.concatenate(halves).tolist()) == list(range(len(lengths)))
    with pytest.raises(ValueError, match="cannot make 13 batches of 12 rows"):
        split_to(pieces, 13)


def test_positions_spread_each_chunk_over_its_batches():
    rng = np.random.default_rng(0)
    shard = FakeShard(rng.integers(2, 60, 50).tolist())
    out = list(budget_batches(shard, batch_size=8, bucket=2, batch_tokens=64, seed=0, epoch=0))
    positions = [p for _, p in out]
    assert positions == sorted(positions) and positions[-1] == pytest.approx(50)
    assert {16, 32, 48, 50} <= set(positions)  # each chunk ends exactly at its rows
    assert sorted(np.concatenate([r["uid"] for r, _ in out]).tolist()) == list(range(50))
    again = list(budget_batches(shard, 8, 2, 64, seed=0, epoch=0))
    assert all((a["uid"] == b["uid"]).all() for (a, _), (b, _) in zip(out, again, strict=True))


def _rank_main(rank: int, init_file: str, out: str) -> None:
    from trainers.collective import all_reduce

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:  # rank 0 holds short texts, rank 1 long ones: alone they would cut unequal counts
        rng = np.random.default_rng(rank)
        lengths = rng.integers(2, 12, 64) if rank == 0 else rng.integers(40, 64, 64)
        agree = lambda count: int(all_reduce([count], 2, "max")[0])  # noqa: E731 as the loop
        got = [(len(r["uid"]), _padded(lengths, r["uid"]), p)
               for r, p in budget_batches(FakeShard(lengths.tolist()), 16, 2, 128, 0, 0, agree)]
        alone = list(budget_batches(FakeShard(lengths.tolist()), 16, 2, 128, 0, 0))
        Path(out, f"rank{rank}.json").write_text(json.dumps({"got": got, "alone": len(alone)}))
    finally:
        dist.destroy_process_group()


def test_ranks_agree_on_the_batch_count_of_every_chunk(tmp_path):
    """DDP needs as many backward passes on every rank: the rank with fewer token-budget
    batches in a chunk halves its largest until it has as many as the rank with most."""
    procs = mp.start_processes(_rank_main, args=(str(tmp_path / "init"), str(tmp_path)),
                               nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not procs.join(timeout=1):
        if time.monotonic() > deadline:
            for p in procs.processes:
                p.kill()
            pytest.fail("the 2-process run did not finish within 120 s")
    short, long = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert short["alone"] < long["alone"]  # the setting the agreement exists for
    assert len(short["got"]) == len(long["got"]) == long["alone"]
    assert [p for *_, p in short["got"]] == [p for *_, p in long["got"]]  # the same clock
    for rank in (short, long):
        assert sum(n for n, *_ in rank["got"]) == 64 and all(t <= 128 for _, t, _ in rank["got"])


def test_a_budget_below_max_length_or_on_pair_tasks_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="trainer.batch_tokens.*below task.max_length"):
        compose_run(tmp_path, ["trainer.batch_tokens=100", "task.max_length=128"])
    with pytest.raises(ConfigError, match="trainer.batch_tokens.*equal row counts"):
        compose_run(tmp_path, ["task=embedding", "data=scifact", "trainer.batch_tokens=4096"])


@pytest.mark.usefixtures("ray_session")
def test_a_token_budget_run_sees_every_row_once_ends_its_schedule_and_resumes_exactly(tmp_path):
    """Batch sizes follow the lengths; the linear schedule, counting examples, has decayed to
    its last examples' rate when the epochs end, without knowing the step count ahead; a run
    stopped mid-epoch resumes to the uninterrupted run's weights."""
    args = [*FAST, PLUMBING_MODEL, "trainer.batch_tokens=256", "trainer.epochs=2",
            "trainer.bucket_batches=4", "data.max_examples=160", "optim.warmup_ratio=0"]
    summary = train_run(tmp_path, [*args, "run_name=budget"])
    run_dir = Path(summary["run_dir"])
    meta = json.loads((run_dir / "run_meta.json").read_text())
    rows = meta["dataset"]["splits"]["train"]["rows"]
    final = summary["metrics"]
    assert sum(final["dist/rows_per_rank"]) == rows and final["epoch"] == 2
    steps = [x for x in logged(run_dir) if "train/loss" in x]  # one step a line (log_every=1)
    assert max(x["train/tokens_per_batch"] for x in steps) <= 256
    assert len({x["train/rows_per_batch"] for x in steps}) > 2  # sizes follow the lengths
    lr = [x["train/lr"] for x in steps]
    assert lr == sorted(lr, reverse=True) and lr[-1] < 0.1 * lr[0]

    first_epoch = sum(1 for x in steps if x["epoch"] == 0)
    assert 5 < first_epoch, first_epoch  # step 5 is mid-epoch
    stopped = train_run(tmp_path, [*args, "run_name=resumed", "trainer.stop_after_steps=5"])
    assert stopped["status"] == "stopped"
    resumed = train_run(tmp_path, [*args, "run_name=resumed"])
    assert [x["step"] for x in logged(resumed["run_dir"]) if "train/loss" in x] == \
        [x["step"] for x in steps]
    assert resumed["metrics"]["dist/weights_hash"] == final["dist/weights_hash"]
