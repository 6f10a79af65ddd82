"""What a sweep leaves: a sorted results table, plots, the best config as a Hydra experiment,
and (with ``sweep.seeds``) the top configurations re-run with several seeds."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from trainers.config import TrainConfig, config_dict
from tuning.config import SweepSpec
from tuning.seeds import train_group
from tuning.space import apply_values
from tuning.sweep_console import trial_number

GROUPS = ("task", "model", "data", "peft", "optim", "trainer", "cluster", "tracking")
NOT_EXPORTED = ("sweep", "paths.", "run_name", "seed", "seeds", "experiment", "+experiment")


def results_frame(spec: SweepSpec, grid: Any, cpus_per_trial: float) -> pd.DataFrame:
    """One row per trial: swept values, the metric, status and the compute it used."""
    rows = []
    for result in grid:
        m = result.metrics or {}
        trial_id = m.get("trial_id") or _trial_id(result.path)
        row = {"trial": trial_number(trial_id)}
        config = result.config or _params(result.path)  # a crashed trial reported nothing
        row.update({k: config.get(k) for k in spec.space})
        row[spec.metric] = m.get(spec.metric)
        row["step"] = m.get("step")
        row["evaluations"] = m.get("training_iteration")
        row["time_s"] = m.get("time_total_s")
        row["cpu_s"] = (m.get("time_total_s") or 0.0) * cpus_per_trial
        if result.error is not None:
            row["status"] = "error"
            row["error"] = str(result.error).strip().splitlines()[-1][:200]
        elif "params_total" in m:
            row["status"] = "completed"
        else:
            row["status"] = "stopped early"
        row["trial_id"] = trial_id
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    ascending = spec.mode == "min"
    return frame.sort_values(spec.metric, ascending=ascending, na_position="last"
                             ).reset_index(drop=True)


def _trial_id(trial_path: str | None) -> str | None:
    """Tune's directory name ``run_trial_46f14_00002_2_optim_lr=…`` → ``46f14_00002``."""
    parts = Path(trial_path or "").name.split("_")
    return "_".join(parts[2:4]) if len(parts) >= 4 and parts[0] == "run" else None


def _params(trial_path: str | None) -> dict[str, Any]:
    """The values Tune gave a trial (``params.json`` in its directory), or {}."""
    path = Path(trial_path or "") / "params.json"
    return json.loads(path.read_text()) if trial_path and path.is_file() else {}


def _best(frame: pd.DataFrame, spec: SweepSpec) -> pd.Series | None:
    ok = frame[frame["status"] != "error"].dropna(subset=[spec.metric])
    done = ok[ok["status"] == "completed"]
    pool = done if not done.empty else ok
    return None if pool.empty else pool.iloc[0]


