"""From a seq_cls predictions frame to ``metrics.json``, ``predictions.parquet`` and report.md.

Shared by ``evaluate`` (the model, with the baseline's predictions beside it) and
``baseline`` (TF-IDF alone, in the same format): metrics with CIs, slices worst first, gates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation import eval_report  # a module: tests replace its write_eval_report
from evaluation.gates import check_gates
from evaluation.outputs import EVAL_DIR, rows_digest
from evaluation.stats import (
    accuracy,
    bootstrap,
    classification_report,
    length_buckets,
    macro_f1,
    slice_table,
)
from trainers.identity import replaced_on_success


def score_frame(frame: pd.DataFrame, labels: list[str], cfg: Any, run_dir: Path,
                data_name: str, seconds: float, base_frame: pd.DataFrame | None = None,
                out_dir: Path | None = None, made_by: dict[str, Any] | None = None,
                lost: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics, slices, baseline comparison, gates and report for one predictions frame.

    Shared by ``evaluate`` (the model) and ``baseline`` (TF-IDF alone, same report format).
    Everything is written to a staging folder that replaces ``out_dir`` at the end: a failure
    leaves an earlier evaluation there as it was.
    """
    out_dir = out_dir or run_dir / EVAL_DIR / cfg.split
    gold, pred = frame["gold"].to_numpy(), frame["pred"].to_numpy()
    probs = np.stack(frame["probs"].to_numpy())
    metrics = classification_report(gold, pred, probs, labels, cfg.resamples)
    metrics["examples_per_s"] = len(frame) / max(seconds, 1e-9)
    metrics["examples"] = len(frame)
    base = None
    if base_frame is not None:
        base_pred = frame[["_src"]].merge(base_frame, on="_src", how="left")["pred"]
        if base_pred.isna().any():  # a cache of other rows would have been caught: a bug
            raise RuntimeError(f"baseline predictions miss {int(base_pred.isna().sum())} rows")
        base_pred = base_pred.to_numpy().astype(int)
        base = {"accuracy": bootstrap(accuracy, gold, base_pred, cfg.resamples).as_dict(),
                "macro_f1": bootstrap(macro_f1, gold, base_pred, cfg.resamples).as_dict()}
        frame["baseline_pred"] = base_pred
    slices = _slices(frame, labels)
    made_by = {**(made_by or {}), "rows": rows_digest(frame)}
    result = {"run": str(run_dir), "split": cfg.split, "data": data_name,
              "metrics": metrics, "baseline": base, "slices": slices, "made_by": made_by}
    if lost is not None:
        result["lost"] = lost
    result["gates"] = check_gates(cfg.gate, result)
    with replaced_on_success(out_dir) as staging:
        frame.drop(columns=["baseline_pred"], errors="ignore").assign(
            gold_label=[labels[i] for i in frame["gold"]],
            pred_label=[labels[i] for i in frame["pred"]]).to_parquet(
            staging / "predictions.parquet")
        (staging / "metrics.json").write_text(json.dumps(result, indent=1, default=float))
        report = eval_report.write_eval_report(result, frame, labels, staging).name
    result["report"] = str(out_dir / report)
    result["out_dir"] = str(out_dir)
    return result


def _groupings(frame: pd.DataFrame, labels: list[str]) -> dict[str, np.ndarray]:
    groups = {c[len("meta_"):]: frame[c].astype(str).to_numpy()
              for c in frame.columns if c.startswith("meta_")}
    groups["length"] = length_buckets(frame["n_tokens"].to_numpy())
    groups["gold"] = np.array([labels[i] for i in frame["gold"]])
    return groups


def _slices(frame: pd.DataFrame, labels: list[str]) -> list[dict]:
    """Model accuracy with CI per slice (metadata, length bucket, gold label); worst first.

    When the baseline's predictions are in ``frame`` each slice also gets its accuracy.
    """
    gold, pred = frame["gold"].to_numpy(), frame["pred"].to_numpy()
    base = frame["baseline_pred"].to_numpy() if "baseline_pred" in frame else None
    rows: list[dict] = []
    for column, values in _groupings(frame, labels).items():
        table = slice_table(values, gold, pred, column)
        if base is not None:
            for row in table:
                inside = values == row["slice"].split("=", 1)[1]
                row["baseline"] = accuracy(gold[inside], base[inside])
        rows += table
    return sorted(rows, key=lambda r: r["value"])
