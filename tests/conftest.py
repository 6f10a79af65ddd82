"""Shared fixtures: one Ray instance per session, real composed configs shrunk for speed."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.hang_watch"]  # a hard stop for hangs beyond pytest-timeout

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARDTUNE_SHARED", ROOT.parent / "shared" / "datasets"))
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"real data sets not found at {SHARED} (../shared is absent)"
)
# What the tests that skip without ../shared read: the data sets and the KubeRay CRD schemas.
SHARED_DIRS = (SHARED, SHARED.parent / "schemas" / "kuberay")
# CI (.ci/run) sets it: there a missing ../shared fails the run instead of skipping ~20 tests.
REQUIRE_SHARED = "SHARDTUNE_REQUIRE_SHARED"

# Fake credentials in every variable shardtune, wandb, the hub or fsspec's cloud backends read,
# planted for the whole session before Ray starts (its workers inherit them): the last test
# (tests/test_security.py) searches every file the suite wrote for them.
PLANTED = {
    "WANDB_API_KEY": "wandb0planted0key0" + "a" * 22,
    "HF_TOKEN": "hf_planted0token0" + "b" * 20,
    "AWS_ACCESS_KEY_ID": "AKIAPLANTED0" + "C" * 8,
    "AWS_SECRET_ACCESS_KEY": "aws0planted0secret0" + "d" * 21,
    "AWS_SESSION_TOKEN": "aws0planted0session0" + "e" * 20,
    "GOOGLE_APPLICATION_CREDENTIALS": "/planted/gcp0credentials0" + "file.json",
    "AZURE_STORAGE_KEY": "azure0planted0key0" + "f" * 22,
}
LAST = "test_no_planted_secret_in_any_file_the_suite_wrote"
# Set for the session before any Ray starts (every process the suite starts inherits them):
# - Ray Train extras no test looks at: the preemption watcher is one more actor process per Ray
#   Train run (~2.5 s of CPU to start on 2 cores; it watches for cloud nodes being preempted),
#   the metrics callbacks export Prometheus gauges from the controller and every worker.
# - torch.compile off: shardtune never compiles, but importing peft imports bitsandbytes,
#   which wraps a few fallback kernels in torch.compile at import time, and that imports
#   torch._inductor: ~1.8 s of CPU in every worker, trial and driver process (the wrapped
#   kernels run eagerly instead; on CPU they never compiled: the inductor cache stays empty).
# - Idle Ray workers kept (Ray kills those beyond one per CPU after 1 s idle): the suite
#   started 93 task workers, 304 CPU-s, mostly re-importing Ray and transformers; with them
#   kept, tests/test_faults.py started 10 instead of 21 (73 → 48 CPU-s, 253 → 237 s).
RAY_TEST_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0",
                "TORCHDYNAMO_DISABLE": "1", "RAY_num_workers_soft_limit": "8",
                "RAY_idle_worker_killing_time_threshold_ms": "600000"}
# Fake secrets tests set with monkeypatch.setenv (a variable named like a credential): the
# last test searches for these too.
SET_BY_TESTS: set[str] = set()
_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)


@pytest.fixture(autouse=True)
def _record_fake_secrets(monkeypatch: Any) -> None:
    setenv = monkeypatch.setenv

    def recording(name: str, value: str, prepend: str | None = None) -> None:
        if _SECRET_NAME.search(name) and len(str(value)) >= 12:
            SET_BY_TESTS.add(str(value))
        setenv(name, value, prepend)

    monkeypatch.setenv = recording


def pytest_configure(config: Any) -> None:
    missing = [str(p) for p in SHARED_DIRS if not p.is_dir()]
    if os.environ.get(REQUIRE_SHARED, "") not in ("", "0") and missing:
        raise pytest.UsageError(
            f"{REQUIRE_SHARED} is set but ../shared is missing ({', '.join(missing)}): the "
            "tests of real data sets, sweeps and KubeRay manifests would be skipped, not run. "
            "Put ../shared beside the checkout (or set SHARDTUNE_SHARED=<its datasets dir>), "
            f"or unset {REQUIRE_SHARED} to let them skip")
    for name, value in PLANTED.items():
        os.environ.setdefault(name, value)  # a real value already set is searched for instead
    for name, value in RAY_TEST_ENV.items():
        os.environ.setdefault(name, value)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two pytest processes on the machine's cores: one torch thread each (and in every
        # process they start). Two threads each made every in-process run wait at torch's
        # barriers for a thread the other process had descheduled.
        os.environ.setdefault("OMP_NUM_THREADS", "1")


# Two pytest processes (`make test` runs `pytest -n 2`, pytest-xdist), each with a Ray of its
# own. The scheduler below hands out tests one at a time, in collection order, except those
# of one group, which go to one process together: modules with a module-scoped fixture (a Ray
# Jobs head, a trained pair of runs) and the modules that share the session's trained runs
# (trained once per process that needs them). The heaviest go first, so that neither process
# is left with a long test at the end; the rest keep their file order. Weights: the junit
# XML of session 23's clean-clone run, per module.
SHARED_RUNS = "trained_runs"  # sample_run, banking77_run, wnut17_run
GROUP_OF = {"test_evaluate": SHARED_RUNS, "test_quantize": SHARED_RUNS,
            "test_tasks": SHARED_RUNS, "test_distill": "test_distill",
            "test_submit": "test_submit", "test_bad_input": "test_bad_input",
            "test_chat": "test_chat", "test_contrastive": "test_contrastive"}
HEAVIEST_FIRST = ("test_faults", SHARED_RUNS, "test_distill", "test_sweep", "test_submit",
                  "test_local_data", "test_sft", "test_bad_input", "test_store",
                  "test_embedding", "test_seeds", "test_train", "test_security")


def _module_of(nodeid: str) -> str:
    return Path(nodeid.split("::")[0]).stem


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent without it
def pytest_xdist_make_scheduler(config: Any, log: Any) -> Any:
    """Scopes as above. Not xdist's `--dist loadgroup`: with pytest 9.2's structured node ids
    its group marks no longer take effect (pytest-dev/pytest-xdist#1386)."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupedScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return GROUP_OF.get(_module_of(nodeid), nodeid)

    if config.getvalue("dist") not in ("load", "loadscope", "loadfile", "loadgroup"):
        return None  # `--dist each` and the like: xdist's own
    config.option.loadscopereorder = False  # keep the order below: heaviest first, LAST last
    return GroupedScheduling(config, log)


def pytest_collection_modifyitems(items: list[Any]) -> None:
    def weight(item: Any) -> int:
        group = GROUP_OF.get(_module_of(item.nodeid), _module_of(item.nodeid))
        return HEAVIEST_FIRST.index(group) if group in HEAVIEST_FIRST else len(HEAVIEST_FIRST)

    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=weight)  # stable: a module's tests keep their order
    last = [item for item in items if item.name == LAST]
    items[:] = [item for item in items if item.name != LAST] + last