def export_best(spec: SweepSpec, best: pd.Series, base: TrainConfig, overrides: list[str],
                run: TrainConfig, sweep_dir: Path) -> dict[str, str | None]:
    """``<name>_best.yaml``: the command's overrides + the trial's values, as an experiment.

    Always written into the sweep's directory; also into ``sweep.export_dir``, or else into
    ``conf/experiment/`` when that folder belongs to a git checkout (never into an installed
    package or a job's unpacked working_dir). A file there that another sweep wrote is left as
    it is (the path says so): two sweeps never overwrite each other's file.
    """
    choices, keys = [], []
    for item in overrides:
        key = item.lstrip("+~").split("=", 1)[0]
        if key.startswith(NOT_EXPORTED):
            continue
        (choices if key in GROUPS else keys).append(item.lstrip("+"))
    body = OmegaConf.from_dotlist(keys)
    for key in spec.space:
        OmegaConf.update(body, key, _plain(best[key]), merge=False)
    cluster = json.loads(json.dumps(config_dict(base)["cluster"]))  # enums as their values
    OmegaConf.update(body, "cluster", cluster, merge=True)
    OmegaConf.update(body, "trainer.ckpt_every", base.trainer.ckpt_every, merge=False)
    body.run_name = f"{spec.name}_best"
    body.seed = run.seed
    owner = f"# Written by the sweep in {sweep_dir.resolve()}"
    header = [
        "# @package _global_",
        f"# Best trial of sweep '{spec.name}': {spec.metric}={best[spec.metric]:.4f} "
        f"(trial {best['trial']}).",
        owner,
        f"# Reproduce: shardtune train experiment={spec.name}_best",
    ]
    if choices:
        header += ["defaults:"] + [f"  - override /{c.split('=')[0]}: {c.split('=')[1]}"
                                   for c in choices]
    text = "\n".join(header) + "\n" + OmegaConf.to_yaml(body)
    name = f"{spec.name}_best.yaml"
    (sweep_dir / name).write_text(text)
    out = {"file": str(sweep_dir / name), "experiment": None, "not_exported": None}
    code = Path(run.paths.code)
    out_dir = Path(spec.export_dir) if spec.export_dir else \
        code / "conf" / "experiment" if (code / ".git").exists() else None
    if out_dir is None:
        out["not_exported"] = f"{code} is not a git checkout: conf/experiment left as it is"
        return out
    target = out_dir / name
    if target.exists() and owner not in target.read_text().splitlines():
        out["not_exported"] = f"{target} belongs to another sweep: left as it is"
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    out["experiment"] = str(target)
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return list(value) if isinstance(value, tuple) else value


