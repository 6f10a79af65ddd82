"""Faults: a worker SIGKILLed mid-epoch, the driver SIGTERMed and SIGKILLed, half-written
checkpoints. Each recovery must end where an uninterrupted run ends, bit for bit."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    FAST,
    HEAVY_TIMEOUT_S,
    PLUMBING_MODEL,
    logged,
    stop_while_training,
    train_run,
)
from trainers.checkpoint import (
    Progress,
    checkpoint_step,
    complete_checkpoints,
    is_complete,
    latest_checkpoint,
    persist_local,
    seal,
)

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = Path(__file__).resolve().parent.parent
RUN = [*FAST, "trainer.max_steps=8", "trainer.epochs=2", "trainer.ckpt_every=2"]
TWO_WORKERS = ["cluster=ray", "cluster.num_workers=2", "cluster.cpus_per_worker=0.5"]


def _wait_for_checkpoint(run_dir: Path, step: int, alive: callable, timeout: float = 240) -> None:
    ckpt = run_dir / f"checkpoint_{step:06d}"
    deadline = time.monotonic() + timeout
    while not (ckpt.is_dir() and is_complete(ckpt)):
        assert alive(), f"the run ended before {ckpt.name} was written"
        assert time.monotonic() < deadline, f"no {ckpt.name} after {timeout} s"
        time.sleep(0.02)


def _train_workers(since: float) -> list[int]:
    """The Ray Train workers this session's Ray started since then (its raylet's children:
    another pytest process's Ray may be training beside it)."""
    import psutil
    import ray

    raylets = {info.process.pid for info in ray._private.worker._global_node.all_processes[
        "raylet"]}
    found = []
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "create_time"]):
        cmd = proc.info["cmdline"] or []
        if (cmd and cmd[0] == "ray::RayTrainWorker" and proc.info["ppid"] in raylets
                and proc.info["create_time"] >= since - 1):
            found.append(proc.info["pid"])
    return found


def _steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in logged(run_dir) if "train/loss" in r]


def _resumes(run_dir: Path) -> list[dict]:
    return [r for r in logged(run_dir) if r.get("event") == "resumed"]


@pytest.mark.timeout(HEAVY_TIMEOUT_S)
def test_a_worker_killed_mid_epoch_restarts_from_the_newest_checkpoint_exactly(tmp_path):
    straight = train_run(tmp_path, [*RUN, *TWO_WORKERS, "run_name=straight"])
    m = straight["metrics"]
    assert m["dist/world_size"] == 2 and m["dist/overlap"] == 0  # DDP: disjoint data ...
    assert m["dist/weights_equal"] == 1.0  # ... and identical weights on both ranks
    assert len(m["dist/torch_threads"]) == 2 and min(m["dist/torch_threads"]) >= 1
    assert sum(m["dist/rows_per_rank"]) >= 2 * min(m["dist/rows_per_rank"]) > 0
    assert (Path(straight["run_dir"]) / "checkpoint_000008" / "progress.json").exists()

    result: dict = {}
    started = time.time()
    job = threading.Thread(target=lambda: result.update(train_run(
        tmp_path, [*RUN, *TWO_WORKERS, "trainer.max_failures=1", "run_name=killed"])))
    job.start()
    run_dir = tmp_path / "runs" / "killed"
    _wait_for_checkpoint(run_dir, 2, job.is_alive)  # mid-epoch: ~9 batches a rank an epoch
    workers = _train_workers(started)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    job.join()

    assert result["status"] == "done" and result["metrics"]["step"] == 8
    [resume] = _resumes(run_dir)  # one restart, from checkpoint 2 (or 4 had it been written)
    assert resume["step"] in (2, 4) and resume["repeated_steps"] <= 2  # ≤ one interval redone
    assert _steps(run_dir) == list(range(1, 9))  # no step lost or counted twice
    assert result["metrics"]["dist/weights_hash"] == m["dist/weights_hash"]
    assert result["metrics"]["val/loss"] == pytest.approx(m["val/loss"], rel=1e-6)


