"""Secrets planted in the environment appear in no output of any command; data is never
interpolated; the local Ray exposes no dashboard."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import FAST
from trainers.cli import main

pytestmark = pytest.mark.usefixtures("ray_session")

# Every credential variable shardtune, wandb, the hub or fsspec's cloud backends might read.
PLANTED = {
    "WANDB_API_KEY": "wandb0planted0key0" + "a" * 22,
    "HF_TOKEN": "hf_planted0token0" + "b" * 20,
    "AWS_ACCESS_KEY_ID": "AKIAPLANTED0" + "C" * 8,
    "AWS_SECRET_ACCESS_KEY": "aws0planted0secret0" + "d" * 21,
    "AWS_SESSION_TOKEN": "aws0planted0session0" + "e" * 20,
    "GOOGLE_APPLICATION_CREDENTIALS": "/planted/gcp0credentials0file.json",
    "AZURE_STORAGE_KEY": "azure0planted0key0" + "f" * 22,
}


def _leaks(paths: list[Path], texts: list[str]) -> list[str]:
    found = []
    for name, value in PLANTED.items():
        needle = value.encode()
        found += [f"{name} in {p}" for p in paths if p.is_file() and needle in p.read_bytes()]
        found += [f"{name} in output {i}" for i, t in enumerate(texts) if value in t]
    return found


def test_planted_secrets_appear_in_no_file_log_report_or_manifest(tmp_path, monkeypatch,
                                                                    capsys):
    import ray

    started = time.time()
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # Data that looks like config interpolation is data: never resolved (else the key leaks).
    rows = [{"text": f"${{oc.env:WANDB_API_KEY}} example {i}", "label": "ab"[i % 2]}
            for i in range(40)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    root, run = f"paths.root={tmp_path}", tmp_path / "runs" / "tiny"
    small = [*FAST, "trainer.max_steps=2", "task.max_length=32", f"data.path={data}",
             "data.test_path=null", "data.val_fraction=0.25"]
    outputs = []
    commands = [
        ["train", root, *small, "run_name=tiny", "tracking=wandb"],
        ["evaluate", root, f"run={run}", "split=validation"],
        ["quantize", root, f"run={run}", "quant=dynamic_int8", "split=validation",
         "speed=false"],
        ["distill", root, f"teacher={run}", *small, "peft=none", "distill.control=false",
         "run_name=student"],
        ["report", root, f"runs=[{run}]"],
        ["submit", "--k8s", "--render", str(tmp_path / "rayjob.yaml"),
         "submit.k8s.image=repo/shardtune:0.1", "submit.k8s.wandb_secret=wandb",
         "submit.k8s.storage_pvc=runs", "train",
         "run_name=tiny"],
    ]
    for argv in commands:
        code = main(argv)
        out = capsys.readouterr()
        outputs += [out.out, out.err]
        assert code == 0, f"{argv[0]}: {out.err[-1500:]}"
    # the report's error analysis quotes the text literally
    assert "${oc.env:WANDB_API_KEY}" in (run / "eval" / "validation" / "report.md").read_text()
    assert (tmp_path / "rayjob.yaml").exists() and list(run.glob("wandb/offline-run-*"))
    files = list(tmp_path.rglob("*"))
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    files += [p for p in logs.rglob("*") if p.is_file() and p.stat().st_mtime >= started]
    leaked = _leaks(files, outputs)
    assert not leaked, leaked


def test_a_local_ray_serves_no_dashboard_off_loopback_and_requires_a_token():
    """What shardtune controls: no HTTP dashboard beyond 127.0.0.1. Ray's own RPC services
    listen on all interfaces (Ray 2.60 has no setting for it); its token auth guards them."""
    import psutil
    import ray
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    node = ray._private.worker._global_node
    for info in node.all_processes.get("dashboard", []):
        proc = psutil.Process(info.process.pid)
        assert "--host=127.0.0.1" in proc.cmdline()
        bound = {c.laddr.ip for c in proc.net_connections() if c.status == "LISTEN"}
        assert bound <= {"127.0.0.1"}, bound
    assert is_token_auth_enabled()
