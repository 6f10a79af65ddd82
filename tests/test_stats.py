"""Evaluation statistics and release gates, checked against hand-computed numbers.

Pure functions only: no Ray, no network, no data sets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from evaluation import stats
from evaluation.config import GateConfig
from evaluation.gates import check_gates
from evaluation.stats import (
    Estimate,
    accuracy,
    bootstrap,
    classification_report,
    expected_calibration_error,
    length_buckets,
    macro_f1,
    slice_table,
    top_k_accuracy,
)

# --------------------------------------------------------------------------- accuracy / F1

# gold: 0 0 1 1 2 2
# pred: 0 1 1 1 2 0
# correct: y n y y y n  -> accuracy 4/6
# class 0: TP=1 (idx0) FP=1 (idx5) FN=1 (idx1) -> P=1/2 R=1/2 F1=1/2
# class 1: TP=2 (idx2,3) FP=1 (idx1) FN=0     -> P=2/3 R=1   F1=4/5
# class 2: TP=1 (idx4) FP=0 FN=1 (idx5)       -> P=1   R=1/2 F1=2/3
# macro F1 = (1/2 + 4/5 + 2/3) / 3 = (15 + 24 + 20) / 90 = 59/90
GOLD6 = np.array([0, 0, 1, 1, 2, 2])
PRED6 = np.array([0, 1, 1, 1, 2, 0])


def test_accuracy_hand_example():
    assert accuracy(GOLD6, PRED6) == pytest.approx(4 / 6)


def test_macro_f1_hand_example():
    assert macro_f1(GOLD6, PRED6) == pytest.approx(59 / 90)


def test_single_class_all_right():
    gold = np.array([1, 1, 1, 1])
    assert accuracy(gold, gold) == 1.0
    # Only label 1 occurs anywhere, so the macro average is over that one class.
    assert macro_f1(gold, gold) == pytest.approx(1.0)


def test_single_gold_class_one_miss():
    gold = np.array([1, 1, 1, 1])
    pred = np.array([1, 1, 0, 1])
    # accuracy 3/4; class 0: TP=0 FP=1 -> F1 0; class 1: TP=3 FN=1 -> P=1 R=3/4 F1=6/7
    # macro = (0 + 6/7) / 2 = 3/7
    assert accuracy(gold, pred) == pytest.approx(0.75)
    assert macro_f1(gold, pred) == pytest.approx(3 / 7)


def test_all_predictions_wrong():
    gold = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([1, 2, 0, 2, 0, 1])
    assert accuracy(gold, pred) == 0.0
    assert macro_f1(gold, pred) == 0.0


def test_accuracy_empty_is_nan():
    assert math.isnan(accuracy(np.array([], dtype=int), np.array([], dtype=int)))


# --------------------------------------------------------------------------- bootstrap


def _eighty_percent(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n examples, exactly 80% predicted right."""
    gold = np.ones(n, dtype=int)
    pred = gold.copy()
    pred[: n // 5] = 0
    return gold, pred


def test_bootstrap_contains_point_and_reports_n():
    gold, pred = _eighty_percent(50)
    est = bootstrap(accuracy, gold, pred, resamples=1000, seed=0)
    assert isinstance(est, Estimate)
    assert est.value == pytest.approx(0.8)
    assert est.n == 50
    assert est.low <= est.value <= est.high
    assert est.low < est.value < est.high  # a real, non-degenerate interval at n=50
    assert 0.0 <= est.low and est.high <= 1.0


def test_bootstrap_deterministic_for_fixed_seed():
    gold, pred = _eighty_percent(50)
    a = bootstrap(accuracy, gold, pred, resamples=500, seed=7)
    b = bootstrap(accuracy, gold, pred, resamples=500, seed=7)
    assert (a.value, a.low, a.high, a.n) == (b.value, b.low, b.high, b.n)
    f1a = bootstrap(macro_f1, GOLD6, PRED6, resamples=300, seed=3)
    f1b = bootstrap(macro_f1, GOLD6, PRED6, resamples=300, seed=3)
    assert f1a.as_dict() == f1b.as_dict()


def test_bootstrap_narrows_with_more_data():
    small = bootstrap(accuracy, *_eighty_percent(50), resamples=1000, seed=0)
    large = bootstrap(accuracy, *_eighty_percent(500), resamples=1000, seed=0)
    assert small.value == pytest.approx(large.value) == pytest.approx(0.8)
    w_small, w_large = small.high - small.low, large.high - large.low
    # Width scales ~ 1/sqrt(n): 10x the data -> ~3.2x narrower.
    assert w_large < w_small / 2
    # Normal approximation at n=500: 2 * 1.96 * sqrt(0.8 * 0.2 / 500) ~= 0.070
    assert w_large == pytest.approx(2 * 1.96 * math.sqrt(0.16 / 500), abs=0.02)
    # and at n=50: ~= 0.222
    assert w_small == pytest.approx(2 * 1.96 * math.sqrt(0.16 / 50), abs=0.06)


def test_bootstrap_all_correct_is_degenerate_interval():
    gold = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    est = bootstrap(accuracy, gold, gold.copy(), resamples=200)
    assert (est.value, est.low, est.high, est.n) == (1.0, 1.0, 1.0, 10)


def test_bootstrap_single_example_returns_point():
    est = bootstrap(accuracy, np.array([1]), np.array([0]))
    assert (est.value, est.low, est.high, est.n) == (0.0, 0.0, 0.0, 1)


def test_estimate_as_dict_and_str():
    est = Estimate(0.5, 0.25, 0.75, 12)
    assert est.as_dict() == {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 12}
    assert str(est) == "0.5000 [0.2500, 0.7500]"


# --------------------------------------------------------------------------- calibration

# Three occupied bins (same bins whether 10 or 15 equal-width bins are used):
#   conf 0.95 x4, correct 1 1 1 0 -> acc 0.75, |0.75-0.95| = 0.20, weight 4/8 -> 0.1000
#   conf 0.65 x2, correct 1 0     -> acc 0.50, |0.50-0.65| = 0.15, weight 2/8 -> 0.0375
#   conf 0.35 x2, correct 0 0     -> acc 0.00, |0.00-0.35| = 0.35, weight 2/8 -> 0.0875
#   ECE = 0.1 + 0.0375 + 0.0875 = 0.225
ECE_CONF = np.array([0.95, 0.95, 0.95, 0.95, 0.65, 0.65, 0.35, 0.35])
ECE_CORRECT = np.array([1, 1, 1, 0, 1, 0, 0, 0])


@pytest.mark.parametrize("bins", [10, 15])
def test_ece_hand_example(bins):
    ece, table = expected_calibration_error(ECE_CONF, ECE_CORRECT, bins=bins)
    assert ece == pytest.approx(0.225)
    assert len(table) == 3
    # bins come out in increasing confidence order
    assert [row["n"] for row in table] == [2, 2, 4]
    assert [row["accuracy"] for row in table] == pytest.approx([0.0, 0.5, 0.75])
    assert [row["confidence"] for row in table] == pytest.approx([0.35, 0.65, 0.95])
    for row in table:
        assert row["low"] < row["confidence"] <= row["high"]
        assert row["high"] - row["low"] == pytest.approx(1 / bins)


def test_ece_accepts_boolean_correct():
    ece, _ = expected_calibration_error(ECE_CONF, ECE_CORRECT.astype(bool), bins=10)
    assert ece == pytest.approx(0.225)


def test_ece_perfectly_calibrated_exact():
    # In every bin, the fraction correct equals the (single) confidence value.
    conf = np.array([0.8] * 10 + [0.3] * 10 + [0.55] * 20)
    correct = np.array([1] * 8 + [0] * 2 + [1] * 3 + [0] * 7 + [1] * 11 + [0] * 9)
    ece, table = expected_calibration_error(conf, correct)
    assert ece == pytest.approx(0.0, abs=1e-12)
    assert sum(row["n"] for row in table) == len(conf)


def test_ece_perfectly_calibrated_synthetic():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, size=200_000)
    correct = rng.uniform(size=conf.size) < conf
    ece, table = expected_calibration_error(conf, correct)
    assert ece < 0.01
    assert sum(row["n"] for row in table) == conf.size
    # an over-confident model on the same data is clearly miscalibrated
    ece_bad, _ = expected_calibration_error(np.minimum(conf + 0.2, 1.0), correct)
    assert ece_bad > 0.1


