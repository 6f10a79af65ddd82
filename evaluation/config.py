"""Typed config for ``shardtune evaluate`` / ``shardtune baseline`` and release gates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore

from data.config import DataConfig
from data.errors import ConfigError
from trainers.config import PathsConfig
from trainers.embedding_spec import RerankSpec, check_rerank
from trainers.storage import check_data_uris, refuse_credentials

SPLITS = ("train", "validation", "test")


@dataclass
class GateConfig:
    """Release gates checked after evaluation; any failure exits non-zero.

    Args:
        min: Lowest acceptable value per headline metric, e.g. ``{macro_f1: 0.9}``; the point
            estimate is compared, and the report shows its CI.
        max_drop_vs_baseline: The model may trail the TF-IDF baseline by at most this much
            accuracy (0.0 = must not be worse).
        max_slice_drop: No slice may fall more than this below the overall accuracy.
        min_slice_size: Slices smaller than this are reported but not gated (too noisy).
        reference: Another run directory; the model may not fall below its accuracy by more
            than ``max_drop_vs_reference``.
        max_drop_vs_reference: Allowed accuracy drop against ``reference``.
    """

    min: Dict[str, float] = field(default_factory=dict)
    max_drop_vs_baseline: Optional[float] = None
    max_slice_drop: Optional[float] = None
    min_slice_size: int = 30
    reference: Optional[str] = None
    max_drop_vs_reference: float = 0.0


@dataclass
class RerankChoice:
    """``evaluate``'s and ``quantize``'s ``rerank.*``: the first stage a ``task=rerank`` run
    is tested on; a key left null takes the run's own ``task.rerank.*`` (what its seed group
    was evaluated on).

    Args:
        retriever: ``bm25`` or a trained ``task=embedding`` run directory.
        top_k: Candidates per query the cross-encoder scores, 1 to 100.
        fusion: ``none``, ``validation`` or a weight in [0, 1]: the cross-encoder's score
            interpolated with the first stage's (``task.rerank.fusion``).
    """

    retriever: Optional[str] = None
    top_k: Optional[int] = None
    fusion: Optional[str] = None

    def __post_init__(self) -> None:
        check_rerank(self.retriever, self.top_k, "rerank", self.fusion)

    def resolve(self, run: RerankSpec) -> RerankChoice:
        """Every key set: the ones given here, the run's for the rest."""
        return RerankChoice(retriever=self.retriever or run.retriever,
                            top_k=self.top_k or run.top_k, fusion=self.fusion or run.fusion)


def check_name(name: str | None) -> None:
    """``name=`` becomes a folder ``eval-<name>``: one plain path component."""
    if name is not None and (not name or "/" in name or name.startswith(".")):
        raise ConfigError("name", f"{name!r} cannot name an evaluation folder",
                          "e.g. name=march_batch")


