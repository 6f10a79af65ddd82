"""Checks on ``group=option`` overrides that Hydra lets through or reports badly."""

from __future__ import annotations

from pathlib import Path

from trainers.errors import ConfigError


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
