"""Ray Jobs API: submit, watch, list, stop. Errors a user can fix are one line."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from cluster.preflight import ADVICE, EXIT_CODE, MARKER
from cluster.submit import Submission, runtime_env
from cluster.submit_config import SubmitSpec
from data.errors import ClusterError
from trainers.storage import _shown

ACTIVE = ("PENDING", "RUNNING")
# a freshly started head needs a moment before it takes jobs: 10 tries of ~12 s
AGENT_RETRIES = 10


def auth_headers() -> dict[str, str]:
    """Ray's token auth (on by default since Ray 2.5x): the token from RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, sent as a header, never written anywhere.

    Ray's own SDK sends it only when RAY_AUTH_MODE=token is exported in this shell.
    """
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
        token = path.read_text().strip() if path.is_file() else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def client(address: str | None) -> Any:
    from ray.job_submission import JobSubmissionClient  # Ray loads only to reach a job server

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ClusterError("no Ray job server address",
                           "pass --address http://<head>:8265, submit.address, or RAY_ADDRESS")
    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except Exception as exc:  # noqa: BLE001 - connection failures come in many types
        raise ClusterError(f"cannot reach the Ray job server at {_shown(address)} "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})",
                           "is the cluster up and the dashboard port (8265) reachable?") from None


def _status(jobs: Any, submission_id: str) -> str | None:
    try:
        return str(jobs.get_job_status(submission_id).value)
    except RuntimeError:  # "Job ... does not exist"
        return None


def submit(sub: Submission, spec: SubmitSpec, address: str | None) -> str:
    """Submit once per run: an active job of the same run is refused, a finished one resumed.

    A re-submission of a finished or failed job gets a ``-r<k>`` suffix; the command itself
    resumes from the run's last checkpoint in the storage path.
    """
    jobs = client(address)
    job_id, attempt = sub.submission_id, 1
    while (state := _status(jobs, job_id)) is not None:
        if state in ACTIVE:
            raise ClusterError(f"job {job_id} for run '{sub.run_name}' is already {state}",
                               f"watch it: shardtune jobs logs {job_id}")
        attempt += 1
        job_id = f"{sub.submission_id}-r{attempt}"
    for attempt_left in range(AGENT_RETRIES, -1, -1):
        try:
            jobs.submit_job(entrypoint=sub.command, submission_id=job_id,
                            runtime_env=runtime_env(sub, spec),
                            entrypoint_num_cpus=spec.entrypoint_num_cpus,
                            metadata={"shardtune_verb": sub.verb, "run_name": sub.run_name})
            return job_id
        except RuntimeError as exc:  # the job server's refusals arrive as RuntimeError
            message = str(exc).splitlines()[0]
            if "No available agent" in message and attempt_left:  # a head still starting
                time.sleep(2)
                continue
            raise ClusterError(f"the job server refused the job: {message[:200]}") from None
    return job_id


def follow(address: str | None, job_id: str) -> int:
    """Stream the job's logs until it ends; exit code 0 only when it succeeded."""
    jobs = client(address)

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(tail())
    state = _status(jobs, job_id)
    refused = preflight_failure(jobs, job_id) if state == "FAILED" else None
    if refused:
        raise ClusterError(f"job {job_id} failed before shardtune started: {refused}")
    print(f"job {job_id}: {state}")
    return 0 if state == "SUCCEEDED" else 1


def preflight_failure(jobs: Any, job_id: str) -> str | None:
    """The one line of a job whose preflight refused the cluster's Python
    (cluster/preflight.py: exit code 78 and a ``shardtune preflight:`` line), else None."""
    exit_code = getattr(jobs.get_job_info(job_id), "driver_exit_code", None)
    try:
        logs = jobs.get_job_logs(job_id)
    except RuntimeError:  # logs gone (a restarted head): the exit code alone still says it
        logs = ""
    line = next((ln for ln in logs.splitlines() if MARKER in ln), None)
    if line is not None:
        return line.split(MARKER, 1)[1].strip()
    if exit_code == EXIT_CODE:
        return f"the cluster's Python cannot run shardtune (exit code {EXIT_CODE}); {ADVICE}"
    return None


def jobs_command(action: str, job_id: str | None, address: str | None) -> int:
    """``shardtune jobs list|status|logs|stop [<id>]``."""
    jobs = client(address)
    if action == "list":
        for info in sorted(jobs.list_jobs(), key=lambda j: j.start_time or 0):
            print(f"{info.submission_id or info.job_id}\t{info.status.value}\t{info.entrypoint}")
        return 0
    if not job_id:
        raise ClusterError(f"'jobs {action}' needs a job id", "see: shardtune jobs list")
    if _status(jobs, job_id) is None:
        raise ClusterError(f"no job {job_id!r} on this cluster", "see: shardtune jobs list")
    if action == "status":
        info = jobs.get_job_info(job_id)
        refused = preflight_failure(jobs, job_id) if info.status.value == "FAILED" else None
        print(f"{job_id}\t{info.status.value}\t{refused or info.message or ''}")
        return 0
    if action == "logs":
        print(jobs.get_job_logs(job_id), end="")
        return 0
    if action == "stop":
        jobs.stop_job(job_id)
        print(f"stop requested: {job_id}")
        return 0
    raise ClusterError(f"unknown jobs action {action!r}", "list, status, logs or stop")
