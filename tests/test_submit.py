"""``shardtune submit``: a real local Ray head (loopback only), and KubeRay manifests."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from shardtune.cli import main
from tests.conftest import PLANTED, PLUMBING_MODEL, SHARED

FAKE_KEY = "submit0fake0key0" + "e" * 24
KUBERAY = SHARED.parent / "schemas" / "kuberay"
needs_crd = pytest.mark.skipif(not KUBERAY.is_dir(), reason=f"KubeRay CRDs not found at {KUBERAY}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``ray start --head --block`` on 127.0.0.1 with its job server; stopped afterwards.

    ``--block`` keeps the head tied to one process group, so teardown stops exactly this head
    (``ray stop`` would also stop the test session's own Ray).
    """
    ray_cli = str(Path(sys.executable).parent / "ray")
    # Ray's sockets live in its temp dir and a socket path may not pass 107 bytes, which a
    # pytest-xdist basetemp (/tmp/pytest-of-<user>/pytest-N/popen-gwN/...) can: a short dir
    # here, moved into the basetemp once the head has stopped (the last test scans it there)
    temp = Path(tempfile.mkdtemp(prefix="rayhead-"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    env["RAY_LOGGER_LEVEL"] = "warning"  # as docs/cluster.md asks of a head receiving secrets
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # a one-machine head: loopback only
    dash = _free_port()
    log = temp / "ray_start.log"  # said when the head never comes up
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={_free_port()}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         # the test session's own Ray holds the default agent ports: take free ones
         f"--dashboard-agent-listen-port={_free_port()}",
         f"--dashboard-agent-grpc-port={_free_port()}", f"--metrics-export-port={_free_port()}",
         f"--runtime-env-agent-port={_free_port()}",
         "--include-dashboard=true", "--num-cpus=2", f"--temp-dir={temp}",
         "--disable-usage-stats"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    from cluster.jobs import client as job_client

    deadline = time.monotonic() + 120
    while True:  # the job server comes up a little after the head (polled 4x a second)
        try:
            job_client(address).list_jobs()
            break
        except Exception as e:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline or head.poll() is not None:
                os.killpg(head.pid, signal.SIGKILL) if head.poll() is None else None
                said = log.read_text()[-3000:]
                shutil.move(temp, tmp_path_factory.mktemp("rayhead"))
                pytest.fail(f"the Ray head never served jobs ({e}); `ray start` said:\n{said}")
            time.sleep(0.25)
    yield address
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.move(temp, tmp_path_factory.mktemp("rayhead"))


def _wait_status(address: str, job_id: str, want: set[str], timeout: float = 120) -> str:
    from cluster.jobs import client as job_client

    client = job_client(address)
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = str(client.get_job_status(job_id).value)
        if status in want:
            return status
        time.sleep(0.25)
    return status


def test_submit_runs_a_train_job_with_a_forwarded_secret_and_jobs_commands(
        ray_head, s3_store, tmp_path, monkeypatch, capsys):
    """The job writes to an object store (a real S3 API on 127.0.0.1): checkpoints and
    artefacts are found there; the store's credentials go by name like the W&B key."""
    from trainers.storage import Store

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    uri = s3_store[0]
    args = ["submit", "--address", ray_head, "--wait", "train", f"submit.storage='{uri}'",
            "submit.forward_env=[WANDB_API_KEY]", "run_name=job1", PLUMBING_MODEL,
            "trainer.max_steps=3", "trainer.batch_size=16", "task.max_length=64"]
    assert main(args) == 0
    out = capsys.readouterr().out
    job_id = out.split("submitted: ")[1].split()[0]
    assert '"status": "done"' in out and f"job {job_id}: SUCCEEDED" in out
    run = Store.open(uri).child("job1")
    files = run.sizes()
    assert "adapter/adapter_model.safetensors" in files and "report.md" in files
    assert run.checkpoints()[0][-1] == "checkpoint_000003"
    meta = json.loads(run.read_text("run_meta.json"))
    forwarded = meta["forwarded_env"]
    assert forwarded["WANDB_API_KEY"] and forwarded["AWS_SECRET_ACCESS_KEY"]  # visible
    secrets = [FAKE_KEY, *PLANTED.values()]
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file()
              and any(v.encode() in p.read_bytes() for v in secrets)]
    leaked += [rel for rel in files if rel.endswith((".json", ".jsonl", ".md"))
               and any(v in run.read_text(rel) for v in secrets)]
    assert not leaked, leaked

    assert main(["jobs", "list", "--address", ray_head]) == 0
    assert f"{job_id}\tSUCCEEDED" in capsys.readouterr().out
    assert main(["jobs", "logs", job_id, "--address", ray_head]) == 0
    logs = capsys.readouterr().out
    assert "job1" in logs and FAKE_KEY not in logs
    assert main(["jobs", "status", "nope", "--address", ray_head]) == 2
    assert "no job 'nope'" in capsys.readouterr().err


def test_a_running_job_is_not_submitted_twice_and_a_stopped_one_resumes(ray_head, tmp_path,
                                                                         capsys):
    """``jobs stop`` on a real head: Ray SIGTERMs the job's driver, which checkpoints at the
    step it is on (no periodic checkpoint here) and exits; the same command submitted again
    resumes from that step."""
    from trainers.checkpoint import checkpoint_step, is_complete

    train = ["train", f"submit.storage={tmp_path}", "run_name=long", PLUMBING_MODEL,
             "trainer.epochs=1000",
             "trainer.ckpt_every=100000", "trainer.log_every=1", "trainer.batch_size=16",
             "task.max_length=64"]
    args = ["submit", "--address", ray_head, *train]
    assert main(args) == 0
    job_id = capsys.readouterr().out.split("submitted: ")[1].split()[0]
    assert _wait_status(ray_head, job_id, {"RUNNING"}) == "RUNNING"
    assert main(args) == 2
    assert "already RUNNING" in capsys.readouterr().err
    run_dir = tmp_path / "runs" / "long"  # a path as storage is the job's paths.root
    deadline = time.monotonic() + 180
    while not [r for r in _logged(run_dir) if r.get("step", 0) >= 2 and "train/loss" in r]:
        assert time.monotonic() < deadline, "the job never logged step 2"
        time.sleep(0.25)
    assert main(["jobs", "stop", job_id, "--address", ray_head]) == 0
    assert _wait_status(ray_head, job_id, {"STOPPED", "FAILED"}) == "STOPPED"
    saved = [p for p in run_dir.glob("checkpoint_*") if is_complete(p)]
    assert len(saved) == 1, saved  # the stop's own checkpoint
    stopped_at = checkpoint_step(saved[0])
    assert stopped_at >= 2 and _train_steps(run_dir)[-1] == stopped_at

    capsys.readouterr()  # the same command again (ending 2 steps later): it resumes
    assert main(["submit", "--address", ray_head, "--wait", *train,
                 f"trainer.stop_after_steps={stopped_at + 2}"]) == 0
    [resumed] = [r for r in _logged(run_dir) if r.get("event") == "resumed"]
    assert resumed["step"] == stopped_at
    assert _train_steps(run_dir) == list(range(1, stopped_at + 3))  # each step logged once


def _logged(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl records so far (a line being written is not yet one)."""
    path = run_dir / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def _train_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in _logged(run_dir) if "train/loss" in r]


@pytest.mark.parametrize("argv, message", [
    (["submit", "--address", "http://127.0.0.1:9", "train", "submit.storage=/tmp/x"],
     "cannot reach the Ray job server at http://127.0.0.1:9"),
    (["submit", "frobnicate", "submit.storage=/tmp/x"], "cannot submit 'frobnicate'"),
    (["submit", "train", "optim.llr=3", "submit.storage=/tmp/x"], "did you mean optim.lr?"),
    (["submit", "train"], "'submit.storage': is required"),
    (["submit", "train", "submit.storage=nosuch://bucket/runs"],
     "'submit.storage': cannot open nosuch://bucket/runs"),
    (["submit", "train", "submit.storage=runs"], "must be an absolute path on the cluster or "
                                                 "an object-store URI"),
    (["submit", "train", "submit.storage=/tmp/x", "cluster=ray", "cluster.num_workers=2"],
     "is node-local"),
    (["submit", "--k8s", "train"], "'submit.k8s.image': is required"),
])
def test_bad_submissions_fail_before_anything_is_sent(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def _strict(schema: dict) -> dict:
    """Unknown fields become errors (the CRD schema alone lets typos through)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@needs_crd
@pytest.mark.parametrize("overrides, workers, gpus, storage", [
    (["cluster=local", "cluster.use_gpu=true"], 0, 1, ["submit.k8s.storage_pvc=runs"]),
    (["cluster=ray", "cluster.num_workers=4", "cluster.use_gpu=true"], 4, 1,
     ["submit.k8s.storage_pvc=runs"]),
    (["cluster=ray", "cluster.num_workers=4", "cluster.use_gpu=true"], 4, 1,  # no volume
     ["submit.storage=s3://team-bucket/shardtune", "submit.k8s.storage_secret=s3-creds"]),
])
def test_rendered_rayjob_validates_against_the_kuberay_crd(overrides, workers, gpus, storage,
                                                           tmp_path, monkeypatch):
    import jsonschema
    import yaml

    from cluster.k8s import crd_schema

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    out = tmp_path / "rayjob.yaml"
    assert main(["submit", "--k8s", "--render", str(out), "submit.k8s.image=repo/shardtune:0.1",
                 *storage, "submit.k8s.wandb_secret=wandb",
                 "submit.k8s.active_deadline_seconds=86400", "train", "data=banking77",
                 "run_name=b77_lora", *overrides]) == 0
    text = out.read_text()
    assert FAKE_KEY not in text  # the key is a secretKeyRef, never inline
    doc = yaml.safe_load(text)
    jsonschema.Draft7Validator(_strict(crd_schema(KUBERAY / "ray.io_rayjobs.yaml"))).validate(doc)
    spec = doc["spec"]
    assert spec["entrypoint"].startswith("shardtune train data=banking77 run_name=b77_lora")
    assert spec["shutdownAfterJobFinishes"] is True and spec["activeDeadlineSeconds"] == 86400
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    if "submit.k8s.storage_pvc=runs" in storage:
        assert spec["entrypoint"].endswith("paths.root=/mnt/shardtune")
        assert head["volumeMounts"][0]["mountPath"] == "/mnt/shardtune"
    else:  # object store: every pod reaches it; credentials from the secret, by reference
        assert spec["entrypoint"].endswith("'paths.store='\"'\"'s3://team-bucket/shardtune"
                                           "'\"'\"''")
        assert head["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
        assert "volumeMounts" not in head
    assert head["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "wandb",
                                                           "key": "WANDB_API_KEY"}
    groups = spec["rayClusterSpec"].get("workerGroupSpecs", [])
    if workers:
        assert groups[0]["replicas"] == workers
        limits = groups[0]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == str(gpus)
    else:  # local mode: the loop runs in the driver, on the head
        assert not groups and head["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    assert doc["metadata"]["name"].startswith("shardtune-train-b77-lora-")


@needs_crd
@pytest.mark.parametrize("verb", [["quantize", "run=runs/teacher", "quant=nf4"],
                                  ["compress", "teacher=runs/teacher", "quant=dynamic_int8"],
                                  ["sweep", "sweep=smoke", "trainer.eval_every=2"]])
def test_other_verbs_render_as_the_same_command(verb, tmp_path):
    import yaml

    out = tmp_path / "job.yaml"
    assert main(["submit", "--k8s", "--render", str(out), "submit.k8s.image=repo/st:0.1",
                 "submit.k8s.storage_pvc=runs", *verb]) == 0
    entrypoint = yaml.safe_load(out.read_text())["spec"]["entrypoint"]
    assert entrypoint.startswith("shardtune " + " ".join(verb))


@needs_crd
def test_rendered_raycluster_validates_against_the_kuberay_crd(tmp_path):
    import jsonschema
    import yaml

    from cluster.k8s import crd_schema

    out = tmp_path / "raycluster.yaml"
    assert main(["submit", "--k8s", "--render", str(out), "submit.k8s.kind=raycluster",
                 "submit.k8s.image=repo/shardtune:0.1", "submit.k8s.storage_pvc=runs", "train",
                 "cluster=ray", "cluster.num_workers=2", "cluster.use_gpu=true",
                 "+submit.k8s.node_selector.pool=gpu-a100",
                 "submit.storage=/mnt/shardtune"]) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["kind"] == "RayCluster"
    jsonschema.Draft7Validator(_strict(crd_schema(KUBERAY / "ray.io_rayclusters.yaml"))
                               ).validate(doc)
    worker = doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["nodeSelector"] == {"pool": "gpu-a100"}


def test_rendering_starts_from_the_editable_templates(tmp_path, monkeypatch):
    """cluster/templates/*.yaml are the skeletons: what a user adds there is in every manifest."""
    import shutil

    import yaml

    from cluster import k8s

    edited = tmp_path / "templates"
    shutil.copytree(k8s.TEMPLATES, edited)
    job = yaml.safe_load((edited / "rayjob.yaml").read_text())
    job["metadata"]["annotations"] = {"team": "nlp"}
    (edited / "rayjob.yaml").write_text(yaml.safe_dump(job))
    monkeypatch.setattr(k8s, "TEMPLATES", edited)
    out = tmp_path / "job.yaml"
    assert main(["submit", "--k8s", "--render", str(out), "submit.k8s.image=repo/st:0.1",
                 "submit.storage=s3://b/runs", "train"]) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["metadata"]["annotations"] == {"team": "nlp"}
    assert doc["metadata"]["labels"]["shardtune/verb"] == "train"
    assert "workerGroupSpecs" not in doc["spec"]["rayClusterSpec"]  # cluster=local: head only


def _python_without_dependencies(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``python`` is this interpreter without site-packages: what a Ray
    head started outside the project's venv gives its jobs (no torch, no transformers)."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    (shim / "python").chmod(0o755)
    return {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}


def test_the_preflight_names_what_the_python_lacks_in_one_line_and_exits_78(tmp_path):
    from cluster import preflight
    from cluster.submit import CODE_DIR

    env = _python_without_dependencies(tmp_path)
    bare = subprocess.run(["python", "-m", "cluster.preflight"], cwd=CODE_DIR, env=env,
                          capture_output=True, text=True, timeout=60)
    assert bare.returncode == preflight.EXIT_CODE == 78 and not bare.stdout
    line = bare.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("shardtune preflight: ")
    assert "lacks shardtune's dependencies: torch, ray, transformers" in line
    assert "submit.pip=true" in line and "image" in line and "ray start --head" in line
    ok = subprocess.run([sys.executable, "-m", "cluster.preflight"], cwd=CODE_DIR,
                        capture_output=True, text=True, timeout=60)  # the project's Python
    assert ok.returncode == 0 and not ok.stdout + ok.stderr
    old = preflight.problem.__globals__["sys"]
    try:  # a Python older than setup.cfg's python_requires
        preflight.problem.__globals__["sys"] = type("S", (), {"version_info": (3, 9, 18),
                                                              "executable": "/usr/bin/python"})
        assert "is older than shardtune needs (>= 3.11)" in preflight.problem()
    finally:
        preflight.problem.__globals__["sys"] = old


class _FakeJobs:
    """A job server that runs the submitted entrypoint in a shell, as Ray's job supervisor
    does, with the given environment; enough of JobSubmissionClient for submit and jobs."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.jobs = env, {}

    def submit_job(self, entrypoint, submission_id, **_):
        from cluster.submit import CODE_DIR

        done = subprocess.run(entrypoint, shell=True, cwd=CODE_DIR, env=self.env,
                              capture_output=True, text=True, timeout=120)
        self.jobs[submission_id] = (entrypoint, done.returncode, done.stdout + done.stderr)
        return submission_id

    def get_job_status(self, job_id):
        if job_id not in self.jobs:
            raise RuntimeError(f"Job {job_id} does not exist")
        return type("S", (), {"value": "SUCCEEDED" if self.jobs[job_id][1] == 0 else "FAILED"})

    def get_job_info(self, job_id):
        status = self.get_job_status(job_id)
        return type("I", (), {"status": status, "driver_exit_code": self.jobs[job_id][1],
                              "message": "Job entrypoint command failed with exit code "
                                         f"{self.jobs[job_id][1]}, last available logs:\n..."})

    def get_job_logs(self, job_id):
        return self.jobs[job_id][2]

    async def tail_job_logs(self, job_id):
        yield self.jobs[job_id][2]


def test_a_cluster_python_without_the_dependencies_is_one_line_at_submit(tmp_path, monkeypatch,
                                                                         capsys):
    """``shardtune submit --wait`` to a head whose ``python`` lacks torch: the job's first step
    (the preflight) fails, and submit says in one line what to do instead of a traceback."""
    from cluster import jobs

    fake = _FakeJobs(_python_without_dependencies(tmp_path))
    monkeypatch.setattr(jobs, "client", lambda address: fake)
    argv = ["submit", "--address", "http://head:8265", "--wait", "train",
            f"submit.storage={tmp_path}", "run_name=nodeps"]
    assert main(argv) == 2
    out = capsys.readouterr()
    (job_id, (entrypoint, code, logs)), = fake.jobs.items()
    assert entrypoint.startswith("python -m cluster.preflight && python -m shardtune train ")
    assert code == 78 and "Traceback" not in logs and "ModuleNotFoundError" not in logs
    assert out.err.startswith(f"error: job {job_id} failed before shardtune started: the "
                              "cluster's Python") and len(out.err.strip().splitlines()) == 1
    assert "lacks shardtune's dependencies: torch" in out.err and "submit.pip=true" in out.err
    assert main(["jobs", "status", job_id, "--address", "http://head:8265"]) == 0
    status = capsys.readouterr().out
    assert status.startswith(f"{job_id}\tFAILED\tthe cluster's Python") and \
        len(status.strip().splitlines()) == 1


def test_rendered_raycluster_keeps_a_dashboard_host_set_in_the_template(tmp_path, monkeypatch,
                                                                         capsys):
    """docs/security.md: the RayCluster's job server listens on the pod's address unless the
    template restricts it; a RayJob (its submitter comes through the head Service) refuses a
    loopback host in one line."""
    import shutil

    import yaml

    from cluster import k8s

    def render(kind: str) -> tuple[int, dict]:
        out = tmp_path / f"{kind}.yaml"
        code = main(["submit", "--k8s", "--render", str(out), f"submit.k8s.kind={kind}",
                     "submit.k8s.image=repo/st:0.1", "submit.storage=s3://b/runs", "train"])
        return code, yaml.safe_load(out.read_text()) if out.exists() else {}

    code, doc = render("raycluster")
    assert code == 0 and doc["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == \
        "0.0.0.0"
    edited = tmp_path / "templates"
    shutil.copytree(k8s.TEMPLATES, edited)
    cluster = yaml.safe_load((edited / "raycluster.yaml").read_text())
    cluster["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] = "127.0.0.1"
    (edited / "raycluster.yaml").write_text(yaml.safe_dump(cluster))
    monkeypatch.setattr(k8s, "TEMPLATES", edited)
    code, doc = render("raycluster")
    assert code == 0 and doc["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == \
        "127.0.0.1"
    capsys.readouterr()
    assert render("rayjob") == (2, {})
    err = capsys.readouterr().err
    assert err.startswith("error: cluster/templates/raycluster.yaml sets dashboard-host: "
                          "127.0.0.1") and len(err.strip().splitlines()) == 1