def test_ece_bins_sum_to_total_including_confidence_one():
    conf = np.array([1.0, 1.0, 0.5, 0.01, 0.999])
    correct = np.array([1, 1, 0, 0, 1])
    _, table = expected_calibration_error(conf, correct)
    assert sum(row["n"] for row in table) == 5


# --------------------------------------------------------------------------- top-k

# rows: class order by probability (highest first)
#  ex0 gold 0: 0.5(0) 0.3(1) 0.1 0.1  -> top1 yes, top2 yes
#  ex1 gold 2: 0.4(1) 0.3(2) ...      -> top1 no,  top2 yes
#  ex2 gold 3: 0.6(0) 0.2(1) 0.15(2) 0.05(3) -> top1 no, top2 no, top3 no
#  ex3 gold 1: 0.7(1)                 -> top1 yes, top2 yes
TOPK_PROBS = np.array([
    [0.5, 0.3, 0.1, 0.1],
    [0.2, 0.4, 0.3, 0.1],
    [0.6, 0.2, 0.15, 0.05],
    [0.1, 0.7, 0.1, 0.1],
])
TOPK_GOLD = np.array([0, 2, 3, 1])


def test_top_k_hand_example():
    assert top_k_accuracy(TOPK_GOLD, TOPK_PROBS, 1) == pytest.approx(2 / 4)
    assert top_k_accuracy(TOPK_GOLD, TOPK_PROBS, 2) == pytest.approx(3 / 4)
    assert top_k_accuracy(TOPK_GOLD, TOPK_PROBS, 3) == pytest.approx(3 / 4)


