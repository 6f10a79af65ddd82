"""A local run on files the driver reads starts no Ray (data/local.py): its data set gives Ray
Data's batches row for row, and the run ends with the weights the Ray path gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST, PLUMBING_MODEL, compose_run, logged, train_run
from trainers.checkpoint import is_complete

ROOT = Path(__file__).resolve().parent.parent


def _blocks(sizes: list[int]) -> list:
    from data.inprocess import to_block

    rng, out, start = np.random.default_rng(0), [], 0
    for n in sizes:
        ids = np.empty(n, dtype=object)
        ids[:] = [np.arange(rng.integers(1, 9), dtype=np.int32) for _ in range(n)]
        out.append(to_block({"uid": np.arange(start, start + n),
                             "length": rng.integers(1, 50, n).astype(np.int32),
                             "input_ids": ids,
                             "text": np.array([f"t{i}" for i in range(start, start + n)],
                                              dtype=object)}))
        start += n
    return out


def _refuse_ray_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any row put into Ray's object store fails the caller (what a run on files read here
    must never do, Ray running or not)."""
    import ray.data

    def refused(*args, **kwargs):
        raise AssertionError("a local run on files read here put its rows in Ray")

    for name in ("from_arrow", "from_items", "from_pandas", "read_json", "read_parquet"):
        monkeypatch.setattr(ray.data, name, refused)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("sizes", [[100], [37, 50, 13]])
def test_a_local_data_set_batches_as_ray_data_does(sizes):
    import ray.data

    from data.local import LocalDataset

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    blocks = _blocks(sizes)
    ours, rays = LocalDataset(blocks), ray.data.from_arrow(blocks)
    assert ours.count() == rays.count() == sum(sizes)
    assert ours.schema().names == rays.schema().names
    for kwargs in ({"batch_size": 16}, {"batch_size": 32, "drop_last": True},
                   {"batch_size": 16, "local_shuffle_buffer_size": 32, "local_shuffle_seed": 7},
                   {"batch_size": 64, "local_shuffle_buffer_size": 128,
                    "local_shuffle_seed": 1001}):
        a = list(rays.iter_batches(batch_format="numpy", **kwargs))
        b = list(ours.iter_batches(batch_format="numpy", **kwargs))
        assert [list(x["uid"]) for x in a] == [list(y["uid"]) for y in b], kwargs
        assert all(np.array_equal(p, q) for x, y in zip(a, b, strict=True)
                   for p, q in zip(x["input_ids"], y["input_ids"], strict=True))
    pd_a, pd_b = rays.to_pandas(), ours.to_pandas()
    assert list(pd_a.dtypes) == list(pd_b.dtypes) and pd_a["uid"].equals(pd_b["uid"])
    assert type(pd_a["input_ids"][0]) is type(pd_b["input_ids"][0])
    assert ours.select_columns(["uid"]).schema().names == ["uid"]

    def keep_even(batch: dict) -> dict:
        return {k: v[batch["uid"] % 2 == 0] for k, v in batch.items()}

    mapped = ours.map_batches(keep_even)
    assert isinstance(mapped, LocalDataset)
    assert mapped.to_pandas()["uid"].tolist() == \
        rays.map_batches(keep_even).to_pandas()["uid"].tolist()


@pytest.mark.usefixtures("ray_session")
def test_a_local_run_leaves_a_ray_running_here_aside(tmp_path, monkeypatch):
    """A process that already runs Ray (a notebook, this test session) trains a local run on
    files it reads without Ray Data: its rows never reach the object store."""
    import ray

    _refuse_ray_data(monkeypatch)
    assert ray.is_initialized()
    run = train_run(tmp_path, [*FAST, "trainer.max_steps=2", "data.test_path=null"])
    assert run["status"] == "done" and run["metrics"]["step"] == 2
    with pytest.raises(AssertionError, match="put its rows in Ray"):  # the switch back
        train_run(tmp_path, [*FAST, "trainer.max_steps=2", "data.driver_bytes=0",
                             "run_name=on_ray"])


