"""Local JSONL tracking and W&B in offline mode; the API key never lands in any file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FAST, logged, train_run

pytestmark = pytest.mark.usefixtures("ray_session")
FAKE_KEY = "shardtune0fake0key0" + "f" * 21  # 40 characters, the shape of a real key


def test_wandb_offline_run_records_config_and_summary_without_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = train_run(tmp_path, [*FAST, "tracking=wandb", "trainer.max_steps=3",
                                   "run_name=tracked", "seed=3"])
    run_dir = Path(summary["run_dir"])
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    files = offline[0] / "files"
    config = (files / "config.yaml").read_text()
    assert "run_name" in config and "tracked" in config and "seed" in config
    wandb_summary = (files / "wandb-summary.json").read_text()
    assert "val/accuracy" in wandb_summary
    assert [r["step"] for r in logged(run_dir) if "train/loss" in r] == [1, 2, 3]
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file()
              and FAKE_KEY.encode() in p.read_bytes()]
    assert not leaked, leaked