@pytest.mark.parametrize("k", [4, 5, 10])
def test_top_k_at_least_num_classes_is_one(k):
    assert top_k_accuracy(TOPK_GOLD, TOPK_PROBS, k) == 1.0


# --------------------------------------------------------------------------- report


def _report_inputs():
    # 4 classes, 8 examples
    gold = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    pred = np.array([0, 1, 1, 1, 2, 0, 3, 2])
    probs = np.full((8, 4), 0.1)
    for i, p in enumerate(pred):
        probs[i, p] = 0.7  # predicted class is the argmax, confidence 0.7
    # second choice: gold class where the prediction is wrong for examples 1 and 5 (-> top3
    # hits), not for example 7 (gold 3 is tied at 0.1 with the others; break it downward)
    probs[1, 0] = 0.15
    probs[1, 2] = 0.05
    probs[5, 2] = 0.15
    probs[5, 1] = 0.05
    probs[7, 3] = 0.01
    probs[7, 0] = 0.19
    return gold, pred, probs


def test_classification_report_matches_sklearn():
    gold, pred, probs = _report_inputs()
    labels = ["a", "b", "c", "d"]
    rep = classification_report(gold, pred, probs, labels, resamples=200)

    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=[0, 1, 2, 3],
                                                 zero_division=0)
    assert [row["label"] for row in rep["per_class"]] == labels
    for i, row in enumerate(rep["per_class"]):
        assert row["precision"] == pytest.approx(p[i])
        assert row["recall"] == pytest.approx(r[i])
        assert row["f1"] == pytest.approx(f[i])
        assert row["support"] == s[i] == 2
    # hand: class a: TP1 FP1 FN1 -> .5/.5; b: TP2 FP1 -> P 2/3 R 1; c: TP1 FP1 FN1; d: TP1 FN1
    assert [row["precision"] for row in rep["per_class"]] == pytest.approx([.5, 2 / 3, .5, 1.])
    assert [row["recall"] for row in rep["per_class"]] == pytest.approx([.5, 1., .5, .5])

    acc = rep["accuracy"]
    assert set(acc) == {"value", "ci_low", "ci_high", "n"}
    assert acc["value"] == pytest.approx(5 / 8) == pytest.approx(rep["accuracy_check"])
    assert acc["n"] == 8
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert set(rep["macro_f1"]) == {"value", "ci_low", "ci_high", "n"}
    assert rep["macro_f1"]["value"] == pytest.approx(np.mean(f))

    # top3: wrong examples 1 and 5 have the gold class second; example 7's gold is last.
    assert rep["top3_accuracy"] == pytest.approx(7 / 8)
    assert rep["top5_accuracy"] == 1.0  # only 4 classes
    # every confidence is 0.7 -> one bin; ECE = |5/8 - 0.7| = 0.075
    assert rep["ece"] == pytest.approx(0.075)
    assert len(rep["reliability"]) == 1 and rep["reliability"][0]["n"] == 8


# --------------------------------------------------------------------------- slices


