"""Search spaces: YAML distributions → Ray Tune domains, checked before any trial starts.

A trial's values are applied to the base run's typed config through OmegaConf's typed update,
so a trial cannot set a key that does not exist or a value of the wrong type.
"""

from __future__ import annotations

import difflib
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from data.errors import ConfigError
from trainers.config import TrainConfig, config_dict
from trainers.metadata import flat_config
from trainers.tasks import REPORTED
from tuning.config import DISTRIBUTIONS, SweepSpec

Run = TypeVar("Run", bound=TrainConfig)


def _domain(key: str, spec: Any) -> Any:
    from ray import tune  # a slow import: only a sweep that starts needs it

    where = f"sweep.space.{key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(where, "must be one distribution, e.g. {choice: [4, 8]} or "
                          "{loguniform: [1e-4, 1e-2]}")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(where, f"unknown distribution {kind!r}", f"one of "
                          f"{', '.join(DISTRIBUTIONS)}")
    args = list(args) if isinstance(args, (list, tuple)) else [args]
    if kind in ("choice", "grid"):
        if not args:
            raise ConfigError(where, f"{kind} has no values")
        return tune.grid_search(args) if kind == "grid" else tune.choice(args)
    if len(args) != (3 if kind == "qrandint" else 2):
        raise ConfigError(where, f"{kind} takes [low, high{', q' if kind == 'qrandint' else ''}]"
                          f", got {args}")
    low, high = args[0], args[1]
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float))):
        raise ConfigError(where, f"{kind} bounds must be numbers, got {args}")
    if low >= high:
        raise ConfigError(where, f"inverted or empty range [{low}, {high}]",
                          "low must be below high")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(where, f"loguniform needs low > 0, got {low}")
    if kind == "uniform":
        return tune.uniform(low, high)
    if kind == "loguniform":
        return tune.loguniform(low, high)
    if kind == "randint":
        return tune.randint(int(low), int(high))
    return tune.qrandint(int(low), int(high), int(args[2]))


def tune_space(spec: SweepSpec) -> dict[str, Any]:
    """``{dotted key: Tune domain}``; grid axes are ``tune.grid_search``.

    With ``search: grid`` every ``choice`` axis becomes a grid axis, so one space file serves
    both a full grid and a sampled search over the same values.
    """
    space_spec = dict(spec.space)
    if spec.search == "grid":
        continuous = [k for k, d in space_spec.items() if not ({"grid", "choice"} & set(d))]
        if continuous:
            raise ConfigError("sweep.search", "grid needs finite axes (choice or grid), not "
                              f"{', '.join(continuous)}")
        space_spec = {k: {"grid": next(iter(d.values()))} for k, d in space_spec.items()}
    grid = [k for k, d in space_spec.items() if "grid" in d]
    if spec.search == "tpe" and grid:
        raise ConfigError("sweep.search", "tpe samples; it cannot take grid axes "
                          f"({', '.join(grid)})", "use choice instead of grid")
    return {key: _domain(key, dist) for key, dist in space_spec.items()}


def apply_values(run: Run, values: dict[str, Any], **fields: Any) -> Run:
    """``run`` with ``values`` (``{dotted key: value}``) and top-level ``fields`` set, converted
    to each key's type and checked like a composed config; the same class as ``run``."""
    cfg = OmegaConf.merge(OmegaConf.structured(type(run)),
                          _as_text(OmegaConf.to_container(OmegaConf.structured(run))))
    for key, value in {**fields, **values}.items():
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as exc:
            where = key if key in fields else f"sweep.space.{key}"
            raise ConfigError(where, f"value {value!r} does not fit: "
                              f"{str(exc).splitlines()[0]}") from None
    return OmegaConf.to_object(cfg)


def _as_text(value: Any) -> Any:
    """Escape ``${`` in every string: the typed values are resolved already, and one that looks
    like an interpolation is text (resolving ``oc.env`` again would put a secret in a trial)."""
    if isinstance(value, str):
        return value.replace("${", "\\${")
    if isinstance(value, dict):
        return {k: _as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    return value


def validate(spec: SweepSpec, run: TrainConfig, has_validation: bool) -> None:
    """Every mistake a sweep definition can hold, found before the first trial starts."""
    task = run.task.kind
    known = set(flat_config({k: v for k, v in config_dict(run).items()
                             if k not in ("sweep", "ablation")}))
    for key in spec.space:
        if key not in known and not any(k.startswith(key + ".") for k in known):
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.7)
            raise ConfigError(f"sweep.space.{key}", "no such train key",
                              f"did you mean {close[0]}?" if close else "see train --cfg job")
        if key.startswith(("sweep", "paths", "seeds", "run_name")):
            raise ConfigError(f"sweep.space.{key}", "cannot be swept")
    space = tune_space(spec)
    for key, domain in space.items():  # a sample of every axis must fit its typed key
        sample = domain["grid_search"][0] if isinstance(domain, dict) else domain.sample()
        apply_values(run, {key: sample})
    metric = spec.metric
    name = metric.split("/", 1)[1] if metric.startswith("val/") else None
    if name not in REPORTED[task]:
        allowed = ", ".join(f"val/{m}" for m in REPORTED[task])
        raise ConfigError("sweep.metric", f"{metric!r} is not reported during training for "
                          f"task {task.value}", f"one of: {allowed}")
    if not has_validation:
        raise ConfigError("sweep.metric", f"{metric} needs a validation split",
                          "set data.validation_path or data.val_fraction > 0")
    if spec.scheduler == "asha" and not run.trainer.eval_every:
        raise ConfigError("trainer.eval_every", "is 0: ASHA needs the metric during training",
                          "e.g. trainer.eval_every=20, or sweep.scheduler=fifo")