# Small enough for seconds per run on 2 CPU cores, real enough to learn something.
FAST = ["trainer.batch_size=16", "trainer.log_every=1", "trainer.ckpt_every=0",
        "trainer.eval_batch_size=64", "task.max_length=64"]
# For tests of plumbing (resume, stores, jobs, records), not of learning: a random-init
# 2-layer encoder with MiniLM's tokenizer (conf/model/tiny_bert.yaml), ~4x less CPU a run.
# Not for tests that race a signal against training steps: its steps are too quick to catch.
PLUMBING_MODEL = "model=tiny_bert"


# Under pytest-xdist the last test runs in one process while the others may still be in
# their last tests: each process, as it ends, writes what the last test needs of it (its
# basetemp, its Ray's session directory, the fake secrets its tests set) into the run's
# basetemp beside the processes' own (which the last test scans; this file holds the
# secrets), and the last test waits for them.
RAY_SESSION_DIRS: list[str] = []


def _handoff_dir(tmp_path_factory: Any) -> Path:
    return tmp_path_factory.getbasetemp().parent / "ended-workers"  # beside popen-gwN


def pytest_sessionfinish(session: Any) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        factory = session.config._tmp_path_factory
        out = _handoff_dir(factory)
        out.mkdir(exist_ok=True)
        ended = {"basetemp": str(factory.getbasetemp()), "ray_sessions": RAY_SESSION_DIRS,
                 "secrets": sorted(SET_BY_TESTS)}
        (out / f"{worker}.json.tmp").write_text(json.dumps(ended))
        (out / f"{worker}.json.tmp").rename(out / f"{worker}.json")


# How long the last test waits for the other pytest process: every test there is cut off at
# pyproject's per-test timeout, so only a queue of them could last this long.
WAIT_FOR_OTHERS_S = 1200
# pytest-timeout's limit for the heaviest multi-process tests (1.5–2 min on an idle machine):
# a machine shared with a training run slowed one to 291 s; 300 s (pyproject) is for the rest
HEAVY_TIMEOUT_S = 600


