"""Typed config for ``shardtune submit``: where the job goes and what travels with it.

The ``submit.*`` keys are peeled off the command line before the submitted verb's own config
is composed, so one command line can carry both (``submit.storage=/mnt/runs trainer.epochs=3``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore

from data.errors import ConfigError

# Never shipped in working_dir: outputs, environments, caches, weights and data files.
DEFAULT_EXCLUDES = ["runs/", ".venv/", "venv/", "wandb/", ".git/", "**/__pycache__/",
                    ".pytest_cache/", ".ruff_cache/", "bench/results/", "outputs/",
                    "multirun/", "*.parquet", "*.arrow", "*.safetensors", "*.bin", "*.pt",
                    "*.ckpt", "*.tar.gz", "*.zip"]


@dataclass
class K8sConfig:
    """A KubeRay ``RayJob`` (apiVersion ray.io/v1) rendered from the run's config.

    Args:
        kind: ``rayjob`` (a cluster that lives for one job) or ``raycluster`` (a long-lived
            cluster sized for this config; submit to it with ``shardtune submit --address``).
        image: Container image with shardtune's dependencies (required for --k8s).
        namespace: Kubernetes namespace of the RayJob.
        name: RayJob name; ``null`` = derived from the verb and run name.
        ray_version: Ray version in the image (KubeRay checks it).
        head_cpu / head_memory: Head pod requests and limits.
        worker_cpu / worker_memory: Requests and limits per worker pod (one Train worker each).
        gpu_resource: Extended resource name of a GPU on your nodes.
        node_selector: Node labels for worker pods (e.g. a GPU node pool).
        gpu_toleration: Tolerate the usual ``nvidia.com/gpu`` taint on GPU node pools.
        shutdown_after_job_finishes: Delete the RayCluster when the job ends.
        ttl_seconds_after_finished: Keep the finished RayJob (and logs) this long.
        active_deadline_seconds: Fail the job after this many seconds; ``null`` = no limit.
        wandb_secret: Name of a Kubernetes Secret holding the W&B key; it reaches pods as a
            ``secretKeyRef``, never inline in the manifest.
        wandb_secret_key: Key inside that Secret.
        storage_pvc: A ReadWriteMany PersistentVolumeClaim mounted on every pod at
            ``storage_mount``; runs are written there.
        storage_mount: Where the claim is mounted.
        storage_secret: A Secret whose keys become the pods' environment (``envFrom``): the
            object store's credentials (AWS_ACCESS_KEY_ID, …) for ``submit.storage=s3://…``;
            not needed with IAM roles for service accounts / workload identity.
        service_account: Service account of the pods (e.g. for cloud bucket access).
    """

    kind: str = "rayjob"
    image: Optional[str] = None
    namespace: str = "default"
    name: Optional[str] = None
    ray_version: str = "2.60.0"
    head_cpu: str = "2"
    head_memory: str = "8Gi"
    worker_cpu: str = "8"
    worker_memory: str = "32Gi"
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: Dict[str, str] = field(default_factory=dict)
    gpu_toleration: bool = True
    shutdown_after_job_finishes: bool = True
    ttl_seconds_after_finished: int = 3600
    active_deadline_seconds: Optional[int] = None
    wandb_secret: Optional[str] = None
    wandb_secret_key: str = "WANDB_API_KEY"
    storage_pvc: Optional[str] = None
    storage_mount: str = "/mnt/shardtune"
    storage_secret: Optional[str] = None
    service_account: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in ("rayjob", "raycluster"):
            raise ConfigError("submit.k8s.kind", f"must be rayjob or raycluster, got "
                              f"{self.kind!r}")
        if self.ttl_seconds_after_finished < 0:
            raise ConfigError("submit.k8s.ttl_seconds_after_finished", "must be >= 0")
        if self.active_deadline_seconds is not None and self.active_deadline_seconds < 1:
            raise ConfigError("submit.k8s.active_deadline_seconds", "must be >= 1 or null")


@dataclass
class SubmitSpec:
    """Ray Jobs submission.

    Args:
        address: Job server, e.g. ``http://head:8265``; ``null`` = ``--address`` or RAY_ADDRESS.
        storage: Where the job's runs go: an object store (``s3://bucket/prefix``,
            ``gs://…``: ``paths.store``, fine for multi-node jobs) or a directory on the
            cluster (absolute: ``paths.root``); a multi-node job needs that directory mounted
            on every node, with ``shared_storage``.
        shared_storage: ``storage`` is a shared filesystem (NFS, a ReadWriteMany volume, a
            mounted bucket) visible at the same path on every node.
        forward_env: Names of local environment variables passed to the job (values are read
            at submission, sent to Ray, never written by shardtune).
        pip: Also install setup.cfg's dependencies through runtime_env pip; off = the
            cluster's image already has them.
        excludes: working_dir patterns (gitignore syntax) that are not uploaded.
        entrypoint_num_cpus: CPUs reserved for the job's driver process.
    """

    address: Optional[str] = None
    storage: Optional[str] = None
    shared_storage: bool = False
    forward_env: List[str] = field(default_factory=lambda: [
        "WANDB_API_KEY", "WANDB_MODE", "WANDB_ENTITY", "WANDB_PROJECT", "HF_TOKEN"])
    pip: bool = False
    excludes: List[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDES))
    entrypoint_num_cpus: float = 0.0
    k8s: K8sConfig = field(default_factory=K8sConfig)


@dataclass
class SubmitConfig:
    submit: SubmitSpec = field(default_factory=SubmitSpec)


def register_submit_config() -> None:
    ConfigStore.instance().store(name="submit_schema", node=SubmitConfig)
