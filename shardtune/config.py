"""The job config: the training core's ``TrainConfig`` plus the keys of the verbs built on it.

``conf/train.yaml`` is validated against ``JobConfig``. A sweep, an ablation, a distillation and
the compress chain each read their own key (``sweep``, ``ablation``, ``distill``, ``quant``,
``compress``); every worker still receives the one typed object, and packages below the
application read it through the ``TrainConfig`` fields they know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from distill.config import DistillSpec
from distill.quant_config import CompressSpec
from evaluation.config import MineSpec
from trainers.config import TrainConfig
from trainers.quant_spec import QuantSpec
from tuning.config import AblationSpec, SweepSpec


@dataclass
class JobConfig(TrainConfig):
    """Everything one ``train``/``sweep``/``ablate``/``distill``/``compress`` command needs.

    Args:
        sweep: The search of ``shardtune sweep`` (``sweep=<name>``, conf/sweep/).
        ablation: The arms of ``shardtune ablate`` (``ablation=<name>``, conf/ablation/).
        distill: Train this run as a student of ``distill.teacher`` (``shardtune distill``).
        quant: Post-training quantisation of ``shardtune compress`` (``quant=<method>``).
        compress: Stages and gates of ``shardtune compress``.
        mine: Hard-negative mining of ``shardtune mine`` (``task=embedding``, BEIR data).
    """

    sweep: Optional[SweepSpec] = None
    ablation: Optional[AblationSpec] = None
    distill: Optional[DistillSpec] = None
    quant: Optional[QuantSpec] = None
    compress: CompressSpec = field(default_factory=CompressSpec)
    mine: MineSpec = field(default_factory=MineSpec)
