"""Typed cluster config: how many workers, which devices, which Ray cluster."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

from data.errors import ConfigError


class ClusterMode(str, Enum):
    local = "local"  # Ray Train local mode: the loop runs in this process
    ray = "ray"  # data-parallel workers placed by Ray Train


@dataclass
class ClusterConfig:
    """Where the training loop runs.

    Args:
        mode: ``local`` runs the loop in-process (debugging, one device); ``ray`` starts
            ``num_workers`` DDP workers (gloo on CPU, nccl on GPU).
        num_workers: Data-parallel workers for ``mode=ray``.
        use_gpu: ``null`` = use GPUs when the cluster has them.
        cpus_per_worker: CPUs reserved per worker; fractions let small machines co-locate.
        gpus_per_worker: GPUs per worker when ``use_gpu``.
        address: Ray address to connect to (``auto``, ``ray://…``); ``null`` starts a local Ray.
        num_cpus: CPUs for a locally started Ray (``null`` = all).
        concurrent_runs: Runs of a seed group trained at once; 0 = as many as the cluster
            can place side by side (each needs its workers' CPUs/GPUs), 1 = one after another.
        start_wait_s: How long ``mode=ray`` waits for room to place its workers, and any
            mode for a free CPU for its Ray Data tasks, before it fails, naming what is free;
            ``null`` = for ever (Ray's own default: right while an autoscaler adds nodes, a
            silent hang when other jobs hold the cluster).
        threads: torch's threads in the training loop (each Ray worker's, or this process's
            under ``mode=local``); ``null`` = torch's default (every core locally, the
            worker's CPUs under Ray). Two local jobs on one machine: half the cores each,
            else each waits on threads the other has descheduled.
    """

    mode: ClusterMode = ClusterMode.local
    num_workers: int = 1
    use_gpu: Optional[bool] = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    address: Optional[str] = None
    num_cpus: Optional[int] = None
    concurrent_runs: int = 0
    start_wait_s: Optional[float] = 900.0
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ConfigError("cluster.num_workers", f"must be >= 1, got {self.num_workers}")
        if self.cpus_per_worker <= 0:
            raise ConfigError(
                "cluster.cpus_per_worker", f"must be > 0, got {self.cpus_per_worker}"
            )
        if self.concurrent_runs < 0:
            raise ConfigError("cluster.concurrent_runs",
                              f"must be >= 0 (0 = auto), got {self.concurrent_runs}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("cluster.threads", f"must be >= 1 (null = torch's default), "
                              f"got {self.threads}")
        if self.start_wait_s is not None and self.start_wait_s <= 0:
            raise ConfigError("cluster.start_wait_s",
                              f"must be > 0 (null = no limit), got {self.start_wait_s}")
