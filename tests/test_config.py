"""Config composition and the CLI's handling of config mistakes (no Ray needed)."""

from __future__ import annotations

import json

import pytest

from data.errors import ConfigError
from shardtune.cli import main
from tests.conftest import compose_run
from trainers.config import PeftMethod, TaskKind


def test_default_config_is_typed_and_absolute(tmp_path):
    run, resolved = compose_run(tmp_path, [])
    assert run.task.kind == TaskKind.seq_cls
    assert run.peft.method == PeftMethod.lora
    assert run.data.path[0].startswith("/") and run.data.path[0].endswith("sample/train.jsonl")
    assert run.run_dir == f"{tmp_path}/runs/default"
    assert resolved["data"]["name"] == "sample"


@pytest.mark.parametrize("overrides, expected", [
    (["task=causal_lm", "model=tiny_llama", "data=tinyshakespeare"], TaskKind.causal_lm),
    (["task=token_cls", "data=wnut17"], TaskKind.token_cls),
])
def test_group_choices_compose(tmp_path, overrides, expected):
    run, _ = compose_run(tmp_path, overrides)
    assert run.task.kind == expected


@pytest.mark.parametrize("argv, fragments", [
    (["train", "trainer.lrr=1"], ["trainer.lrr", "no such key"]),
    (["train", "optim.llr=1"], ["optim.llr", "did you mean optim.lr"]),
    (["train", "trainer.epochs=many"], ["trainer.epochs", "many"]),
    (["train", "task=regression"], ["'task'", "regression", "seq_cls"]),
    (["train", "model=gpt5"], ["'model'", "gpt5", "minilm"]),
    (["train", "optim.lr=-0.1"], ["optim.lr", "> 0"]),
    (["train", "optim.lr=0"], ["optim.lr", "> 0"]),
    (["train", "trainer.batch_size=0"], ["trainer.batch_size", ">= 1"]),
    (["train", "trainer.batch_size=-4"], ["trainer.batch_size", ">= 1"]),
    (["train", "cluster.num_workers=0"], ["cluster.num_workers", ">= 1"]),
    (["train", "run_name=../escape"], ["run_name"]),
    (["train", "data.val_fraction=1.5"], ["data.val_fraction"]),
    (["fly"], ["unknown verb", "train"]),
    (["train", "--epochs", "3"], ["--epochs", "key=value"]),
])
def test_config_mistakes_are_one_clear_line(argv, fragments, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_debug_flag_shows_traceback(capsys):
    assert main(["train", "optim.lr=-1", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_help_lists_groups_and_cfg_job_prints_resolved(capsys, tmp_path):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for group in ("task", "model", "data", "peft", "optim", "trainer", "cluster", "tracking"):
        assert f"  {group}" in out
    assert main(["train", f"paths.root={tmp_path}", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert f"runs: {tmp_path}/runs" in out and "kind: seq_cls" in out


def test_a_run_saved_by_an_older_version_loads_and_an_unknown_key_is_one_error(tmp_path):
    """``cluster.max_failures`` moved to ``trainer.max_failures``: a run saved before still
    loads (as a distillation teacher, an evaluation's run); a key no version knows is named."""
    from trainers.models import load_run_config

    _, resolved = compose_run(tmp_path, ["trainer.max_failures=0"])
    old = json.loads(json.dumps(resolved, default=str))
    old["cluster"]["max_failures"] = old["trainer"].pop("max_failures") + 2
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert load_run_config(tmp_path).trainer.max_failures == 2
    old["trainer"]["warp_speed"] = 9
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="trainer.warp_speed is not a key"):
        load_run_config(tmp_path)