def test_which_runs_need_no_ray(tmp_path):
    from data.read import driver_reads_all

    def reads_all(*overrides: str) -> bool:
        return driver_reads_all(compose_run(tmp_path, list(overrides)).data)

    assert reads_all()  # the shipped sample: three small local files
    assert not reads_all("data.driver_bytes=0")  # the switch back to Ray's reads
    assert not reads_all("data.driver_bytes=1000")  # more bytes than the driver reads
    assert not reads_all("data.materialize=false")  # streamed
    assert not reads_all("data.path=s3://bucket/train.jsonl")  # remote
    assert not reads_all(f"data.path={tmp_path}/missing.jsonl")  # said by the read, later


def _cli(tmp_path: Path, args: list[str]) -> subprocess.Popen:
    """``shardtune train`` in a fresh process with no Ray to join."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen([sys.executable, "-m", "shardtune.cli", "train",
                             f"paths.root={tmp_path}", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


@pytest.mark.usefixtures("ray_session")
def test_a_run_on_files_read_here_starts_no_ray_stops_and_resumes_on_ray_exactly(
        tmp_path, monkeypatch):
    """The shipped sample in a fresh process: no Ray (an unforeseen Ray call would fail, not
    start one). SIGTERM once checkpoint 2 is written: it checkpoints and exits 143. The same
    run with fewer rows allowed in the driver resumes on Ray (the test session's: its rows
    tokenised by Ray Data). The weights are those of an uninterrupted run on Ray throughout."""
    import ray.data

    from shardtune.cli import main

    # the 2-layer random-init encoder: this is plumbing; 12 steps leave the SIGTERM ten steps
    args = [*FAST, PLUMBING_MODEL, "trainer.max_steps=12", "trainer.epochs=2",
            "trainer.ckpt_every=2"]
    # on the session's Ray: Ray Data reads the files (data.driver_bytes=0)
    straight = train_run(tmp_path / "straight", [*args, "run_name=straight",
                                                 "data.driver_bytes=0"])
    run_dir = tmp_path / "runs" / "local"
    proc = _cli(tmp_path, [*args, "run_name=local"])
    try:
        deadline = time.monotonic() + 180
        while not is_complete(run_dir / "checkpoint_000002"):
            assert proc.poll() is None, proc.stdout.read()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint_000002"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 143, out[-2000:]
    assert "stopped by SIGTERM: re-run the same command to resume" in out
    assert out.startswith("ray: not started"), out[:500]
    assert "ray: started" not in out and "Traceback" not in out
    put_in_ray = []
    from_arrow = ray.data.from_arrow

    def counted_from_arrow(*a, **k):
        put_in_ray.append(1)
        return from_arrow(*a, **k)

    with monkeypatch.context() as patched:  # 50 rows: too many to tokenise in the driver
        patched.setattr(ray.data, "from_arrow", counted_from_arrow)
        assert main(["train", f"paths.root={tmp_path}", *args, "run_name=local",
                     "data.driver_rows=50"]) == 0
    assert put_in_ray  # the rows went through Ray Data this time
    assert [r["step"] for r in logged(run_dir) if "train/loss" in r] == list(range(1, 13))
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["dist/weights_hash"] == straight["metrics"]["dist/weights_hash"]
    assert final["val/loss"] == pytest.approx(straight["metrics"]["val/loss"], rel=1e-6)
    ours = json.loads((run_dir / "run_meta.json").read_text())["dataset"]["splits"]
    theirs = json.loads((Path(straight["run_dir"]) / "run_meta.json").read_text())[
        "dataset"]["splits"]
    assert ours == theirs  # rows, skips, truncation, labels: counted alike

    # evaluate on files read here (Ray Data refused) scores as it does through Ray
    from evaluation.config import EvaluateConfig
    from evaluation.evaluate import evaluate

    on_ray = evaluate(EvaluateConfig(run=str(run_dir), resamples=200),
                      data_overrides=["data.driver_bytes=0"])["metrics"]
    with monkeypatch.context() as patched:
        _refuse_ray_data(patched)
        alone = evaluate(EvaluateConfig(run=str(run_dir), resamples=200))["metrics"]
    timing = "examples_per_s"
    assert {k: v for k, v in alone.items() if k != timing} == \
        {k: v for k, v in on_ray.items() if k != timing}
