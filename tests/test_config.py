"""Config composition and the CLI's handling of config mistakes (no Ray needed)."""

from __future__ import annotations

import json

import pytest

from data.errors import ConfigError
from shardtune.cli import main
from tests.conftest import compose_run
from trainers.config import PeftMethod, TaskKind, config_dict


def test_default_config_is_typed_and_absolute(tmp_path):
    run = compose_run(tmp_path, [])
    assert run.task.kind == TaskKind.seq_cls
    assert run.peft.method == PeftMethod.lora
    assert run.data.path[0].startswith("/") and run.data.path[0].endswith("sample/train.jsonl")
    assert run.run_dir == f"{tmp_path}/runs/default"
    assert run.data.name == "sample"


@pytest.mark.parametrize("overrides, expected", [
    (["task=causal_lm", "model=tiny_llama", "data=tinyshakespeare"], TaskKind.causal_lm),
    (["task=token_cls", "data=wnut17"], TaskKind.token_cls),
])
def test_group_choices_compose(tmp_path, overrides, expected):
    run = compose_run(tmp_path, overrides)
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
    (["train", "cluster=ray", "cluster.start_wait_s=0"], ["cluster.start_wait_s", "> 0"]),
    (["train", "cluster.threads=0"], ["cluster.threads", ">= 1"]),
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

    run = compose_run(tmp_path, ["trainer.max_failures=0"])
    old = json.loads(json.dumps(config_dict(run), default=str))
    old["cluster"]["max_failures"] = old["trainer"].pop("max_failures") + 2
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert load_run_config(tmp_path).trainer.max_failures == 2
    old["trainer"]["warp_speed"] = 9
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="trainer.warp_speed is not a key"):
        load_run_config(tmp_path)


def test_a_seed_group_passed_as_one_run_names_its_members(tmp_path):
    """``evaluate run=runs/<group>`` once said "not a shardtune run": it now says the folder is a
    seed group and names a member to pass instead."""
    from trainers.models import load_run_config

    (tmp_path / "group.json").write_text("{}")
    for member in ("seed1", "seed0"):
        (tmp_path / member).mkdir()
        (tmp_path / member / "config.json").write_text("{}")
    with pytest.raises(ConfigError,
                       match=r"is a seed group, not one run \(members: seed0, seed1\)"):
        load_run_config(tmp_path)
    (tmp_path / "group.json").unlink()
    with pytest.raises(ConfigError, match="is not a shardtune run"):
        load_run_config(tmp_path)


@pytest.mark.parametrize("overrides", [
    [], ["data=banking77", "seeds=[0,1]"], ["sweep=grid_example", "trainer.eval_every=2"],
    ["data.path=[a.jsonl]", "data.format=jsonl"],  # a one-entry list: a list in Hydra's tree
])
def test_records_written_from_hydras_tree_still_resume(tmp_path, overrides):
    """config.json, group.json and a sweep's identity.json were once written from Hydra's
    resolved tree (``data.path`` a string; the typed config holds a list): what was saved then
    resumes under the typed config, keeps its config group, and a real change is refused."""
    import dataclasses
    import hashlib

    from omegaconf import OmegaConf

    from shardtune.compose import compose, to_run_config
    from tests.conftest import SHARED
    from trainers.identity import identity, run_identity, write_json
    from trainers.metadata import NOT_CONFIG, config_group
    from trainers.train import _check_resume_config
    from tuning.seeds import check_group
    from tuning.sweep import IDENTITY_FILE, SWEEP_FREE, SWEEP_KEYS, check_identity

    cfg = compose([f"paths.root={tmp_path}", f"paths.datasets={SHARED}", *overrides])
    hydra = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True), default=str))
    run = to_run_config(cfg)
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "config.json").write_text(json.dumps(hydra))
    (saved / "run_meta.json").write_text(json.dumps(
        {"dataset": {"fingerprint": {"sha256": "a" * 64}}}))
    (saved / "group.json").write_text(json.dumps({"identity": run_identity(hydra, "a" * 64)}))
    write_json(saved / IDENTITY_FILE, identity(hydra, SWEEP_KEYS, SWEEP_FREE, "a" * 64))
    group_run = dataclasses.replace(run, paths=dataclasses.replace(run.paths,
                                                                   runs=str(tmp_path)))
    group_run = dataclasses.replace(group_run, run_name="saved")
    _check_resume_config(saved, run, {"sha256": "a" * 64})
    check_group(group_run, {"sha256": "a" * 64})
    check_identity(saved, run, {"sha256": "a" * 64})
    if not overrides or not overrides[0].startswith("data.path=["):  # the string form
        trimmed = {k: v for k, v in hydra.items() if k not in NOT_CONFIG}
        old_group = hashlib.sha256(json.dumps(trimmed, sort_keys=True).encode()).hexdigest()
        assert config_group(run) == old_group[:12]

    changed = dataclasses.replace(run, optim=dataclasses.replace(run.optim, lr=0.123))
    for check in (lambda: _check_resume_config(saved, changed, {"sha256": "a" * 64}),
                  lambda: check_group(dataclasses.replace(changed, paths=group_run.paths,
                                                          run_name="saved"), {"sha256": "a" * 64}),
                  lambda: check_identity(saved, changed, {"sha256": "a" * 64})):
        with pytest.raises(ConfigError, match=r"optim.lr \(.* → 0.123\) changed"):
            check()


