"""Sweeps (Ray Tune, each trial a Ray Train job) and ablations, on real data."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from data.errors import ConfigError
from shardtune.cli import main
from tests.conftest import (
    FAST,
    HEAVY_TIMEOUT_S,
    PLUMBING_MODEL,
    SHARED,
    compose_run,
    needs_shared,
)
from tuning.config import SweepSpec
from tuning.space import validate

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("change, message", [
    ({"space": {"optim.llr": {"loguniform": [1e-4, 1e-3]}}}, "did you mean optim.lr?"),
    ({"space": {"peft.r": {"choice": []}}}, "choice has no values"),
    ({"space": {"optim.lr": {"uniform": [1e-2, 1e-4]}}}, "inverted or empty range"),
    ({"space": {"optim.lr": {"loguniform": [0, 1e-3]}}}, "loguniform needs low > 0"),
    ({"space": {"optim.lr": {"normal": [0, 1]}}}, "unknown distribution 'normal'"),
    ({"space": {"peft.r": {"uniform": [2.0, 8.0]}}}, "does not fit"),  # a float for an int
    ({"metric": "val/bleu"}, "is not reported during training"),
    ({"search": "grid", "space": {"optim.lr": {"uniform": [1e-4, 1e-3]}}}, "finite axes"),
    ({"search": "tpe", "space": {"peft.r": {"grid": [4, 8]}}}, "cannot take grid axes"),
])
def test_bad_sweep_definitions_fail_before_any_trial(change, message, tmp_path):
    run = compose_run(tmp_path, ["sweep=grid_example", "trainer.eval_every=2"])
    spec = dataclasses.replace(SweepSpec(name="x", space={"peft.r": {"choice": [4]}}), **change)
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")):
        validate(spec, run, has_validation=True)


@pytest.mark.parametrize("task", ["embedding", "rerank"])
def test_every_task_can_be_swept_on_what_its_validation_reports(task, tmp_path):
    """A sweep of an embedding or reranker run was a KeyError before any check ran."""
    from trainers.tasks import REPORTED

    run = compose_run(tmp_path, ["sweep=grid_example", "trainer.eval_every=2", f"task={task}"])
    for name in REPORTED[run.task.kind]:
        validate(SweepSpec(name="x", space={"peft.r": {"choice": [4]}}, metric=f"val/{name}"),
                 run, has_validation=True)
    with pytest.raises(ConfigError, match=f"not reported during training for task {task}"):
        validate(SweepSpec(name="x", space={"peft.r": {"choice": [4]}},
                           metric="val/accuracy"), run, has_validation=True)


def test_nested_and_dotted_axes_are_the_same_axis():
    from tuning.config import flatten_space

    assert flatten_space({"optim": {"lr": {"grid": [1, 2]}}, "peft.r": {"choice": [4]}}) == \
        {"optim.lr": {"grid": [1, 2]}, "peft.r": {"choice": [4]}}
    with pytest.raises(ConfigError, match="given twice"):
        flatten_space({"optim": {"lr": {"grid": [1]}}, "optim.lr": {"grid": [2]}})


def test_sweep_cli_refuses_asha_without_intermediate_evaluations(tmp_path, capsys):
    code = main(["sweep", "sweep=lora_lr_rank", f"paths.root={tmp_path}"])
    assert code == 2
    assert "trainer.eval_every" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing started


SWEEP = ["data=agnews_subset", f"paths.datasets={SHARED}", "data.max_examples=300",
         "task.max_length=32", "trainer.batch_size=16", "trainer.max_steps=4",
         "trainer.eval_every=2", "trainer.log_every=4", "sweep=smoke",
         # the evaluation at step 2 is ASHA's first rung: the weak trial is cut there
         # the smoke sweep with its last trial replaced by one that crashes when it starts (a
         # learning rate the trial's config refuses): recorded as failed with its error
         "sweep.space={optim.lr:{grid:[4.0e-3,1.0e-6,-1.0]}}",
         "sweep.name=pytest_sweep", "sweep.trial_cpus=0.4", "sweep.max_concurrent_trials=1"]


def _terminated(tune_dir: Path) -> list[str]:
    """Trial ids Tune's saved experiment state records as finished (completed or stopped)."""
    states = list(tune_dir.glob("experiment_state-*.json"))
    try:
        data = json.loads(states[0].read_text()) if states else {"trial_data": []}
    except json.JSONDecodeError:  # caught mid-write
        return []
    trials = [json.loads(entry[0]) for entry in data["trial_data"]]
    return [t["trial_id"] for t in trials if t["status"] == "TERMINATED"]


