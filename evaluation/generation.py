"""Scores of generated text against one or more references per input.

Corpus BLEU and chrF come from sacrebleu (its default tokenisation, so figures compare with
published ones): ``bleu`` counts case, as sacrebleu does by default; ``bleu_uncased`` ignores
it, as the E2E challenge's scorer (e2e-metrics) and GEM's BLEU do, so that figures published
with them (E2E's TGen baseline, 65.93) compare like for like. ROUGE-L comes from rouge-score
(the best F-measure over an input's references, averaged over inputs; the E2E challenge's
MS-COCO ROUGE-L weighs recall and reads higher: ``bench/e2e_challenge_scores.py``), exact
match after whitespace normalisation. An input may have any number of references (E2E has 1
to 40 a meaning representation).

Intervals: corpus BLEU and chrF are not means of per-example numbers, so their bootstrap
resamples inputs and recomputes the corpus score from the resampled inputs' sufficient
statistics (n-gram matches and lengths), as sacrebleu's own paired bootstrap does; ROUGE-L and
exact match are means, resampled the same way. Per-example scores (sentence BLEU, chrF,
ROUGE-L, exact) go into predictions for the worst examples, slices and paired comparison.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from data.errors import DataError

CORPUS = ("bleu", "bleu_uncased", "chrf")  # recomputed from summed statistics
MEANS = ("rouge_l", "exact_match")  # averaged over inputs
METRICS = CORPUS + MEANS


def reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's layout: stream k holds every input's k-th reference (None past its last)."""
    if any(not refs for refs in references):
        first = next(i for i, refs in enumerate(references) if not refs)
        raise DataError(f"example {first}", "has no reference to score against")
    depth = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(depth)]


def corpus_metric(name: str, sentence: bool = False) -> BLEU | CHRF:
    """sacrebleu's scorer of a ``CORPUS`` metric (``sentence``: smoothed for one input)."""
    if name == "chrf":
        return CHRF()
    return BLEU(effective_order=sentence, lowercase=name == "bleu_uncased")


def _normalise(text: str) -> str:
    return " ".join(text.split())


def per_example(hypotheses: list[str], references: list[list[str]]) -> dict[str, list[float]]:
    """Each input's sentence BLEU, chrF, best ROUGE-L F and exact match (0–100 like corpus)."""
    from rouge_score import rouge_scorer  # imports nltk (~2 s): only where answers are scored

    scorers = {name: corpus_metric(name, sentence=True) for name in CORPUS}
    rouge = rouge_scorer.RougeScorer(["rougeL"])
    out: dict[str, list[float]] = {name: [] for name in METRICS}
    for hyp, refs in zip(hypotheses, references, strict=True):
        for name, scorer in scorers.items():
            out[name].append(scorer.sentence_score(hyp, refs).score)
        out["rouge_l"].append(100 * rouge.score_multi(refs, hyp)["rougeL"].fmeasure)
        out["exact_match"].append(100.0 * any(_normalise(hyp) == _normalise(r) for r in refs))
    return out


def corpus_scores(hypotheses: list[str], references: list[list[str]],
                  examples: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Corpus BLEU (cased and not) and chrF, mean ROUGE-L and exact match, all 0–100."""
    streams = reference_streams(references)
    examples = examples or per_example(hypotheses, references)
    return {**{name: corpus_metric(name).corpus_score(hypotheses, streams).score
               for name in CORPUS},
            **{name: float(np.mean(examples[name])) for name in MEANS}}


def bootstrap(hypotheses: list[str], references: list[list[str]],
              examples: dict[str, list[float]], n: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, dict[str, float]]:
    """Percentile intervals of every metric from ``n`` resamples of the inputs."""
    streams = reference_streams(references)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(hypotheses), size=(n, len(hypotheses)))
    out: dict[str, dict[str, float]] = {}
    low, high = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    for name in CORPUS:
        metric = corpus_metric(name)
        stats = np.asarray(metric._extract_corpus_statistics(hypotheses, streams))
        values = [metric._compute_score_from_stats(list(stats[idx].sum(0))).score
                  for idx in draws]
        out[name] = _interval(values, low, high)
    for name in MEANS:
        per = np.asarray(examples[name])
        out[name] = _interval(per[draws].mean(1), low, high)
    return out


def replicate_scorer(metric: str, hypotheses: list[str], references: list[list[str]]
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """``metric`` for each row of multiplicity weights (replicates × inputs), for the paired
    bootstrap of ``compare``: corpus BLEU/chrF from the weighted sums of each input's
    statistics, ROUGE-L and exact match as weighted means of the per-input scores."""
    if metric in CORPUS:
        scorer = corpus_metric(metric)
        stats = np.asarray(scorer._extract_corpus_statistics(
            hypotheses, reference_streams(references)), dtype=np.int64)
        return lambda w: np.array([
            scorer._compute_score_from_stats(list(np.rint(row @ stats).astype(np.int64))).score
            for row in w])
    values = np.asarray(per_example(hypotheses, references)[metric], dtype=np.float64)
    return lambda w: w @ values / w.sum(axis=1)


def prompt_groups(frame: Any, reference_counts: Any) -> dict[str, Any]:
    """The slices a generation evaluation is cut by, one column each: references per prompt
    (``reference_counts``, aligned with ``frame``) and every kept metadata column
    (``meta_<name>``), as strings. ``evaluate`` reports them, ``compare`` pairs them."""
    groups = {"references": reference_counts.astype(str)}
    groups.update({c[5:]: frame[c].astype(str) for c in frame if c.startswith("meta_")})
    return groups


def _interval(values: Any, low: float, high: float) -> dict[str, float]:
    lo, hi = np.percentile(values, [low, high])
    return {"low": float(lo), "high": float(hi)}