def test_slice_table_worst_first_sizes_and_perfect_slice():
    # chat: 10 examples, 5 right (0.5); mail: 20, all right (1.0); web: 6, 4 right (0.667)
    groups = np.array(["chat"] * 10 + ["mail"] * 20 + ["web"] * 6)
    gold = np.zeros(36, dtype=int)
    pred = np.zeros(36, dtype=int)
    pred[:5] = 1          # 5 chat misses
    pred[30:32] = 1       # 2 web misses
    rows = slice_table(groups, gold, pred, "channel", resamples=200)

    assert [r["slice"] for r in rows] == ["channel=chat", "channel=web", "channel=mail"]
    assert [r["n"] for r in rows] == [10, 6, 20]
    assert [r["value"] for r in rows] == pytest.approx([0.5, 4 / 6, 1.0])
    values = [r["value"] for r in rows]
    assert values == sorted(values)
    mail = rows[-1]
    assert (mail["ci_low"], mail["ci_high"]) == (1.0, 1.0)
    for r in rows:
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
    assert sum(r["n"] for r in rows) == 36


def test_slice_table_ties_put_bigger_slice_first():
    groups = np.array(["x"] * 4 + ["y"] * 8)
    gold = np.zeros(12, dtype=int)
    pred = np.zeros(12, dtype=int)
    pred[0] = 1        # x: 3/4
    pred[4:6] = 1      # y: 6/8
    rows = slice_table(groups, gold, pred, "g", resamples=100)
    assert [r["slice"] for r in rows] == ["g=y", "g=x"]


# --------------------------------------------------------------------------- length buckets


def _parse(label: str) -> tuple[int, int]:
    lo, hi = label.split("-")
    return int(lo), int(hi)


def test_length_buckets_label_every_example_with_ordered_ranges():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 300, size=500)
    labels = length_buckets(lengths)
    assert labels.shape == lengths.shape
    assert all(isinstance(x, str) and x for x in labels.tolist())
    names = sorted(set(labels.tolist()), key=lambda s: _parse(s)[0])
    assert len(names) == 4
    ranges = [_parse(n) for n in names]
    for lo, hi in ranges:
        assert lo < hi
    for (_, hi), (lo_next, _) in zip(ranges[:-1], ranges[1:], strict=True):
        assert hi == lo_next  # contiguous, increasing
    assert ranges[0][0] == lengths.min() and ranges[-1][1] == lengths.max()
    for length, label in zip(lengths.tolist(), labels.tolist(), strict=True):
        lo, hi = _parse(label)
        assert lo <= length <= hi
    # longer texts never land in an earlier bucket
    order = {n: i for i, n in enumerate(names)}
    idx = np.array([order[x] for x in labels[np.argsort(lengths, kind="stable")]])
    assert np.all(np.diff(idx) >= 0)


def test_length_buckets_quartiles_of_1_to_100():
    labels = length_buckets(np.arange(1, 101))
    # quantiles 1, 25.75, 50.5, 75.25, 100 -> int edges 1, 25, 50, 75, 100
    assert sorted(set(labels.tolist()), key=lambda s: _parse(s)[0]) == [
        "1-25", "25-50", "50-75", "75-100"]
    assert labels[0] == "1-25" and labels[-1] == "75-100"
    assert labels[23] == "1-25"   # length 24
    assert labels[24] == "25-50"  # length 25 sits on an edge: goes up


def test_length_buckets_constant_lengths_single_bucket():
    labels = length_buckets(np.array([7, 7, 7, 7, 7]))
    assert labels.tolist() == ["7-7"] * 5


def test_length_buckets_few_distinct_values():
    # quantiles 3, 3, 3, 4.5, 9 -> int edges 3, 4, 9 (duplicates collapse): two buckets
    labels = length_buckets(np.array([3, 3, 3, 9]))
    assert labels.tolist() == ["3-4", "3-4", "3-4", "4-9"]


# --------------------------------------------------------------------------- gates


def _est(value: float, n: int = 400, half: float = 0.02) -> dict:
    return {"value": value, "ci_low": value - half, "ci_high": value + half, "n": n}


def _result(acc: float = 0.90, f1: float = 0.88, base_acc: float = 0.85,
            slices: list[dict] | None = None) -> dict:
    if slices is None:
        slices = [
            {"slice": "channel=chat", "n": 40, **_est(0.86, 40, 0.08)},
            {"slice": "channel=mail", "n": 300, **_est(0.91, 300, 0.03)},
        ]
    return {
        "split": "test",
        "metrics": {"accuracy": _est(acc), "macro_f1": _est(f1), "ece": 0.05,
                    "reliability": [{"n": 1}], "examples": 400},
        "baseline": {"accuracy": _est(base_acc), "macro_f1": _est(base_acc - 0.02)},
        "slices": slices,
    }


