"""KubeRay: render a ``RayJob`` (ray.io/v1) from the same verb and overrides as a local run.

The manifests start from cluster/templates/ (edit them for what every cluster of yours needs).
Replicas, GPU limits and the entrypoint come from the run's own config (``cluster.*``); pod
sizes, image, storage and secrets from ``submit.k8s.*``. The W&B key is a ``secretKeyRef`` to a
Kubernetes Secret: its value is never in the manifest.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from cluster.submit import FORWARDED_NAMES, Submission
from cluster.submit_config import K8sConfig
from data.errors import ClusterError, ConfigError


def _resources(cpu: str, memory: str, gpus: int, gpu_resource: str) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits[gpu_resource] = str(gpus)
    return {"limits": limits, "requests": dict(limits)}


TEMPLATES = Path(__file__).resolve().parent / "templates"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def template(kind: str) -> dict[str, Any]:
    """cluster/templates/<kind>.yaml: the skeleton every rendered manifest starts from."""
    return yaml.safe_load((TEMPLATES / f"{kind}.yaml").read_text())


def _fill_container(container: dict[str, Any], k8s: K8sConfig, resources: dict[str, Any]
                    ) -> None:
    container["image"], container["resources"] = k8s.image, resources
    env = container.setdefault("env", [])
    if k8s.wandb_secret:
        env.insert(0, {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {
            "name": k8s.wandb_secret, "key": k8s.wandb_secret_key}}})
    if k8s.storage_secret:  # object-store credentials (AWS_ACCESS_KEY_ID, …) as a secret
        container["envFrom"] = [{"secretRef": {"name": k8s.storage_secret}}]
    if k8s.storage_pvc:
        container["volumeMounts"] = [{"name": "shardtune-storage",
                                      "mountPath": k8s.storage_mount}]


def _fill_pod(pod: dict[str, Any], k8s: K8sConfig, resources: dict[str, Any], gpu: bool
              ) -> None:
    spec = pod["spec"]
    _fill_container(spec["containers"][0], k8s, resources)
    if k8s.storage_pvc:
        spec["volumes"] = [{"name": "shardtune-storage",
                            "persistentVolumeClaim": {"claimName": k8s.storage_pvc}}]
    if k8s.service_account:
        spec["serviceAccountName"] = k8s.service_account
    if gpu and k8s.gpu_toleration:
        spec["tolerations"] = [{"key": k8s.gpu_resource, "operator": "Exists",
                                "effect": "NoSchedule"}]
    if gpu and k8s.node_selector:
        spec["nodeSelector"] = dict(k8s.node_selector)


def render(sub: Submission, k8s: K8sConfig, use_gpu: bool) -> dict[str, Any]:
    """The RayJob (or RayCluster) manifest as a dict, to dump or validate against the CRD:
    cluster/templates/ filled from the run's config and ``submit.k8s.*``."""
    if not k8s.image:
        raise ConfigError("submit.k8s.image", "is required for --k8s: the container image with "
                          "shardtune and its dependencies", "see cluster/Dockerfile")
    gpus = math.ceil(sub.gpus_per_worker) if use_gpu else 0
    head_gpus = gpus if not sub.multi_node and sub.workers <= 1 and use_gpu else 0
    cluster = template("raycluster")
    spec = cluster["spec"]
    spec["rayVersion"] = k8s.ray_version
    head = spec["headGroupSpec"]
    head["rayStartParams"]["num-cpus"] = "0" if sub.multi_node else str(k8s.head_cpu)
    _fill_pod(head["template"], k8s, _resources(k8s.head_cpu, k8s.head_memory, head_gpus,
                                                 k8s.gpu_resource), bool(head_gpus))
    group = spec.pop("workerGroupSpecs")[0]
    if sub.multi_node:  # local mode runs the loop in the driver, on the head
        group.update(groupName="gpu-workers" if gpus else "cpu-workers", replicas=sub.workers,
                     minReplicas=sub.workers, maxReplicas=sub.workers)
        _fill_pod(group["template"], k8s, _resources(k8s.worker_cpu, k8s.worker_memory, gpus,
                                                     k8s.gpu_resource), bool(gpus))
        spec["workerGroupSpecs"] = [group]
    # RFC 1123: lowercase alphanumerics and '-', at most 63 characters
    name = k8s.name or re.sub(r"[^a-z0-9-]", "-", sub.submission_id.lower())[:63].strip("-")
    if k8s.kind == "raycluster":  # a long-lived cluster sized for this job; submit to it
        # the job server must answer on the pod's address for the head Service (and clients
        # through it) to reach it; a host set in the template (127.0.0.1: reachable by
        # kubectl port-forward only) is kept (docs/security.md)
        head["rayStartParams"].setdefault("dashboard-host", "0.0.0.0")
        _fill_metadata(cluster, name, k8s, sub)
        return cluster
    job = template("rayjob")
    if head["rayStartParams"].get("dashboard-host") in LOOPBACK and \
            job["spec"].get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode"):
        raise ClusterError(
            f"cluster/templates/raycluster.yaml sets dashboard-host: "
            f"{head['rayStartParams']['dashboard-host']}, but a RayJob's submitter reaches the "
            f"job server through the head Service", "remove it for RayJobs and restrict the "
            "dashboard with a NetworkPolicy instead (docs/security.md)")
    _fill_metadata(job, name, k8s, sub)
    runtime_env = {"env_vars": {FORWARDED_NAMES: "WANDB_API_KEY" if k8s.wandb_secret else ""}}
    job["spec"].update(
        entrypoint=shlex.join(["shardtune", sub.verb, *sub.overrides, sub.location]),
        runtimeEnvYAML=yaml.safe_dump(runtime_env, sort_keys=True),
        shutdownAfterJobFinishes=k8s.shutdown_after_job_finishes,
        ttlSecondsAfterFinished=k8s.ttl_seconds_after_finished, rayClusterSpec=spec)
    if k8s.active_deadline_seconds:
        job["spec"]["activeDeadlineSeconds"] = k8s.active_deadline_seconds
    return job


def _fill_metadata(manifest: dict[str, Any], name: str, k8s: K8sConfig, sub: Submission
                   ) -> None:
    meta = manifest["metadata"]
    meta.update(name=name, namespace=k8s.namespace)
    meta.setdefault("labels", {})["shardtune/verb"] = sub.verb


def write(manifest: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def apply(path: Path) -> int:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ClusterError("kubectl not found on PATH", f"apply it yourself: kubectl apply -f "
                           f"{path}")
    return subprocess.run([kubectl, "apply", "-f", str(path)], check=False).returncode


def crd_schema(crd_file: Path) -> dict[str, Any]:
    """The v1 openAPIV3Schema of a KubeRay CRD file (for validating rendered manifests)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(crd_file.read_text(), Loader=loader)
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"][
        "openAPIV3Schema"]
