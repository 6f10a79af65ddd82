"""What a command shows on the console, and the log file that gets everything else.

A user reads one line where Ray starts, the progress line (step, loss, samples/s, ETA) and the
result table. Ray's worker output (Train controller and placement-group chatter, Ray Data's
per-dataset INFO lines, library load reports, deprecation notices) goes to the command's log
file, with each line's process; ``--verbose`` (or ``SHARDTUNE_VERBOSE=1``) prints everything as
before. Only a command run from the CLI is routed: a library caller keeps Ray's defaults.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROGRESS = re.compile(r"^step \d+/\d+ ")  # trainers/progress.py's plain line
# Driver-side loggers whose INFO/WARNING lines are about Ray's or a library's internals.
QUIET = ("ray", "ray.data", "ray.train", "ray.tune", "transformers", "bitsandbytes",
         "py.warnings")
_route: dict[str, Any] = {}


def verbose() -> bool:
    return os.environ.get("SHARDTUNE_VERBOSE", "") not in ("", "0")


@contextmanager
def routed(log_file: Path, show_progress: bool = True) -> Iterator[None]:
    """Inside the block, library and worker output goes to ``log_file``; the console keeps
    errors, the progress line (when ``show_progress``) and what shardtune prints itself.
    Ray's defaults come back after it."""
    if verbose() or _route:
        yield
        return
    to_file = _LazyFile(log_file)  # no file (nor folder) for a command that fails first
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved_env = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's legacy reporter: silent at verbose=0
    try:  # transformers configures its logger (own handler, no propagation) on first use:
        from transformers.utils import logging as hf_logging  # before its state is saved

        hf_logging.get_logger("transformers")
        hf_logging.disable_progress_bar()  # "Loading weights: 100%" bars of the local mode
    except ImportError:
        pass
    _route.update(file=log_file, progress=show_progress, handler=to_file, levels={},
                  propagate={})
    logging.captureWarnings(True)
    for name in QUIET:
        logger = logging.getLogger(name)
        _route["propagate"][name] = logger.propagate
        logger.propagate = name.startswith("ray")  # the others reach the file only
        if not (logger.propagate and name.rpartition(".")[0] in QUIET):
            logger.addHandler(to_file)  # else its parent's handler writes it: once, not twice
    quiet_console_handlers()
    try:
        yield
    finally:
        _restore(saved_env)


class _LazyFile(logging.FileHandler):
    """A log file made (with its folder) at its first line."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True)

    def _open(self):  # noqa: ANN202 - logging's own hook
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _restore(saved_env: str | None) -> None:
    for name in QUIET:
        logger = logging.getLogger(name)
        logger.removeHandler(_route["handler"])
        logger.propagate = _route["propagate"].get(name, True)
    for handler, level in _route["levels"].items():
        handler.setLevel(level)
    _route["handler"].close()
    logging.captureWarnings(False)
    if saved_env is None:
        os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
    else:
        os.environ["RAY_AIR_NEW_OUTPUT"] = saved_env
    if _route.get("captured"):
        # Ray loads only when a job runs: the CLI imports this module without it
        from ray._private import worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        worker.print_to_stdstream = _route["print_to_stdstream"]
        dispatcher.remove_handler("shardtune_logs")
        dispatcher.add_handler("ray_print_logs", functools.partial(
            worker.print_to_stdstream, ignore_prefix=False))
    _route.clear()


def quiet_console_handlers() -> None:
    """Ray installs console handlers of its own (and re-installs them when ``ray.data`` is
    imported): those print only errors while routed."""
    if not _route:
        return
    for name in QUIET:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and \
                    not isinstance(handler, logging.FileHandler):
                _route["levels"].setdefault(handler, handler.level)
                handler.setLevel(logging.ERROR)


def capture_worker_output() -> None:
    """Once Ray runs: every worker line to the log file, only progress lines to the console."""
    if not _route:
        return
    # Ray loads only when a job runs: the CLI imports this module without it
    from ray._private import worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    quiet_console_handlers()
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler("shardtune_logs")
    dispatcher.add_handler("shardtune_logs", _worker_lines)
    if not _route.get("captured"):  # the raylet's messages reach the driver through this
        _route["print_to_stdstream"] = worker.print_to_stdstream
        worker.print_to_stdstream = _raylet_lines
    _route["captured"] = True


def _worker_lines(data: dict[str, Any]) -> None:
    lines = [str(line) for line in data.get("lines", [])]
    source = data.get("actor_name") or data.get("task_name") or "worker"
    stamp = time.strftime("%H:%M:%S")
    Path(_route["file"]).parent.mkdir(parents=True, exist_ok=True)
    with Path(_route["file"]).open("a") as f:
        f.writelines(f"{stamp} ({source} pid={data.get('pid')}) {line}\n" for line in lines)
    if _route.get("progress"):
        for line in lines:
            if PROGRESS.match(line):
                print(line, file=sys.stdout, flush=True)


def announce_ray(joined: str | None) -> None:
    """The one line where Ray starts (Ray's own notices are in the log file)."""
    if not _route:
        return
    import ray  # Ray loads only when a job runs: the CLI imports this module without it

    cpus = int(ray.cluster_resources().get("CPU", 0))
    where = f"joined {joined}" if joined else "started locally, on 127.0.0.1 only"
    print(f"ray: {where} ({cpus} CPUs); full log: {_route['file']}", flush=True)


def announce_no_ray() -> None:
    """The line where Ray would have started, for a run that needs none (data/local.py)."""
    if _route:
        import ray  # loaded by the run already

        verb = ("not used", "uses") if ray.is_initialized() else ("not started", "starts")
        print(f"ray: {verb[0]} (a local run on files read here; data.driver_bytes=0 {verb[1]} "
              f"it); full log: {_route['file']}", flush=True)


def _raylet_lines(data: dict[str, Any], ignore_prefix: bool) -> None:
    """The raylet's messages go to the log file; the console keeps those that are not mere
    warnings (a worker killed for memory, say)."""
    _worker_lines({**data, "actor_name": "raylet"})
    kept = [line for line in data.get("lines", [])
            if not str(line).lstrip().startswith("WARNING")]
    if kept:
        _route["print_to_stdstream"]({**data, "lines": kept}, ignore_prefix)


def log_file() -> Path | None:
    """Where the routed output of this command goes (None: not routed)."""
    return _route.get("file")
