"""Typed spec of a distillation (``distill.*`` keys, ``conf/distill/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from data.errors import ConfigError
from trainers.storage import refuse_credentials


@dataclass
class DistillSpec:
    """Teacher → student knowledge distillation on the shared training loop.

    Args:
        teacher: A finished run directory (``runs/<name>``, or its ``adapter/``), or a model
            directory / hub id with a task head (labels from its ``id2label``).
        student: How the student starts: ``layers`` (a layer subset of the teacher, embeddings
            and head copied), ``config`` (the teacher's architecture resized by
            ``student_config``, random init) or ``path`` (``model.name_or_path`` as given).
        student_layers: Teacher layers the student keeps (``layers``); empty = every other.
        student_config: Config overrides for ``config``, e.g. ``{num_hidden_layers: 3}``.
        alpha: Weight of cross-entropy on the labels; ``1 - alpha`` goes to the KL term.
        temperature: Softens both distributions; the KL term is scaled by T² so its gradients
            keep their size as T changes.
        kl: ``forward`` KL(teacher‖student) (mass-covering) or ``reverse`` KL(student‖teacher).
        teacher_mode: ``offline`` (a Ray Data pass writes teacher outputs once, reused) or
            ``online`` (the teacher runs in every training worker).
        top_k: Causal LM: teacher log-probs kept per position (offline storage).
        hidden_loss: ``none``, ``mse`` or ``cosine`` between hidden states (online only);
            a learned linear projection maps student width to teacher width.
        hidden_weight: Weight of the hidden-state term.
        outputs_dir: Where offline teacher outputs live; ``null`` =
            ``<teacher run>/teacher_outputs/<data name>``.
        recompute: Recompute offline outputs even when the stored ones match.
        inprocess_rows: The offline teacher pass runs in this process (no actor: its start —
            a process, imports, the model's load — left an actor at 0.77× a bare loop's
            speed on 8,990 rows, docs/benchmarks.md): up to this many rows the whole split
            sorted by length in one call, above it windows of this many rows. A Ray Data
            actor takes it where the cluster has a GPU this process cannot use, or, for a
            split above this size, where the cluster is more than this machine. As
            ``data.driver_rows``: the driver holds these rows already. 0 = always an actor.
        control: Also train the same student without KD (the control a result needs).
        augment: Teacher-labelled perturbed copies of each training text (sequence
            classification): inputs the teacher has not fitted, learned through the KD term
            only (no label); the control never sees them. 0 = none.
        augment_p: In a copy, each word is masked with this probability and dropped with it.
        transfer_path: Chat students: prompts without answers (a file, folder or glob in the
            training data's format and fields; any answer in them is not read). The teacher
            answers each once (cached with provenance) and the student learns its answers
            beside the answered rows; the control never sees them and trains as many steps
            (distill/transfer.py). ``null`` = none.
        speed_rows: Held-out texts the report times teacher and student on (batches of 32;
            the first 100 also one at a time).
    """

    teacher: str = "???"
    student: str = "layers"
    student_layers: List[int] = field(default_factory=list)
    student_config: Dict[str, Any] = field(default_factory=dict)
    alpha: float = 0.5
    temperature: float = 2.0
    kl: str = "forward"
    teacher_mode: str = "offline"
    top_k: int = 32
    hidden_loss: str = "none"
    hidden_weight: float = 1.0
    outputs_dir: Optional[str] = None
    recompute: bool = False
    inprocess_rows: int = 20000
    control: bool = True
    augment: int = 0
    augment_p: float = 0.1
    transfer_path: Optional[str] = None
    speed_rows: int = 640

    def __post_init__(self) -> None:
        checks = {"student": (self.student, ("layers", "config", "path")),
                  "kl": (self.kl, ("forward", "reverse")),
                  "teacher_mode": (self.teacher_mode, ("offline", "online")),
                  "hidden_loss": (self.hidden_loss, ("none", "mse", "cosine"))}
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ConfigError(f"distill.{key}", f"must be one of {', '.join(allowed)}, "
                                  f"got {value!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError("distill.alpha", f"must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError("distill.temperature", f"must be > 0, got {self.temperature}")
        if self.augment < 0:
            raise ConfigError("distill.augment", f"must be >= 0 copies, got {self.augment}")
        if not 0.0 < self.augment_p < 0.5:
            raise ConfigError("distill.augment_p", f"must be in (0, 0.5), got {self.augment_p}")
        if self.inprocess_rows < 0:
            raise ConfigError("distill.inprocess_rows", f"must be >= 0, got {self.inprocess_rows}")
        if self.top_k < 1:
            raise ConfigError("distill.top_k", f"must be >= 1, got {self.top_k}")
        if self.speed_rows < 1:
            raise ConfigError("distill.speed_rows", f"must be >= 1, got {self.speed_rows}")
        if self.transfer_path:  # it lands in config.json and the report
            refuse_credentials(self.transfer_path, "distill.transfer_path")
        if self.hidden_loss != "none" and self.teacher_mode != "online":
            raise ConfigError("distill.hidden_loss", "needs the teacher's hidden states: "
                              "set distill.teacher_mode=online")
