"""Paired bootstrap, verdicts, ``shardtune compare`` and ``shardtune report`` on known data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from evaluation.paired import (
    Effect,
    paired_bootstrap,
    seeds_only,
    verdict,
    weighted_accuracy,
    weighted_macro_f1,
)
from shardtune.cli import main


def _predictions(rng, gold, accuracy):
    correct = rng.random(len(gold)) < accuracy
    return np.where(correct, gold, (gold + rng.integers(1, 5, len(gold))) % 5)


def test_weighted_metrics_equal_scikit_learn_on_the_resampled_rows():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 5, 300)
    pred = _predictions(rng, gold, 0.6)
    rows = rng.integers(0, 300, 300)  # one bootstrap resample, as row indices
    weights = np.bincount(rows, minlength=300)[None].astype(float)
    assert weighted_macro_f1(weights, gold, pred, 5)[0] == pytest.approx(
        f1_score(gold[rows], pred[rows], average="macro"))
    assert weighted_accuracy(weights, gold, pred, 5)[0] == pytest.approx(
        np.mean(gold[rows] == pred[rows]))


def test_weighted_correlations_equal_scipy_on_the_resampled_pairs():
    """STS compare: each replicate's Spearman (ties at their mean rank, as STS-B's gold scores
    tie) and Pearson equal scipy's on the rows that replicate drew."""
    from scipy import stats

    from evaluation.paired import _weights, paired_scores, weighted_pearson, weighted_spearman

    rng = np.random.default_rng(4)
    gold = np.round(rng.uniform(0, 5, 150), 0)  # six distinct scores: many ties
    pred = gold + rng.normal(0, 2.0, 150)
    pred[:20] = pred[20]  # tied predictions too
    weights = _weights(np.random.default_rng(5), 150, 4)
    for row in range(4):
        drawn = np.repeat(np.arange(150), weights[row].astype(int))
        assert weighted_spearman(weights, gold, pred)[row] == pytest.approx(
            stats.spearmanr(gold[drawn], pred[drawn]).statistic, abs=1e-12)
        assert weighted_pearson(weights, gold, pred)[row] == pytest.approx(
            stats.pearsonr(gold[drawn], pred[drawn]).statistic, abs=1e-12)
    better = gold + rng.normal(0, 1.0, 150)  # B tracks the gold scores more closely
    effect = paired_scores(150, [lambda w: weighted_spearman(w, gold, pred)],
                           [lambda w: weighted_spearman(w, gold, better)], "spearman", 500)
    assert effect.delta == pytest.approx(stats.spearmanr(gold, better).statistic
                                         - stats.spearmanr(gold, pred).statistic)
    assert 0 < effect.low < effect.delta < effect.high and effect.n == 150


def test_paired_bootstrap_finds_a_real_five_point_difference():
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 5, 2000)
    a = np.stack([_predictions(rng, gold, 0.80) for _ in range(3)])
    b = np.stack([_predictions(rng, gold, 0.85) for _ in range(3)])
    for metric in ("accuracy", "macro_f1"):
        e = paired_bootstrap(gold, a, b, metric, resamples=1000)
        assert 0 < e.low < 0.05 < e.high and e.p_value < 0.01, e
        assert (e.seeds_a, e.seeds_b, e.n) == (3, 3, 2000)
    assert verdict(paired_bootstrap(gold, a, b, "accuracy", 1000), 0.01) == "ship"


def test_per_query_scores_pair_by_query_and_resample_seeds():
    """Retrieval metrics: the effect is the mean per-query difference, the queries resampled
    together; a constant gain has no spread, a gain on one query of many is not significant."""
    a = np.array([[0.1, 0.5, 0.9, 0.3]])
    e = paired_bootstrap(np.zeros(4, dtype=int), a, a + 0.1, "mean", resamples=500)
    assert e.delta == pytest.approx(0.1) and e.low == pytest.approx(0.1) == e.high
    assert e.p_value == pytest.approx(1 / 500)
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, size=(2, 200))  # two seeds
    lucky = base.copy()
    lucky[:, 0] += 0.5
    e = paired_bootstrap(np.zeros(200, dtype=int), base, lucky, "mean", resamples=1000)
    assert e.delta == pytest.approx(0.5 / 200) and e.low <= 0 < e.high and e.seeds_b == 2


