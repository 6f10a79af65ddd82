"""Typed spec of quantised linear layers (``quant.*``, ``conf/quant/``; QLoRA's frozen base).

In the training core because ``peft=qlora`` loads its base through it; the quantise and
compress runs (``distill/``) build on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from data.errors import ConfigError

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