def _killed_midway(args: list[str], sweep_dir: Path) -> None:
    """Start the sweep as its own driver on the session's Ray; SIGKILL it once Tune's saved
    state records a trial that ASHA stopped early and before every trial has ended.

    Trials run one at a time, the weak one second: ASHA cuts it against the first one's
    rungs. (Tune does not save the scheduler's rungs, so it must happen before the kill.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    import ray

    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-m", "shardtune.cli", "sweep", *args,
                             f"cluster.address={address}"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            ended = _terminated(sweep_dir / "tune")
            stopped = [t for t in ended
                       if not (sweep_dir / f"trial_{t}" / "metrics.json").exists()]
            if stopped and len(ended) < 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@needs_shared
@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(HEAVY_TIMEOUT_S)
def test_sweep_killed_midway_resumes_stops_weak_trials_and_exports_a_reproducible_best(
        tmp_path, capsys, monkeypatch):
    import torch
    from ray.util import placement_group_table

    # the best trial's experiment goes into a copy of conf/, the one the CLI composes from here
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    monkeypatch.setattr("shardtune.compose.CONF_DIR", conf)
    best_file = conf / "experiment" / "pytest_sweep_best.yaml"
    sweep_dir = tmp_path / "runs" / "pytest_sweep"
    export = f"sweep.export_dir={best_file.parent}"
    try:
        _killed_midway([*SWEEP, f"paths.root={tmp_path}", export], sweep_dir)
        done = _terminated(sweep_dir / "tune")
        assert 1 <= len(done) < 3
        logs = {t: (sweep_dir / f"trial_{t}" / "metrics.jsonl").stat().st_mtime for t in done}
        # the same command again: restored; finished trials are not re-run
        assert main(["sweep", *SWEEP, f"paths.root={tmp_path}", export]) == 0
        summary = json.loads((sweep_dir / "sweep.json").read_text())
        assert summary["resumed"] is True
        assert {t: (sweep_dir / f"trial_{t}" / "metrics.jsonl").stat().st_mtime
                for t in done} == logs
        assert summary["trials"] == 3 and summary["status"].get("error", 0) == 1
        [failed] = [r for r in summary["table"] if r["status"] == "error"]
        assert failed["optim.lr"] == -1.0 and "optim.lr" in failed["error"]
        assert summary["status"].get("stopped early", 0) >= 1  # ASHA cut a weak trial
        assert summary["best"]["config"]["optim.lr"] >= 4e-3
        assert (sweep_dir / "results.csv").read_text().count("\n") == 4
        for png in summary["plots"]:
            assert (sweep_dir / png).stat().st_size > 1000
        assert summary["placement_groups_left"] == 0  # stopped trials released their workers
        left = [pg for pg in placement_group_table().values() if pg["state"] != "REMOVED"]
        assert not left, left

        # the exported experiment reproduces the best trial exactly: in local mode, as the
        # trial trained in its actor, and with one torch thread, as Ray gave that actor (the
        # same arithmetic; two threads on a busy 2-core machine also ran 10x slower)
        best_metric = summary["best"]["val/accuracy"]
        assert best_file.exists()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert main(["train", "experiment=pytest_sweep_best", f"paths.root={tmp_path}",
                         f"paths.datasets={SHARED}", "cluster=local"]) == 0
        finally:
            torch.set_num_threads(threads)
        final = json.loads((tmp_path / "runs" / "pytest_sweep_best" / "metrics.json")
                           .read_text())
        assert final["val/accuracy"] == pytest.approx(best_metric, abs=1e-9)
        [best_row] = [r for r in summary["table"] if r["trial"] == summary["best"]["trial"]]
        trial = json.loads((sweep_dir / f"trial_{best_row['trial_id']}" / "metrics.json")
                           .read_text())
        assert final == trial  # every metric, and the weights' hash (dist/weights_hash)
        assert (sweep_dir / "pytest_sweep_best.yaml").read_text() == best_file.read_text()

        # the same sweep name under another configuration: refused before anything starts
        before, best_text = (sweep_dir / "sweep.json").read_bytes(), best_file.read_text()
        changed = [*SWEEP, "trainer.eval_every=3", "sweep.max_trials=2"]
        capsys.readouterr()
        assert main(["sweep", *changed, f"paths.root={tmp_path}"]) == 2
        err = capsys.readouterr().err
        assert "holds a sweep of another configuration: sweep.max_trials (8 → 2), " \
               "trainer.eval_every (2 → 3) changed" in err
        # under its own run_name that configuration runs its own trials, into its own folder:
        # the same values twice, the second in the process the first one trained in (Tune
        # reuses the trial's actor), ending with the same weights (nothing carried over)
        other = [*changed, "run_name=pytest_other", PLUMBING_MODEL,
                 "sweep.space={optim.lr:{grid:[5.0e-3,5.0e-3]}}",
                 "trainer.max_steps=2", "trainer.eval_every=2", "sweep.scheduler=fifo",
                 f"sweep.export_dir={tmp_path / 'exp'}", f"paths.root={tmp_path}"]
        assert main(["sweep", *other]) == 0
        # its console: one line per trial event, then the result table; no worker output
        shown = capsys.readouterr().out.splitlines()
        for i, trial in enumerate(("t1", "t2")):
            assert shown[2 * i] == f"  {trial} started    optim.lr=0.005", shown
            assert re.fullmatch(rf"  {trial} completed     val/accuracy 0\.\d{{4}} at step 2",
                                shown[2 * i + 1])
        assert shown[4].startswith("sweep pytest_other: 2 trials (2 completed)")
        assert sorted(line.split()[0] for line in shown[5:7]) == ["t1", "t2"]
        assert shown[7].startswith("best:") and len(shown) == 9 and "report:" in shown[8]
        other_dir = tmp_path / "runs" / "pytest_other"
        mine = json.loads((other_dir / "sweep.json").read_text())
        assert mine["resumed"] is False and mine["trials"] == 2
        first, second = (json.loads((other_dir / f"trial_{r['trial_id']}" / "metrics.json")
                                    .read_text()) for r in mine["table"])
        assert first == second and first["dist/weights_hash"]  # bit-identical weights
        pids = {json.loads(line)["pid"] for result in other_dir.glob("tune/run_trial_*/result.json")
                for line in result.read_text().splitlines()}
        assert len(pids) == 1, pids  # one process trained both
        assert mine["best"]["experiment"] == str(tmp_path / "exp" / "pytest_other_best.yaml")
        assert (tmp_path / "runs" / "pytest_other" / "pytest_other_best.yaml").is_file()
        assert (sweep_dir / "sweep.json").read_bytes() == before
        assert best_file.read_text() == best_text
    finally:  # nothing written into the checkout's conf/
        assert not list((ROOT / "conf").glob("*/pytest_*.yaml"))


@pytest.mark.usefixtures("ray_session")
def test_ablation_with_two_variants_writes_the_delta_table(tmp_path, capsys):
    assert main(["ablate", "ablation=sample_smoke", f"paths.root={tmp_path}", *FAST]) == 0
    root = tmp_path / "runs" / "sample_smoke"
    out = json.loads((root / "ablation.json").read_text())
    assert [v["variant"] for v in out["variants"]] == ["r2", "negative_control"]
    control = out["variants"][1]
    assert control["effects"]["accuracy"]["high"] < 0  # the loss is detected
    assert control["verdict"] == "stop"
    text = (root / "report.md").read_text()
    assert "| r2 |" in text and "| negative_control |" in text and "p=" in text
    for arm in ("baseline", "r2", "negative_control"):
        assert (root / arm / "aggregate.json").exists()
    # re-run with other data: refused before any arm trains, the ablation left as it was
    before = (root / "ablation.json").read_bytes()
    assert main(["ablate", "ablation=sample_smoke", f"paths.root={tmp_path}", *FAST,
                 "data.max_examples=100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a seed group of another configuration: data.max_examples" in err
    assert len(err.splitlines()) == 1 and (root / "ablation.json").read_bytes() == before