def _driver(tmp_path: Path, args: list[str]) -> subprocess.Popen:
    import ray

    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    # a driver of its own, as a re-run after a crash is: not attached to the W&B service this
    # process started (a SIGKILLed client would leave its run open there)
    env.pop("WANDB_SERVICE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "shardtune.cli", "train", f"paths.root={tmp_path}", *args,
         f"cluster.address={address}"], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_killed_driver_rerun_resumes_the_same_run_exactly(tmp_path, monkeypatch):
    """A graceful stop once checkpoint 2 is written (what SIGTERM does; the CLI's exit 143 is
    tests/test_local_data.py's): a checkpoint at the step it was on. The same command in a
    driver process, SIGKILLed once the next even checkpoint is written. Then the same command
    again: same run directory, same W&B run id, each step logged once, and the weights of an
    uninterrupted run of the same seed (which also shows a seed fixes everything)."""
    from shardtune.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    short = [*FAST, "trainer.max_steps=8", "trainer.epochs=2"]
    args = [*short, "trainer.ckpt_every=2", "run_name=killed", "tracking.wandb=true"]
    run_dir = tmp_path / "runs" / "killed"
    straight = train_run(tmp_path, [*short, "run_name=straight"])
    stopped = stop_while_training(
        lambda: train_run(tmp_path, args),
        ready=lambda: is_complete(run_dir / "checkpoint_000002"))
    assert stopped["status"] == "stopped"
    stopped_at = stopped["metrics"]["step"]
    assert 2 <= stopped_at < 8 and _steps(run_dir)[-1] == stopped_at
    assert checkpoint_step(latest_checkpoint(run_dir)) == stopped_at
    wait_for = stopped_at + 2 - stopped_at % 2
    proc = _driver(tmp_path, args)
    try:
        _wait_for_checkpoint(run_dir, wait_for, lambda: proc.poll() is None)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
        err = proc.stderr.read()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert main(["train", f"paths.root={tmp_path}", *args]) == 0

    resumes = _resumes(run_dir)
    assert len(resumes) == 2
    assert resumes[0]["step"] == stopped_at and resumes[0]["repeated_steps"] == 0
    assert resumes[1]["step"] >= wait_for
    assert _steps(run_dir) == list(range(1, 9))  # each step logged once: none lost or doubled
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["step"] == 8
    assert final["dist/weights_hash"] == straight["metrics"]["dist/weights_hash"]
    assert final["val/loss"] == pytest.approx(straight["metrics"]["val/loss"], rel=1e-6)
    offline = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 3  # three attempts (one a driver of its own), one W&B run id
    assert len({name.rsplit("-", 1)[1] for name in offline}) == 1


def _fake_checkpoint(run_dir: Path, step: int) -> Path:
    out = run_dir / f"checkpoint_{step:06d}"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"w" * 100)
    (out / "training_state.pt").write_bytes(b"s" * 50)
    seal(out, Progress(seed=0, step=step))
    return out


def test_half_written_checkpoints_are_never_resumed_from_and_retention_keeps_a_good_one(
        tmp_path):
    run_dir = tmp_path / "run"
    _fake_checkpoint(run_dir, 4)
    cut = _fake_checkpoint(run_dir, 8)  # killed mid-upload: one file short
    (cut / "adapter" / "adapter_model.safetensors").write_bytes(b"w" * 10)
    missing = _fake_checkpoint(run_dir, 12)  # killed before a file arrived
    (missing / "training_state.pt").unlink()
    _fake_checkpoint(run_dir, 16)
    (run_dir / "checkpoint_000016" / "progress.json").write_text('{"progress": {"se')  # cut
    assert [p.name for p in complete_checkpoints(run_dir)] == ["checkpoint_000004"]
    assert latest_checkpoint(run_dir).name == "checkpoint_000004"

    staged = _fake_checkpoint(tmp_path / "staging", 20)
    persist_local(staged, run_dir, 20, keep=1)  # the new one is final before any is pruned
    assert [p.name for p in complete_checkpoints(run_dir)] == ["checkpoint_000020"]
    assert not list(run_dir.glob(".checkpoint_*"))  # no staging directory left behind


@pytest.mark.parametrize("on_error", ["error", "skip"])
def test_a_shard_deleted_mid_run_is_named_or_counted_never_silently_lost(
        on_error, tmp_path, capsys):
    from shardtune.cli import main

    data = tmp_path / "data"
    data.mkdir()
    for k in range(4):
        (data / f"part{k}.jsonl").write_text("".join(
            json.dumps({"text": f"shard {k} example {i} " + "word " * (i % 7),
                        "label": "ab"[i % 2]}) + "\n" for i in range(48)))
    metrics = tmp_path / "runs" / "default" / "metrics.jsonl"

    def delete_after_first_step() -> None:
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            time.sleep(0.02)
        (data / "part2.jsonl").unlink()

    threading.Thread(target=delete_after_first_step, daemon=True).start()
    code = main(["train", f"paths.root={tmp_path}", f"data.path={data}", "data.test_path=null",
                 "data.materialize=false", "trainer.epochs=2", f"data.on_error={on_error}",
                 *FAST, PLUMBING_MODEL])  # epoch 1's 11 steps outlast the deletion's poll
    err = capsys.readouterr()
    if on_error == "error":
        assert code == 2
        assert "part2.jsonl: unreadable (FileNotFoundError" in err.err.splitlines()[-1]
        return
    assert code == 0, err.err
    final = json.loads((tmp_path / "runs" / "default" / "metrics.json").read_text())
    from data.pipeline import split_key

    held_out = sum(split_key(json.loads(line)["text"]) < 0.1
                   for line in _part2_lines())
    # epoch 2 (and epoch 1 too, if it had not read part2 yet) lost part2's training rows,
    # exactly; the final evaluation lost its validation rows, counted too
    assert final["data/rows_lost"] in (48 - held_out, 2 * (48 - held_out))
    assert held_out and final["data/validation_rows_lost"] == held_out
    meta = json.loads((tmp_path / "runs" / "default" / "run_meta.json").read_text())
    assert meta["final_metrics"]["data/rows_lost"] == final["data/rows_lost"]
    assert "recorded in the final metrics" in err.out and "split 'validation'" in err.out


