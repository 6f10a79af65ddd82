"""The README's "Your own data": ``data.path`` alone means the user's files, not the sample's
test split, metadata fields and name with only the training path swapped (issue #21)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shardtune.cli import main
from shardtune.compose import CONF_DIR, compose
from shardtune.overrides import data_name, own_data_overrides
from tests.conftest import SHARED, compose_run

ROOT = Path(__file__).resolve().parent.parent
QUEUES = ("payments", "shipping", "accounts")  # none of the sample's six labels


def test_readme_own_data_example_trains_on_the_users_data_alone(tmp_path, monkeypatch, capsys,
                                                                ray_session):
    tickets = tmp_path / "data" / "tickets"
    tickets.mkdir(parents=True)
    (tickets / "part0.jsonl").write_text("".join(
        json.dumps({"body": f"{queue} question number {i}", "queue": queue}) + "\n"
        for i in range(12) for queue in QUEUES))
    monkeypatch.chdir(tmp_path)  # runs/ lands here, as for a user in their project folder
    short = ["trainer.max_steps=2", "task.max_length=32"]
    assert main(["train", *short]) == 0  # `make run` first, as the README has it: runs/default
    block = (ROOT / "README.md").read_text().split("Your own data:", 1)[1]
    command = re.search(r"shardtune train (data\.path=/data/tickets/ .*?)\n(?!  )", block, re.S)
    readme = command[1].replace("\\\n", " ").replace("/data/tickets/", f"{tickets}/")
    code = main(["train", *readme.split(), *short])
    assert code == 0, capsys.readouterr().err[-2000:]
    run_dir = tmp_path / "runs" / "tickets"
    meta = json.loads((run_dir / "run_meta.json").read_text())
    assert set(meta["dataset"]["splits"]) == {"train", "validation"}  # no test split
    assert sorted(meta["dataset"]["labels"]) == sorted(QUEUES)
    assert meta["dataset"]["name"] == "tickets"
    data = json.loads((run_dir / "config.json").read_text())["data"]
    assert data["path"] == f"{tickets}/" and data["test_path"] is None
    assert data["metadata_fields"] == [] and data["name"] == "tickets"


def test_data_path_alone_composes_the_users_data_and_a_group_choice_is_kept(tmp_path):
    run = compose_run(tmp_path, [f"data.path={tmp_path}/x.csv", "data.format=csv"])
    assert run.data.path == [f"{tmp_path}/x.csv"] and run.data.format.value == "csv"
    assert run.data.test_path is None and run.data.validation_path is None
    assert run.data.metadata_fields == [] and run.data.name == "x"
    run = compose_run(tmp_path, [f"data.path={tmp_path}/x.jsonl", "data.name=mine"])
    assert run.data.name == "mine" and run.data.format.value == "auto"
    baseline = compose([f"data.path={tmp_path}/x.csv", f"paths.root={tmp_path}"], "baseline")
    assert baseline.data.test_path is None and baseline.data.name == "x"
    for choice in (["data=banking77"], ["experiment=banking77_lora"]):
        run = compose_run(tmp_path, [*choice, f"data.path={tmp_path}/b.csv"])
        assert run.data.name == "banking77" and run.data.path == [f"{tmp_path}/b.csv"]
        assert run.data.test_path == [f"{SHARED}/banking77/test.csv"]
    run = compose_run(tmp_path, ["data=sample", f"data.path={tmp_path}/t.jsonl"])
    assert run.data.metadata_fields == ["channel"] and run.data.test_path is not None
    evaluate = ["run=runs/default", f"data.path={tmp_path}/x.csv"]
    assert own_data_overrides(evaluate, "evaluate", CONF_DIR) == evaluate  # the run's own data


def test_an_exported_experiment_with_data_path_reads_the_users_data(tmp_path, monkeypatch):
    """A sweep's ``<name>_best`` experiment keeps ``data.path`` without a data group."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "mine_best.yaml").write_text(
        "# @package _global_\ndata:\n  path: /data/intents/train.csv\n  format: csv\n")
    assert own_data_overrides(["experiment=mine_best"], "train", conf) == [
        "data=custom", "data.name='intents'", "experiment=mine_best"]
    assert own_data_overrides(["experiment=banking77_lora", "data.path=/x.csv"], "train",
                              CONF_DIR) == ["experiment=banking77_lora", "data.path=/x.csv"]


@pytest.mark.parametrize("path, name", [
    ("/data/tickets/", "tickets"), ("/data/tickets/train.jsonl", "tickets"),
    ("s3://bucket/intents/*.parquet", "intents"), ("[a.parquet,b.parquet]", "a"),
    ("${paths.datasets}/clinc/train.json#rows", "clinc"), ("train.csv", "custom"),
    ("/srv/my tickets/all.jsonl.gz", "my_tickets"),
])
def test_data_name_comes_from_the_path(path, name):
    assert data_name(path) == name


def test_unknown_extension_without_format_is_one_line(tmp_path, capsys, ray_session):
    data = Path(tmp_path) / "tickets.dat"
    data.write_text("".join(json.dumps({"text": f"t {i}", "label": "ab"[i % 2]}) + "\n"
                            for i in range(20)))
    assert main(["train", f"paths.root={tmp_path}", f"data.path={data}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "data.format" in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_ray_data_console_keeps_the_user_error_filter_in_a_fresh_process():
    """A CLI process attaches the filter right after ``ray.init``, before anything imported
    ray.data, whose import replaces its handlers: a bad row then printed Ray's ERROR lines and
    a stack trace before the one-line error. (The test session imported ray.data long ago.)"""
    import subprocess
    import sys

    probe = ("import logging\nfrom data.errors import HideUserErrors, hide_user_error_logs\n"
             "hide_user_error_logs()\nimport ray.data\n"
             "handlers = [h for h in logging.getLogger('ray.data').handlers\n"
             "            if type(h).__name__ == 'PlainRayHandler']\n"
             "assert handlers and all(any(isinstance(f, HideUserErrors) for f in h.filters)\n"
             "                        for h in handlers), handlers\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).parent.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
