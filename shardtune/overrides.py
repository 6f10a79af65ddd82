"""Checks on ``group=option`` overrides that Hydra lets through or reports badly."""

from __future__ import annotations

import re
from pathlib import Path

from data.errors import ConfigError


def check_group_options(overrides: list[str], conf_dir: Path) -> None:
    """``group=option`` must name a file of conf/<group>/: Hydra skips a missing option of an
    optional group (experiment, sweep, quant …) without a word, so a typo would be ignored."""
    for override in overrides:
        name, _, option = override.lstrip("+~").partition("=")
        folder = conf_dir / name
        if not folder.is_dir() or not option or option == "null" or "/" in option:
            continue
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        if option not in options:
            raise ConfigError(name, f"no option '{option}'",
                              f"choose one of: {', '.join(options)} (files in conf/{name}/)")


def unset_group_error(overrides: list[str], conf_dir: Path) -> ConfigError:
    """``data.test_path=…`` where the verb's config leaves the group ``data`` unset (OmegaConf
    fails on it with a bare AssertionError)."""
    chosen = {o.lstrip("+~").partition("=")[0] for o in overrides}
    dotted = next((o for o in overrides if "." in o.partition("=")[0]
                   and (conf_dir / o.lstrip("+~").partition(".")[0]).is_dir()
                   and o.lstrip("+~").partition(".")[0] not in chosen), "")
    group = dotted.lstrip("+~").partition(".")[0]
    return ConfigError(group, f"is not set, so {dotted.partition('=')[0]} has nothing to change",
                       f"choose it first: {group}=<option> (conf/{group}/)")


OWN_DATA_CONFIGS = ("train", "baseline")  # the configs whose data group defaults to the sample
GENERIC_NAMES = {"train", "training", "dev", "val", "valid", "validation", "test", "data",
                 "dataset", "datasets", "input", "inputs", "all", "full"}


def own_data_overrides(overrides: list[str], config_name: str, conf_dir: Path) -> list[str]:
    """``data.path=…`` without a data group means the user's data alone: ``data=custom``
    (conf/data/custom.yaml: no test split, no metadata fields, format by extension) named after
    the path, instead of the shipped sample's group with only its training path swapped.

    An explicit ``data=<group>``, or an experiment that picks one, is kept as it is; an
    experiment that sets ``data.path`` without a group (a sweep's ``<name>_best``) counts as
    the command line does. ``evaluate`` reads the run's own data and is left alone."""
    if config_name not in OWN_DATA_CONFIGS:
        return overrides
    keys = {o.lstrip("+").partition("=")[0]: o.partition("=")[2]
            for o in overrides if not o.startswith("~")}
    if "data" in keys:
        return overrides
    path, name = keys.get("data.path"), keys.get("data.name")
    if keys.get("experiment", "null") != "null":
        picks_group, data = _experiment_data(conf_dir / "experiment" / f"{keys['experiment']}.yaml")
        if picks_group:
            return overrides
        path = path if path is not None else data.get("path")
        name = name if name is not None else data.get("name")
    if path is None or path == "null":
        return overrides
    named = [] if name is not None else [f"data.name='{data_name(str(path))}'"]
    return ["data=custom", *named, *overrides]


def _experiment_data(file: Path) -> tuple[bool, dict]:
    """(whether the experiment picks a data group, its ``data`` keys)."""
    import yaml

    try:
        body = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError):  # a missing option is reported by check_group_options
        return True, {}
    entries = [e for e in body.get("defaults") or [] if isinstance(e, dict)]
    picks = any(k.replace("override", "").strip().lstrip("/").partition("@")[0] == "data"
                for e in entries for k in e)
    data = body.get("data")
    return picks, data if isinstance(data, dict) else {}


def data_name(path: str) -> str:
    """A name for the user's data from its path, for reports and ``runs/<verb>/<data.name>``:
    the last folder or file stem that is not a glob, an interpolation or a split's usual name
    (``/data/tickets/train.jsonl`` → ``tickets``, ``s3://b/intents/`` → ``intents``);
    ``custom`` when none is left."""
    first = path.strip().strip("[]").split(",")[0].strip().strip("'\"")
    first = first.partition("#")[0].partition("?")[0]
    for part in reversed(re.split(r"[/\\]", first)):
        stem = part
        while re.search(r"\.[A-Za-z][A-Za-z0-9]{0,7}$", stem):
            stem = stem.rsplit(".", 1)[0]
        if (not stem or stem.endswith(":") or any(c in stem for c in "*?[]{}$")
                or stem.lower() in GENERIC_NAMES or stem in (".", "..")):
            continue
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    return "custom"


def distill_overrides(overrides: list[str], verb: str = "distill") -> list[str]:
    """``teacher=…`` / ``student=…`` are ``distill.teacher`` / ``distill.student``; the
    distill group (and for compress the int8 quant group) is chosen when not named."""
    out = [f"distill.{o}" if o.startswith(("teacher=", "student=")) else o for o in overrides]
    if not any(o.lstrip("+").startswith("distill=") for o in out):
        out.insert(0, "distill=default")
    if verb == "compress" and not any(o.lstrip("+").startswith("quant=") for o in out):
        out.insert(0, "quant=int8")
    return out


def run_data_overrides(verb: str, overrides: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, ``data.*`` keys) for ``evaluate`` without ``data=<group>``: those keys
    change the run's own data config, read from the run (the verb's config has none)."""
    if verb != "evaluate" or any(o.lstrip("+").startswith("data=") for o in overrides):
        return overrides, []
    data = [o for o in overrides if o.lstrip("+").startswith("data.")]
    return [o for o in overrides if o not in data], data