def _part2_lines() -> list[str]:
    return [json.dumps({"text": f"shard 2 example {i} " + "word " * (i % 7),
                        "label": "ab"[i % 2]}) for i in range(48)]


@pytest.mark.parametrize("world, expected, seen, lost", [
    (1, 100, 100, 0), (4, 102, 100, 0),  # Ray Train's equal split leaves 102 % 4 out
    (4, 100, 97, 3),  # fewer than world rows: once tolerated silently
    (4, 100, 104, -4),  # more rows than counted at the start: once ignored
    (2, 101, 90, 10)])
def test_streamed_epochs_are_checked_exactly_against_the_rows_due(monkeypatch, capsys, world,
                                                                  expected, seen, lost):
    from data.errors import DataError
    from trainers import data_loss

    monkeypatch.setattr(data_loss, "all_reduce", lambda values, world: [seen])
    assert data_loss.train_rows_lost("skip", 0, seen, expected, world, rank=0) == lost
    assert ("warning: train: epoch 1 saw" in capsys.readouterr().out) == (lost != 0)
    if lost:
        with pytest.raises(DataError, match="more than the" if lost < 0 else "lost"):
            data_loss.train_rows_lost("error", 0, seen, expected, world, rank=0)
    assert data_loss.eval_rows_lost("skip", "test", seen, seen + 2, world, 0) == 2


@contextlib.contextmanager
def _other_job_holding(cpus: float) -> Iterator[None]:
    """Another job's actor holds ``cpus`` of the session Ray's CPUs while the block runs."""
    import ray

    @ray.remote(num_cpus=cpus)
    class OtherJob:
        def ready(self) -> bool:
            return True

    other = OtherJob.remote()
    ray.get(other.ready.remote())
    try:
        yield
    finally:
        ray.kill(other)


def test_workers_with_no_room_fail_after_start_wait_naming_what_is_free(tmp_path):
    """Ray Train retries a worker group it cannot place for ever by default: with another
    job holding the CPUs, the run fails after ``cluster.start_wait_s``, in one line."""
    from data.errors import ClusterError

    with _other_job_holding(cpus=1), pytest.raises(ClusterError) as failed:  # the data reads
        train_run(tmp_path, [*RUN, PLUMBING_MODEL, "cluster=ray", "cluster.num_workers=2",
                             "cluster.start_wait_s=2", "run_name=no_room"])
    message = str(failed.value)
    assert "'cluster.start_wait_s': 2 workers x 1 CPU could not be placed within 2 s" in message
    free = re.search(r"free in the Ray cluster now: \{'CPU': ([\d.]+)\}", message)
    assert free and float(free[1]) <= 1.0, message  # the other job's CPU is not free
    assert os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S") is None  # set only around it


def test_no_free_cpu_for_the_data_tasks_fails_after_start_wait_not_never(tmp_path):
    """With every CPU held by another job, Ray Data's tasks (and the driver in ``ray.get``)
    would wait for ever: the run fails after ``cluster.start_wait_s`` naming the key, and the
    CPUs it waited for are not taken later by a forgotten probe."""
    import ray

    from data.errors import ClusterError

    cpus = ray.cluster_resources()["CPU"]
    with _other_job_holding(cpus), pytest.raises(ClusterError) as failed:
        train_run(tmp_path, [*RUN, PLUMBING_MODEL, "cluster=ray", "cluster.start_wait_s=2",
                             "run_name=no_cpu"])
    message = str(failed.value)
    assert ("'cluster.start_wait_s': no CPU of the Ray cluster came free for the data tasks "
            f"within 2 s (total {cpus:g} CPUs; free now: nothing)") in message, message
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < cpus and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == cpus  # the cancelled probe holds none


@pytest.mark.parametrize("wait, try_s, retries", [(900, None, 14), (60, None, 0), (61, None, 1),
                                                  (2, None, 0), (300, "30", 9), (2, "120", 0)])
def test_start_wait_becomes_tries_of_at_most_a_minute(wait, try_s, retries, monkeypatch):
    """Ray's tries last 60 s (or what the user set): ``start_wait_s`` is their number; a
    shorter wait is one try of its own length, set only inside the block."""
    from trainers.cluster_config import ClusterConfig, ClusterMode
    from trainers.scaling import START_TRY_VAR, bounded_start

    if try_s is None:
        monkeypatch.delenv(START_TRY_VAR, raising=False)
    else:
        monkeypatch.setenv(START_TRY_VAR, try_s)
    with bounded_start(ClusterConfig(mode=ClusterMode.ray, start_wait_s=wait)) as limit:
        assert limit == retries
        assert os.environ.get(START_TRY_VAR) == ("2" if wait == 2 else try_s)
    assert os.environ.get(START_TRY_VAR) == try_s
    with bounded_start(ClusterConfig(mode=ClusterMode.ray, start_wait_s=None)) as limit:
        assert limit == -1  # Ray's own: no limit
