"""Config composition: ``conf/`` plus command-line overrides → the typed job config.

The one path every verb builds its configs by (the CLI, ``submit``'s check before upload, each
ablation arm): Hydra composes ``conf/<name>.yaml`` against the registered schemas,
``to_run_config`` builds the dataclasses (running every ``__post_init__`` check), and Hydra's
and OmegaConf's errors become one line naming the key.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from pathlib import Path
from typing import Any, Callable

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from cluster.submit_config import register_submit_config
from data.errors import ConfigError, ShardtuneError, find_user_error
from distill.quant_config import register_quantize_config
from evaluation.card import register_card_config
from evaluation.config import register_eval_configs
from shardtune.config import JobConfig
from shardtune.overrides import (
    check_group_options,
    distill_overrides,
    own_data_overrides,
    unset_group_error,
)
from trainers.metadata import flat_config

CODE_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = CODE_DIR / "conf"
CONFIG_NAMES = {"train": "train", "evaluate": "evaluate", "card": "card",
                "baseline": "baseline", "compare": "compare", "report": "report",
                "sweep": "train", "ablate": "train", "distill": "train", "compress": "train",
                "quantize": "quantize", "submit": "submit"}
VerbConfig = Callable[[str, list[str]], Any]  # (verb, overrides) -> its typed config


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.replace("full_key: ", "key: ")


@functools.cache
def _register_schemas() -> None:
    """Once a process: storing the dataclass schemas costs ~0.1 s and they never change."""
    ConfigStore.instance().store(name="train_schema", node=JobConfig)
    register_eval_configs()
    register_card_config()
    register_submit_config()
    register_quantize_config()


def compose(overrides: list[str], config_name: str = "train") -> Any:
    """Compose ``conf/<config_name>.yaml`` with overrides; Hydra errors become one-line errors."""
    overrides = own_data_overrides(overrides, config_name, CONF_DIR)  # data.path alone: yours
    _register_schemas()
    injected = []
    if config_name not in ("card", "submit"):  # the configs that have paths.*
        if not any(o.startswith("paths.root=") for o in overrides):
            injected.append(f"paths.root={os.getcwd()}")
        if not any(o.startswith("paths.code=") for o in overrides):
            injected.append(f"paths.code={CODE_DIR}")
    check_group_options(overrides, CONF_DIR)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name, overrides=injected + list(overrides))
    except AssertionError as exc:  # OmegaConf: a dotted override under an unset group
        if "Unexpected type for root: NoneType" not in str(exc):
            raise
        raise unset_group_error(overrides, CONF_DIR) from None
    except (HydraException, OmegaConfBaseException) as exc:
        unknown = re.search(r"Could not override '([^']+)'", str(exc))
        if unknown and re.search(r"not in struct|Key .* not in", _causes(exc)):
            key = unknown.group(1)
            close = difflib.get_close_matches(key, known_keys(), n=2, cutoff=0.7)
            hint = f"did you mean {' or '.join(close)}?" if close else "see --cfg job for keys"
            deeper = re.search(r"full_key: (\S+)", _causes(exc))
            if deeper and deeper.group(1).startswith(key + "."):  # a new key in a mapping
                return_hint = f"add map entries one by one: +{deeper.group(1)}=<value>"
                raise ConfigError(key, f"has no entry '{deeper.group(1)[len(key) + 1:]}'",
                                  return_hint) from exc
            raise ConfigError(key, "no such key", hint) from exc
        typed = re.search(r"(Value '[^']*' of type '\w+' could not be converted to \w+|"
                          r"Invalid value '[^']*', expected one of \[[^\]]*\])\s+"
                          r"full_key: (\S+)", _causes(exc))
        if typed:  # a value of the wrong type, or not one of an enum's names
            raise ConfigError(typed.group(2), typed.group(1)[0].lower() + typed.group(1)[1:],
                              "see --cfg job for the current value") from exc
        group = re.search(r"Could not find '([^'/]+)/([^']+)'\s+Available options in '[^']+':"
                          r"\s+((?:\S+\s*)+?)\s*Config search path", str(exc))
        if group:
            options = ", ".join(group.group(3).split())
            raise ConfigError(group.group(1), f"no option '{group.group(2)}'",
                              f"choose one of: {options}") from exc
        raise ShardtuneError(f"config: {_one_line(exc)}",
                             "see 'shardtune train --help' for groups and keys") from exc
    finally:
        GlobalHydra.instance().clear()


def _causes(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return " ".join(parts)


def known_keys() -> list[str]:
    """Every dotted key of the default config (for 'did you mean' hints)."""
    return list(flat_config(OmegaConf.to_container(OmegaConf.structured(JobConfig))))


def to_run_config(cfg: Any) -> Any:
    """Resolve interpolations and build the typed TrainConfig (runs every __post_init__)."""
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", "") or "?"
        raise ConfigError(key, "is required", f"e.g. {key}=runs/default" if key == "run"
                          else "set it on the command line") from exc
    except OmegaConfBaseException as exc:
        inner = find_user_error(exc)
        if inner is not None:
            raise inner from exc
        raise ShardtuneError(f"config: {_one_line(exc)}") from exc


def verb_config(verb: str, overrides: list[str]) -> Any:
    """The typed config of ``shardtune <verb> <overrides>``: what the CLI runs, what ``submit``
    checks before uploading, what each ablation arm trains. Lower layers receive this function
    (``VerbConfig``) rather than importing the application."""
    if verb in ("distill", "compress"):
        overrides = distill_overrides(list(overrides), verb)
    return to_run_config(compose(list(overrides), CONFIG_NAMES.get(verb, "train")))