def _only(checks: list[dict], gate: str) -> dict:
    found = [c for c in checks if c["gate"] == gate]
    assert len(found) == 1, checks
    return found[0]


def test_no_gates_configured_gives_no_checks():
    assert check_gates(GateConfig(), _result()) == []


def test_min_gate_pass():
    check = _only(check_gates(GateConfig(min={"macro_f1": 0.85}), _result()), "min.macro_f1")
    assert check["passed"] is True
    assert check["value"] == pytest.approx(0.88)
    assert check["threshold"] == 0.85
    assert check["ci"] == pytest.approx((0.86, 0.90))
    assert "macro_f1" in check["detail"] and "0.8500" in check["detail"]
    assert "+0.0300" in check["detail"]


def test_min_gate_fail_mentions_metric_and_threshold():
    check = _only(check_gates(GateConfig(min={"accuracy": 0.95}), _result()), "min.accuracy")
    assert check["passed"] is False
    assert "accuracy" in check["detail"]
    assert "0.9500" in check["detail"]
    assert "0.9000" in check["detail"]
    assert "-0.0500" in check["detail"]


def test_min_gate_on_scalar_metric():
    check = _only(check_gates(GateConfig(min={"ece": 0.01}), _result()), "min.ece")
    assert check["passed"] is True
    assert check["ci"] is None
    assert check["value"] == pytest.approx(0.05)


def test_min_gate_unknown_metric_lists_available():
    check = _only(check_gates(GateConfig(min={"f2": 0.5}), _result()), "min.f2")
    assert check["passed"] is False
    assert "f2" in check["detail"]
    for name in ("accuracy", "macro_f1", "ece"):
        assert name in check["detail"]
    assert "reliability" not in check["detail"]  # lists are not headline metrics


def test_max_drop_vs_baseline_pass():
    checks = check_gates(GateConfig(max_drop_vs_baseline=0.0), _result(acc=0.90, base_acc=0.85))
    check = _only(checks, "max_drop_vs_baseline")
    assert check["passed"] is True
    assert check["value"] == pytest.approx(0.05)
    assert "0.8500" in check["detail"] and "+0.0500" in check["detail"]


def test_max_drop_vs_baseline_fail():
    checks = check_gates(GateConfig(max_drop_vs_baseline=0.02), _result(acc=0.80, base_acc=0.85))
    check = _only(checks, "max_drop_vs_baseline")
    assert check["passed"] is False
    assert check["value"] == pytest.approx(-0.05)
    assert "-0.0500" in check["detail"] and "0.0200" in check["detail"]


def test_max_drop_vs_baseline_skipped_without_baseline():
    result = _result()
    result["baseline"] = None
    assert check_gates(GateConfig(max_drop_vs_baseline=0.0), result) == []


def test_max_slice_drop_ignores_small_slices():
    slices = [
        {"slice": "channel=sms", "n": 5, **_est(0.20, 5, 0.3)},      # terrible but tiny
        {"slice": "channel=chat", "n": 40, **_est(0.86, 40, 0.08)},
        {"slice": "channel=mail", "n": 300, **_est(0.91, 300, 0.03)},
    ]
    gate = GateConfig(max_slice_drop=0.05, min_slice_size=30)
    check = _only(check_gates(gate, _result(acc=0.90, slices=slices)), "max_slice_drop")
    assert check["passed"] is True
    assert check["value"] == pytest.approx(0.04)
    assert "channel=chat" in check["detail"] and "channel=sms" not in check["detail"]


def test_max_slice_drop_fails_on_big_bad_slice():
    slices = [
        {"slice": "channel=chat", "n": 40, **_est(0.86, 40, 0.08)},
        {"slice": "channel=voice", "n": 120, **_est(0.70, 120, 0.06)},
        {"slice": "channel=mail", "n": 300, **_est(0.95, 300, 0.03)},
    ]
    gate = GateConfig(max_slice_drop=0.05, min_slice_size=30)
    check = _only(check_gates(gate, _result(acc=0.90, slices=slices)), "max_slice_drop")
    assert check["passed"] is False
    assert check["value"] == pytest.approx(0.20)
    assert "channel=voice" in check["detail"]
    assert "n=120" in check["detail"]
    assert "0.7000" in check["detail"] and "0.0500" in check["detail"]


