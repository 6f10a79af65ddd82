"""The honest baseline: TF-IDF (word + char n-grams) + logistic regression on the same splits.

Every evaluation report shows it beside the model, overall and per slice, so a fine-tuned model
that does not beat a linear model on n-grams is visible as such.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline, make_union

from data.pipeline import build_splits
from evaluation.outputs import data_identity
from evaluation.scoring import score_frame
from trainers.cluster_config import ClusterConfig
from trainers.identity import digest, read_json, replaced_on_success, write_json
from trainers.scaling import ensure_ray

BASELINE_DIR = "baseline"
PROVENANCE = "provenance.json"


def fit_predict(train_texts: list[str], train_labels: list[str], texts: list[str],
                labels: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """(predicted label ids, class probabilities, fit seconds) with the run's label order."""
    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    model = make_pipeline(features, LogisticRegression(C=10.0, max_iter=3000))
    start = time.perf_counter()
    model.fit(train_texts, train_labels)
    seconds = time.perf_counter() - start
    raw = model.predict_proba(texts)
    probs = np.zeros((len(texts), len(labels)), dtype=np.float32)
    index = {name: i for i, name in enumerate(labels)}
    for j, name in enumerate(model.classes_):
        probs[:, index[name]] = raw[:, j]
    return probs.argmax(axis=1), probs, seconds


def baseline_predictions(cache: Path, split: str, splits, labels: list[str], made_from: str
                         ) -> pd.DataFrame:
    """The baseline's predictions for ``split``, cached in ``cache`` with ``made_from`` (a
    hash of the data config and file contents): a cache made from other data is refitted."""
    out = cache / "predictions.parquet"
    saved = read_json(cache / PROVENANCE)
    if out.exists() and saved is not None and saved.get("made_from") == made_from \
            and saved.get("labels") == labels:
        return pd.read_parquet(out)
    train = splits.datasets["train"].to_pandas()
    target = splits.datasets[split].to_pandas()
    pred, probs, seconds = fit_predict(train["text"].tolist(), train["label"].tolist(),
                                       target["text"].tolist(), labels)
    frame = pd.DataFrame({"_src": target["_src"], "pred": pred,
                          "confidence": probs.max(axis=1), "probs": list(probs)})
    with replaced_on_success(cache) as staging:
        frame.to_parquet(staging / "predictions.parquet")
        (staging / "fit_seconds.txt").write_text(f"{seconds:.2f}\n")
        write_json(staging / PROVENANCE, {"made_from": made_from, "labels": labels,
                                          "rows": len(frame)})
    return frame


def run_baseline(cfg) -> dict:
    """``shardtune baseline data=<group>``: TF-IDF + LR alone, in the evaluation report format.

    Writes ``runs/baseline/<data.name>/eval/<split>/`` (predictions, metrics with CIs, slices,
    report), so a model's report and the baseline's can be read side by side or gated.
    """
    ensure_ray(ClusterConfig())
    splits = build_splits(cfg.data, "seq_cls")
    splits.pick(cfg.split)
    labels = splits.labels
    out = Path(cfg.paths.runs) / "baseline" / cfg.data.name
    start = time.perf_counter()
    made_from = digest(data_identity(cfg.data, splits.fingerprint))
    predicted = baseline_predictions(out / BASELINE_DIR / cfg.split, cfg.split, splits, labels,
                                     made_from)
    seconds = time.perf_counter() - start
    rows = splits.datasets[cfg.split].to_pandas()
    index = {name: i for i, name in enumerate(labels)}
    frame = rows.drop(columns=[c for c in rows if c in ("label", "_error", "_pii")]).assign(
        gold=[index[str(v)] for v in rows["label"]],
        n_tokens=[len(str(t).split()) for t in rows["text"]],
    ).merge(predicted, on="_src")
    return score_frame(frame, labels, cfg, out, cfg.data.name, seconds)
