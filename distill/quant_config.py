"""Typed specs of the quantisation gate (``gate.*``) and ``compress.*``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from data.errors import ConfigError


@dataclass
class QuantGate:
    """Quality gate of a quantised model against the full-precision one it came from.

    Args:
        max_drop: Largest allowed drop of ``metric`` (point estimate, metric units: 0.005 =
            half a point of accuracy); exceeded → exit code 1. ``null`` = report only.
        metric: Headline metric compared: ``accuracy``/``macro_f1`` (seq_cls), ``entity_f1``
            (token_cls) or ``perplexity`` (causal LM; a rise is the drop). The default,
            ``accuracy``, stands for the task's headline metric.
    """

    max_drop: Optional[float] = None
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        if self.max_drop is not None and self.max_drop < 0:
            raise ConfigError("gate.max_drop", f"must be >= 0, got {self.max_drop}")


@dataclass
class CompressSpec:
    """``shardtune compress``: distil, then quantise the student, with a gate after each.

    Args:
        distill: Run the distillation stage (``distill.*``); off = quantise the teacher.
        quantize: Run the quantisation stage (``quant.*``).
        max_drop_distill: Largest allowed accuracy drop student (mean over seeds) vs teacher.
        max_drop_quantize: Largest allowed drop quantised vs full-precision student.
        speed: Measure size, latency and memory of every stage's model.
    """

    distill: bool = True
    quantize: bool = True
    max_drop_distill: Optional[float] = None
    max_drop_quantize: Optional[float] = None
    speed: bool = True

    def __post_init__(self) -> None:
        for key in ("max_drop_distill", "max_drop_quantize"):
            if (getattr(self, key) or 0.0) < 0:
                raise ConfigError(f"compress.{key}", f"must be >= 0, got {getattr(self, key)}")
        if not (self.distill or self.quantize):
            raise ConfigError("compress", "both stages are off",
                              "set compress.distill=true and/or compress.quantize=true")

