"""Quality: LoRA MiniLM on BANKING77 (3 epochs) beside TF-IDF + logistic regression.

Both see exactly the same training rows (shardtune's hash split holds 10% out for validation)
and are scored on the official test set. Extra arguments are passed to ``shardtune train``.

    python bench/bench_quality.py --label lora_qv_r8          # the default LoRA config
    python bench/bench_quality.py --label lora_all_r16 peft.r=16 peft.alpha=32 \
        "peft.target_modules=[query,key,value,dense]" optim.lr=3e-3
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, save  # noqa: E402
from data.pipeline import build_splits  # noqa: E402
from tests.conftest import compose_run  # noqa: E402
from trainers.train import train  # noqa: E402


def tfidf_baseline(train_rows: list[dict], test_rows: list[dict]) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer  # only the baseline needs it
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    model = make_pipeline(features, LogisticRegression(C=10.0, max_iter=3000))
    start = time.perf_counter()
    model.fit([r["text"] for r in train_rows], [r["label"] for r in train_rows])
    pred = model.predict([r["text"] for r in test_rows])
    gold = [r["label"] for r in test_rows]
    return {"test/accuracy": accuracy_score(gold, pred),
            "test/macro_f1": f1_score(gold, pred, average="macro"),
            "fit_s": time.perf_counter() - start}


def main() -> None:
    args = sys.argv[1:]
    label = "default"
    if args[:1] == ["--label"]:
        label, args = args[1], args[2:]
    tmp = Path(tempfile.mkdtemp(prefix="bench_quality_"))
    overrides = ["data=banking77", f"paths.datasets={SHARED}", "trainer.epochs=3",
                 "run_name=banking77_lora", *args]
    run = compose_run(tmp, overrides)
    start = time.perf_counter()
    summary = train(run)
    wall = time.perf_counter() - start
    splits = build_splits(run.data, "seq_cls")
    baseline = tfidf_baseline(splits.datasets["train"].take_all(),
                              splits.datasets["test"].take_all())
    metrics = summary["metrics"]
    save(f"quality_banking77_{label}", {
        "command": "python bench/bench_quality.py " + " ".join(sys.argv[1:]),
        "overrides": overrides[2:],
        "rows": {k: s.rows for k, s in splits.summaries.items()},
        "shardtune_lora": {k: metrics[k] for k in ("test/accuracy", "test/macro_f1",
                                                   "val/accuracy", "val/macro_f1", "step",
                                                   "params_trainable") if k in metrics},
        "train_wall_s": wall,
        "tfidf_logreg": baseline,
    })


if __name__ == "__main__":
    main()
