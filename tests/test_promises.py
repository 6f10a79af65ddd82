"""Promises of README "When things fail" and docs/security.md, each held to a test without
training: the signal handling of a graceful stop, pruning when the newest checkpoint is the
half-written one, and ``weights_only`` loading against a pickle that would run code."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from data.errors import ShardtuneError
from trainers import checkpoint, stop


def _signal_self(signum: int) -> None:
    # raise(3), not kill(getpid()): kill may hand the signal to any thread (Ray's and torch's
    # among them), whose C handler can run after this returns on a loaded machine; raise
    # delivers it to this thread, and Python runs the handler at the next bytecode
    signal.raise_signal(signum)


def test_ctrl_c_asks_for_a_checkpoint_and_a_second_ctrl_c_stops_at_once():
    stop.reset()
    # Python's own Ctrl-C, whatever the suite was started with (a shell starts a background
    # command with SIGINT ignored, and then so is pytest's)
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with stop.stop_flag() as key:
            _signal_self(signal.SIGINT)  # first: flagged, nothing raised
            assert stop.received() == signal.SIGINT
            asked, _ = stop.StopPoll(key, rank=0, world=1, local_mode=True)()
            assert asked  # the loop checkpoints and stops at its next step
            with pytest.raises(KeyboardInterrupt):  # second: Python's own Ctrl-C, at once
                _signal_self(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        stop.reset()
        signal.signal(signal.SIGINT, started_with)


def test_a_signal_the_process_ignores_stays_ignored_during_training():
    """``nohup shardtune train … &``: the shell ignores SIGINT for it; a stray SIGINT must
    neither stop the run nor turn into a graceful stop."""
    stop.reset()
    started_with = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop.stop_flag():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # still handled
            _signal_self(signal.SIGINT)
            assert stop.received() is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        stop.reset()
        signal.signal(signal.SIGINT, started_with)


def test_a_stopped_command_exits_130_for_ctrl_c_and_143_for_sigterm(monkeypatch, capsys):
    from shardtune import cli

    def stopped_by(signum: int):
        def dispatch(*args):
            stop.request(signum)
            stop.stopped("runs/x")  # a run checkpointed and stopped on it
            return 0
        return dispatch

    try:
        for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            stop.reset()
            monkeypatch.setattr(cli, "_dispatch", stopped_by(signum))
            assert cli.main(["train", "trainer.max_steps=1"]) == code
            assert "re-run the same command to resume" in capsys.readouterr().err
        stop.reset()

        def interrupted(*args):  # a Ctrl-C outside training (or the second one)
            raise KeyboardInterrupt
        monkeypatch.setattr(cli, "_dispatch", interrupted)
        assert cli.main(["train", "trainer.max_steps=1"]) == 130
    finally:
        stop.reset()


def _checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    out = run_dir / checkpoint.checkpoint_name(step)
    out.mkdir(parents=True)
    (out / "weights.bin").write_bytes(b"w" * 64)
    if complete:
        checkpoint.seal(out, checkpoint.Progress(seed=0, step=step))
    else:  # killed mid-upload: progress.json lists a file that never arrived whole
        (out / "weights.bin").write_bytes(b"w" * 10)
        (out / checkpoint.PROGRESS_FILE).write_text(json.dumps(
            {"progress": {"seed": 0, "step": step}, "files": {"weights.bin": 64}}))
    return out


def test_keep_checkpoints_never_prunes_the_only_good_one_when_the_newest_is_half_written(
        tmp_path):
    run_dir = tmp_path / "run"
    good = _checkpoint(run_dir, 2)
    _checkpoint(run_dir, 4, complete=False)
    # the resume point skips the newest (half-written) and the good one is still there
    assert checkpoint.latest_checkpoint(run_dir) == good
    assert [p.name for p in checkpoint.incomplete_checkpoints(run_dir)] == ["checkpoint_000004"]
    # the resumed run saves step 3 with keep_checkpoints=1: the half-written one does not count
    # as kept, the good one goes only once its successor is complete
    staged = _checkpoint(tmp_path / "staging", 3)
    final = checkpoint.persist_local(staged, run_dir, 3, keep=1)
    assert checkpoint.complete_checkpoints(run_dir) == [final]
    assert checkpoint.latest_checkpoint(run_dir) == final
    # when the resumed run reaches step 4, the complete save replaces the half-written one
    staged = _checkpoint(tmp_path / "staging2", 4)
    final = checkpoint.persist_local(staged, run_dir, 4, keep=1)
    assert checkpoint.complete_checkpoints(run_dir) == [final]
    assert checkpoint.incomplete_checkpoints(run_dir) == []


class _RunsCode:
    """Unpickling this calls ``Path.touch`` on a marker: a pickle that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_weights_only_loading_refuses_a_pickle_that_would_run_code(tmp_path):
    from safetensors.torch import save_model

    marker = tmp_path / "code_ran"
    net = torch.nn.Linear(2, 2)
    src = tmp_path / checkpoint.checkpoint_name(1)
    src.mkdir()
    save_model(net, str(src / checkpoint.FULL_WEIGHTS))
    torch.save({"optimizer": _RunsCode(marker), "scheduler": {}}, src / checkpoint.STATE_FILE)
    checkpoint.seal(src, checkpoint.Progress(seed=0, step=1))
    optimizer = torch.optim.AdamW(net.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    # the pickle is real: full unpickling would run it
    torch.load(src / checkpoint.STATE_FILE, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ShardtuneError, match="not a weights-only torch file"):
        checkpoint.load_state(src, net, optimizer, scheduler)
    assert not marker.exists()
