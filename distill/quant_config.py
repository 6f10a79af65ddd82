"""Typed specs of quantisation (``quant.*``, ``conf/quant/``), its gate and ``compress.*``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from trainers.errors import ConfigError

METHODS = ("int8", "nf4", "fp4", "dynamic_int8")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
HEAD_MODULES = ("classifier", "score", "lm_head")  # task heads: small, sensitive, kept


@dataclass
class QuantSpec:
    """How linear weights are quantised (post-training, after any adapter is merged).

    Args:
        method: ``int8`` (bitsandbytes LLM.int8 layers, per-row scales), ``nf4`` / ``fp4``
            (bitsandbytes 4-bit blocks), ``dynamic_int8`` (torch per-channel int8 weights with
            dynamically quantised activations: the fast one for CPU serving).
        skip_modules: Linear layers whose name ends with one of these stay in full precision
            (task heads are small and sensitive).
        double_quant: 4-bit only: quantise the block scales too (saves ~0.4 bit/weight).
        compute_dtype: 4-bit only: dtype the matmul runs in after dequantisation.
        threshold: ``int8`` only: LLM.int8() outlier threshold (0 = every column in int8).
        device: Where the quantised model runs: ``auto`` (CUDA when present), ``cpu``, ``cuda``.
    """

    method: str = "int8"
    skip_modules: List[str] = field(default_factory=lambda: list(HEAD_MODULES))
    double_quant: bool = True
    compute_dtype: str = "float32"
    threshold: float = 0.0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError("quant.method", f"must be one of {', '.join(METHODS)}, "
                              f"got {self.method!r}", "e.g. quant=int8")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError("quant.compute_dtype", f"must be one of "
                              f"{', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError("quant.device", f"must be auto, cpu or cuda, got {self.device!r}")
        if self.threshold < 0:
            raise ConfigError("quant.threshold", f"must be >= 0, got {self.threshold}")


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