def test_zero_difference_is_called_significant_at_about_the_stated_rate():
    rng = np.random.default_rng(3)
    hits = 0
    draws = 200
    for i in range(draws):
        gold = rng.integers(0, 5, 800)
        e = paired_bootstrap(gold, _predictions(rng, gold, 0.8), _predictions(rng, gold, 0.8),
                             "accuracy", resamples=1000, seed=i)
        hits += e.p_value < 0.05
    assert 0.01 <= hits / draws <= 0.09  # nominal 5%; binomial slack for 200 draws


def test_verdicts_and_seed_only_comparison():
    def effect(delta, low, high):
        return Effect("macro_f1", 0.8, 0.8 + delta, delta, low, high, 0.01, 100, 5, 5)

    assert verdict(effect(0.02, 0.005, 0.035), 0.01) == "ship"
    assert verdict(effect(0.005, 0.001, 0.009), 0.01) == "stop"  # real but too small
    assert verdict(effect(-0.03, -0.05, -0.01), 0.01) == "stop"  # a regression
    assert verdict(effect(0.02, -0.01, 0.05), 0.01) == "iterate"  # undecided
    lower = Effect("test/loss", 1.0, 0.9, -0.1, -0.15, -0.05, 0.01, 0, 3, 3)
    assert verdict(lower, 0.01, higher_is_better=False) == "ship"
    e = seeds_only([0.80, 0.81, 0.79], [0.90, 0.91, 0.89], "test/entity_f1")
    assert e.delta == pytest.approx(0.10) and e.low > 0 and e.p_value < 0.01
    lone = seeds_only([0.8], [0.9], "test/entity_f1")
    assert lone.p_value == 1.0 and verdict(lone, 0.01) == "iterate"  # one seed says little


def _fake_run(path: Path, seed: int, gold: np.ndarray, pred: np.ndarray, channel: np.ndarray,
              data: tuple[str, str] = ("sample", "5a" * 32)):
    """A finished run as the train and evaluate jobs leave it, with chosen predictions.

    ``data``: the data set's name and fingerprint (sha256) its run_meta.json records."""
    labels = [f"c{i}" for i in range(5)]
    (path / "eval" / "test").mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "run_meta.json").write_text(json.dumps({
        "seed": seed, "git": {"commit": "abc"},
        "dataset": {"name": data[0], "fingerprint": {"sha256": data[1], "files": []},
                    "splits": {"test": {"rows": len(gold)}}}}))
    (path / "metrics.json").write_text(json.dumps(
        {"test/accuracy": float(np.mean(gold == pred)), "test/loss": 1.0 - np.mean(gold == pred)}))
    (path / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "train/loss": 2.0 / s + seed * 0.01}) + "\n" for s in (1, 2, 3)))
    pd.DataFrame({"_src": [f"test.jsonl:{i + 1}" for i in range(len(gold))],
                  "gold_label": [labels[g] for g in gold], "pred_label": [labels[p] for p in pred],
                  "meta_channel": channel, "n_tokens": 5 + np.arange(len(gold)) % 20,
                  }).to_parquet(path / "eval" / "test" / "predictions.parquet")


