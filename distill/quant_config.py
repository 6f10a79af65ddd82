"""Typed configs of ``shardtune quantize`` (``QuantizeConfig``, its gate ``gate.*``) and
``compress.*``: light, the CLI composes with them before any verb's package is imported."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore

from data.errors import ConfigError
from evaluation.config import RerankChoice
from trainers.config import PathsConfig
from trainers.quant_spec import QuantSpec


@dataclass
class QuantGate:
    """Quality gate of a quantised model against the full-precision one it came from.

    Args:
        max_drop: Largest allowed drop of ``metric`` (point estimate, metric units: 0.005 =
            half a point of accuracy, 1.0 = one BLEU point); exceeded → exit code 1.
            ``null`` = report only.
        metric: Headline metric compared: ``accuracy``/``macro_f1`` (seq_cls), ``entity_f1``
            (token_cls), ``perplexity`` (causal LM; a rise is the drop) or
            ``bleu``/``bleu_uncased``/``chrf``/``rouge_l``/``exact_match`` (chat runs: answers
            generated),
            ``ndcg@10``/``mrr@10``/``recall@10``/``recall@100``/``map@100`` (embedding and
            rerank runs, paired over queries). The default, ``accuracy``, stands for the
            task's headline metric (BLEU for chat, nDCG@10 for retrieval and reranking).
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
        speed_rows: Held-out texts each model is timed on (see ``QuantizeConfig``).
    """

    distill: bool = True
    quantize: bool = True
    max_drop_distill: Optional[float] = None
    max_drop_quantize: Optional[float] = None
    speed: bool = True
    speed_rows: int = 640

    def __post_init__(self) -> None:
        for key in ("max_drop_distill", "max_drop_quantize"):
            if (getattr(self, key) or 0.0) < 0:
                raise ConfigError(f"compress.{key}", f"must be >= 0, got {getattr(self, key)}")
        if self.speed_rows < 1:
            raise ConfigError("compress.speed_rows", f"must be >= 1, got {self.speed_rows}")
        if not (self.distill or self.quantize):
            raise ConfigError("compress", "both stages are off",
                              "set compress.distill=true and/or compress.quantize=true")


@dataclass
class QuantizeConfig:
    """``shardtune quantize run=<run> quant=<method>``.

    Args:
        run: A finished run directory (its adapter is merged first) — a training run, a seed
            of a group (``runs/<group>/seed0``) or a distilled student.
        split: Split scored for the quality comparison.
        out: Output directory; ``null`` = ``<run>/quant/<method>``.
        speed: Measure CPU latency, throughput and memory of both models.
        speed_rows: Held-out texts (of ``split``'s predictions) each model is timed on in
            batches of 32; the first 100 of them also one at a time.
        resamples: Bootstrap resamples for the CIs.
        rerank: A ``task=rerank`` run's first stage and depth (``rerank.*``, as for
            ``evaluate``; null keys: the run's ``task.rerank.*``): both models rerank the
            same candidates.
    """

    run: str = "???"
    quant: QuantSpec = field(default_factory=QuantSpec)
    split: str = "test"
    out: Optional[str] = None
    gate: QuantGate = field(default_factory=QuantGate)
    speed: bool = True
    speed_rows: int = 640
    resamples: int = 1000
    rerank: RerankChoice = field(default_factory=RerankChoice)
    paths: PathsConfig = field(default_factory=PathsConfig)

    def __post_init__(self) -> None:
        if self.split not in ("train", "validation", "test"):
            raise ConfigError("split", f"must be train, validation or test, got {self.split!r}")
        if self.speed_rows < 1:
            raise ConfigError("speed_rows", f"must be >= 1, got {self.speed_rows}")


def register_quantize_config() -> None:
    ConfigStore.instance().store(name="quantize_schema", node=QuantizeConfig)
