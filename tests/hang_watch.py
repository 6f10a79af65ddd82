"""A hard stop for a test that hangs where pytest-timeout's signal cannot reach it.

pytest-timeout (pyproject: ``timeout``, signal method) fails a test stuck in Python code with
every thread's stack. A wait inside Ray's C++ core (``ray.get``, the driver's shutdown in the
session's last teardown) never runs the signal's handler, so the suite would sit until CI's own
limit killed it, unseen. Here faulthandler's watchdog (a C thread) writes every thread's
Python stack to a file a while later and ends the process: pytest-xdist reports "worker
crashed while running <test>" and the main process prints the stacks at the end.
"""

from __future__ import annotations

import faulthandler
import os
from pathlib import Path
from typing import Any

import pytest

GRACE_S = 120  # after pytest-timeout's own limit: its failure and the teardown get this long
_open: dict[str, Any] = {}


def _hang_dir(config: Any) -> Path:
    base = config._tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "hangs"


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # hooks of pytest-timeout
def pytest_timeout_set_timer(item: Any, settings: Any) -> None:
    out = _hang_dir(item.config)
    out.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    handle = (out / f"{worker}.txt").open("w")
    handle.write(f"{item.nodeid} ran past {settings.timeout + GRACE_S:g} s "
                 "(pytest-timeout's limit and the grace); every thread's stack:\n")
    handle.flush()
    _open[item.nodeid] = handle
    faulthandler.dump_traceback_later(settings.timeout + GRACE_S, exit=True, file=handle)
    return None  # pytest-timeout's own timer is set too


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # hooks of pytest-timeout
def pytest_timeout_cancel_timer(item: Any) -> None:
    faulthandler.cancel_dump_traceback_later()
    handle = _open.pop(item.nodeid, None)
    if handle is not None:
        handle.close()
        Path(handle.name).unlink()
    return None


def pytest_terminal_summary(terminalreporter: Any, config: Any) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for report in sorted(_hang_dir(config).glob("*.txt")):
        terminalreporter.section(f"hung test ({report.stem})", sep="!", red=True)
        terminalreporter.write(report.read_text())
