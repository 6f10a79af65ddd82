"""Secrets planted in the environment appear in no output of any command; data is never
interpolated; the local Ray exposes no dashboard."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from shardtune.cli import main
from tests.conftest import (
    FAST,
    LAST,
    PLANTED,
    PLUMBING_MODEL,
    SET_BY_TESTS,
    WAIT_FOR_OTHERS_S,
    other_workers_output,
)

pytestmark = pytest.mark.usefixtures("ray_session")

def _secrets(more: tuple[str, ...] = ()) -> list[str]:
    """The planted values and every fake secret a test set with monkeypatch (conftest)."""
    planted = [os.environ[name] for name in PLANTED if os.environ.get(name)]
    return sorted({*planted, *SET_BY_TESTS, *more})


def _readable(path: Path) -> bytes:
    """A file's bytes as a secret would show in them: parquet's (compressed) columns as
    values, gzip/bz2/xz/zip members decompressed; anything else as stored."""
    raw = path.read_bytes()
    with contextlib.suppress(Exception):  # not what its name says: searched as stored
        if path.suffix == ".parquet" or raw[:4] == b"PAR1":
            import pyarrow.parquet as pq

            return raw + json.dumps(pq.read_table(path).to_pylist(), default=str).encode()
        if raw[:2] == b"\x1f\x8b":
            return raw + gzip.decompress(raw)
        if raw[:3] == b"BZh":
            return raw + bz2.decompress(raw)
        if raw[:6] == b"\xfd7zXZ\x00":
            return raw + lzma.decompress(raw)
        if raw[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(path) as archive:  # stored members are in raw already
                return raw + b"".join(archive.read(i) for i in archive.infolist()
                                      if i.compress_type != zipfile.ZIP_STORED)
    return raw


def _file_leaks(path: Path, secrets: list[bytes]) -> bool:
    return path.is_file() and any(secret in _readable(path) for secret in secrets)


def _leaks(paths: list[Path], texts: list[str], more: tuple[str, ...] = ()) -> list[str]:
    # bytes containment per secret, not one regex alternation: the suite writes ~2 GB (model
    # weights in every run and checkpoint), scanned in 3 s instead of 18 s here. Many files:
    # a forked process per core, up to 4 (the last test runs alone: the other pytest processes
    # have ended, their cores are idle)
    secrets = [v.encode() for v in _secrets(more)]
    if len(paths) > 200 and len(os.sched_getaffinity(0)) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        cores = min(4, len(os.sched_getaffinity(0)))
        with ProcessPoolExecutor(cores, multiprocessing.get_context("fork")) as pool:
            flags = list(pool.map(_file_leaks, paths, [secrets] * len(paths), chunksize=8))
    else:
        flags = [_file_leaks(p, secrets) for p in paths]
    found = [str(p) for p, leaked in zip(paths, flags, strict=True) if leaked]
    found += [f"output {i}" for i, t in enumerate(texts)
              if any(secret in t.encode() for secret in secrets)]
    return found


def test_the_scan_reads_parquet_compressed_files_and_keys_other_tests_set(tmp_path,
                                                                         monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    secret = PLANTED["WANDB_API_KEY"]
    texts = [f"row {i:03d}" + (f" quoting {secret}" if i == 50 else "") for i in range(100)]
    pq.write_table(pa.table({"text": texts}), tmp_path / "predictions.parquet",
                   compression="zstd")  # the secret mid-column: not in the min/max stats
    (tmp_path / "log.gz").write_bytes(gzip.compress(secret.encode() * 10))
    (tmp_path / "log.xz").write_bytes(lzma.compress(secret.encode() * 10))
    with zipfile.ZipFile(tmp_path / "bundle.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("inner.txt", secret * 10)
    files = sorted(tmp_path.iterdir())
    assert not any(secret.encode() in p.read_bytes() for p in files)  # hidden from a grep
    assert _leaks(files, []) == [str(p) for p in files]
    clean = tmp_path / "clean"  # enough files for the scan's process pool: the same finds
    clean.mkdir()
    for i in range(240):
        (clean / f"{i}.txt").write_text(f"nothing {i}")
    assert _leaks([*sorted(clean.iterdir()), *files], []) == [str(p) for p in files]
    shutil.rmtree(clean)
    other = "another0fake0token0" + "g" * 21  # set by a test, not planted by conftest
    monkeypatch.setenv("SOME_SERVICE_TOKEN", other)
    (tmp_path / "plain.txt").write_text(other)
    assert _leaks([tmp_path / "plain.txt"], []) == [str(tmp_path / "plain.txt")]
    for path in tmp_path.iterdir():  # planted on purpose: not for the last test to find
        path.unlink()


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
    small = [*FAST, PLUMBING_MODEL, "trainer.max_steps=2", "task.max_length=32",
             f"data.path={data}", "data.test_path=null", "data.val_fraction=0.25"]
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


def test_a_local_ray_listens_on_loopback_only_and_requires_a_token():
    """Every service of the Ray shardtune starts (GCS, raylet, workers, agents, the dashboard
    process) listens on 127.0.0.1 only; the HTTP dashboard is not served; token auth is on."""
    import ipaddress

    import psutil
    import ray
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    node = ray._private.worker._global_node
    assert node.node_ip_address == "127.0.0.1"
    session = f"--session-dir={node.get_session_dir_path()}"
    ray_pids = {info.process.pid for infos in node.all_processes.values() for info in infos}
    for proc in psutil.process_iter(["cmdline"]):  # Ray's workers: children of the raylet
        if session in (proc.info["cmdline"] or []) or any(
                parent.pid in ray_pids for parent in _parents(proc)):
            ray_pids.add(proc.pid)
    listening = []
    for pid in ray_pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        listening += [(pid, c.laddr) for c in connections if c.status == "LISTEN"]
    assert len(listening) >= 4, listening  # GCS, raylet (2), agents, the workers' servers
    exposed = [(pid, addr) for pid, addr in listening if not _loopback(addr.ip, ipaddress)]
    assert not exposed, exposed
    for info in node.all_processes.get("dashboard", []):
        assert "--host=127.0.0.1" in psutil.Process(info.process.pid).cmdline()
    assert is_token_auth_enabled()


def _parents(proc: Any) -> list[Any]:
    try:
        return proc.parents()
    except Exception:  # noqa: BLE001 - gone while iterating
        return []


def _loopback(ip: str, ipaddress: Any) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or address).is_loopback


def _suite_output(own: list[Path], others: list[dict]) -> tuple[list[Path], tuple[str, ...]]:
    """(every file under this process's folders and those the other pytest processes recorded
    as they ended, the keys their tests set)."""
    roots = [*own, *(Path(p) for ended in others for p in (ended["basetemp"],
                                                            *ended["ray_sessions"]))]
    files = [p for root in roots if root.is_dir() for p in root.rglob("*")
             if p.is_file() and not p.is_symlink() and not p.is_socket()]
    return files, tuple(s for ended in others for s in ended["secrets"])


def test_the_last_scan_reads_what_the_other_pytest_processes_wrote(tmp_path, monkeypatch):
    """A file another pytest process wrote (its temp folder, its Ray session) with a key only
    that process's tests set is found: the handoff the last test waits for carries both."""

    class Factory:  # pytest's TempPathFactory as other_workers_output reads it
        def getbasetemp(self) -> Path:
            return tmp_path / "popen-gw0"

    theirs = "their0own0fake0token0" + "h" * 19  # set by a test in the other process only
    other_temp, other_ray = tmp_path / "popen-gw1", tmp_path / "session_gw1"
    (other_temp / "run").mkdir(parents=True)
    (other_ray / "logs").mkdir(parents=True)
    (other_temp / "run" / "report.md").write_text(f"token: {theirs}")
    (other_ray / "logs" / "worker.out").write_text(PLANTED["HF_TOKEN"])
    (tmp_path / "popen-gw0").mkdir()
    (tmp_path / "ended-workers").mkdir()
    (tmp_path / "ended-workers" / "gw1.json").write_text(json.dumps(
        {"basetemp": str(other_temp), "ray_sessions": [str(other_ray)], "secrets": [theirs]}))
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    try:
        files, more = _suite_output([tmp_path / "popen-gw0"], other_workers_output(Factory(), 5))
        assert sorted(_leaks(files, [], more)) == sorted(
            [str(other_temp / "run" / "report.md"), str(other_ray / "logs" / "worker.out")])
        assert _leaks(files, []) == [str(other_ray / "logs" / "worker.out")]  # theirs: unknown
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")  # gw2 never ends
        with pytest.raises(AssertionError, match=r"\['gw2'\] never ended"):
            other_workers_output(Factory(), 0.5)
    finally:  # planted on purpose: not for the last test to find
        for path in (other_temp / "run" / "report.md", other_ray / "logs" / "worker.out"):
            path.unlink()


@pytest.mark.timeout(WAIT_FOR_OTHERS_S + 300)  # waits for the other pytest process first
def test_no_planted_secret_in_any_file_the_suite_wrote(tmp_path_factory):
    """Runs last (conftest): every file of every test — sweeps, distillation, compression,
    submitted jobs, W&B offline runs and W&B's staging directories, reports — and the Ray
    session's whole directory (logs, runtime resources, spilled objects), parquet and
    compressed files read as their contents, for the planted keys and every fake key a test
    set. Under pytest-xdist it waits for the other processes to end and scans theirs too."""
    import ray

    own = [tmp_path_factory.getbasetemp(),
           Path(ray._private.worker._global_node.get_session_dir_path()),
           *Path(tempfile.gettempdir()).glob("*wandb*"),
           Path.home() / ".cache" / "wandb", Path.home() / ".config" / "wandb"]
    files, more = _suite_output(own, other_workers_output(tmp_path_factory))
    assert files  # the whole suite's output (many thousand files in a full run)
    leaked = _leaks(files, [], more)
    assert not leaked, leaked


assert test_no_planted_secret_in_any_file_the_suite_wrote.__name__ == LAST  # conftest runs it last
