"""Runs kept in an object store (``paths.store``): a real S3 API on 127.0.0.1 (moto's server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from data.errors import ConfigError
from shardtune.cli import main
from tests.conftest import (
    PLANTED,
    PLUMBING_MODEL,
    compose_run,
    logged,
    stop_while_training,
    train_run,
)
from trainers.checkpoint import Progress, checkpoint_name, persist_store, seal
from trainers.storage import Store, is_uri, join

TINY = ["task.max_length=32", "trainer.batch_size=8", "trainer.log_every=1"]


def _quoted(uri: str) -> str:
    return f"'{uri}'"  # Hydra: a query's '=' must be inside quotes


def _sealed(tmp: Path, step: int) -> Path:
    out = tmp / checkpoint_name(step)
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"w" * (100 + step))
    (out / "training_state.pt").write_bytes(b"s" * 50)
    seal(out, Progress(seed=0, step=step))
    return out


def test_uris_and_bad_store_values():
    assert is_uri("s3://b/p") and is_uri("gs://b/p") and not is_uri("/mnt/x")
    assert not is_uri("file:///mnt/x")
    uri = "s3://b/runs?endpoint_override=http://127.0.0.1:9000"
    assert join(uri, "grp", "seed0") == "s3://b/runs/grp/seed0?endpoint_override=" \
                                        "http://127.0.0.1:9000"
    with pytest.raises(ConfigError, match="paths.store.*must be an object-store URI"):
        compose_run(Path("/tmp"), ["paths.store=/mnt/runs"])


def test_store_keeps_only_complete_checkpoints_and_prunes(s3_store, tmp_path):
    store = Store.open(s3_store[0]).child("manifest_case")
    for step in (1, 2, 3):
        persist_store(_sealed(tmp_path, step), store, keep=2)
    half = _sealed(tmp_path, 4)  # a kill mid-upload: the weights went up, the manifest did not
    store.upload_file(half / "adapter" / "adapter_model.safetensors",
                      f"{half.name}/adapter/adapter_model.safetensors")
    cut = _sealed(tmp_path, 5)  # manifest up, one file shorter than it says
    store.upload_dir(cut, cut.name)
    (cut / "training_state.pt").write_bytes(b"s" * 10)
    store.upload_file(cut / "training_state.pt", f"{cut.name}/training_state.pt")
    complete, partial = store.checkpoints()
    assert complete == ["checkpoint_000002", "checkpoint_000003"]  # pruned to keep=2
    assert partial == ["checkpoint_000004", "checkpoint_000005"]


def test_a_run_moves_machines_through_the_store(s3_store, tmp_path, ray_session):
    """Machine A is stopped after step 4; machine B has no local copy and resumes from the
    store; the weights equal an uninterrupted run's; machine C evaluates the run by its URI
    and the evaluation goes up beside it. No credential reaches any object."""
    uri, _ = s3_store
    base = ["train", "run_name=moved", f"paths.store={_quoted(uri)}", "trainer.max_steps=6",
            "trainer.ckpt_every=2", *TINY, PLUMBING_MODEL]
    a, b, c, twin = (tmp_path / n for n in ("a", "b", "c", "twin"))
    assert main([*base, f"paths.root={a}", "trainer.stop_after_steps=4"]) == 0
    store = Store.open(uri).child("moved")
    complete, partial = store.checkpoints()
    assert complete[-1] == "checkpoint_000004" and not partial
    assert json.loads(store.read_text("config.json"))["run_name"] == "moved"

    assert main([*base, f"paths.root={b}"]) == 0
    run_b = b / "runs" / "moved"
    rows = logged(run_b)
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5, 6]  # history too
    assert [r["repeated_steps"] for r in rows if r.get("event") == "resumed"] == [0]
    files = store.sizes()
    for name in ("adapter/adapter_model.safetensors", "metrics.json", "report.md",
                 "run_meta.json", "metrics.jsonl", "label_map.json"):
        assert files.get(name) == (run_b / name).stat().st_size, name

    assert main(["train", "run_name=moved", "trainer.max_steps=6", "trainer.ckpt_every=2",
                 *TINY, PLUMBING_MODEL, f"paths.root={twin}"]) == 0
    twin_metrics = json.loads((twin / "runs" / "moved" / "metrics.json").read_text())
    moved_metrics = json.loads(store.read_text("metrics.json"))
    assert moved_metrics["dist/weights_hash"] == twin_metrics["dist/weights_hash"]

    assert main(["evaluate", f"run={_quoted(join(uri, 'moved'))}", f"paths.root={c}",
                 f"paths.store={_quoted(uri)}", "resamples=100", "baseline=false"]) == 0
    assert (c / "runs" / "moved" / "eval" / "test" / "metrics.json").is_file()
    assert "eval/test/metrics.json" in store.sizes()

    objects = Store.open(uri)
    leaked = [rel for rel in objects.sizes()
              if any(v in (objects.read_text(rel) if rel.endswith((".json", ".jsonl", ".md",
                                                                    ".yaml")) else "")
                     for v in PLANTED.values())]
    assert not leaked, leaked


def test_a_ray_train_job_stopped_gracefully_resumes_from_the_store_elsewhere(
        s3_store, tmp_path, ray_session):
    """cluster=ray: a graceful stop (what SIGTERM to the driver does) reaches the worker
    through Ray's key-value store; it checkpoints straight into the bucket (nothing local)
    and stops. With the local copy gone, the run resumes from the bucket (in local mode: the
    workers may change between attempts): every step logged once, metrics history included."""
    uri, _ = s3_store
    root = tmp_path / "r"
    args = ["run_name=ray_store", f"paths.store={_quoted(uri)}", "trainer.max_steps=6",
            "trainer.ckpt_every=0", *TINY]
    run_dir = root / "runs" / "ray_store"
    result = stop_while_training(
        lambda: train_run(root, [*args, "cluster=ray", "cluster.num_workers=1"]),
        ready=lambda: (run_dir / "metrics.jsonl").is_file() and bool(logged(run_dir)))
    assert result["status"] == "stopped"
    stopped_at = result["metrics"]["step"]
    assert 1 <= stopped_at < 6
    assert not [p for p in run_dir.iterdir() if p.name.startswith("checkpoint_")]
    complete, _ = Store.open(uri).child("ray_store").checkpoints()
    assert complete == [f"checkpoint_{stopped_at:06d}"]  # ckpt_every=0: the stop's own

    shutil.rmtree(root)  # another machine
    finished = train_run(root, [*args, "cluster=local"])
    assert finished["status"] == "done" and finished["metrics"]["step"] == 6
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert [r["step"] for r in logged(run_dir) if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [(r["step"], r["repeated_steps"]) for r in logged(run_dir)
            if r.get("event") == "resumed"] == [(stopped_at, 0)]


@pytest.mark.parametrize("argv, message", [
    (["train", "paths.store=nosuch://bucket/runs"], "config key 'paths.store': cannot open"),
    (["train", "paths.store=s3://AKIA:s3cret@bucket/runs"], "credentials in the URI are refused"),
    (["evaluate", "run='s3://shardtune-test/runs/absent?endpoint_override={endpoint}'"],
     "nothing found at s3://shardtune-test/runs/absent"),
])
def test_bad_store_inputs_are_one_line(argv, message, s3_store, tmp_path, capsys):
    argv = [a.replace("{endpoint}", s3_store[1]) for a in argv]
    assert main([*argv, f"paths.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
