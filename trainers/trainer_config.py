"""The loop's rhythm (``trainer.*``): epochs, steps, batches, logging, checkpoints.

Split from trainers/config.py, which builds the run's configuration from this and the other
groups' schemas.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

from data.errors import ConfigError


class Strategy(str, Enum):
    ddp = "ddp"
    fsdp = "fsdp"


@dataclass
class TrainerConfig:
    """The loop's rhythm: how long, how often to evaluate, log and checkpoint.

    Args:
        epochs: Passes over the training split.
        max_steps: Stop after this many optimizer steps (``null`` = epochs decide).
        batch_size: Examples per micro-batch per worker.
        grad_accum: Micro-batches per optimizer step.
        eval_every: Evaluate every N optimizer steps (and always at the end); 0 = end only.
        log_every: Report loss and throughput every N optimizer steps.
        ckpt_every: Checkpoint every N optimizer steps (and at the end); 0 = end only.
        keep_checkpoints: Checkpoints kept on disk; the newest is never deleted.
        bucket_batches: Sort each chunk of ``bucket_batches`` micro-batches by length before
            batching, so padding shrinks; 1 = plain random batches.
        batch_tokens: A token budget instead of a row count: each sorted chunk (still
            ``bucket_batches`` × ``batch_size`` rows) is cut into batches of at most this many
            padded tokens, so short texts make large batches. ``null`` = ``batch_size`` rows.
        bf16: bf16 autocast on GPU (ignored on CPU).
        strategy: ``ddp`` or ``fsdp`` data parallelism for ``cluster.mode=ray``.
        stop_after_steps: Leave the run after N steps as if preempted (resume testing).
        max_failures: Times a failed worker group is restarted from the newest checkpoint
            before the job fails (Ray Train FailureConfig; -1 = no limit). A restart repeats
            at most ``ckpt_every`` steps.
    """

    epochs: int = 3
    max_steps: Optional[int] = None
    batch_size: int = 32
    grad_accum: int = 1
    eval_every: int = 0
    log_every: int = 10
    ckpt_every: int = 0
    keep_checkpoints: int = 2
    bucket_batches: int = 16
    batch_tokens: Optional[int] = None
    bf16: bool = True
    strategy: Strategy = Strategy.ddp
    eval_batch_size: int = 64
    stop_after_steps: Optional[int] = None
    max_failures: int = 0

    def __post_init__(self) -> None:
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "keep_checkpoints": self.keep_checkpoints,
            "bucket_batches": self.bucket_batches,
            "eval_batch_size": self.eval_batch_size,
            "log_every": self.log_every,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"trainer.{key}", f"must be >= 1, got {value}")
        for key in ("eval_every", "ckpt_every"):
            if getattr(self, key) < 0:
                raise ConfigError(f"trainer.{key}", f"must be >= 0, got {getattr(self, key)}")
        for key in ("max_steps", "batch_tokens"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"trainer.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.max_failures < -1:
            raise ConfigError("trainer.max_failures",
                              f"must be >= -1 (-1 = no limit), got {self.max_failures}")


def check_token_budget(trainer: TrainerConfig, task: str, max_length: int) -> None:
    """``trainer.batch_tokens`` must hold one full-length example, and pair tasks keep row
    counts (their in-batch negatives are gathered across workers in equal shapes)."""
    budget = trainer.batch_tokens
    if budget is not None and budget < max_length:
        raise ConfigError("trainer.batch_tokens", f"{budget} is below task.max_length "
                          f"({max_length}): a full-length example would not fit")
    if budget is not None and task in ("embedding", "rerank"):
        raise ConfigError("trainer.batch_tokens", f"task={task} trains on batches of equal row "
                          "counts", "use trainer.batch_size")
