"""``shardtune compare A B``: paired comparison of two run groups (or runs) with a verdict.

Both sides are scored on the same evaluation examples from their saved predictions (made on
the spot when missing). The effect B − A gets a CI and p-value from a paired, hierarchical
bootstrap (examples and seeds), a ship / iterate / stop verdict against ``compare.min_effect``,
and per-slice deltas so a slice that regresses is seen even when the aggregate improves.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data.errors import ConfigError, DataError
from evaluation.compare_report import write_compare_report
from evaluation.compare_sides import (
    Evaluations,
    Side,
    load_side,
    ranked_from,
    same_data,
    same_generation,
    saved_generations,
    saved_predictions,
    saved_query_scores,
)
from evaluation.config import CompareConfig, CompareSpec
from evaluation.generation import METRICS as GENERATION_METRICS
from evaluation.generation import prompt_groups, replicate_scorer
from evaluation.paired import (
    CORRELATIONS,
    Effect,
    adjust_p_values,
    paired_bootstrap,
    paired_scores,
    seeds_only,
    verdict,
)
from evaluation.retrieval import METRICS as RETRIEVAL_METRICS
from evaluation.stats import length_buckets

PAIRED_METRICS = ("accuracy", "macro_f1")
# generation answers pair by the data's prompt side: the same in a run that reads
# placeholders (data.chat.delexicalize) and one that does not, unlike the rendered prompt
PAIR_KEY = "text"
LOWER_IS_BETTER = ("loss", "perplexity", "ece")


def higher_is_better(metric: str) -> bool:
    return not any(word in metric for word in LOWER_IS_BETTER)


def similarity_effects(side_a: Side, side_b: Side, evals: Evaluations, spec: CompareSpec
                       ) -> dict[str, Effect]:
    """Spearman's and Pearson's B − A on scored pairs (STS-B), the pairs paired: each
    replicate resamples the same pairs for both sides and recomputes each seed's correlation
    of its cosines with the gold scores."""
    frames = {}
    for side in (side_a, side_b):
        for member in side.members:
            frame = evals.predictions(member)
            if "cosine" not in frame:
                raise ConfigError("compare.metric", f"{member} scored no pairs (its "
                                  f"{evals.cfg.split} predictions hold no cosines)",
                                  "spearman/pearson compare task=embedding runs on scored "
                                  "pairs such as data=stsb")
            frames[member] = frame.set_index("_src")
    keys = np.sort(frames[side_a.members[0]].index.to_numpy())
    if any(len(f) != len(keys) or set(f.index) != set(keys) for f in frames.values()):
        raise DataError(f"{side_a.name} vs {side_b.name}", "evaluated on other pairs",
                        "compare runs evaluated on the same data")
    gold = frames[side_a.members[0]].loc[keys, "gold"].to_numpy(float)

    def scorers(side: Side, correlation: Any) -> list[Any]:
        return [lambda w, c=frames[m].loc[keys, "cosine"].to_numpy(float): correlation(w, gold, c)
                for m in side.members]

    return {metric: paired_scores(len(keys), scorers(side_a, fn), scorers(side_b, fn), metric,
                                  spec.resamples, spec.seed)
            for metric, fn in CORRELATIONS.items()}


def generation_effects(frames_a: list[pd.DataFrame], frames_b: list[pd.DataFrame], a: str,
                       b: str, spec: CompareSpec) -> dict[str, Effect]:
    """Every generation metric's B − A, the prompts paired (the same resampled prompts for
    both sides: corpus BLEU/chrF recomputed from their statistics in each replicate)."""
    keys = np.sort(frames_a[0][PAIR_KEY].to_numpy())
    for name, frame in [(a, f) for f in frames_a] + [(b, f) for f in frames_b]:
        if not frame[PAIR_KEY].is_unique:
            raise DataError(name, "two answered prompts have the same text: answers cannot "
                            "be paired by it")
        if len(frame) != len(keys) or set(frame[PAIR_KEY]) != set(keys):
            raise DataError(name, f"answered other prompts than {a} ({len(frame)} vs "
                            f"{len(keys)})", "compare runs evaluated on the same data and split")
    return {metric: paired_scores(len(keys), _scorers(frames_a, keys, metric),
                                  _scorers(frames_b, keys, metric), metric, spec.resamples,
                                  spec.seed)
            for metric in GENERATION_METRICS}


def _scorers(frames: list[pd.DataFrame], keys: np.ndarray, metric: str) -> list[Any]:
    """Per seed: ``metric`` of the answers to the prompts ``keys`` under bootstrap weights."""
    out = []
    for frame in frames:
        rows = frame.set_index(PAIR_KEY).loc[keys]
        out.append(replicate_scorer(metric, [str(h) for h in rows["generated"]],
                                    [json.loads(r) for r in rows["references"]]))
    return out


def generation_slices(frames_a: list[pd.DataFrame], frames_b: list[pd.DataFrame],
                      spec: CompareSpec) -> list[dict[str, Any]]:
    """``spec.metric``'s B − A per slice of the prompts (references per prompt, and each
    ``data.metadata_fields`` column evaluate kept), paired by prompt as the whole is; p-values
    BH-adjusted over the tested slices, as for classification."""
    first = frames_a[0].set_index(PAIR_KEY)
    keys = np.sort(first.index.to_numpy())
    first = first.loc[keys]
    groups = {column: values.to_numpy() for column, values in prompt_groups(
        first, first["references"].map(lambda r: len(json.loads(r)))).items()}
    rows = []
    for column, values in groups.items():
        for value in sorted(set(values.tolist())):
            inside = keys[values == value]
            row = {"slice": f"{column}={value}", "n": len(inside),
                   "tested": len(inside) >= spec.min_slice_size}
            if len(inside) >= 2:
                e = paired_scores(len(inside), _scorers(frames_a, inside, spec.metric),
                                  _scorers(frames_b, inside, spec.metric), spec.metric,
                                  spec.resamples // 2, spec.seed)
                row.update(a=e.a, b=e.b, delta=e.delta, low=e.low, high=e.high, p=e.p_value)
                rows.append(row)
    return _flag(rows)


def align_queries(frames_a: list[pd.DataFrame], frames_b: list[pd.DataFrame], a: str, b: str,
                  metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-query ``metric`` (seeds × queries) of each side, in one query order."""
    keys = np.sort(frames_a[0]["query_id"].to_numpy())
    for name, frame in [(a, f) for f in frames_a] + [(b, f) for f in frames_b]:
        if len(frame) != len(keys) or set(frame["query_id"]) != set(keys):
            raise DataError(name, f"evaluated on other queries than {a} ({len(frame)} vs "
                            f"{len(keys)})", "compare runs evaluated on the same qrels")

    def scores(frames: list[pd.DataFrame]) -> np.ndarray:
        return np.stack([f.set_index("query_id").loc[keys, metric].to_numpy(float)
                         for f in frames])

    return scores(frames_a), scores(frames_b)


