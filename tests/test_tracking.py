"""Local JSONL tracking and W&B in offline mode; the API key never lands in any file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST, PLUMBING_MODEL, logged, train_run

pytestmark = pytest.mark.usefixtures("ray_session")
def _wandb_records(path: Path) -> list[dict]:
    """Read an offline run's transaction log back with wandb's own inspector."""
    wandb_cli = Path(sys.executable).parent / "wandb"
    out = subprocess.run([str(wandb_cli), "leet", "inspect", "--json", str(path)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


FAKE_KEY = "shardtune0fake0key0" + "f" * 21  # 40 characters, the shape of a real key


def test_wandb_offline_run_records_config_and_summary_without_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_SILENT", "true")
    # A one-seed group: the member is named after the group and grouped by config hash.
    summary = train_run(tmp_path, [*FAST, PLUMBING_MODEL, "tracking=wandb", "trainer.max_steps=3",
                                   "run_name=tracked", "seeds=[3]", "tracking.log_artifacts=true"])
    run_dir = Path(summary["run_dir"]) / "seed3"
    offline = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 2  # the training run, then the same run resumed for the artifact
    records = [r for path in offline for r in _wandb_records(path)]
    ids = {r["run"]["run_id"] for r in records if r["type"] == "run"}
    assert len(ids) == 1  # resumed, not a new W&B run
    artifact = next(r["artifact"] for r in records if r["type"] == "artifact")
    assert artifact["type"] == "model" and artifact["name"] == "tracked-seed3"
    run = next(r["run"] for r in records if r["type"] == "run")
    meta = json.loads((run_dir / "run_meta.json").read_text())
    assert run["run_group"] == meta["config_group"] and run["job_type"] == "train"
    assert run["display_name"] == "tracked-seed3"
    config = run["config"]["update"]
    assert (config["seed"], config["run_name"], config["group_name"]) == (3, "seed3", "tracked")
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert [h["_step"] for h in history if "train/loss" in h] == [1, 2, 3]
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"]["update"])
    assert "val/accuracy" in summary and "test/macro_f1" in summary
    assert [r["step"] for r in logged(run_dir) if "train/loss" in r] == [1, 2, 3]
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file()
              and FAKE_KEY.encode() in p.read_bytes()]
    assert not leaked, leaked
