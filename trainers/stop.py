"""Graceful stop: SIGTERM (a preempted pod, ``shardtune jobs stop``, ``kill``) or Ctrl-C while a
run trains makes every worker checkpoint at its next optimizer step and stop; re-running the
command resumes with nothing repeated. A second signal stops at once (the work since the last
checkpoint is lost, as with SIGKILL). Outside training a signal acts as it always did.

The driver's handler writes a flag into Ray's key-value store (the GCS every worker reaches, on
any node); rank 0 reads it at most once a second and all ranks agree on it through one
all-reduce per step, so they stop on the same step. A node that Ray is draining (a spot
instance reclaimed) gets a just-in-time checkpoint the same way, through Ray Train's preemption
signal, and training goes on: Ray restarts the group elsewhere from that checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from typing import Any, Iterator

from trainers.collective import all_reduce

NAMESPACE = "shardtune"
SIGNALS = (signal.SIGTERM, signal.SIGINT)
_active: set[str] = set()  # flag keys of the fits running in this process
_received: list[int] = []  # signals that asked for a graceful stop
_wake = threading.Event()  # the handler's word to the thread that writes the flags
_poster: list[threading.Thread] = []


def received() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _received[0] if _received else None


_stopped: list[str] = []  # runs that stopped on it (a run that finished first does not count)


def stopped(run_dir: str) -> None:
    """A run of this process checkpointed and stopped because a stop was asked for."""
    _stopped.append(run_dir)


def stopped_any() -> bool:
    return bool(_received and _stopped)


def reset() -> None:
    """Forget a stop asked for (a long-lived process that goes on to other work: tests)."""
    _received.clear()
    _stopped.clear()


def request(signum: int = signal.SIGTERM) -> None:
    """Ask every running fit of this process to checkpoint and stop (what the handler does)."""
    if signum not in _received:
        _received.append(signum)
    _post_flags()


def _post_flags() -> None:
    # Ray loads only when a job runs: the CLI imports this module without it
    from ray.experimental.internal_kv import _internal_kv_put

    for key in list(_active):
        with contextlib.suppress(Exception):  # Ray gone: the workers are gone with it
            _internal_kv_put(key, str(_received[0] if _received else 0), namespace=NAMESPACE)


def _post_on_wake() -> None:
    """A thread of its own writes the flags: a signal handler that calls into Ray while the
    main thread is inside ``ray.get`` deadlocks (seen: the driver hung in _internal_kv_put)."""
    while True:
        _wake.wait()
        _wake.clear()
        _post_flags()


def _handler(previous: dict[int, Any]) -> Any:
    def handle(signum: int, frame: Any) -> None:
        if not _active or _received:  # nothing to save, or asked twice: as before
            old = previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, old)
            if callable(old):
                old(signum, frame)
            elif old == signal.SIG_DFL:
                os.kill(os.getpid(), signum)
            return
        print(f"{signal.Signals(signum).name}: checkpointing at the next step, then stopping "
              f"(send it again to stop now)", file=sys.stderr, flush=True)
        _received.append(signum)
        _wake.set()  # no Ray call here: the poster thread writes the flag
    return handle


@contextlib.contextmanager
def stop_flag() -> Iterator[str]:
    """Around one fit: a flag key the workers poll, and (in the main thread) the handlers.

    Installed after ``ray.init``, whose own SIGTERM handler exits the driver at once.
    """
    # Ray loads only when a job runs: the CLI imports this module without it
    from ray.experimental.internal_kv import _internal_kv_del

    key = f"stop/{uuid.uuid4().hex}"
    _active.add(key)
    main = threading.current_thread() is threading.main_thread()
    # a signal the process was started to ignore stays ignored (a shell starts background
    # commands with SIGINT ignored; nohup ignores SIGHUP): Python itself respects that
    previous = {s: signal.getsignal(s) for s in SIGNALS} if main else {}
    previous = {s: old for s, old in previous.items() if old is not signal.SIG_IGN}
    if main:
        if not _poster:
            _poster.append(threading.Thread(target=_post_on_wake, name="shardtune-stop",
                                            daemon=True))
            _poster[0].start()
        handle = _handler(previous)
        for s in previous:
            signal.signal(s, handle)
    try:
        yield key
    finally:
        _active.discard(key)
        for s, old in previous.items():
            if signal.getsignal(s) is not old and old is not None:
                signal.signal(s, old)
        with contextlib.suppress(Exception):
            _internal_kv_del(key, namespace=NAMESPACE)


class StopPoll:
    """Worker side, once per optimizer step on every rank: (stop asked for, node preempted).

    When the loop runs in the process that holds the flag (local mode) it sees the signal at
    once. Otherwise (Train workers; a seed group's runs in Ray tasks) rank 0 reads the flag
    from Ray's key-value store at most every ``every_s``, and one all-reduce carries its answer
    to every rank, so all of them stop on the same step; the same all-reduce says when all ranks ask
    Ray Train together (a barrier) whether a node is being drained, every ``preempt_every_s``.
    """

    def __init__(self, key: str | None, rank: int, world: int, local_mode: bool,
                 every_s: float = 0.25, preempt_every_s: float = 5.0) -> None:
        self.key, self.rank, self.world, self.local_mode = key, rank, world, local_mode
        self.every_s, self.preempt_every_s = every_s, preempt_every_s
        self.asked, self.preempted, self.last, self.last_preempt = False, False, 0.0, 0.0

    def _read_flag(self) -> bool:
        if self.key in _active:  # the loop runs in the process that got the signal
            return bool(_received)
        from ray.experimental.internal_kv import _internal_kv_get  # Ray: only while a fit runs

        try:
            return bool(_internal_kv_get(self.key, namespace=NAMESPACE))
        except Exception:  # noqa: BLE001 - a GCS hiccup: ask again at the next beat
            return False

    def __call__(self) -> tuple[bool, bool]:
        now, preempt_due = time.monotonic(), 0.0
        if self.rank == 0 and self.key and not self.asked and (
                self.key in _active or now - self.last >= self.every_s):
            self.last, self.asked = now, self._read_flag()
        if self.rank == 0 and not self.local_mode and now - self.last_preempt >= \
                self.preempt_every_s:
            self.last_preempt, preempt_due = now, 1.0
        asked, preempt_due = all_reduce([float(self.asked), preempt_due], self.world, op="max")
        self.asked = bool(asked)
        newly_preempted = False
        if preempt_due and not self.preempted:
            import ray.train  # only in Ray Train's workers (local mode never polls preemption)

            self.preempted = newly_preempted = ray.train.get_preemption_info() is not None
        return self.asked, newly_preempted
