"""What a command shows: worker and library output goes to the command's log file; the console
keeps the progress line, errors and shardtune's own lines."""

from __future__ import annotations

import logging

from trainers import console_logs
from tuning.sweep_console import trial_number
from tuning.sweep_report import _trial_id


def test_worker_lines_go_to_the_log_file_and_only_progress_to_the_console(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.delenv("SHARDTUNE_VERBOSE", raising=False)
    log = tmp_path / "runs" / "x" / "console.log"
    lines = ["step 5/10  loss 1.2  40.0 samples/s  eta 3s",
             "Failed to query Ray Train Controller actor state. Continuing to monitor.",
             "pooler.dense.weight | UNEXPECTED |  |"]
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers")  # configured as it is after any model load
    propagates = logging.getLogger("transformers").propagate
    with console_logs.routed(log):
        console_logs._worker_lines({"lines": lines, "pid": 7, "actor_name": "RayTrainWorker"})
        logging.getLogger("transformers").warning("BertModel LOAD REPORT")
        logging.getLogger("ray.data").warning("Dataset execution finished")
        shown = console_logs._route["print_to_stdstream"] if "captured" in \
            console_logs._route else None
    assert shown is None  # Ray was not started inside: nothing of Ray's was replaced
    out = capsys.readouterr()
    assert out.out.splitlines() == [lines[0]] and "LOAD REPORT" not in out.err
    text = log.read_text()
    assert all(f"(RayTrainWorker pid=7) {line}" in text for line in lines)
    assert "LOAD REPORT" in text
    assert text.count("Dataset execution finished") == 1  # ray.data's lines once, not twice
    assert not console_logs._route  # restored after the command
    assert logging.getLogger("transformers").propagate == propagates  # its own setting back


def test_a_sweep_routes_no_worker_line_to_the_console_and_verbose_routes_nothing(
        tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SHARDTUNE_VERBOSE", raising=False)
    with console_logs.routed(tmp_path / "sweep.log", show_progress=False):
        console_logs._worker_lines({"lines": ["step 1/2  loss 1.0  1.0 samples/s  eta 1s"],
                                    "pid": 1})
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("SHARDTUNE_VERBOSE", "1")
    with console_logs.routed(tmp_path / "v.log"):
        assert console_logs.log_file() is None
    assert not (tmp_path / "v.log").exists()


def test_trials_are_named_by_number():
    assert trial_number("46f14_00000") == "t1" and trial_number("46f14_00011") == "t12"
    assert _trial_id("/x/run_trial_46f14_00002_2_optim_lr=0.0050_2026-12-01_21-50-54") == \
        "46f14_00002"
    assert _trial_id(None) is None


def test_a_one_seed_group_shows_no_collapsed_interval(capsys):
    from rich.console import Console

    from shardtune.console import print_group

    stat = {"mean": 0.9089, "std": 0.0, "ci_low": 0.9089, "ci_high": 0.9089, "min": 0.9089,
            "max": 0.9089, "n": 1}
    print_group({"group_name": "g", "seeds": [0], "config_group": "abc",
                 "metrics": {"test/accuracy": stat}, "slices": [], "wall_s": 1.0,
                 "concurrent_runs": 1}, Console(width=200))
    out = capsys.readouterr().out
    assert "n=1 seed" in out and "[0.9089, 0.9089]" not in out and "± 0.0000" not in out
