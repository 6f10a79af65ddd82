"""``shardtune`` command line: compose the Hydra config, run a job, print a summary.

User mistakes (bad config keys, bad data, an unplaceable cluster) end with one line on stderr
and exit code 2; ``--debug`` shows the traceback too. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from trainers.errors import ConfigError, ShardtuneError, find_user_error

CODE_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = CODE_DIR / "conf"
VERBS = {"train": "fine-tune a model (LoRA, DoRA or full) on Ray Train",
         "evaluate": "score a finished run on a split: CIs, slices, errors, baseline, gates",
         "data": "'data check': duplicates, near duplicates, leakage, PII of a data config",
         "card": "write MODEL_CARD.md for a run from its tracked artefacts",
         "baseline": "TF-IDF + logistic regression on a data config, in the evaluation format"}
CONFIG_NAMES = {"train": "train", "evaluate": "evaluate", "card": "card",
                "baseline": "baseline"}
GROUPS = ("task", "model", "data", "peft", "optim", "trainer", "cluster", "tracking")

USAGE = """usage: shardtune <verb> [key=value ...] [group=option ...] [--cfg job] [--debug]

verbs:
{verbs}

config groups (choose with group=option; override any key with group.key=value):
{groups}

examples:
  shardtune train                                   # MiniLM + LoRA on the shipped sample
  shardtune train data=banking77 trainer.epochs=3   # a real data set from ../shared/datasets
  shardtune train cluster=ray cluster.num_workers=2 # the same job on 2 DDP workers
  shardtune train --cfg job                         # print the resolved config and exit
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


def compose(overrides: list[str], config_name: str = "train") -> Any:
    """Compose ``conf/<config_name>.yaml`` with overrides; Hydra errors become one-line errors."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from trainers.card import register_card_config
    from trainers.config import register_configs
    from trainers.eval_config import register_eval_configs

    register_configs()
    register_eval_configs()
    register_card_config()
    injected = []
    if config_name == "card":  # the card reads only the run directory
        pass
    elif not any(o.startswith("paths.root=") for o in overrides):
        injected.append(f"paths.root={os.getcwd()}")
    if config_name != "card" and not any(o.startswith("paths.code=") for o in overrides):
        injected.append(f"paths.code={CODE_DIR}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name, overrides=injected + list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        unknown = re.search(r"Could not override '([^']+)'", str(exc))
        if unknown and re.search(r"not in struct|Key .* not in", _causes(exc)):
            key = unknown.group(1)
            close = difflib.get_close_matches(key, known_keys(), n=2, cutoff=0.7)
            hint = f"did you mean {' or '.join(close)}?" if close else "see --cfg job for keys"
            raise ConfigError(key, "no such key", hint) from exc
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

    def walk(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict):
            return [k for key, val in node.items() for k in walk(val, f"{prefix}{key}.")] or []
        return [prefix[:-1]]

    return walk(OmegaConf.to_container(OmegaConf.structured(TrainConfig)), "")


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


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    metrics = summary.get("metrics", {})
    if summary.get("status") == "stopped":
        console.print(f"[yellow]stopped at step {metrics.get('step')}[/]; re-run the same "
                      f"command to resume from {summary['run_dir']}")
        return
    table = Table(title=f"shardtune train: {Path(summary['run_dir']).name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        value = metrics[key]
        if isinstance(value, float) and not isinstance(value, bool):
            table.add_row(key, f"{value:.4f}")
        elif isinstance(value, int):
            table.add_row(key, str(value))
    console.print(table)
    for key in ("adapter", "checkpoint", "report", "merged"):
        if key in summary:
            console.print(f"{key:>10}: {summary[key]}")


def print_evaluation(result: dict[str, Any]) -> int:
    """One screen: headline metrics with CIs, the baseline, worst slices, gate verdicts."""
    from rich.console import Console

    console = Console()
    m, base = result["metrics"], result.get("baseline")
    console.print(f"[bold]{Path(result['run']).name}[/] on {result['data']}/{result['split']}: "
                  f"{m['examples']} examples")
    for key in ("accuracy", "macro_f1", "entity_f1", "perplexity"):
        if key not in m:
            continue
        est = m[key]
        line = f"  {key:<10} {est['value']:.4f} [{est['ci_low']:.4f}, {est['ci_high']:.4f}]"
        if base:
            line += f"   baseline {base[key]['value']:.4f}"
        console.print(line)
    worst = result["slices"][:3]
    if worst:
        console.print("  worst slices: " + ", ".join(
            f"{s['slice']} {s['value']:.3f} (n={s['n']})" for s in worst))
    failed = [g for g in result["gates"] if not g["passed"]]
    for gate in result["gates"]:
        mark = "[green]pass[/]" if gate["passed"] else "[red]FAIL[/]"
        console.print(f"  gate {gate['gate']}: {mark}  {gate['detail']}")
    console.print(f"  report: {result['report']}")
    if failed:
        console.print(f"[red]{len(failed)} gate(s) failed[/]")
        return 1
    return 0


def data_check(run: Any) -> int:
    """``shardtune data check [data=<group>] [data.path=...]``: full report, printed and saved."""
    from rich.console import Console

    from cluster.scaling import ensure_ray
    from data.check import check_dataset_splits, render_markdown
    from data.pipeline import build_splits

    ensure_ray(run.cluster)
    report = check_dataset_splits(build_splits(run.data, run.task.kind.value), fast=False)
    out = Path(run.paths.runs) / "data_check" / run.data.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_check.json").write_text(json.dumps(report, indent=1, default=str))
    text = render_markdown(report, run.data.name)
    (out / "data_check.md").write_text(text)
    Console().print(text)
    print(f"written: {out / 'data_check.md'}")
    return 0


def run_verb(verb: str, overrides: list[str], show_cfg: bool) -> int:
    cfg = compose(overrides, CONFIG_NAMES.get(verb, "train"))
    if show_cfg:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg, resolve=True))
        return 0
    run = to_run_config(cfg)
    if verb == "train":
        from trainers.train import train

        summary = train(run, resolved_dict(cfg))
        print_summary(summary)
        print(json.dumps({"run_dir": summary["run_dir"], "status": summary["status"]}))
        return 0
    if verb == "data":
        return data_check(run)
    if verb == "card":
        from trainers.card import write_card

        print(f"written: {write_card(run)}")
        return 0
    if verb == "evaluate":
        from trainers.evaluate import evaluate

        return print_evaluation(evaluate(run))
    if verb == "baseline":
        from trainers.baseline import run_baseline

        return print_evaluation(run_baseline(run))
    raise ShardtuneError(f"unknown verb {verb!r}", f"choose one of: {', '.join(VERBS)}")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    verb, rest = args[0], args[1:]
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
    bad_flags = [a for a in rest if a.startswith("-")]
    try:
        if verb not in VERBS:
            raise ShardtuneError(f"unknown verb {verb!r}", f"choose one of: {', '.join(VERBS)}")
        if bad_flags:
            raise ConfigError(bad_flags[0], "unknown flag", "overrides look like key=value")
        return run_verb(verb, rest, show_cfg)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - user errors become one line, bugs keep traces
        user = find_user_error(exc)
        if user is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {user}", file=sys.stderr)
        return user.exit_code


if __name__ == "__main__":
    sys.exit(main())