@dataclass
class EvaluateConfig:
    """What to evaluate and how.

    Args:
        run: A finished run directory (``runs/<run_name>``).
        split: ``test``, ``validation`` or ``train`` of the data config.
        data: Another data config (``data=<group>``); ``null`` = the run's own data, which
            ``data.*`` keys on the command line change (``data.test_path=new.jsonl``).
        name: Folder name for an evaluation on data other than the run's own:
            ``runs/<run>/eval-<name>/<split>/``; ``null`` = the data's name and fingerprint.
            The run's own data always goes to ``runs/<run>/eval/<split>/`` unless named.
        resamples: Bootstrap resamples for confidence intervals.
        actors: Ray Data actors doing batch inference (one GPU each when present).
        batch_size: Examples per forward pass.
        baseline: Fit the TF-IDF + logistic regression baseline on the same splits if the run
            has none yet, and show it beside the model.
        inprocess_rows: Splits are scored in this process (no actor start-up): up to this
            many rows sorted by length as one, above it in windows of this many rows. Ray
            Data actors score them where the cluster has a GPU this process cannot use, or,
            for a split above this size, where the cluster is more than this machine or
            ``actors`` > 1; 0 = always through Ray Data actors.
        rerank: A ``task=rerank`` run's first stage and depth; null keys: the run's own
            ``task.rerank.*``.
        max_new_tokens: Chat runs: the longest generated answer; ``null`` = the run's own
            ``task.max_new_tokens``.
        num_beams: Chat runs: beam width; ``null`` = the run's own ``task.num_beams``.
        copy_values: Chat runs: attributes (``data.slot_pattern``) whose prompt value an
            answer writes only in part is written whole (``data.delex.copy_values``; E2E:
            ``[name, near]``, "the Holiday Inn" → "Express by Holiday Inn"); mended values are
            counted in the report; ``[]`` = answers as generated.
    """

    run: str = "???"
    split: str = "test"
    data: Optional[DataConfig] = None
    name: Optional[str] = None
    gate: GateConfig = field(default_factory=GateConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    resamples: int = 1000
    actors: int = 1
    batch_size: int = 64
    baseline: bool = True
    inprocess_rows: int = 20000
    rerank: RerankChoice = field(default_factory=RerankChoice)
    max_new_tokens: Optional[int] = None
    num_beams: Optional[int] = None
    copy_values: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError("split", f"must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.resamples < 100:
            raise ConfigError("resamples", f"must be >= 100, got {self.resamples}")
        if self.actors < 1 or self.batch_size < 1:
            raise ConfigError("actors" if self.actors < 1 else "batch_size", "must be >= 1")
        for key in ("max_new_tokens", "num_beams"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(key, f"must be >= 1, got {getattr(self, key)}")
        if self.data is not None:
            check_data_uris(self.data)
        refuse_credentials(self.run, "run")
        refuse_credentials(self.gate.reference, "gate.reference")


@dataclass
class MineSpec:
    """Hard-negative mining of ``shardtune mine`` (``mine.*``) for a BEIR training split.

    Args:
        miner: The model that ranks the corpus: a trained embedding run, a model path or a
            hub id; ``null`` = ``model.name_or_path`` (the base the run will start from).
        range_min: Ranks skipped at the top (0-based count): unjudged relevant documents
            rank there, and a false negative trains the model away from a right answer.
        range_max: The deepest rank a negative is taken from.
        margin: When set, a negative scores at most the pair's own document's score minus
            this (a guard against false negatives); ``null`` = off. A pair whose document
            the miner ranks below the window then often finds none: on SciFact, margin 0
            left 99 of 919 pairs without one (the hardest, where the model is weakest).
        batch_size: Texts per forward pass.
        actors: Ray Data actors embedding the corpus (one GPU each when present).
        inprocess_rows: Texts are embedded in this process, in windows of this many, where
            evaluate's ``inprocess_rows`` rule allows; 0 = always Ray Data actors.
    """

    miner: Optional[str] = None
    range_min: int = 10
    range_max: int = 50
    margin: Optional[float] = None
    batch_size: int = 64
    actors: int = 1
    inprocess_rows: int = 4096

    def __post_init__(self) -> None:
        if not 0 <= self.range_min < self.range_max:
            raise ConfigError("mine.range_min", f"need 0 <= mine.range_min < mine.range_max "
                              f"(got {self.range_min} and {self.range_max})")
        if self.margin is not None and self.margin < 0:
            raise ConfigError("mine.margin", f"must be >= 0, got {self.margin}")


@dataclass
class BaselineConfig:
    """``shardtune baseline``: the TF-IDF + logistic regression model alone, on a data config.

    Args:
        data: The data config (``data=<group>`` and ``data.*`` keys).
        split: Which split to score after fitting on train.
        resamples: Bootstrap resamples for confidence intervals.
    """

    data: DataConfig = field(default_factory=DataConfig)
    split: str = "test"
    gate: GateConfig = field(default_factory=GateConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    resamples: int = 1000

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError("split", f"must be one of {', '.join(SPLITS)}, got {self.split!r}")
        check_data_uris(self.data)


@dataclass
class CompareSpec:
    """How ``shardtune compare`` decides (the ``compare.*`` keys).

    Args:
        metric: The metric the verdict rests on: ``macro_f1`` or ``accuracy`` (from saved
            predictions), a retrieval metric (``ndcg@10``, ``mrr@10``, ``recall@10``,
            ``recall@100``, ``map@100``: per-query scores of task=embedding runs, the queries
            paired), ``spearman`` or ``pearson`` (scored pairs such as STS-B: each side's
            cosines against the gold scores, the pairs paired), or any key of the runs'
            metrics.json such as ``test/entity_f1`` (then across seeds only).
        min_effect: Smallest improvement worth shipping, in metric units (0.01 = 1 point).
        resamples: Bootstrap replicates.
        min_slice_size: Slices with fewer examples are listed but not tested (too noisy).
        block_on_slice_regression: A slice that is significantly worse in B (after
            Benjamini-Hochberg correction) turns "ship" into "iterate".
        seed: Seed of the bootstrap's random draws.
    """

    metric: str = "macro_f1"
    min_effect: float = 0.01
    resamples: int = 2000
    min_slice_size: int = 30
    block_on_slice_regression: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resamples < 200:
            raise ConfigError("compare.resamples", f"must be >= 200, got {self.resamples}")
        if self.min_effect < 0:
            raise ConfigError("compare.min_effect", f"must be >= 0, got {self.min_effect}",
                              "it is the smallest improvement worth shipping, e.g. 0.01")


@dataclass
class CompareConfig:
    """``shardtune compare A B``: is B better than A, by how much, and should it ship?

    Args:
        a: The reference: a run group (``runs/<name>`` with group.json) or a single run.
        b: The candidate, same forms.
        split: The evaluated split both are compared on (predictions are made if missing).
        data: Another data config (``data=<group>``) both are compared on: each run's
            ``evaluate data=<group>`` folder (``eval-<name>/<split>/``), made if missing or
            stale; ``null`` = the runs' own data (``eval/<split>/``).
        name: The ``name=`` those evaluations were saved under, if one was given.
        out: Where the comparison report goes; ``null`` = ``<b>/compare/<a name>``, or
            ``<b>/compare/<a name>-<eval folder>`` for other data.
    """

    a: str = "???"
    b: str = "???"
    split: str = "test"
    data: Optional[DataConfig] = None
    name: Optional[str] = None
    out: Optional[str] = None
    compare: CompareSpec = field(default_factory=CompareSpec)
    paths: PathsConfig = field(default_factory=PathsConfig)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError("split", f"must be one of {', '.join(SPLITS)}, got {self.split!r}")
        check_name(self.name)
        if self.data is not None:
            check_data_uris(self.data)  # a presigned URL would land in metrics.json


@dataclass
class ReportConfig:
    """``shardtune report PATH ...``: groups and runs side by side from the local tracker.

    Args:
        runs: Run groups or runs to show, a section per data set and split; the first of each
            section is the reference for its comparisons. A
            directory holding several groups (e.g. ``runs``) stands for all of them.
        out: Output folder for report.md and its PNGs; ``null`` = ``runs/report``.
        metric: Headline metric of tables, plots and the trend.
    """

    runs: List[str] = field(default_factory=list)
    out: Optional[str] = None
    metric: str = "test/accuracy"
    split: str = "test"
    compare: CompareSpec = field(default_factory=CompareSpec)
    paths: PathsConfig = field(default_factory=PathsConfig)

    def __post_init__(self) -> None:
        if not self.runs:
            raise ConfigError("runs", "no run or group given", "shardtune report runs/<name>")


def register_eval_configs() -> None:
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
    ConfigStore.instance().store(name="baseline_schema", node=BaselineConfig)
    ConfigStore.instance().store(name="compare_schema", node=CompareConfig)
    ConfigStore.instance().store(name="report_schema", node=ReportConfig)
