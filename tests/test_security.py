"""Secrets planted in the environment appear in no output of any command; data is never
interpolated; the local Ray exposes no dashboard."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import FAST, LAST, PLANTED
from trainers.cli import main

pytestmark = pytest.mark.usefixtures("ray_session")

def _leaks(paths: list[Path], texts: list[str]) -> list[str]:
    values = {name: os.environ[name] for name in PLANTED if os.environ.get(name)}
    pattern = re.compile("|".join(re.escape(v) for v in values.values()).encode())
    found = [str(p) for p in paths if p.is_file() and pattern.search(p.read_bytes())]
    found += [f"output {i}" for i, t in enumerate(texts) if pattern.search(t.encode())]
    return found


def test_planted_secrets_appear_in_no_file_log_report_manifest_or_output(tmp_path, monkeypatch,
                                                                    capsys):
    import ray

    started = time.time()
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
        args = proc.cmdline()
        assert "--host=127.0.0.1" in args
        http_port = int(next(a for a in args if a.startswith("--port=")).split("=")[1])
        # its HTTP port is not served at all (no dashboard); its internal gRPC port is Ray's
        exposed = [c.laddr for c in proc.net_connections() if c.status == "LISTEN"
                   and c.laddr.port == http_port and c.laddr.ip != "127.0.0.1"]
        assert not exposed, exposed
    assert is_token_auth_enabled()


def test_no_planted_secret_in_any_file_the_suite_wrote(tmp_path_factory):
    """Runs last (conftest): every file of every test — sweeps, distillation, compression,
    submitted jobs, W&B offline runs, reports — and the Ray session's logs."""
    import ray

    roots = [tmp_path_factory.getbasetemp(),
             Path(ray._private.worker._global_node.get_logs_dir_path())]
    files = [p for root in roots for p in root.rglob("*") if p.is_file()]
    assert files  # the whole suite's output (many thousand files in a full run)
    leaked = _leaks(files, [])
    assert not leaked, leaked


assert test_no_planted_secret_in_any_file_the_suite_wrote.__name__ == LAST  # conftest runs it last
