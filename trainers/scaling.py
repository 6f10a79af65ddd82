"""Turn the cluster config into Ray resources, refusing what the cluster cannot place."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import socket
from collections.abc import Iterator
from typing import Any

from data.errors import ClusterError, ConfigError, hide_user_error_logs
from data.inprocess import held_here
from trainers.cluster_config import ClusterConfig, ClusterMode
from trainers.console_logs import (
    announce_ray,
    capture_worker_output,
    quiet_console_handlers,
)


def quiet_ray_logs() -> None:
    """Ray processes started from here log from WARNING up (unless the user set a level).

    Ray's runtime-env agent logs every runtime env it creates at INFO, environment variable
    values included: Tune hands AWS credentials to its trial actors that way, and a submitted
    job its forwarded secrets — they would land in plain text in the session's log files.
    """
    os.environ.setdefault("RAY_LOGGER_LEVEL", "warning")


def ray_not_needed(data_read_here: bool) -> bool:
    """Data this process reads itself, and no Ray cluster it was sent to (no ``RAY_ADDRESS``,
    not inside a Ray worker): a command can do without Ray (data/local.py). A Ray this process
    started for other work (a notebook's, the test session's) is left aside: holding a few MiB
    of rows in its object store and batching them through Ray Data costs ~1 s and ~2 CPU-s a
    run for nothing."""
    import ray  # ~0.5 s; Ray itself does not start

    in_worker = ray.is_initialized() and \
        ray._private.worker.global_worker.mode == ray.WORKER_MODE
    return data_read_here and not in_worker and not os.environ.get("RAY_ADDRESS")


@contextlib.contextmanager
def without_ray() -> Iterator[None]:
    """A run that needs no Ray (data/local.py): Ray's APIs may not start one behind its back
    (Ray's auto-init would start a default one, dashboard and all), so an unforeseen call
    fails loudly instead; ``ensure_ray`` still starts one the usual way when asked."""
    import ray.data  # noqa: F401 - (re)installs Ray's console handlers: quieted just below
    from ray._private import auto_init_hook  # Ray loads only when a job runs

    quiet_ray_logs()
    quiet_console_handlers()  # Ray Data's and Train's notices go to the log file
    allowed = auto_init_hook.enable_auto_connect
    auto_init_hook.enable_auto_connect = False
    try:
        with held_here():  # a Ray running here anyway holds none of this run's rows
            yield
    finally:
        auto_init_hook.enable_auto_connect = allowed


def start_local_ray(**kwargs: Any) -> None:
    """Start a single-node Ray whose services all listen on 127.0.0.1 only.

    On Linux ``ray.init`` takes the machine's network address as the node's IP even when
    given 127.0.0.1 (so that other nodes could join), and the GCS, raylet, workers and agents
    then listen on every interface. Nothing joins a Ray that shardtune starts for one command,
    so it uses the switch Ray itself applies on macOS/Windows: node IP = loopback, and with it
    every gRPC server bound to loopback (asserted in tests/test_security.py).
    """
    import ray  # Ray loads only when a job runs: the CLI imports this module without it

    quiet_ray_logs()
    with _loopback_node():
        ray.init(**kwargs)


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Ray's own switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``): this node is 127.0.0.1."""
    # Ray loads only when a job runs: the CLI imports this module without it
    from ray._private import ray_constants

    cluster_ready = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_ready


def _host_port(address: str) -> tuple[str, str]:
    """``[ray://]host:port`` → (host, port); an IPv6 host loses its brackets."""
    host, _, port = address.split("://")[-1].rpartition(":")
    return host.strip("[]"), port


def _is_loopback(address: str) -> bool:
    """A head on this machine's loopback (a Ray started by shardtune, or a one-machine head):
    Ray would otherwise rewrite 127.0.0.1 to the network address, where nothing listens."""
    host, _ = _host_port(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Settings (never secrets) a run on a cluster joined by address takes from this shell to its
# workers. Secrets reach a cluster's workers through `shardtune submit`'s forwarding or the
# nodes' own environment (docs/cluster.md).
JOINED_ENV = ("WANDB_MODE", "WANDB_SILENT", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL",
              "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def ensure_ray(cluster: ClusterConfig) -> None:
    """Connect to (or start) Ray once; a locally started Ray has no dashboard and listens on
    127.0.0.1 only."""
    import ray  # Ray loads only when a job runs: the CLI imports this module without it

    if ray.is_initialized():
        hide_user_error_logs()
        capture_worker_output()
        wait_for_a_free_cpu(cluster)
        return
    quiet_ray_logs()
    quiet_console_handlers()  # a CLI command: Ray's start-up notices to its log file
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if cluster.address:
        _probe(cluster.address)
        kwargs["address"] = cluster.address
        settings = {n: os.environ[n] for n in JOINED_ENV if n in os.environ}
        if settings:  # a joined cluster's workers start from its nodes' env, not this shell's
            kwargs["runtime_env"] = {"env_vars": settings}
    else:
        kwargs["num_cpus"] = cluster.num_cpus
    try:
        joining = cluster.address or os.environ.get("RAY_ADDRESS")  # a job's driver: set
        if not joining:
            start_local_ray(**kwargs)
        elif _is_loopback(joining):
            with _loopback_node():
                ray.init(**kwargs)
        else:
            ray.init(**kwargs)
        hide_user_error_logs()
        capture_worker_output()  # a CLI command: worker output to its log file
        announce_ray(joining)
        wait_for_a_free_cpu(cluster)
    except ConnectionError as exc:
        auth = "" if os.environ.get("RAY_AUTH_MODE") else (
            "; a cluster with token auth (Ray's default) needs RAY_AUTH_MODE=token and its "
            "token in RAY_AUTH_TOKEN or ~/.ray/auth_token")
        raise ClusterError(
            f"cannot reach the Ray cluster at {cluster.address!r} ({exc})",
            f"check cluster.address, or leave it unset to start a local Ray{auth}",
        ) from None


def _free_now() -> dict[str, float]:
    """The CPUs and GPUs nothing holds in the Ray cluster now (for an error's one line)."""
    import ray

    return {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}


def _nothing() -> None:
    return None


def wait_for_a_free_cpu(cluster: ClusterConfig) -> None:
    """Fail after ``cluster.start_wait_s`` when no CPU of the Ray cluster comes free for the
    data and inference tasks this process is about to start.

    Ray Data's tasks wait for a CPU without limit, and the driver waits with them in
    ``ray.get``, where no signal reaches it: a silent hang when other jobs hold every CPU.
    When none is free now, one empty task that needs a CPU shows whether one will come (an
    autoscaler reads it as demand and adds a node). Skipped inside a Ray actor (a Tune trial,
    a job's worker): what it may use was placed with it.
    """
    import ray

    wait = cluster.start_wait_s
    if wait is None or ray.get_runtime_context().get_actor_id() is not None:
        return
    if ray.available_resources().get("CPU", 0.0) >= 1:
        return
    probe = ray.remote(num_cpus=1)(_nothing).remote()
    ready, _ = ray.wait([probe], timeout=wait)
    if ready:
        return
    ray.cancel(probe, force=True)  # still queued: it must not take a CPU that comes later
    free = _free_now()
    raise ClusterError(
        f"config key 'cluster.start_wait_s': no CPU of the Ray cluster came free for the data "
        f"tasks within {wait:g} s (total {ray.cluster_resources().get('CPU', 0):g} CPUs; "
        f"free now: {free or 'nothing'})",
        "free what other jobs hold, or raise cluster.start_wait_s (null = wait for ever, as "
        "for an autoscaler)")


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on an address nothing listens at: ray.init retries for minutes."""
    if address in ("auto", "local"):
        return
    host, port = _host_port(address)
    if not host or not port.isdigit():
        raise ClusterError(f"cluster.address {address!r} is not host:port (or ray://host:port, "
                           "auto)", "e.g. cluster.address=10.0.0.5:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address!r} "
            f"({exc.strerror or type(exc).__name__})",
            "check cluster.address (the head's GCS port, 6379 by default), or leave it unset "
            "to start a local Ray") from None


def inference_here(rows: int, limit: int, actors: int = 1) -> bool:
    """Batch inference over ``rows`` in this process rather than through Ray Data actors.

    Up to ``limit`` rows the caller scores the split in one call, above it in windows of
    ``limit`` rows (each sorted by length). An actor is taken only where it buys what this
    process lacks: a GPU of the cluster this process cannot use, or, above ``limit``, another
    node's cores (a cluster of several nodes, or a head that offers Ray no CPU) or several
    actors asked for. ``limit=0`` = always actors. An actor's start (a process, imports, a
    model load) left evaluation and the teacher pass at 0.77× a bare loop's speed on 8,990
    rows here, which nothing in a single machine's run pays back (docs/benchmarks.md)."""
    if not limit:
        return False
    import ray  # loaded with the caller's dataset

    if not ray.is_initialized():
        return True
    resources = ray.cluster_resources()
    if resources.get("GPU", 0):
        import torch  # the caller has it loaded

        if not torch.cuda.is_available():
            return False
    return rows <= limit or (actors == 1 and _only_this_node(resources))


def inference_window(rows: int, limit: int) -> int:
    """Rows per call when :func:`inference_here` holds: the whole split up to ``limit``,
    windows of ``limit`` above it (never 0: an empty split is one empty call)."""
    return max(min(rows, limit), 1)


def _only_this_node(resources: dict[str, float]) -> bool:
    """Ray's cluster is this machine alone, and it offers Ray CPUs (a KubeRay head started
    with ``num-cpus: 0`` is meant to run no work: its jobs' inference goes to workers)."""
    import ray  # running: the caller checked

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return (len(nodes) == 1 and nodes[0]["NodeID"] == ray.get_runtime_context().get_node_id()
            and resources.get("CPU", 0) >= 1)


def wants_gpu(cluster: ClusterConfig) -> bool:
    import ray  # Ray loads only when a job runs: the CLI imports this module without it

    if cluster.use_gpu is not None:
        return cluster.use_gpu
    return ray.cluster_resources().get("GPU", 0) > 0


def scaling_config(cluster: ClusterConfig) -> Any:
    """ScalingConfig for Ray Train: ``num_workers=0`` is Train's in-process local mode."""
    # Ray loads only when a job runs: the CLI imports this module without it
    from ray.train import ScalingConfig

    if cluster.mode == ClusterMode.local:
        return ScalingConfig(num_workers=0)
    use_gpu = wants_gpu(cluster)
    resources = {"CPU": cluster.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = cluster.gpus_per_worker
    return ScalingConfig(num_workers=cluster.num_workers, use_gpu=use_gpu,
                         resources_per_worker=resources)


def check_placement(cluster: ClusterConfig) -> None:
    """Fail before training when the workers can never be placed (Ray would wait forever)."""
    import ray  # Ray loads only when a job runs: the CLI imports this module without it

    if cluster.mode == ClusterMode.local:
        return
    have = ray.cluster_resources()
    need_cpu = cluster.num_workers * cluster.cpus_per_worker
    if need_cpu > have.get("CPU", 0) + 1e-9:
        raise ClusterError(
            f"config key 'cluster.num_workers': {cluster.num_workers} workers x "
            f"{cluster.cpus_per_worker} CPU need {need_cpu:g} CPUs, the Ray cluster has "
            f"{have.get('CPU', 0):g}",
            "lower cluster.num_workers or cluster.cpus_per_worker",
        )
    if wants_gpu(cluster):
        need_gpu = cluster.num_workers * cluster.gpus_per_worker
        if need_gpu > have.get("GPU", 0) + 1e-9:
            raise ClusterError(
                f"config key 'cluster.num_workers': {cluster.num_workers} workers x "
                f"{cluster.gpus_per_worker} GPU need {need_gpu:g} GPUs, the cluster has "
                f"{have.get('GPU', 0):g}",
                "lower cluster.num_workers, or set cluster.use_gpu=false",
            )


def check_strategy(cluster: ClusterConfig, strategy: str) -> None:
    """FSDP shards a model across GPU workers; Ray Train wraps it only on GPUs."""
    if strategy != "fsdp":
        return
    if cluster.mode == ClusterMode.local:
        raise ConfigError("trainer.strategy", "fsdp shards across workers: needs cluster=ray",
                          "use cluster=ray cluster.num_workers=N cluster.use_gpu=true")
    if not wants_gpu(cluster):
        raise ConfigError("trainer.strategy", "fsdp needs GPU workers (Ray Train wraps FSDP "
                          "on GPUs only)", "use trainer.strategy=ddp on CPU")


# Ray Train V2 waits at most this long for one try at placing the worker group (its default),
# then tries again, with no limit by default (FailureConfig.controller_failure_limit = -1).
START_TRY_VAR, START_TRY_S = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", 60.0


@contextlib.contextmanager
def bounded_start(cluster: ClusterConfig) -> Iterator[int]:
    """Yields Ray Train's ``controller_failure_limit`` for ``cluster.start_wait_s``.

    Ray retries a worker group it cannot place for ever: right while an autoscaler brings
    nodes, a silent hang where nothing will free the room (a local Ray whose CPUs another job
    holds). Each try waits at most ``START_TRY_S`` (less when the whole wait is shorter: Ray
    reads the driver's variable when the controller starts, so it is set only around the fit).
    """
    wait = cluster.start_wait_s
    if cluster.mode == ClusterMode.local or wait is None:
        yield -1
        return
    try_s = float(os.environ.get(START_TRY_VAR, START_TRY_S))
    if try_s <= wait:
        yield max(0, math.ceil(wait / try_s) - 1)
        return
    before = os.environ.get(START_TRY_VAR)
    os.environ[START_TRY_VAR] = f"{wait:g}"
    try:
        yield 0
    finally:  # the user's own value, if any, stands again
        if before is None:
            os.environ.pop(START_TRY_VAR, None)
        else:
            os.environ[START_TRY_VAR] = before


def unplaced_workers(exc: BaseException, cluster: ClusterConfig) -> ClusterError | None:
    """The one-line error for a worker group Ray gave up placing within ``start_wait_s``."""
    try:  # Ray's internal module: a release that moves it leaves Ray's own error standing
        from ray.train.v2._internal.exceptions import (
            WorkerGroupStartupFailedError,
            WorkerGroupStartupTimeoutError,
        )
    except ImportError:
        return None

    failure = getattr(exc, "controller_failure", None)
    if not isinstance(failure, WorkerGroupStartupTimeoutError | WorkerGroupStartupFailedError):
        return None

    free = _free_now()
    gpu = f" + {cluster.gpus_per_worker:g} GPU" if wants_gpu(cluster) else ""
    what = ("could not be placed" if isinstance(failure, WorkerGroupStartupTimeoutError)
            else f"failed to start ({str(failure).splitlines()[0][:200]})")
    return ClusterError(
        f"config key 'cluster.start_wait_s': {cluster.num_workers} workers x "
        f"{cluster.cpus_per_worker:g} CPU{gpu} {what} within {cluster.start_wait_s:g} s; "
        f"free in the Ray cluster now: {free or 'nothing'}",
        "free what other jobs hold, lower cluster.num_workers, or raise "
        "cluster.start_wait_s (null = wait for ever, as for an autoscaler)")
