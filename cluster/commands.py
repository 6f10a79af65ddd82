"""Command lines of ``shardtune submit`` and ``shardtune jobs`` (parsed here, run by cluster/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.jobs import follow, jobs_command, submit
from cluster.k8s import apply, render, write
from cluster.submit import plan, split_overrides
from data.errors import ConfigError
from trainers.config import VerbConfig

SUBMIT_USAGE = ("usage: shardtune submit [--address URL] [--wait] <verb> [submit.key=value] "
                "[overrides]\n       shardtune submit --k8s --render out.yaml [--apply] <verb> "
                "submit.k8s.image=<image> [overrides]")
FLAGS_WITH_VALUE = ("--address", "--render")


def _flags(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    flags: dict[str, Any] = {"--wait": False, "--k8s": False, "--apply": False}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in FLAGS_WITH_VALUE:
            if i + 1 >= len(args):
                raise ConfigError(arg, "needs a value", SUBMIT_USAGE.splitlines()[0])
            flags[arg] = args[i + 1]
            i += 2
            continue
        if arg in flags:
            flags[arg] = True
        elif arg.startswith("--"):
            raise ConfigError(arg, "unknown flag", "flags: --address --wait --k8s --render "
                              "--apply")
        else:
            rest.append(arg)
        i += 1
    return flags, rest


def submit_main(args: list[str], verb_config: VerbConfig) -> int:
    """``verb_config`` is the application's composition (shardtune/compose.py): the submitted
    verb's config is built exactly as the job will build it."""
    flags, rest = _flags(args)
    verbs = [a for a in rest if "=" not in a]
    if not verbs:
        raise ConfigError("verb", "missing: which shardtune verb to submit",
                          SUBMIT_USAGE.splitlines()[0])
    verb = verbs[0]
    overrides = [a for a in rest if a != verb]
    mine, theirs = split_overrides(overrides)
    spec = verb_config("submit", mine).submit
    if flags["--k8s"]:
        if not spec.k8s.image:
            raise ConfigError("submit.k8s.image", "is required for --k8s: the container image "
                              "with shardtune and its dependencies", "see cluster/Dockerfile")
        storage = spec.storage or (spec.k8s.storage_mount if spec.k8s.storage_pvc else None)
        if spec.k8s.storage_pvc:
            spec.shared_storage = True
        sub = plan(verb, theirs, spec, verb_config, storage)
        run = verb_config("train", theirs) if verb == "train" else None
        use_gpu = bool(run and run.cluster.use_gpu)
        manifest = render(sub, spec.k8s, use_gpu)
        out = Path(flags.get("--render") or f"{sub.submission_id}.rayjob.yaml")
        print(f"rendered: {write(manifest, out)}")
        return apply(out) if flags["--apply"] else 0
    sub = plan(verb, theirs, spec, verb_config)
    address = flags.get("--address") or spec.address
    job_id = submit(sub, spec, address)
    print(f"submitted: {job_id}\n  entrypoint: {sub.command}\n  forwarded env (names): "
          f"{', '.join(sub.env_names) or 'none'}")
    if flags["--wait"]:
        return follow(address, job_id)
    print(f"  watch: shardtune jobs logs {job_id}" + (f" --address {address}" if address
                                                      else ""))
    return 0


def jobs_main(args: list[str]) -> int:
    flags, rest = _flags(args)
    if not rest or rest[0] not in ("list", "status", "logs", "stop"):
        raise ConfigError("jobs", "needs an action", "shardtune jobs list|status|logs|stop "
                          "[<id>] [--address URL]")
    return jobs_command(rest[0], rest[1] if len(rest) > 1 else None, flags.get("--address"))
