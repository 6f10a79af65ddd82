"""A live progress line on the driver: step, loss, samples/s and ETA.

In local mode the loop runs in the driver process, so a rich progress bar works when stdout is a
terminal; otherwise (workers, CI logs) a plain line is printed every ``log_every`` steps.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class ProgressLine:
    def __init__(self, total_steps: int | None, start_step: int, enabled: bool) -> None:
        """``total_steps`` None: not known ahead (token-budget batches); no ETA then."""
        self.total = total_steps
        self.enabled = enabled
        self.start_time = time.perf_counter()
        self.start_step = start_step
        self._bar: Any = None
        if enabled and sys.stdout.isatty():
            from rich.progress import (  # a bar only on a terminal; workers and logs never draw
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("[bold]train"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 TimeRemainingColumn())
            self._task = self._bar.add_task("train", total=total_steps, completed=start_step,
                                            info="")
            self._bar.start()

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        info = (f"loss {metrics.get('train/loss', float('nan')):.4f}  "
                f"{metrics.get('train/samples_per_s', 0.0):.1f} samples/s")
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
            return
        elapsed = time.perf_counter() - self.start_time
        done = max(step - self.start_step, 1)
        where = f"step {step}"
        if self.total is not None:
            where += f"/{self.total}  {info}  eta {elapsed / done * max(self.total - step, 0):.0f}s"
        else:
            where += f"  {info}"
        # not print(): Ray Train patches it on workers to tee into its logger, which echoes
        # every line to the same console a second time
        sys.stdout.write(where + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