def _fake_group(root: Path, name: str, runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    group = root / name
    members = []
    for seed, (gold, pred, channel) in enumerate(runs):
        _fake_run(group / f"seed{seed}", seed, gold, pred, channel)
        members.append(str(group / f"seed{seed}"))
    (group / "group.json").write_text(json.dumps({"members": members, "seeds": [0, 1, 2]}))
    return group


@pytest.fixture
def two_groups(tmp_path):
    """B is 8 points better overall, but much worse on the channel=voice slice."""
    rng = np.random.default_rng(4)
    n = 1500
    gold = rng.integers(0, 5, n)
    channel = np.where(np.arange(n) % 10 == 0, "voice", "chat")
    voice = channel == "voice"
    runs_a, runs_b = [], []
    for _ in range(3):
        runs_a.append((gold, _predictions(rng, gold, 0.75), channel))
        pred_b = _predictions(rng, gold, 0.85)
        pred_b[voice] = _predictions(rng, gold[voice], 0.45)
        runs_b.append((gold, pred_b, channel))
    root = tmp_path / "runs"
    return _fake_group(root, "base", runs_a), _fake_group(root, "cand", runs_b)


def test_compare_sees_the_slice_regression_behind_an_aggregate_win(two_groups, capsys):
    base, cand = two_groups
    assert main(["compare", str(base), str(cand), "compare.metric=accuracy",
                 "compare.resamples=1000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ITERATE: cand beats base by +")
    assert "channel=voice" in out
    result = json.loads((cand / "compare" / "base" / "compare.json").read_text())
    assert result["effects"]["accuracy"]["low"] > 0.01
    voice = next(s for s in result["slices"] if s["slice"] == "channel=voice")
    assert voice["regression"] and voice["high"] < 0
    assert (cand / "compare" / "base" / "slice_deltas.png").stat().st_size > 1000
    # Without the slice guard the aggregate alone would ship.
    assert main(["compare", str(base), str(cand), "compare.metric=accuracy",
                 "compare.resamples=1000", "compare.block_on_slice_regression=false"]) == 0
    assert capsys.readouterr().out.startswith("SHIP:")


def test_compare_refuses_runs_evaluated_on_other_examples(two_groups, tmp_path, capsys):
    base, _ = two_groups
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 5, 100)
    _fake_run(tmp_path / "other", 0, gold, gold, np.array(["chat"] * 100))
    assert main(["compare", str(base), str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "evaluated on other examples" in err and "100 vs 1500 rows" in err
    assert main(["compare", str(base)]) == 2
    assert "needs two runs or groups" in capsys.readouterr().err


def test_compare_refuses_runs_evaluated_on_other_data_with_the_same_row_ids(two_groups,
                                                                           capsys):
    """Row ids such as ``test.jsonl:7`` coincide across data sets of one size: what each
    evaluation records about its rows decides, not the ids."""
    from evaluation.outputs import weights_hash

    a, b = two_groups
    for i, member in enumerate(sorted(b.glob("seed*"))):
        (member / "eval" / "test" / "metrics.json").write_text(json.dumps(
            {"made_by": {"weights": weights_hash(member), "rows": "other" if i else "same"}}))
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "were evaluated on different data (test split)" in err and "cand/seed0" in err


def test_report_renders_groups_with_seed_bands_comparison_and_trend(two_groups, tmp_path):
    base, cand = two_groups
    out = tmp_path / "report"
    assert main(["report", str(base.parent), f"out={out}", "compare.resamples=500"]) == 0
    text = (out / "report.md").read_text()
    assert "| base | 3 |" in text and "| cand | 3 |" in text
    assert "## Comparisons against" in text and "iterate" in text
    assert "## Trend across versions" in text
    for png in ("curve_train_loss.png", "distribution.png", "trend.png"):
        assert (out / png).stat().st_size > 1000, png


def _finished_at(run: Path, when: float) -> None:
    """The report orders entries by when metrics.json was written."""
    import os

    os.utime(run / "metrics.json", (when, when))


def test_report_keeps_runs_on_other_data_apart(tmp_path):
    """Three single runs finish in turn: sample, intents (other data), sample again.

    The intents run gets its own section; it is neither compared with the sample runs nor
    a step of their trend, and the second sample run's change is against the first."""
    rng = np.random.default_rng(7)
    root = tmp_path / "runs"
    gold = rng.integers(0, 5, 300)
    other = rng.integers(0, 5, 300)  # as many rows: only the fingerprint tells them apart
    chat = np.array(["chat"] * 300)
    accs = {"v1": 0.80, "hwu": 0.40, "v2": 0.84}
    for when, (name, acc) in enumerate(accs.items(), start=1):
        g = other if name == "hwu" else gold
        data = ("intents", "c3" * 32) if name == "hwu" else ("sample", "5a" * 32)
        _fake_run(root / name, 0, g, _predictions(rng, g, acc), chat, data=data)
        _finished_at(root / name, 1_000_000 + when)
    out = tmp_path / "report"
    assert main(["report", str(root), f"out={out}", "compare.resamples=200",
                 "compare.metric=accuracy"]) == 0
    text = (out / "report.md").read_text()
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert any("sample" in h and "5a5a5a5a" in h for h in heads), heads
    assert any("intents" in h and "c3c3c3c3" in h for h in heads), heads
    sections = text.split("\n## ")
    intents = next(s for s in sections if s.startswith("intents"))
    assert "v1" not in intents and "v2" not in intents  # alone on its data
    assert not (out / "compare_hwu").exists() and "hwu: not compared" not in text
    assert "Comparisons against hwu" not in text
    trend = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and cells[1] in accs and cells[0].isdigit():
            trend[cells[1]] = cells[-1]
    v1, v2 = (json.loads((root / n / "metrics.json").read_text())["test/accuracy"]
              for n in ("v1", "v2"))
    assert trend == {"v1": "", "hwu": "", "v2": f"{v2 - v1:+.4f}"}  # no step across data


def test_a_single_seed_never_shows_a_zero_width_interval(tmp_path):
    """One run each: with stored eval metrics, with predictions only, with neither."""
    from evaluation.stats import accuracy, bootstrap

    rng = np.random.default_rng(8)
    root = tmp_path / "runs"
    gold = rng.integers(0, 5, 400)
    chat = np.array(["chat"] * 400)
    for i, name in enumerate(("stored", "predicted", "bare")):
        _fake_run(root / name, 0, gold, _predictions(rng, gold, 0.7 + 0.05 * i), chat,
                  data=(name, f"{i}e" * 32))
    stored = json.loads((root / "stored" / "metrics.json").read_text())["test/accuracy"]
    (root / "stored" / "eval" / "test" / "metrics.json").write_text(json.dumps(
        {"split": "test", "metrics": {"accuracy": {"value": stored, "ci_low": stored - 0.04,
                                                   "ci_high": stored + 0.05, "n": 400}}}))
    frame = pd.read_parquet(root / "predicted" / "eval" / "test" / "predictions.parquet")
    expected = bootstrap(accuracy, frame["gold_label"].to_numpy(), frame["pred_label"].to_numpy())
    (root / "bare" / "eval" / "test" / "predictions.parquet").unlink()
    out = tmp_path / "report"
    assert main(["report", str(root), f"out={out}"]) == 0
    text = (out / "report.md").read_text()
    import re

    for low, high in re.findall(r"\[([-+]?\d\.\d+), ([-+]?\d\.\d+)\]", text):
        assert low != high, text  # no collapsed interval anywhere
    assert "± 0.0000" not in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| stored ") or line.startswith("| predicted ")
            or line.startswith("| bare ")}
    assert f"[{stored - 0.04:.4f}, {stored + 0.05:.4f}]" in rows["stored"]
    assert "400 test examples" in rows["stored"]
    assert f"[{expected.low:.4f}, {expected.high:.4f}]" in rows["predicted"]
    assert "400 test examples" in rows["predicted"]
    assert "n=1 seed" in rows["bare"] and "[" not in rows["bare"]


def _fake_chat_run(path: Path, answers: list[str], references: list[list[str]],
                   **meta: list[str]) -> Path:
    """A finished chat run with chosen answers (evaluation/generate.py's predictions);
    ``meta``: metadata columns kept beside them (``meta_<name>``)."""
    (path / "eval" / "test").mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "metrics.json").write_text(json.dumps({"test/perplexity": 4.0}))
    prompts = [json.dumps([{"role": "user", "content": f"mr {i}"}]) for i in range(len(answers))]
    pd.DataFrame({"prompt": prompts, "text": [f"mr {i}" for i in range(len(answers))],
                  "_src": [f"test.csv:{i + 2}" for i in range(len(answers))],
                  "generated": answers, "references": [json.dumps(r) for r in references],
                  **{f"meta_{k}": v for k, v in meta.items()},
                  }).to_parquet(path / "eval" / "test" / "predictions.parquet")
    return path


def test_generation_compare_sees_the_slice_regression_behind_an_aggregate_win(tmp_path, capsys):
    """B answers the 60 city prompts well and the 20 river ones badly, A the other way round:
    B wins overall, the river slice regresses, and the verdict says so. Each slice's BLEU is
    the corpus BLEU of its own prompts."""
    from evaluation.generation import corpus_scores

    rng = np.random.default_rng(5)
    words = ["the", "cheap", "pub", "near", "cafe", "rated", "high", "serves", "food", "rice"]
    refs = [[" ".join(rng.choice(words, 8)) for _ in range(2)] for _ in range(80)]
    noise = [" ".join(rng.choice(words, 8)) for _ in range(80)]
    area = ["city"] * 60 + ["river"] * 20
    rows = list(zip(noise, refs, area, strict=True))
    a_answers = [n if where == "city" else r[0] for n, r, where in rows]
    b_answers = [r[0] if where == "city" else n for n, r, where in rows]
    root = tmp_path / "runs"
    a = _fake_chat_run(root / "a", a_answers, refs, area=area)
    b = _fake_chat_run(root / "b", b_answers, refs, area=area)
    assert main(["compare", str(a), str(b), "compare.metric=bleu", "compare.min_effect=1",
                 "compare.resamples=400", "compare.min_slice_size=20"]) == 0
    result = json.loads((b / "compare" / "a" / "compare.json").read_text())
    assert result["effects"]["bleu"]["delta"] > 10 and result["verdict"] == "iterate"
    assert "area=river" in result["reason"]
    slices = {s["slice"]: s for s in result["slices"]}
    assert set(slices) == {"area=city", "area=river", "references=2"}
    river = slices["area=river"]
    assert river["n"] == 20 and river["regression"] and river["high"] < 0
    assert river["a"] == pytest.approx(corpus_scores(a_answers[60:], refs[60:])["bleu"])
    assert river["b"] == pytest.approx(corpus_scores(b_answers[60:], refs[60:])["bleu"])
    assert slices["area=city"]["improvement"] and slices["references=2"]["n"] == 80
    report = (b / "compare" / "a" / "compare.md").read_text()
    assert "## Slices (bleu, points" in report and "area=river" in report


def test_generation_scores_pair_by_prompt_and_recompute_corpus_bleu(tmp_path, capsys):
    """compare on chat runs: every generation metric's B − A over the same resampled prompts;
    corpus BLEU/chrF are recomputed from each replicate's statistics, so the all-ones draw
    gives sacrebleu's own corpus score; identical answers give a zero-width interval."""
    from evaluation.generation import corpus_scores, replicate_scorer

    rng = np.random.default_rng(3)
    words = ["the", "cheap", "pub", "near", "cafe", "rated", "high", "serves", "food", "rice"]
    refs = [[" ".join(rng.choice(words, 8)) for _ in range(2)] for _ in range(60)]
    weak = [" ".join(rng.choice(words, 8)) for _ in range(60)]
    strong = [r[0] if i % 3 else w for i, (r, w) in enumerate(zip(refs, weak, strict=True))]
    corpus = corpus_scores(strong, refs)
    for metric in ("bleu", "bleu_uncased", "chrf", "rouge_l", "exact_match"):
        assert replicate_scorer(metric, strong, refs)(np.ones((1, 60)))[0] == pytest.approx(
            corpus[metric])
    root = tmp_path / "runs"
    a = _fake_chat_run(root / "weak", weak, refs)
    b = _fake_chat_run(root / "strong", strong, refs)
    assert main(["compare", str(a), str(b), "compare.metric=bleu", "compare.min_effect=1",
                 "compare.resamples=500"]) == 0
    assert capsys.readouterr().out.startswith("SHIP: strong beats weak by +")
    result = json.loads((b / "compare" / "weak" / "compare.json").read_text())
    bleu = result["effects"]["bleu"]
    assert bleu["b"] == pytest.approx(corpus["bleu"]) and bleu["low"] > 10
    assert result["effects"]["exact_match"]["b"] == pytest.approx(100 * 40 / 60)
    assert set(result["effects"]) == {"bleu", "bleu_uncased", "chrf", "rouge_l", "exact_match"}
    # the same answers saved in another row order: paired by prompt, every difference is 0
    shuffled = root / "shuffled"
    shutil.copytree(b, shuffled)
    frame = pd.read_parquet(b / "eval/test/predictions.parquet")
    frame.sample(frac=1, random_state=0).to_parquet(shuffled / "eval/test/predictions.parquet")
    assert main(["compare", str(b), str(shuffled), "compare.metric=rouge_l"]) == 0
    same = json.loads((shuffled / "compare" / "strong" / "compare.json").read_text())["effects"]
    assert all(e["delta"] == e["low"] == e["high"] == 0 for e in same.values()), same
    # a run that read placeholders (data.chat.delexicalize): other rendered prompts, the
    # same data prompts: paired by the data's prompt side, not by what the model read
    delex = root / "delex"
    shutil.copytree(b, delex)
    frame.assign(prompt=[p.replace("mr ", "mr X-") for p in frame["prompt"]]).to_parquet(
        delex / "eval/test/predictions.parquet")
    assert main(["compare", str(b), str(delex), "compare.metric=rouge_l"]) == 0
    same = json.loads((delex / "compare" / "strong" / "compare.json").read_text())["effects"]
    assert all(e["delta"] == 0 for e in same.values()), same
    # a classification run on the other side: one line naming the key
    _fake_run(root / "cls", 0, np.zeros(3, int), np.zeros(3, int), np.array(["x"] * 3))
    capsys.readouterr()
    assert main(["compare", str(root / "cls"), str(b), "compare.metric=bleu"]) == 2
    assert "compare.metric" in capsys.readouterr().err
