"""Seed groups: aggregation math, the group runner end to end, the group index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST, compose_run, logged, stop_while_training, train_run
from trainers.aggregate import aggregate_metrics, aggregate_slices, describe


def test_describe_on_fixed_numbers():
    s = describe([0.80, 0.82, 0.84, 0.86, 0.88])
    assert s["mean"] == pytest.approx(0.84)
    assert s["std"] == pytest.approx(np.sqrt(0.001))  # sample std, ddof=1
    assert (s["min"], s["max"], s["n"]) == (0.80, 0.88, 5)
    assert 0.80 <= s["ci_low"] < 0.84 < s["ci_high"] <= 0.88
    # the CI of a mean is narrower than the spread of single seeds
    assert s["ci_high"] - s["ci_low"] < 0.08
    same = describe([0.5, 0.5, 0.5])
    assert same["std"] == 0 and same["ci_low"] == same["ci_high"] == 0.5
    one = describe([0.7])
    assert one["std"] == 0 and one["ci_low"] == one["ci_high"] == 0.7


def test_aggregate_metrics_and_slices_across_seeds():
    per_seed = [{"test/accuracy": 0.9, "step": 10, "only_here": 1.0, "name": "x"},
                {"test/accuracy": 0.8, "step": 10}]
    agg = aggregate_metrics(per_seed)
    assert set(agg) == {"test/accuracy", "step"}  # only numbers every seed reported
    assert agg["test/accuracy"]["mean"] == pytest.approx(0.85)
    assert agg["test/accuracy"]["std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    slices = aggregate_slices([
        [{"slice": "channel=chat", "n": 40, "value": 0.5}, {"slice": "gold=a", "n": 9, "value": 1}],
        [{"slice": "channel=chat", "n": 40, "value": 0.7}, {"slice": "gold=a", "n": 9, "value": 1}],
    ])
    assert [s["slice"] for s in slices] == ["channel=chat", "gold=a"]  # worst first
    assert slices[0]["mean"] == pytest.approx(0.6) and slices[0]["examples"] == 40
    assert slices[0]["n"] == 2


@pytest.mark.usefixtures("ray_session")
def test_seed_group_trains_each_seed_once_and_aggregates(tmp_path):
    """Two seeds side by side (Ray tasks). A stop asked of the driver (what SIGTERM does)
    while both train reaches both: each checkpoints where it is and the group stops; the
    re-run resumes them, and every step is still trained once."""
    from trainers.metadata import config_group

    short = [*FAST, "trainer.max_steps=10", "trainer.epochs=2"]
    group_dir = tmp_path / "runs" / "grp"
    first = stop_while_training(
        lambda: train_run(tmp_path, [*short, "run_name=grp", "seeds=[0,1]"]),
        ready=lambda: all(_trained(group_dir / f"seed{k}") for k in (0, 1)))
    assert first["status"] == "stopped"
    statuses = [m["status"] for m in first["members"]]
    assert "stopped" in statuses  # the later one had most of its steps left
    for member in first["members"]:  # the other may have finished before the stop
        at = member["metrics"]["step"]
        assert member["status"] == "done" or 1 <= at < 10
        if member["status"] == "stopped":
            assert (Path(member["run_dir"]) / f"checkpoint_{at:06d}").is_dir()
    assert json.loads((group_dir / "group.json").read_text())["status"] == "running"

    summary = train_run(tmp_path, [*short, "run_name=grp", "seeds=[0,1]"])
    assert summary["status"] == "done" and summary["run_dir"] == str(group_dir)
    index = json.loads((group_dir / "group.json").read_text())
    assert index["status"] == "done" and index["seeds"] == [0, 1]
    assert [Path(m).name for m in index["members"]] == ["seed0", "seed1"]
    # the group id is the config hash without the seed: a lone run of it shares the id
    _, lone = compose_run(tmp_path, [*short, "run_name=lone", "seed=7"])
    assert index["config_group"] == config_group(lone)

    metas = [json.loads((Path(m) / "run_meta.json").read_text()) for m in index["members"]]
    assert [m["seed"] for m in metas] == [0, 1]
    assert {m["config_group"] for m in metas} == {index["config_group"]}
    finals = [json.loads((Path(m) / "metrics.json").read_text()) for m in index["members"]]
    assert finals[0]["dist/weights_hash"] != finals[1]["dist/weights_hash"]
    for m in index["members"]:  # each seed trained its steps once, and was evaluated
        assert [r["step"] for r in logged(m) if "train/loss" in r] == list(range(1, 11))
        assert (Path(m) / "eval" / "test" / "predictions.parquet").exists()

    agg = json.loads((group_dir / "aggregate.json").read_text())
    values = [f["test/accuracy"] for f in finals]
    assert agg["metrics"]["test/accuracy"]["mean"] == pytest.approx(np.mean(values))
    assert agg["metrics"]["test/accuracy"]["n"] == 2
    assert "test/ece" in agg["metrics"]  # from the evaluation harness, per seed
    assert any(s["slice"].startswith("channel=") for s in agg["slices"])
    lines = [json.loads(x) for x in (tmp_path / "runs" / "index.jsonl").read_text().splitlines()]
    assert sorted((x["group_name"], x["seed"]) for x in lines) == [("grp", 0), ("grp", 1)]

    again = train_run(tmp_path, [*short, "run_name=grp", "seeds=[0,1]"])  # nothing retrained
    assert all(m["metrics"].get("already_done") for m in again["members"])
    assert again["group"]["metrics"]["test/accuracy"]["mean"] == pytest.approx(np.mean(values))


def _trained(run_dir: Path) -> bool:
    """A step is logged (a line being written is not read as one)."""
    path = run_dir / "metrics.jsonl"
    return path.is_file() and '"train/loss"' in path.read_text().rpartition("\n")[0]