def align(frames_a: list[pd.DataFrame], frames_b: list[pd.DataFrame], a: str, b: str
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Gold ids, predictions (seeds × examples) per side, and slice columns, keyed on ``_src``."""
    base = frames_a[0].sort_values("_src").reset_index(drop=True)
    keys = base["_src"].to_numpy()
    for name, frame in [(a, f) for f in frames_a] + [(b, f) for f in frames_b]:
        if len(frame) != len(keys) or set(frame["_src"]) != set(keys):
            shared = len(set(frame["_src"]) & set(keys))
            raise DataError(name, f"evaluated on other examples than {a} ({len(frame)} vs "
                            f"{len(keys)} rows, {shared} shared)",
                            "compare runs evaluated on the same data and split")
    vocab = sorted(set().union(*(set(f["gold_label"]) | set(f["pred_label"])
                                 for f in frames_a + frames_b)))
    code = {label: i for i, label in enumerate(vocab)}

    def preds(frames: list[pd.DataFrame]) -> np.ndarray:
        return np.stack([f.set_index("_src").loc[keys, "pred_label"].map(code).to_numpy()
                         for f in frames])

    gold = base["gold_label"].map(code).to_numpy()
    groups = {c[len("meta_"):]: base[c].astype(str).to_numpy()
              for c in base.columns if c.startswith("meta_")}
    groups["length"] = length_buckets(base["n_tokens"].to_numpy())
    groups["gold"] = base["gold_label"].astype(str).to_numpy()
    return gold, preds(frames_a), preds(frames_b), groups


def slice_effects(gold: np.ndarray, pa: np.ndarray, pb: np.ndarray,
                  groups: dict[str, np.ndarray], spec: CompareSpec) -> list[dict[str, Any]]:
    """Accuracy delta per slice with CI; p-values BH-adjusted over the tested slices."""
    rows = []
    for column, values in groups.items():
        for value in sorted(set(values.tolist())):
            inside = values == value
            n = int(inside.sum())
            row = {"slice": f"{column}={value}", "n": n, "tested": n >= spec.min_slice_size}
            if n >= 2:
                e = paired_bootstrap(gold[inside], pa[:, inside], pb[:, inside], "accuracy",
                                     spec.resamples // 2, spec.seed)
                row.update(a=e.a, b=e.b, delta=e.delta, low=e.low, high=e.high, p=e.p_value)
                rows.append(row)
    return _flag(rows)


def _flag(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BH-adjust the tested slices' p-values, mark regressions and improvements, worst
    first."""
    tested = [r for r in rows if r["tested"]]
    for row, adj in zip(tested, adjust_p_values([r["p"] for r in tested]), strict=True):
        row["p_adjusted"] = adj
        row["regression"] = adj < 0.05 and row["delta"] < 0
        row["improvement"] = adj < 0.05 and row["delta"] > 0
    return sorted(rows, key=lambda r: r["delta"])


def _member_metric(member: Path, metric: str, split: str, evals: Evaluations) -> float:
    if evals.other_data:  # the run's metrics.json holds its own data's: the evaluation's
        scores = evals.metrics(member).get("metrics") or {}
        metrics = {f"{split}/{k}": v.get("value") if isinstance(v, dict) else v
                   for k, v in scores.items()}
    else:
        metrics = json.loads((member / "metrics.json").read_text())
    for key in (metric, f"{split}/{metric}"):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    raise ConfigError("compare.metric", f"{member} has no metric {metric!r}",
                      "e.g. " + ", ".join(k for k in metrics if k.startswith(split + "/"))[:200])


def _units(metric: str, value: float, signed: bool = True) -> str:
    if "accuracy" in metric or "f1" in metric:
        return f"{100 * value:+.1f} pt" if signed else f"{100 * value:.1f} pt"
    if metric in GENERATION_METRICS:  # already 0-100
        return f"{value:+.2f}" if signed else f"{value:.2f}"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def headline(a: str, b: str, effect: Effect, decision: str, min_effect: float) -> str:
    """One sentence a reviewer can paste: who wins, by how much, how sure, what to do."""
    better = higher_is_better(effect.metric)
    wins = (effect.delta > 0) == better
    verb = "beats" if wins and effect.delta != 0 else "trails" if effect.delta != 0 else "ties"
    low, high = sorted((effect.low, effect.high))
    if "accuracy" in effect.metric or "f1" in effect.metric:
        interval = f"[{100 * low:+.1f}, {100 * high:+.1f}]"
    elif effect.metric in GENERATION_METRICS:
        interval = f"[{low:+.2f}, {high:+.2f}]"
    else:
        interval = f"[{low:+.4f}, {high:+.4f}]"
    if better:
        amount = f"{_units(effect.metric, effect.delta)} {effect.metric}"
    else:  # lower is better: say so, and keep the signed interval
        amount = f"{abs(effect.delta):.4f} {'lower' if effect.delta < 0 else 'higher'} " \
                 f"{effect.metric}"
    return (f"{b} {verb} {a} by {amount} {interval} (p={effect.p_value:.3g}, seeds "
            f"{effect.seeds_a} vs {effect.seeds_b}, {effect.n or 'no'} paired examples); "
            f"{decision} (min effect {_units(effect.metric, min_effect, signed=False)})")


def compare(cfg: CompareConfig) -> dict[str, Any]:
    spec = cfg.compare
    side_a, side_b = load_side(cfg.a), load_side(cfg.b)
    evals = Evaluations(cfg)
    paired = spec.metric in PAIRED_METRICS
    effects: dict[str, Effect] = {}
    slices: list[dict[str, Any]] = []
    note = None
    if spec.metric in RETRIEVAL_METRICS:  # per-query scores, the queries paired
        frames_a = [saved_query_scores(evals, m) for m in side_a.members]
        frames_b = [saved_query_scores(evals, m) for m in side_b.members]
        same_data(side_a, side_b, evals)
        ranked = {"a": ranked_from(side_a, evals), "b": ranked_from(side_b, evals)}
        if ranked["a"] != ranked["b"]:  # a fair question, but not the reranker's alone
            note = (f"A ranks {ranked['a']}, B {ranked['b']}: the effect is the whole "
                    "pipeline's (first stage and top-k included), not one model's")
        for metric in RETRIEVAL_METRICS:
            pa, pb = align_queries(frames_a, frames_b, side_a.name, side_b.name, metric)
            effect = paired_bootstrap(np.zeros(pa.shape[1], dtype=int), pa, pb, "mean",
                                      spec.resamples, spec.seed)
            effects[metric] = dataclasses.replace(effect, metric=metric)
    elif spec.metric in CORRELATIONS:  # scored pairs (STS): the pairs paired
        effects = similarity_effects(side_a, side_b, evals, spec)
        same_data(side_a, side_b, evals)
    elif spec.metric in GENERATION_METRICS:
        frames_a = [saved_generations(evals, m) for m in side_a.members]
        frames_b = [saved_generations(evals, m) for m in side_b.members]
        same_data(side_a, side_b, evals)
        settings = same_generation(side_a, side_b, evals)
        note = f"answers generated with {settings} on both sides" if settings else None
        effects = generation_effects(frames_a, frames_b, side_a.name, side_b.name, spec)
        slices = generation_slices(frames_a, frames_b, spec)
    elif paired:
        frames_a = [saved_predictions(evals, m) for m in side_a.members]
        frames_b = [saved_predictions(evals, m) for m in side_b.members]
        if any(f is None for f in frames_a + frames_b):
            raise ConfigError("compare.metric", f"{spec.metric} needs classification "
                              "predictions; these runs have none",
                              "use a metrics.json key, e.g. compare.metric=test/entity_f1, "
                              "or for retrieval runs compare.metric=ndcg@10")
        same_data(side_a, side_b, evals)
        gold, pa, pb, groups = align(frames_a, frames_b, side_a.name, side_b.name)
        for metric in PAIRED_METRICS:
            effects[metric] = paired_bootstrap(gold, pa, pb, metric, spec.resamples, spec.seed)
        slices = slice_effects(gold, pa, pb, groups, spec)
    else:
        values_a = [_member_metric(m, spec.metric, cfg.split, evals) for m in side_a.members]
        values_b = [_member_metric(m, spec.metric, cfg.split, evals) for m in side_b.members]
        effects[spec.metric] = seeds_only(values_a, values_b, spec.metric)
    main = effects[spec.metric]
    decision = verdict(main, spec.min_effect, higher_is_better(spec.metric))
    regressions = [s for s in slices if s.get("regression")]
    reason = None
    if decision == "ship" and regressions and spec.block_on_slice_regression:
        decision = "iterate"
        reason = (f"the aggregate clears the bar but {len(regressions)} slice(s) regress "
                  f"significantly: " + ", ".join(s["slice"] for s in regressions[:5]))
    data = evals.where(side_b.members[0]) if evals.other_data else None
    result = {"a": str(side_a.path), "b": str(side_b.path), "split": cfg.split, "data": data,
              "metric": spec.metric, "min_effect": spec.min_effect, "verdict": decision,
              "reason": reason, "note": note,
              "headline": headline(side_a.name, side_b.name, main, decision, spec.min_effect),
              "effects": {k: v.as_dict() for k, v in effects.items()}, "slices": slices,
              "slice_metric": spec.metric if spec.metric in GENERATION_METRICS else "accuracy",
              "seeds": {"a": len(side_a.members), "b": len(side_b.members)}}
    # another data set's comparison beside the own data's, named after the evaluations
    label = side_a.name + (data.removeprefix("eval") if data else "")
    out = Path(cfg.out) if cfg.out else side_b.path / "compare" / label
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=1, default=float))
    result["report"] = str(write_compare_report(result, out))
    return result
