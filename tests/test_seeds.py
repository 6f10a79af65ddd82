"""Seed groups: aggregation math, the group runner end to end, the group index."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from data.errors import ConfigError
from evaluation.aggregate import aggregate_metrics, aggregate_slices, describe
from tests.conftest import FAST, ROOT, compose_run, logged, stop_while_training, train_run


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
    lone = compose_run(tmp_path, [*short, "run_name=lone", "seed=7"])
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
    # the re-run placed only the seeds with steps left (a finished one only reports)
    assert summary["group"]["concurrent_runs"] == sum(m["status"] == "stopped"
                                                      for m in first["members"])
    assert again["group"]["concurrent_runs"] == 1  # none had: no task holds a core for it
    assert again["group"]["metrics"]["test/accuracy"]["mean"] == pytest.approx(np.mean(values))

    # the same group name with other data: refused before anything is read or trained
    before = (group_dir / "aggregate.json").read_bytes()
    with pytest.raises(ConfigError, match=r"grp holds a seed group of another configuration: "
                                          r"data.max_examples \(None → 200\) changed"):
        train_run(tmp_path, [*short, "run_name=grp", "seeds=[0,1]", "data.max_examples=200"])
    assert (group_dir / "aggregate.json").read_bytes() == before


def test_group_and_run_refuse_other_data_contents(tmp_path):
    """Same config keys, other file contents: the data's hash names the change."""
    from trainers.config import config_dict
    from trainers.identity import DATA_CONTENT, run_identity
    from trainers.train import _check_resume_config
    from tuning.seeds import check_group

    run = compose_run(tmp_path, [*FAST, "run_name=g", "seeds=[0]"])
    group = Path(run.run_dir)
    group.mkdir(parents=True)
    (group / "group.json").write_text(json.dumps(
        {"identity": run_identity(config_dict(run), "a" * 64)}))
    check_group(run)  # the config alone matches
    check_group(run, {"sha256": "a" * 64})
    with pytest.raises(ConfigError, match=re.escape(f"{DATA_CONTENT} changed")):
        check_group(run, {"sha256": "b" * 64})
    one = tmp_path / "one"
    one.mkdir()
    (one / "config.json").write_text(json.dumps(config_dict(run), default=str))
    (one / "run_meta.json").write_text(json.dumps(
        {"dataset": {"fingerprint": {"sha256": "a" * 64}}}))
    _check_resume_config(one, run, {"sha256": "a" * 64})
    with pytest.raises(ConfigError, match=re.escape(f"checkpoints of another configuration: "
                                                    f"{DATA_CONTENT} changed")):
        _check_resume_config(one, run, {"sha256": "b" * 64})


def test_a_run_resumes_where_a_new_submission_unpacked_its_code(tmp_path):
    """A Ray job's code (and the sample shipped with it) lands in a new working_dir on each
    submission: the checkpoints of the run the last one started are the same run's (and a
    seed group's and a sweep's records the same), unless the shipped data's contents or its
    place in the code changed."""
    import shutil

    from data.shards import Shard, fingerprint
    from trainers.config import config_dict
    from trainers.identity import DATA_CONTENT, data_digest, run_identity, write_json
    from trainers.train import _check_resume_config
    from tuning.seeds import check_group, group_identity
    from tuning.sweep import IDENTITY_FILE, check_identity

    def submission(name: str, train_text: str | None = None) -> tuple:
        code = tmp_path / name
        shutil.copytree(ROOT / "data" / "sample", code / "data" / "sample")
        if train_text is not None:
            (code / "data" / "sample" / "train.jsonl").write_text(train_text)
        run = compose_run(tmp_path, [*FAST, "run_name=r", f"paths.code={code}"])
        files = [*run.data.path, *run.data.test_path]  # one location each: the sample's
        return run, fingerprint([Shard(f) for f in files])

    first, first_data = submission("_ray_pkg_a")
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config_dict(first), default=str))
    (run_dir / "run_meta.json").write_text(json.dumps({"dataset": {"fingerprint": first_data}}))
    again, again_data = submission("_ray_pkg_b")
    assert again.data.path != first.data.path and again_data["sha256"] != first_data["sha256"]
    _check_resume_config(run_dir, again, again_data)  # the same run: resumed
    assert data_digest(first_data, "/elsewhere") == first_data["sha256"]  # data elsewhere

    # a seed group's and a sweep's records the same way (as this version writes them)
    (run_dir / "group.json").write_text(json.dumps(
        {"identity": group_identity(first, first_data)}))
    check_group(again, again_data)
    sweep_dir = tmp_path / "sweep"
    write_json(sweep_dir / IDENTITY_FILE, check_identity(sweep_dir, first, first_data))
    check_identity(sweep_dir, again, again_data)

    rows = (ROOT / "data" / "sample" / "train.jsonl").read_text().splitlines()
    edited, edited_data = submission("_ray_pkg_c", "\n".join(rows[1:]) + "\n")
    for check in (lambda: _check_resume_config(run_dir, edited, edited_data),
                  lambda: check_group(edited, edited_data),
                  lambda: check_identity(sweep_dir, edited, edited_data)):
        with pytest.raises(ConfigError, match=re.escape(f"{DATA_CONTENT} changed")):
            check()
    # a group recorded by an earlier version (paths as written) compares as it did: where
    # the code was, it continues; moved, it is refused (and rewritten once it runs again)
    (run_dir / "group.json").write_text(json.dumps(
        {"identity": run_identity(config_dict(first), first_data["sha256"])}))
    check_group(first, first_data)
    with pytest.raises(ConfigError, match=r"data.path \("):
        check_group(again, again_data)
    moved = compose_run(tmp_path, [*FAST, "run_name=r", f"paths.code={tmp_path / '_ray_pkg_b'}",
                                   f"data.test_path={again.data.path[0]}"])
    with pytest.raises(ConfigError, match=r"data.test_path \('\$\{paths.code\}/data/sample/"
                                          r"test.jsonl' → '\$\{paths.code\}/data/sample/"
                                          r"train.jsonl'\)"):
        _check_resume_config(run_dir, moved, again_data)


def _trained(run_dir: Path) -> bool:
    """A step is logged (a line being written is not read as one)."""
    path = run_dir / "metrics.jsonl"
    return path.is_file() and '"train/loss"' in path.read_text().rpartition("\n")[0]
