"""``shardtune`` command line: compose the Hydra config, run a job, print a summary.

User mistakes (bad config keys, bad data, an unplaceable cluster) end with one line on stderr
and exit code 2; ``--debug`` shows the traceback too. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from trainers.errors import ConfigError, ShardtuneError, find_user_error
from trainers.overrides import (
    check_group_options,
    distill_overrides,
    own_data_overrides,
    run_data_overrides,
    unset_group_error,
)
from trainers.stop import received, stopped_any

CODE_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = CODE_DIR / "conf"
VERBS = {"train": "fine-tune a model (LoRA, DoRA or full) on Ray Train",
         "evaluate": "score a finished run on a split: CIs, slices, errors, baseline, gates",
         "data": "'data check': duplicates, near duplicates, leakage, PII of a data config",
         "card": "write MODEL_CARD.md for a run from its tracked artefacts",
         "baseline": "TF-IDF + logistic regression on a data config, in the evaluation format",
         "sweep": "Ray Tune search over any train keys (sweep=<name>): ASHA, TPE, resumable",
         "ablate": "baseline + variants with seeds (ablation=<name>): deltas with CIs, verdicts",
         "distill": "teacher=<run> [student=layers]: a smaller student by KD, with its control",
         "quantize": "run=<run> quant=int8|nf4|fp4|dynamic_int8: merge, quantise, evaluate, "
                     "gate",
         "compress": "teacher=<run> [quant=int8]: distill then quantise, a gate after each",
         "compare": "'compare A B': is B better than A? paired bootstrap, CI, ship/iterate/stop",
         "report": "'report PATH ...': groups side by side: seed bands, CIs, slices, trend",
         "submit": "'submit [--address URL] [--wait] <verb> ...': run a verb as a Ray job; "
                   "--k8s renders a KubeRay RayJob",
         "jobs": "'jobs list|status|logs|stop [<id>]': Ray jobs on a cluster"}
CONFIG_NAMES = {"train": "train", "evaluate": "evaluate", "card": "card",
                "baseline": "baseline", "compare": "compare", "report": "report",
                "sweep": "train", "ablate": "train", "distill": "train", "compress": "train",
                "quantize": "quantize"}
GROUPS = ("task", "model", "data", "peft", "optim", "trainer", "cluster", "tracking", "sweep",
          "ablation", "distill", "quant")

USAGE = """usage: shardtune <verb> [key=value ...] [group=option ...] [--cfg job] [--debug]
                 [--verbose]

verbs:
{verbs}

config groups (choose with group=option; override any key with group.key=value):
{groups}

examples:
  shardtune train                                   # MiniLM + LoRA on the shipped sample
  shardtune train data=banking77 trainer.epochs=3   # a real data set from ../shared/datasets
  shardtune train cluster=ray cluster.num_workers=2 # the same job on 2 DDP workers
  shardtune train --cfg job                         # print the resolved config and exit
  shardtune train seeds=[0,1,2] run_name=lora_r8    # one run per seed, aggregated
  shardtune compare runs/lora_r8 runs/lora_r16      # verdict with CI, per-slice deltas
  shardtune report runs                             # every group: curves, CIs, trend
  shardtune quantize run=runs/default quant=int8 gate.max_drop=0.005
"""


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def usage() -> str:
    verbs = "\n".join(f"  {k:<10} {v}" for k, v in VERBS.items())
    groups = "\n".join(f"  {g:<10} {', '.join(_options(g))}" for g in GROUPS)
    return USAGE.format(verbs=verbs, groups=groups)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.replace("full_key: ", "key: ")


@functools.cache
def _register_schemas() -> None:
    """Once a process: storing the dataclass schemas costs ~0.1 s and they never change."""
    from cluster.submit_config import register_submit_config
    from distill.quant_run import register_quantize_config
    from trainers.card import register_card_config
    from trainers.config import register_configs
    from trainers.eval_config import register_eval_configs

    register_configs()
    register_eval_configs()
    register_card_config()
    register_submit_config()
    register_quantize_config()


def compose(overrides: list[str], config_name: str = "train") -> Any:
    """Compose ``conf/<config_name>.yaml`` with overrides; Hydra errors become one-line errors."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

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
    from omegaconf import OmegaConf

    from trainers.config import TrainConfig
    from trainers.metadata import flat_config

    return list(flat_config(OmegaConf.to_container(OmegaConf.structured(TrainConfig))))


