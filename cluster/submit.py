"""``shardtune submit``: the same verb and overrides, run as a Ray job on a cluster.

Everything a user can get wrong is checked here, before anything is uploaded: the verb, the
overrides (composed and type-checked exactly as a local run would), the storage path of a
multi-node job, and the forwarded environment (names only; values go to Ray, not to files).
"""

from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.config import ClusterMode
from cluster.submit_config import SubmitSpec
from trainers.errors import ClusterError, ConfigError

SUBMITTABLE = ("train", "sweep", "ablate", "distill", "quantize", "compress", "evaluate",
               "baseline", "compare", "report", "card")
FORWARDED_NAMES = "SHARDTUNE_FORWARDED_ENV"  # the job records which names it received
CODE_DIR = Path(__file__).resolve().parent.parent


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
        return shlex.join(self.entrypoint)


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """(``submit.*`` overrides, the submitted verb's overrides)."""
    mine = [a for a in args if a.lstrip("+~").startswith("submit.")]
    return mine, [a for a in args if a not in mine]


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def plan(verb: str, overrides: list[str], spec: SubmitSpec, storage: str | None = None
         ) -> Submission:
    """Validate the verb's config locally and build the job; raises before any upload."""
    from trainers.cli import CONFIG_NAMES, compose, distill_overrides, to_run_config

    if verb not in SUBMITTABLE:
        raise ConfigError("verb", f"cannot submit {verb!r}", f"one of: {', '.join(SUBMITTABLE)}")
    checked = distill_overrides(list(overrides), verb) if verb in ("distill", "compress") \
        else list(overrides)
    run = to_run_config(compose(checked, CONFIG_NAMES.get(verb, "train")))
    storage = storage or spec.storage
    if not storage:
        raise ConfigError("submit.storage", "is required: the directory on the cluster that "
                          "receives runs/", "e.g. submit.storage=/mnt/shared/shardtune")
    if _is_remote(storage):
        raise ConfigError("submit.storage", f"{storage}: object-store URIs are not supported "
                          "yet (runs are written with file APIs)",
                          "mount the bucket on every node (gcsfuse, mountpoint-s3) and pass "
                          "its path with submit.shared_storage=true")
    if not storage.startswith("/"):
        raise ConfigError("submit.storage", f"must be an absolute path on the cluster, got "
                          f"{storage!r}")
    cluster = getattr(run, "cluster", None)
    multi = bool(cluster and cluster.mode == ClusterMode.ray and cluster.num_workers > 1)
    if multi and not spec.shared_storage:
        raise ClusterError(
            f"config key 'submit.storage': a {cluster.num_workers}-worker job writes "
            f"checkpoints from several nodes, but {storage} is node-local",
            "use a path on a filesystem mounted on every node and set "
            "submit.shared_storage=true (or submit a cluster.num_workers=1 job)")
    run_name = getattr(run, "run_name", None) or Path(str(getattr(run, "run", verb))).name
    entrypoint = ["python", "-m", "trainers.cli", verb, *overrides, f"paths.root={storage}"]
    digest = hashlib.sha256(" ".join(entrypoint).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in run_name)[:40]
    return Submission(
        verb=verb, overrides=list(overrides), entrypoint=entrypoint,
        submission_id=f"shardtune-{verb}-{safe}-{digest}", run_name=run_name, storage=storage,
        multi_node=multi, workers=cluster.num_workers if multi else 1,
        gpus_per_worker=cluster.gpus_per_worker if cluster and cluster.use_gpu else 0.0,
        cpus_per_worker=cluster.cpus_per_worker if cluster else 1.0,
        env_names=[n for n in spec.forward_env if n in os.environ])


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
    import configparser

    parser = configparser.ConfigParser()
    parser.read(CODE_DIR / "setup.cfg")
    return [line.strip() for line in parser["options"]["install_requires"].splitlines()
            if line.strip()]