def test_max_slice_drop_all_slices_too_small_adds_no_check():
    slices = [{"slice": "channel=sms", "n": 5, **_est(0.2, 5, 0.3)}]
    gate = GateConfig(max_slice_drop=0.05, min_slice_size=30)
    assert check_gates(gate, _result(slices=slices)) == []


def test_reference_gate_missing_file(tmp_path: Path):
    gate = GateConfig(reference=str(tmp_path / "nope"))
    check = _only(check_gates(gate, _result()), "reference")
    assert check["passed"] is False
    expected = tmp_path / "nope" / "eval" / "test" / "metrics.json"
    assert str(expected) in check["detail"]
    assert "not found" in check["detail"]


def _write_reference(root: Path, acc: float, split: str = "test") -> None:
    out = root / "eval" / split
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(
        {"split": split, "metrics": {"accuracy": _est(acc), "ece": 0.03}}))


def test_reference_gate_reads_metrics_json_pass(tmp_path: Path):
    _write_reference(tmp_path, 0.89)
    gate = GateConfig(reference=str(tmp_path), max_drop_vs_reference=0.0)
    check = _only(check_gates(gate, _result(acc=0.90)), "max_drop_vs_reference")
    assert check["passed"] is True
    assert check["value"] == pytest.approx(0.01)
    assert "0.8900" in check["detail"] and "+0.0100" in check["detail"]


def test_reference_gate_reads_metrics_json_fail(tmp_path: Path):
    _write_reference(tmp_path, 0.95)
    gate = GateConfig(reference=str(tmp_path), max_drop_vs_reference=0.01)
    check = _only(check_gates(gate, _result(acc=0.90)), "max_drop_vs_reference")
    assert check["passed"] is False
    assert check["value"] == pytest.approx(-0.05)
    assert check["threshold"] == 0.01
    assert "0.9500" in check["detail"] and "-0.0500" in check["detail"]


def test_reference_gate_uses_result_split(tmp_path: Path):
    _write_reference(tmp_path, 0.80, split="validation")
    gate = GateConfig(reference=str(tmp_path))
    # the result is for "test": the validation metrics must not be used
    assert _only(check_gates(gate, _result()), "reference")["passed"] is False
    result = _result()
    result["split"] = "validation"
    assert _only(check_gates(gate, result), "max_drop_vs_reference")["passed"] is True


def test_all_gates_together():
    gate = GateConfig(min={"accuracy": 0.8, "macro_f1": 0.9}, max_drop_vs_baseline=0.0,
                      max_slice_drop=0.1)
    checks = check_gates(gate, _result())
    assert [c["gate"] for c in checks] == ["min.accuracy", "min.macro_f1",
                                           "max_drop_vs_baseline", "max_slice_drop"]
    assert [c["passed"] for c in checks] == [True, False, True, True]


def test_a_result_exactly_on_the_threshold_passes():
    from evaluation.config import GateConfig
    from evaluation.gates import check_gates

    est = {"value": 0.85, "ci_low": 0.8, "ci_high": 0.9, "n": 100}
    base = {"value": 0.90, "ci_low": 0.85, "ci_high": 0.95, "n": 100}
    result = {"split": "test", "metrics": {"accuracy": est, "macro_f1": est},
              "baseline": {"accuracy": base, "macro_f1": base}, "slices": []}
    checks = check_gates(GateConfig(max_drop_vs_baseline=0.05), result)
    assert [c["passed"] for c in checks] == [True]


@pytest.mark.parametrize("n, k", [(40, 3), (600, 77)])
def test_batched_bootstrap_gives_the_interval_of_one_sklearn_call_per_resample(n, k):
    """Accuracy and macro-F1 are scored for all resamples at once: the same resamples and the
    same interval as scoring each with sklearn (labels absent from a resample included)."""
    rng = np.random.default_rng(k)
    gold = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.6, gold, rng.integers(0, k, n))
    for metric in (stats.macro_f1, stats.accuracy):
        fast = stats.bootstrap(metric, gold, pred, 300, seed=4)
        slow = stats.bootstrap(lambda g, p, m=metric: m(g, p), gold, pred, 300, seed=4)
        assert (fast.value, fast.low, fast.high) == pytest.approx(
            (slow.value, slow.low, slow.high), abs=1e-12)