def _plots(frame: pd.DataFrame, spec: SweepSpec, out: Path) -> list[str]:
    import matplotlib  # a slow import, and the backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = frame.dropna(subset=[spec.metric])
    if data.empty:
        return []
    keys = list(spec.space)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        values = data[key].map(lambda v: str(v) if isinstance(v, (list, tuple)) else v)
        numeric = pd.api.types.is_numeric_dtype(values)
        colors = ["tab:blue" if s == "completed" else "tab:orange" for s in data["status"]]
        ax.scatter(values if numeric else values.astype(str), data[spec.metric], c=colors)
        if numeric and "loguniform" in spec.space[key]:
            ax.set_xscale("log")
        ax.set(xlabel=key, ylabel=spec.metric)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.suptitle("metric per hyperparameter (orange: stopped early)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "metric_vs_hparams.png", dpi=110)
    plt.close(fig)
    # parallel coordinates: each axis scaled to [0, 1], lines coloured by the metric
    cols = []
    for key in keys:
        col = data[key].map(lambda v: str(v) if isinstance(v, (list, tuple)) else v)
        if not pd.api.types.is_numeric_dtype(col):
            col = col.astype("category").cat.codes.astype(float)
        elif "loguniform" in spec.space[key]:
            col = np.log10(col.astype(float))
        span = (col.max() - col.min()) or 1.0
        cols.append((col - col.min()) / span)
    metric = data[spec.metric].astype(float)
    mspan = (metric.max() - metric.min()) or 1.0
    fig, ax = plt.subplots(figsize=(1.6 * (len(keys) + 1) + 1, 3.5))
    cmap = plt.get_cmap("viridis")
    for i in range(len(data)):
        ys = [c.iloc[i] for c in cols] + [(metric.iloc[i] - metric.min()) / mspan]
        ax.plot(range(len(keys) + 1), ys, color=cmap(float(ys[-1])), alpha=0.8)
    ax.set_xticks(range(len(keys) + 1), keys + [spec.metric], rotation=20, fontsize=8)
    ax.set(yticks=[], title="parallel coordinates (colour = metric)")
    fig.tight_layout()
    fig.savefig(out / "parallel_coordinates.png", dpi=110)
    plt.close(fig)
    return ["metric_vs_hparams.png", "parallel_coordinates.png"]


def write_results(spec: SweepSpec, grid: Any, sweep_dir: Path, base: TrainConfig,
                  overrides: list[str], run: TrainConfig) -> dict[str, Any]:
    frame = results_frame(spec, grid, base.cluster.num_workers * base.cluster.cpus_per_worker)
    frame.to_csv(sweep_dir / "results.csv", index=False)
    best = _best(frame, spec) if not frame.empty else None
    summary: dict[str, Any] = {
        "name": spec.name, "metric": spec.metric, "mode": spec.mode, "search": spec.search,
        "scheduler": spec.scheduler, "trials": len(frame),
        "status": frame["status"].value_counts().to_dict() if not frame.empty else {},
        "results_csv": str(sweep_dir / "results.csv"), "plots": _plots(frame, spec, sweep_dir),
        "table": frame.to_dict("records"), "best": None, "top_k": []}
    if best is not None:
        summary["best"] = {"trial": best["trial"], spec.metric: float(best[spec.metric]),
                           "config": {k: _plain(best[k]) for k in spec.space},
                           **export_best(spec, best, base, overrides, run, sweep_dir)}
    (sweep_dir / "sweep.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def rerun_top_k(spec: SweepSpec, summary: dict[str, Any], base: TrainConfig,
                run: TrainConfig) -> list[dict[str, Any]]:
    """The best ``top_k`` configurations, each as a seed group; ranked by mean with CI."""
    ok = [r for r in summary["table"] if r["status"] == "completed"
          and r.get(spec.metric) is not None and not math.isnan(r[spec.metric])]
    ranked = []
    for i, row in enumerate(ok[:spec.top_k], start=1):
        values = {k: _plain(row[k]) for k in spec.space}
        member = apply_values(base, values, run_name=f"top{i}", seeds=list(spec.seeds),
                              group_name=None)
        member = dataclasses.replace(member, paths=run.paths.below(spec.name))  # the sweep's
        group = train_group(member)["group"]
        stat = group["metrics"][spec.metric]
        ranked.append({"rank_in_sweep": i, "trial": row["trial"], "config": values, **stat,
                       "group_dir": str(Path(member.run_dir))})
    ranked.sort(key=lambda r: r["mean"], reverse=spec.mode == "max")
    return ranked


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4g}"
        return str(value).replace("|", "\\|")

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def write_summary(summary: dict[str, Any], sweep_dir: Path) -> Path:
    metric = summary["metric"]
    counts = ", ".join(f"{v} {k}" for k, v in summary["status"].items())
    lines = [f"# Sweep `{summary['name']}`", "",
             f"{summary['trials']} trials ({counts}); "
             f"search {summary['search']}, scheduler {summary['scheduler']}, {metric} "
             f"({summary['mode']}). Resumed: {summary.get('resumed')}. Placement groups left "
             f"after the sweep: {summary.get('placement_groups_left')}.", ""]
    best = summary["best"]
    if best:
        where = (f"reproduce with `shardtune train experiment={summary['name']}_best` "
                 f"(`{best['experiment']}`)" if best.get("experiment") else
                 f"the experiment file is `{best['file']}` ({best['not_exported']}; copy it "
                 "into conf/experiment/ of your checkout to reproduce it)")
        lines += [f"**Best**: trial {best['trial']}, {metric} = {best[metric]:.4f}, config "
                  f"{best['config']}; {where}.", ""]
    table = pd.DataFrame(summary["table"]).drop(columns=["trial_id"], errors="ignore")
    if not table.empty:
        lines += [markdown_table(table.head(30)), ""]
    lines += [f"![{p}]({p})" for p in summary["plots"]]
    if summary.get("top_k"):
        lines += ["", "## Top configurations re-run with several seeds (ranked by mean)", "",
                  f"| rank | sweep rank | config | {metric} mean ± std | 95% CI | seeds |",
                  "|---|---|---|---|---|---|"]
        for i, r in enumerate(summary["top_k"], start=1):
            spread, interval = (f" ± {r['std']:.4f}", f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]") \
                if r["n"] > 1 else ("", "n=1 seed, none")
            lines.append(f"| {i} | {r['rank_in_sweep']} | {r['config']} | {r['mean']:.4f}"
                         f"{spread} | {interval} | {r['n']} |")
    path = sweep_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
