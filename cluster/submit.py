"""``shardtune submit``: the same verb and overrides, run as a Ray job on a cluster.

Everything a user can get wrong is checked here, before anything is uploaded: the verb, the
overrides (composed and type-checked exactly as a local run would), the storage path of a
multi-node job, and the forwarded environment (names only; values go to Ray, not to files).
"""

from __future__ import annotations

import configparser
import hashlib
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.submit_config import SubmitSpec
from data.errors import ClusterError, ConfigError
from trainers.cluster_config import ClusterMode
from trainers.config import VerbConfig
from trainers.storage import check_uri, is_uri, refuse_credentials

SUBMITTABLE = ("train", "sweep", "ablate", "distill", "quantize", "compress", "evaluate",
               "baseline", "compare", "report", "card")
FORWARDED_NAMES = "SHARDTUNE_FORWARDED_ENV"  # the job records which names it received
CODE_DIR = Path(__file__).resolve().parent.parent
PREFLIGHT = "python -m cluster.preflight"


@dataclass
class Submission:
    """One job, fully resolved: what runs, with which environment, under which id."""

    verb: str
    overrides: list[str]
    entrypoint: list[str]
    submission_id: str
    run_name: str
    storage: str
    multi_node: bool
    workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    env_names: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The job's shell command: the preflight (can the cluster's ``python`` run shardtune?
        else one line and exit code 78: cluster/preflight.py), then the verb."""
        return f"{PREFLIGHT} && {shlex.join(self.entrypoint)}"

    @property
    def location(self) -> str:
        """The override that points the job at its storage: an object store or a path."""
        return location_override(self.storage)


def location_override(storage: str) -> str:
    if is_uri(storage):  # quoted: a query (?endpoint_override=…) has '=' in it
        return f"paths.store='{storage}'"
    return f"paths.root={storage}"


# Credentials an object-store job needs, forwarded by name when set here (never written).
# On a cluster with IAM roles / workload identity none are set and none are needed.
STORE_ENV = {"s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """(``submit.*`` overrides, the submitted verb's overrides)."""
    mine = [a for a in args if a.lstrip("+~").startswith("submit.")]
    return mine, [a for a in args if a not in mine]


def plan(verb: str, overrides: list[str], spec: SubmitSpec, verb_config: VerbConfig,
         storage: str | None = None) -> Submission:
    """Validate the verb's config locally (``verb_config``: the application's composition)
    and build the job; raises before any upload."""

    if verb not in SUBMITTABLE:
        raise ConfigError("verb", f"cannot submit {verb!r}", f"one of: {', '.join(SUBMITTABLE)}")
    for item in overrides:  # every override goes into the job's entrypoint, as typed
        key, _, value = item.partition("=")
        refuse_credentials(value, key.lstrip("+~"))
    run = verb_config(verb, list(overrides))
    storage = storage or spec.storage
    if not storage:
        raise ConfigError("submit.storage", "is required: where the job's runs go",
                          "e.g. submit.storage=s3://bucket/shardtune or a directory on the "
                          "cluster: submit.storage=/mnt/shared/shardtune")
    cluster = getattr(run, "cluster", None)
    multi = bool(cluster and cluster.mode == ClusterMode.ray and cluster.num_workers > 1)
    env_names = [n for n in spec.forward_env if n in os.environ]
    if is_uri(storage):  # every node reaches an object store: multi-node needs nothing more
        scheme = check_uri(storage, "submit.storage").split("://", 1)[0]
        env_names += [n for n in STORE_ENV.get(scheme, ()) if n in os.environ
                      and n not in env_names]
    elif not storage.startswith("/"):
        raise ConfigError("submit.storage", f"must be an absolute path on the cluster or an "
                          f"object-store URI (s3://, gs://), got {storage!r}")
    elif multi and not spec.shared_storage:
        raise ClusterError(
            f"config key 'submit.storage': a {cluster.num_workers}-worker job writes "
            f"checkpoints from several nodes, but {storage} is node-local",
            "use an object store (submit.storage=s3://bucket/prefix), or a path on a "
            "filesystem mounted on every node with submit.shared_storage=true")
    run_name = getattr(run, "run_name", None) or Path(str(getattr(run, "run", verb))).name
    entrypoint = ["python", "-m", "shardtune", verb, *overrides, location_override(storage)]
    digest = hashlib.sha256(" ".join(entrypoint).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in run_name)[:40]
    return Submission(
        verb=verb, overrides=list(overrides), entrypoint=entrypoint,
        submission_id=f"shardtune-{verb}-{safe}-{digest}", run_name=run_name, storage=storage,
        multi_node=multi, workers=cluster.num_workers if multi else 1,
        gpus_per_worker=cluster.gpus_per_worker if cluster and cluster.use_gpu else 0.0,
        cpus_per_worker=cluster.cpus_per_worker if cluster else 1.0,
        env_names=env_names)


def runtime_env(sub: Submission, spec: SubmitSpec) -> dict[str, Any]:
    """working_dir = this checkout minus outputs; env vars forwarded by name; optional pip."""
    env = {name: os.environ[name] for name in sub.env_names}
    env[FORWARDED_NAMES] = ",".join(sub.env_names)
    out: dict[str, Any] = {"working_dir": str(CODE_DIR), "excludes": list(spec.excludes),
                           "env_vars": env}
    if spec.pip:
        out["pip"] = requirements()
    return out


def requirements() -> list[str]:
    """install_requires from setup.cfg, so a cluster without the image can install them."""
    parser = configparser.ConfigParser()
    parser.read(CODE_DIR / "setup.cfg")
    return [line.strip() for line in parser["options"]["install_requires"].splitlines()
            if line.strip()]