def other_workers_output(tmp_path_factory: Any,
                         timeout_s: float = WAIT_FOR_OTHERS_S) -> list[dict]:
    """What every other pytest-xdist process left once it ended (none without xdist)."""
    me, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not me or not count:
        return []
    others = [f"gw{i}" for i in range(int(count)) if f"gw{i}" != me]
    out, deadline = _handoff_dir(tmp_path_factory), time.monotonic() + timeout_s
    while missing := [w for w in others if not (out / f"{w}.json").exists()]:
        assert time.monotonic() < deadline, f"pytest processes {missing} never ended"
        time.sleep(1)
    return [json.loads((out / f"{w}.json").read_text()) for w in others]


@pytest.fixture(scope="session")
def ray_session():
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Train's controller polls its workers every 2 s: each short test run waited ~1-2 s on it
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    if not ray.is_initialized():
        from trainers.scaling import start_local_ray

        # as shardtune's own: loopback only, no secrets in Ray's INFO logs
        start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    RAY_SESSION_DIRS.append(ray._private.worker._global_node.get_session_dir_path())
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_store() -> Any:
    """A real S3 API on 127.0.0.1 (moto's server) with an empty bucket: (store URI, endpoint).

    The URI carries the endpoint (``?endpoint_override=``) so every process that gets the
    config reaches it; the planted AWS credentials sign the requests.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="shardtune-test")
    yield f"s3://shardtune-test/runs?endpoint_override={endpoint}", endpoint
    server.stop()


def compose_run(tmp_path: Path, overrides: list[str]) -> Any:
    """The typed config of the real config with ``paths.root=tmp_path`` (a JobConfig)."""
    from shardtune.compose import compose, to_run_config

    return to_run_config(compose([f"paths.root={tmp_path}", f"paths.datasets={SHARED}",
                                  *overrides]))


def train_run(tmp_path: Path, overrides: list[str]) -> dict:
    from trainers.train import train
    from tuning.seeds import train_group

    run = compose_run(tmp_path, overrides)
    return (train_group if run.seeds else train)(run)


# Real-data runs that more than one module needs (the task tests check that they learn, the
# evaluation tests re-score them): trained once a session.
BANKING77_RUN = ["data=banking77", "data.max_examples=800", "trainer.max_steps=15",
                 "optim.lr=5e-3", "run_name=b77"]
WNUT17_RUN = ["task=token_cls", "data=wnut17", "data.max_examples=300", "trainer.max_steps=12",
              "optim.lr=5e-3", "task.max_length=512", "run_name=ner"]  # 512: no truncation


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory, ray_session) -> tuple[Path, Path]:
    """(paths.root, run dir) of a run on the embedded sample: evaluated, carded, quantised and
    distilled by several modules."""
    root = tmp_path_factory.mktemp("sample")
    summary = train_run(root, [*FAST, "trainer.max_steps=20", "run_name=evaluated"])
    return root, Path(summary["run_dir"])


def _real_data_run(tmp_path_factory: Any, name: str, overrides: list[str]) -> dict:
    if not SHARED.is_dir():
        pytest.skip(f"real data sets not found at {SHARED}")
    return train_run(tmp_path_factory.mktemp(name), [*FAST, *overrides])


@pytest.fixture(scope="session")
def banking77_run(tmp_path_factory, ray_session) -> dict:
    return _real_data_run(tmp_path_factory, "banking77", BANKING77_RUN)


@pytest.fixture(scope="session")
def wnut17_run(tmp_path_factory, ray_session) -> dict:
    return _real_data_run(tmp_path_factory, "wnut17", WNUT17_RUN)


def logged(run_dir: str | Path) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def stop_while_training(train: Callable[[], dict], ready: Callable[[], bool],
                        timeout_s: float = 180) -> dict:
    """Run ``train`` in a thread; once ``ready()``, ask for a graceful stop (what SIGTERM to
    the driver does); return what ``train`` returned."""
    from trainers import stop

    result: dict = {}
    job = threading.Thread(target=lambda: result.update(train()))
    job.start()
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert job.is_alive() and time.monotonic() < deadline, "training never got ready"
        time.sleep(0.05)
    try:
        stop.request()
        job.join()
    finally:
        stop.reset()
    return result