def test_a_value_that_looks_like_an_interpolation_stays_text(tmp_path, monkeypatch):
    """The typed config is resolved once, at composition: a value that reads ``${oc.env:…}``
    is text when config.json/W&B's config is derived and when a sweep trial is built from it."""
    from tuning.space import apply_values

    monkeypatch.setenv("SHARDTUNE_TEST_SECRET", "s3cr3t")
    run = compose_run(tmp_path, [r"tracking.project=\${oc.env:SHARDTUNE_TEST_SECRET}"])
    trial = apply_values(run, {"optim.lr": 1e-3}, run_name="trial_x")
    assert type(trial) is type(run) and trial.optim.lr == 1e-3
    for one in (run, trial):
        assert one.tracking.project == "${oc.env:SHARDTUNE_TEST_SECRET}"
        assert "s3cr3t" not in json.dumps(config_dict(one), default=str)


# The yaml a user composes and the dataclass a test or a library caller builds must agree, or a
# default changed in one place (distill.inprocess_rows was 20,000 in the dataclass and 4,096 in
# conf/distill/default.yaml) silently differs between the CLI and the code. Deliberate gaps:
DELIBERATE = {"optim/adamw.yaml:lr": "the LoRA default; the dataclass keeps full fine-tuning's"}


def _yaml_vs_dataclass(node: dict, cls: type, where: str) -> list:
    import dataclasses
    import enum

    fields = {f.name: f for f in dataclasses.fields(cls)}
    gaps = []
    for key, value in node.items():
        if key not in fields:
            continue
        field_ = fields[key]
        default = (field_.default if field_.default is not dataclasses.MISSING else
                   field_.default_factory() if field_.default_factory is not dataclasses.MISSING
                   else dataclasses.MISSING)
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            gaps += _yaml_vs_dataclass(value, type(default), f"{where}.{key}")
            continue
        default = default.value if isinstance(default, enum.Enum) else default
        if default is not dataclasses.MISSING and value not in ("???", default):
            gaps.append((f"{where}:{key}", value, default))
    return gaps


def test_yaml_defaults_equal_the_dataclass_defaults():
    from pathlib import Path

    import yaml

    from cluster.submit_config import SubmitConfig
    from distill.config import DistillSpec
    from distill.quant_config import QuantizeConfig
    from evaluation.card import CardConfig
    from evaluation.config import BaselineConfig, CompareConfig, EvaluateConfig, ReportConfig
    from shardtune.config import JobConfig
    from trainers.config import OptimConfig

    conf = Path(__file__).resolve().parent.parent / "conf"
    pairs = {"distill/default.yaml": DistillSpec, "evaluate.yaml": EvaluateConfig,
             "baseline.yaml": BaselineConfig, "compare.yaml": CompareConfig,
             "report.yaml": ReportConfig, "quantize.yaml": QuantizeConfig,
             "submit.yaml": SubmitConfig, "card.yaml": CardConfig,
             "optim/adamw.yaml": OptimConfig, "train.yaml": JobConfig}
    gaps = [gap for name, cls in pairs.items()
            for gap in _yaml_vs_dataclass(yaml.safe_load((conf / name).read_text()), cls, name)
            if gap[0] not in DELIBERATE]
    assert gaps == []
