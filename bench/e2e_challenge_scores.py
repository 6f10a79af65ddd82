"""Saved E2E answers scored by the challenge's own MS-COCO metrics: ROUGE-L, METEOR, CIDEr.

Why: the E2E challenge's figures (TGen: BLEU 65.93, ROUGE-L 68.50) come from its scorer,
tuetschek/e2e-metrics. Its BLEU is mteval-v13a's, case ignored, which ``evaluate``'s
``bleu_uncased`` (sacrebleu's 13a tokeniser, lower-cased) reproduces. Its ROUGE-L is not
rouge-score's F-measure (``evaluate``'s ``rouge_l``): the MS-COCO caption scorer lower-cases
and tokenises with the Stanford PTB tokeniser, drops punctuation, takes the best LCS precision
and the best LCS recall over an input's references and weighs recall (β = 1.2). So a TGen
comparison of ROUGE-L needs that scorer, run here through pycocoevalcap, which e2e-metrics
vendors. It needs Java and ``pip install --no-deps pycocoevalcap`` (104 MB: the Stanford and
METEOR jars); neither is a shardtune dependency.

ROUGE-L is the mean of the inputs' scores, so it gets a bootstrap interval over inputs, and
with ``--b`` a paired one over the same resampled inputs (answers paired by prompt). METEOR and
CIDEr are corpus statistics (CIDEr's weights come from all references): reported as the scorer
gives them, without intervals.

    pip install --no-deps pycocoevalcap
    python bench/e2e_challenge_scores.py --a runs/A/eval/test --b runs/B/eval/test --name a_vs_b
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import save  # noqa: E402

TGEN = {"bleu_uncased": 65.93, "rouge_l_coco": 68.50, "meteor": 44.83, "cider": 2.2338}


def coco_scores(hypotheses: list[str], references: list[list[str]],
                meteor: bool = True) -> dict[str, Any]:
    """The MS-COCO scorers as e2e-metrics runs them: per-input ROUGE-L (0–100), and corpus
    ROUGE-L, METEOR (0–100) and CIDEr (as the scorer reports it)."""
    try:
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        sys.exit("error: the challenge's scorers need `pip install --no-deps pycocoevalcap`")
    if shutil.which("java") is None:
        sys.exit("error: pycocoevalcap's PTB tokeniser needs Java on PATH")
    tokenizer = PTBTokenizer()
    refs = tokenizer.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(references)})
    hyps = tokenizer.tokenize({i: [{"caption": h}] for i, h in enumerate(hypotheses)})
    rouge, per_input = Rouge().compute_score(refs, hyps)
    out: dict[str, Any] = {"rouge_l_coco": 100 * rouge,
                           "per_input": 100 * np.asarray(per_input, dtype=np.float64),
                           "cider": Cider().compute_score(refs, hyps)[0]}
    if meteor:
        out["meteor"] = 100 * Meteor().compute_score(refs, hyps)[0]
    return out


def interval(values: np.ndarray, draws: np.ndarray) -> list[float]:
    """95% percentile interval of the mean of ``values`` over the resampled inputs."""
    means = values[draws].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def read(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An evaluation folder's answers (in prompt order) and what made them."""
    frame = pd.read_parquet(folder / "predictions.parquet")
    if frame["prompt"].duplicated().any():
        sys.exit(f"error: {folder} holds one prompt twice; answers pair by prompt")
    made = json.loads((folder / "metrics.json").read_text()).get("made_by", {})
    return frame.sort_values("prompt", kind="stable").reset_index(drop=True), made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="an evaluation folder")
    parser.add_argument("--b", type=Path, help="a second one, paired with --a by prompt")
    parser.add_argument("--name", default="e2e_challenge_scores")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (~1 min)")
    args = parser.parse_args()
    sides = {"a": args.a, **({"b": args.b} if args.b else {})}
    frames = {side: read(folder) for side, folder in sides.items()}
    if "b" in frames and list(frames["a"][0]["prompt"]) != list(frames["b"][0]["prompt"]):
        sys.exit(f"error: {args.a} and {args.b} answered other prompts")
    n = len(frames["a"][0])
    draws = np.random.default_rng(0).integers(0, n, size=(args.resamples, n))
    figures: dict[str, Any] = {"prompts": n, "tgen": TGEN}
    per_input: dict[str, np.ndarray] = {}
    for side, (frame, made) in frames.items():
        references = [json.loads(r) for r in frame["references"]]
        scores = coco_scores(list(frame["generated"]), references, meteor=not args.no_meteor)
        per_input[side] = scores.pop("per_input")
        figures[side] = {"folder": str(sides[side]), "generation": made.get("generation"),
                         **scores, "rouge_l_coco_ci": interval(per_input[side], draws),
                         "rouge_l_rouge_score": float(frame["rouge_l"].mean())}
    if "b" in per_input:
        delta = per_input["b"] - per_input["a"]
        figures["b_minus_a"] = {"rouge_l_coco": float(delta.mean()),
                                "ci": interval(delta, draws)}
    save(args.name, figures)


if __name__ == "__main__":
    main()
