"""``shardtune ablate ablation=<name>``: a baseline and its variants, each over the same seeds.

Every arm is an ordinary seed group (``runs/<ablation>/<arm>/seed<k>``, resumable), composed
from the command's overrides + the baseline's + the variant's, so a variant may switch a whole
config group (``peft=dora``) or one key (``peft.r=4``). Each variant is then compared with the
baseline by ``shardtune compare``: the delta with its CI, p-value and verdict, per metric and
per slice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evaluation.compare import compare
from evaluation.config import CompareConfig, CompareSpec, ReportConfig
from evaluation.group_report import write_report
from trainers.config import TrainConfig, VerbConfig
from trainers.tracking import log_summary_run
from tuning.seeds import check_group, train_group


def _arm_overrides(base: list[str], arm: list[str], name: str, root: Path, seeds: list[int],
                   store: str | None) -> list[str]:
    keep = [o for o in base if not o.lstrip("+~").startswith(("ablation", "run_name", "seeds",
                                                              "seed="))]
    below = [f"paths.store={store}"] if store else []  # the store follows the run tree
    return [*keep, *arm, f"run_name={name}", f"paths.runs={root}", *below,
            f"seeds=[{','.join(map(str, seeds))}]"]


def ablate(run: TrainConfig, overrides: list[str], verb_config: VerbConfig
           ) -> dict[str, Any]:
    """Every arm's config comes from ``verb_config`` (the application's composition of
    ``shardtune train`` overrides): an arm may switch a group (``peft=dora``)."""
    spec = run.ablation
    root = Path(run.paths.runs) / spec.name
    arms = {"baseline": list(spec.baseline), **{k: list(spec.baseline) + list(v)
                                                for k, v in spec.variants.items()}}
    arm_runs: dict[str, TrainConfig] = {}
    for name, arm in arms.items():  # composed up front: a bad variant fails before training
        arm_runs[name] = verb_config("train", _arm_overrides(overrides, arm, name, root,
                                                             list(spec.seeds),
                                                             run.paths.below(spec.name).store))
        check_group(arm_runs[name])  # before any arm trains
    for arm_run in arm_runs.values():
        train_group(arm_run)
    rows = []
    for name in spec.variants:
        result = compare(CompareConfig(
            a=str(root / "baseline"), b=str(root / name), out=str(root / "compare" / name),
            compare=CompareSpec(metric=spec.metric, min_effect=spec.min_effect),
            paths=run.paths))
        rows.append({"variant": name, "overrides": spec.variants[name],
                     "verdict": result["verdict"], "headline": result["headline"],
                     "reason": result["reason"], "effects": result["effects"],
                     "slice_regressions": [s["slice"] for s in result["slices"]
                                           if s.get("regression")],
                     "report": result["report"]})
    full = write_report(ReportConfig(runs=[str(root / n) for n in arms],
                                     out=str(root / "report"), paths=run.paths))
    out = {"name": spec.name, "seeds": list(spec.seeds), "metric": spec.metric,
           "min_effect": spec.min_effect, "variants": rows, "full_report": str(full)}
    (root / "ablation.json").write_text(json.dumps(out, indent=1, default=float))
    out["report"] = str(_write(out, root))
    if run.tracking.wandb:
        log_summary_run(run, "ablation", spec.name, {"seeds": list(spec.seeds)},
                        [{"variant": r["variant"], "verdict": r["verdict"],
                          **{f"{m}_delta": e["delta"] for m, e in r["effects"].items()}}
                         for r in rows])
    return out


def _pt(metric: str, v: float) -> str:
    return f"{100 * v:+.1f}" if "accuracy" in metric or "f1" in metric else f"{v:+.4f}"


def _write(out: dict[str, Any], root: Path) -> Path:
    metrics = list(out["variants"][0]["effects"]) if out["variants"] else []
    head = " | ".join(f"{m}: B − A [95% CI], p" for m in metrics)
    lines = [f"# Ablation `{out['name']}`", "",
             f"Each arm trained with seeds {out['seeds']}; deltas are variant − baseline from "
             f"a paired bootstrap over test examples and seeds; verdict on {out['metric']} "
             f"against a minimum effect of {out['min_effect']}.", "",
             f"| variant | overrides | {head} | verdict | slices that regress |",
             "|---|---|" + "---|" * len(metrics) + "---|---|"]
    for row in out["variants"]:
        cells = [f"{_pt(m, e['delta'])} [{_pt(m, e['low'])}, {_pt(m, e['high'])}], "
                 f"p={e['p_value']:.3g}" for m, e in row["effects"].items()]
        lines.append(f"| {row['variant']} | `{' '.join(row['overrides'])}` | "
                     f"{' | '.join(cells)} | **{row['verdict']}** | "
                     f"{', '.join(row['slice_regressions']) or '—'} |")
    full = Path(out["full_report"]).relative_to(root)
    lines += ["", f"Curves, distributions, slices and trend: [report]({full})."]
    path = root / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
