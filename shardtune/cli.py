"""``shardtune`` command line: compose the Hydra config, run a job, print a summary.

User mistakes (bad config keys, bad data, an unplaceable cluster) end with one line on stderr
and exit code 2; ``--debug`` shows the traceback too. Anything else is a bug and keeps its
traceback.

Each verb's package is imported when that verb runs (``_dispatch``): ``shardtune --help`` and a
mistyped key answer at once instead of importing torch, transformers and Ray first.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from data.errors import ConfigError, ShardtuneError, find_user_error
from shardtune.compose import (
    CONF_DIR,
    CONFIG_NAMES,
    compose,
    to_run_config,
    verb_config,
)
from shardtune.console import print_evaluation, print_summary, print_sweep
from shardtune.overrides import distill_overrides, run_data_overrides
from trainers.console_logs import routed
from trainers.stop import received, stopped_any
from trainers.storage import mirrored

VERBS = {"train": "fine-tune a model (LoRA, DoRA or full) on Ray Train",
         "evaluate": "score a finished run on a split: CIs, slices, errors, baseline, gates",
         "data": "'data check': duplicates, near duplicates, leakage, PII of a data config",
         "card": "write MODEL_CARD.md for a run from its tracked artefacts",
         "baseline": "TF-IDF + logistic regression on a data config, in the evaluation format",
         "mine": "hard negatives for task=embedding on BEIR data: rank the corpus with a "
                 "model, keep the best non-relevant document per pair (mine.*)",
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


def run_verb(verb: str, overrides: list[str], show_cfg: bool) -> int:
    if verb in ("distill", "compress"):
        overrides = distill_overrides(overrides, verb)
    overrides, data_overrides = run_data_overrides(verb, overrides)
    cfg = compose(overrides, CONFIG_NAMES.get(verb, "train"))
    if show_cfg:
        print(OmegaConf.to_yaml(cfg, resolve=True))
        return 0
    run = to_run_config(cfg)
    log = console_log(verb, run, overrides)
    with mirrored(getattr(run, "paths", None)), routed(log, show_progress=verb != "sweep"):
        code = _dispatch(verb, run, overrides, data_overrides)
    signum = received()
    if signum and stopped_any():  # a graceful stop (trainers/stop.py): checkpoint, then out
        print(f"stopped by {signal.Signals(signum).name}: re-run the same command to resume",
              file=sys.stderr)
        return 128 + signum
    return code


def console_log(verb: str, run: Any, overrides: list[str]) -> Path:
    """The command's log file: ``runs/<name>/console.log`` for a verb that makes a run, sweep
    or ablation, ``runs/logs/<verb>-<time>.log`` for the others."""
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


def _dispatch(verb: str, run: Any, overrides: list[str], data_overrides: list[str]) -> int:
    if verb == "train":
        from trainers.train import train

        if run.seeds:  # only a seed group needs tuning/ (and, through it, evaluation/: ~2 s)
            from tuning.seeds import train_group

            summary = train_group(run)
        else:
            summary = train(run)
        print_summary(summary)
        print(json.dumps({"run_dir": summary["run_dir"], "status": summary["status"]}))
        return 0
    if verb == "data":
        from evaluation.data_check import check_command

        return check_command(run)
    if verb == "card":
        from evaluation.card import write_card

        print(f"written: {write_card(run)}")
        return 0
    if verb == "evaluate":
        from evaluation.evaluate import evaluate

        return print_evaluation(evaluate(run, data_overrides=data_overrides))
    if verb == "baseline":
        from evaluation.baseline import run_baseline

        return print_evaluation(run_baseline(run))
    if verb == "mine":
        from evaluation.negatives import mine

        folder, provenance = mine(run, run.mine)
        counts = provenance["counts"]
        print(f"{'cached' if provenance['cached'] else 'mined'}: {counts['pairs']} pairs, "
              f"{counts['pairs'] - counts['no_candidate']} with a negative "
              f"({counts['no_candidate']} without: not kept in training, counted there)")
        print(f"train with: data.pairs.negatives_path={folder}")
        return 0
    if verb == "compare":
        from evaluation.compare import compare

        result = compare(run)
        print(f"{result['verdict'].upper()}: {result['headline']}")
        for line in (result["reason"], result["note"]):
            if line:
                print(f"  {line}")
        print(f"  report: {result['report']}")
        return 0
    if verb == "report":
        from evaluation.group_report import write_report

        print(f"written: {write_report(run)}")
        return 0
    if verb == "sweep":
        from tuning.sweep import sweep

        if run.sweep is None:
            raise ConfigError("sweep", "no sweep chosen", f"shardtune sweep sweep=<name>, one "
                              f"of: {', '.join(_options('sweep'))}")
        print_sweep(sweep(run, overrides))
        return 0
    if verb == "distill":
        from distill.run import distill

        summary = distill(run)
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

        result = compress(run)
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
        print(f"written: {ablate(run, overrides, verb_config)['report']}")
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
        return submit_main(rest, verb_config) if verb == "submit" else jobs_main(rest)
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
