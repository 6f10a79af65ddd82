"""Helpers shared by the benchmark scripts: peak RSS of a process tree, fp32 peak, saving."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "shardtune")
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


class TreeRSS:
    """Sample the summed RSS of this process and all its children (Ray workers included)."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self.peak_mb, self._stop = interval, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            time.sleep(self.interval)

    def __enter__(self) -> TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def fp32_matmul_peak(size: int = 1024, repeats: int = 20) -> float:
    """Measured fp32 matmul FLOP/s on this machine with torch's current thread count."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def save(name: str, figures: dict[str, Any]) -> Path:
    import torch

    RESULTS.mkdir(exist_ok=True)
    figures = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M"),
               "machine": {"cpus": psutil.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "platform": platform.platform(), "python": platform.python_version()},
               **figures}
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(figures, indent=1, default=str))
    print(json.dumps(figures, indent=1, default=str))
    return out


def run_cli(args: list[str], cwd: Path) -> float:
    """Run one ``shardtune`` command as a user would; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([CLI, *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start
