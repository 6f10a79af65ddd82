"""What ``shardtune compare`` pairs: each side's runs and their saved evaluations.

A side is a seed group or one run. Each run's predictions come from its evaluation of the
compared data and split: ``eval/<split>/`` for the runs' own data, the folder ``evaluate
data=<group>`` or ``name=`` writes (``eval-<name>/<split>/``) otherwise — evaluated on the spot
when missing, or when its weights, data config or file contents changed. Saved answers are
paired as they were generated (``evaluate num_beams=4 name=beam4``, then ``compare
name=beam4``), never generated again over them; both sides must have been made alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from data.errors import ConfigError, DataError
from evaluation.config import CompareConfig, EvaluateConfig
from evaluation.evaluate import evaluate
from evaluation.fusion import fusion_setting
from evaluation.outputs import EVAL_DIR, is_current, named_dir
from trainers.identity import GROUP_FILE, read_json
from trainers.storage import local_run


@dataclass
class Side:
    """One side of a comparison: a group's seed runs, or a single run."""

    name: str
    path: Path
    members: list[Path]


def load_side(path: str) -> Side:
    p = Path(local_run(path, "compare")).expanduser().resolve()
    if (p / GROUP_FILE).exists():
        members = [Path(m) for m in json.loads((p / GROUP_FILE).read_text())["members"]]
    elif (p / "config.json").exists():
        members = [p]
    else:
        raise DataError(str(p), "not a run or a run group (no group.json or config.json)",
                        "pass runs/<name> of a finished 'shardtune train'")
    unfinished = [m.name for m in members if not (m / "metrics.json").exists()]
    if unfinished:
        raise DataError(str(p), f"unfinished runs: {', '.join(unfinished)}",
                        "re-run its train command to finish them")
    return Side(p.name, p, members)


@dataclass
class Evaluations:
    """Each run's current evaluation folder for the compared data and split (made at most once
    per run and command)."""

    cfg: CompareConfig
    folders: dict[Path, Path] = field(default_factory=dict)
    read: dict[tuple, Any] = field(default_factory=dict)  # the data, read once for all runs

    @property
    def other_data(self) -> bool:
        return self.cfg.data is not None or self.cfg.name is not None

    def folder(self, member: Path) -> Path:
        if member not in self.folders:
            self.folders[member] = self._current(member)
        return self.folders[member]

    def _current(self, member: Path) -> Path:
        cfg = self.cfg
        # answers saved under name=… are made again (when stale) as they were made before:
        # a num_beams=4 folder is never refilled with the run's own greedy answers
        made = ((read_json(named_dir(member, cfg.name, cfg.split) / "metrics.json") or {})
                .get("made_by") or {}) if cfg.name else {}
        asked = EvaluateConfig(run=str(member), split=cfg.split, data=cfg.data, name=cfg.name,
                               baseline=False, paths=cfg.paths,
                               **(made.get("generation") or {}))
        if self.other_data:  # the folder depends on the data's files: evaluate finds it
            return Path(evaluate(asked, reuse=True, read=self.read)["out_dir"])
        out = member / EVAL_DIR / cfg.split
        if not is_current(out, member, any_generation=True):
            evaluate(asked, read=self.read)
        return out

    def predictions(self, member: Path) -> pd.DataFrame:
        return pd.read_parquet(self.folder(member) / "predictions.parquet")

    def metrics(self, member: Path) -> dict[str, Any]:
        return read_json(self.folder(member) / "metrics.json") or {}

    def where(self, member: Path) -> str:
        """The evaluation folder's name beside the run (``eval``, ``eval-<name>``)."""
        return self.folder(member).parent.name


def saved_predictions(evals: Evaluations, member: Path) -> pd.DataFrame | None:
    """A member's classification predictions; None: no labels."""
    frame = evals.predictions(member)
    return frame if "gold_label" in frame else None


def _saved_with(evals: Evaluations, member: Path, column: str, kind: str, hint: str
                ) -> pd.DataFrame:
    """A member's predictions, refused in one line when they lack the metric's column."""
    frame = evals.predictions(member)
    if column not in frame:
        raise ConfigError("compare.metric", f"{member} is not a {kind} run (its "
                          f"{evals.cfg.split} predictions have no {column!r} column)", hint)
    return frame


def saved_query_scores(evals: Evaluations, member: Path) -> pd.DataFrame:
    """A retrieval run's per-query metrics."""
    return _saved_with(evals, member, "query_id", "retrieval",
                       "retrieval metrics compare task=embedding runs on BEIR data")


def saved_generations(evals: Evaluations, member: Path) -> pd.DataFrame:
    """A chat run's generated answers, one row per prompt with its references."""
    return _saved_with(evals, member, "generated", "generation",
                       "bleu/bleu_uncased/chrf/rouge_l/exact_match compare task=sft runs")


def same_generation(a: Side, b: Side, evals: Evaluations) -> str | None:
    """The settings the compared answers were generated with (None: none of the evaluations
    recorded them, being older than that record); refused in one line when the runs' answers
    were made otherwise."""
    seen = {}
    for member in [*a.members, *b.members]:
        made = (evals.metrics(member).get("made_by") or {}).get("generation")
        if made:
            seen[member] = ", ".join(f"{k}={v}" for k, v in sorted(made.items()))
    if len(set(seen.values())) > 1:
        raise DataError(f"{a.name} vs {b.name}", "answers generated with other settings (" +
                        "; ".join(f"{m.name}: {v}" for m, v in seen.items()) + ")",
                        "evaluate every run with the same max_new_tokens, num_beams and "
                        "copy_values (name=… keeps each set apart) and compare those: "
                        "compare name=…")
    return next(iter(seen.values()), None)


def ranked_from(side: Side, evals: Evaluations) -> str:
    """What a retrieval side's rankings rest on: the whole corpus (an embedding run) or a
    reranker's first stage and top-k. One per side: seeds pair like with like."""
    seen = {}
    for member in side.members:
        rerank = evals.metrics(member).get("rerank")
        fused = "" if rerank is None or fusion_setting(rerank) == "none" else \
            f" (rerank.fusion={fusion_setting(rerank)})"
        seen[member] = "the whole corpus" if rerank is None else \
            f"{rerank['retriever']}'s top {rerank['top_k']}, reranked{fused}"
    if len(set(seen.values())) > 1:
        raise DataError(side.name, "its runs ranked different candidates (" + "; ".join(
            f"{m.name}: {v}" for m, v in seen.items()) + ")",
            "evaluate every run of a group with the same rerank.retriever, top_k and fusion")
    return next(iter(seen.values()))


def same_data(a: Side, b: Side, evals: Evaluations) -> None:
    """Refuse to pair examples evaluated on different data (row ids such as ``test.jsonl:7``
    coincide across data sets of the same size). Evaluations saved before the record existed
    are paired by their rows alone, as before."""
    def made_from(member: Path) -> str | None:
        return (evals.metrics(member).get("made_by") or {}).get("rows")

    seen = {made_from(m): m for m in a.members + b.members}
    seen.pop(None, None)
    if len(seen) > 1:
        first, other = list(seen.values())[:2]
        raise DataError(f"{a.name} vs {b.name}", f"{first} and {other} were evaluated on "
                        f"different data ({evals.cfg.split} split): their examples cannot be "
                        "paired", "evaluate both on the same data config and files")