def to_run_config(cfg: Any) -> Any:
    """Resolve interpolations and build the typed TrainConfig (runs every __post_init__)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

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


def resolved_dict(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def run_verb(verb: str, overrides: list[str], show_cfg: bool) -> int:
    if verb in ("distill", "compress"):
        overrides = distill_overrides(overrides, verb)
    overrides, data_overrides = run_data_overrides(verb, overrides)
    cfg = compose(overrides, CONFIG_NAMES.get(verb, "train"))
    if show_cfg:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg, resolve=True))
        return 0
    run = to_run_config(cfg)
    from trainers.console_logs import routed
    from trainers.storage import mirrored

    log = console_log(verb, run, overrides)
    with mirrored(getattr(run, "paths", None)), routed(log, show_progress=verb != "sweep"):
        code = _dispatch(verb, run, cfg, overrides, data_overrides)
    signum = received()
    if signum and stopped_any():  # a graceful stop (trainers/stop.py): checkpoint, then out
        print(f"stopped by {signal.Signals(signum).name}: re-run the same command to resume",
              file=sys.stderr)
        return 128 + signum
    return code


def console_log(verb: str, run: Any, overrides: list[str]) -> Path:
    """The command's log file: ``runs/<name>/console.log`` for a verb that makes a run, sweep
    or ablation, ``runs/logs/<verb>-<time>.log`` for the others."""
    import time

    runs = Path(getattr(getattr(run, "paths", None), "runs", "runs"))
    name = None
    if verb == "sweep" and getattr(run, "sweep", None) is not None:
        from tuning.sweep import sweep_name

        name = sweep_name(run, overrides)
    elif verb == "ablate" and getattr(run, "ablation", None) is not None:
        name = run.ablation.name
    elif verb in ("train", "distill", "compress"):
        name = run.run_name
    if name:
        return runs / name / "console.log"
    return runs / "logs" / f"{verb}-{time.strftime('%Y%m%d-%H%M%S')}.log"


def _dispatch(verb: str, run: Any, cfg: Any, overrides: list[str],
              data_overrides: list[str]) -> int:
    if verb == "train":
        from trainers.console import print_summary
        from trainers.train import train

        summary = train(run, resolved_dict(cfg))
        print_summary(summary)
        print(json.dumps({"run_dir": summary["run_dir"], "status": summary["status"]}))
        return 0
    if verb == "data":
        from data.check import check_command

        return check_command(run)
    if verb == "card":
        from trainers.card import write_card

        print(f"written: {write_card(run)}")
        return 0
    from trainers.console import print_evaluation

    if verb == "evaluate":
        from trainers.evaluate import evaluate

        return print_evaluation(evaluate(run, data_overrides=data_overrides))
    if verb == "baseline":
        from trainers.baseline import run_baseline

        return print_evaluation(run_baseline(run))
    if verb == "compare":
        from trainers.compare import compare

        result = compare(run)
        print(f"{result['verdict'].upper()}: {result['headline']}")
        if result["reason"]:
            print(f"  {result['reason']}")
        print(f"  report: {result['report']}")
        return 0
    if verb == "report":
        from trainers.group_report import write_report

        print(f"written: {write_report(run)}")
        return 0
    if verb == "sweep":
        from trainers.console import print_sweep
        from tuning.sweep import sweep

        if run.sweep is None:
            raise ConfigError("sweep", "no sweep chosen", f"shardtune sweep sweep=<name>, one "
                              f"of: {', '.join(_options('sweep'))}")
        print_sweep(sweep(run, resolved_dict(cfg), overrides))
        return 0
    if verb == "distill":
        from distill.run import distill

        summary = distill(run, resolved_dict(cfg))
        if summary["status"] != "done":
            return 0
        print(Path(summary["report"]).read_text())
        print(f"report: {summary['report']}")
        return 0
    if verb == "quantize":
        from distill.quant_run import gate_message, quantize

        result = quantize(run)
        print(Path(result["report"]).read_text())
        if not result["gate"]["passed"]:
            print(f"error: {gate_message(result)}", file=sys.stderr)
            return 1
        print(f"written: {result['report']}")
        return 0
    if verb == "compress":
        from distill.compress import compress, stage_message

        result = compress(run, resolved_dict(cfg))
        print(Path(result["report"]).read_text())
        if result["failed"]:
            print(f"error: {stage_message(result)}", file=sys.stderr)
            return 1
        print(f"written: {result['report']}")
        return 0
    if verb == "ablate":
        from tuning.ablate import ablate

        if run.ablation is None:
            raise ConfigError("ablation", "no ablation chosen", "shardtune ablate "
                              f"ablation=<name>, one of: {', '.join(_options('ablation'))}")
        print(f"written: {ablate(run, overrides)['report']}")
        return 0
    raise ShardtuneError(f"unknown verb {verb!r}", f"choose one of: {', '.join(VERBS)}")


def positional_to_overrides(verb: str, args: list[str]) -> list[str]:
    """``compare A B`` → ``a=A b=B``; ``report P1 P2`` → ``runs=[P1,P2]``."""
    plain = [a for a in args if "=" not in a and not a.startswith("-")]
    if verb not in ("compare", "report") or not plain:
        return args
    rest = [a for a in args if a not in plain]
    if verb == "report":
        return [f"runs=[{','.join(plain)}]", *rest]
    if len(plain) != 2:
        raise ConfigError("compare", f"needs two runs or groups, got {len(plain)}",
                          "shardtune compare runs/A runs/B")
    return [f"a={plain[0]}", f"b={plain[1]}", *rest]


def _cluster_verb(verb: str, rest: list[str], debug: bool) -> int:
    """``submit`` and ``jobs`` parse their own flags; their errors print like the rest."""
    from cluster.commands import SUBMIT_USAGE, jobs_main, submit_main

    if not rest or rest[0] in ("-h", "--help"):
        print(SUBMIT_USAGE if verb == "submit" else "usage: shardtune jobs "
              "list|status|logs|stop [<id>] [--address URL]")
        return 0
    try:
        return submit_main(rest) if verb == "submit" else jobs_main(rest)
    except Exception as exc:  # noqa: BLE001 - same policy as main()
        return report_user_error(exc, debug)


def report_user_error(exc: Exception, debug: bool) -> int:
    """One line and exit code 2 for a user mistake (the traceback with --debug); a bug
    re-raises with its traceback."""
    user = find_user_error(exc)
    if user is None:
        raise exc
    if debug:
        traceback.print_exc()
    print(f"error: {user}", file=sys.stderr)
    return user.exit_code


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if "--verbose" in args:  # every library and worker line on the console, as Ray prints it
        os.environ["SHARDTUNE_VERBOSE"] = "1"
    args = [a for a in args if a not in ("--debug", "--verbose")]
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    verb, rest = args[0], args[1:]
    if verb in ("submit", "jobs"):
        return _cluster_verb(verb, rest, debug)
    if verb == "data":  # 'shardtune data check ...'
        if not rest or rest[0] != "check":
            print("error: usage: shardtune data check [data=<group>] [data.path=...]",
                  file=sys.stderr)
            return 2
        rest = rest[1:]
    if "-h" in rest or "--help" in rest:
        print(usage())
        return 0
    show_cfg = False
    if "--cfg" in rest:
        i = rest.index("--cfg")
        show_cfg = True
        rest = rest[:i] + rest[i + 2:]
    try:
        rest = positional_to_overrides(verb, rest)
        bad_flags = [a for a in rest if a.startswith("-")]
        if verb not in VERBS:
            raise ShardtuneError(f"unknown verb {verb!r}", f"choose one of: {', '.join(VERBS)}")
        if bad_flags:
            raise ConfigError(bad_flags[0], "unknown flag", "overrides look like key=value")
        return run_verb(verb, rest, show_cfg)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - user errors become one line, bugs keep traces
        return report_user_error(exc, debug)


if __name__ == "__main__":
    sys.exit(main())
