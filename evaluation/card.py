"""``shardtune card``: a Hugging Face–style MODEL_CARD.md written only from tracked artefacts.

Nothing is typed per run: lineage from run_meta.json, config from config.json, quality from the
evaluation (with CIs, slices, baseline), failure modes from the saved predictions. Intended use
and limitations come from config (``intended_use``, ``limitations``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore

from data.errors import ConfigError
from trainers.storage import local_run


@dataclass
class CardConfig:
    """Args:
        run: A finished run directory.
        split: Which evaluation (``runs/<run>/eval/<split>``) the card reports.
        intended_use: What the model is for (one paragraph, from config).
        limitations: What it must not be used for, known gaps.
    """

    run: str = "???"
    split: str = "test"
    intended_use: str = "Not stated: set intended_use=... when generating the card."
    limitations: str = "Not stated: set limitations=... when generating the card."


def register_card_config() -> None:
    ConfigStore.instance().store(name="card_schema", node=CardConfig)


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _est(d: dict) -> str:
    return f"{d['value']:.4f} (95% CI {d['ci_low']:.4f}–{d['ci_high']:.4f}, n={d['n']})"


def _fingerprint_lines(data: dict) -> list[str]:
    """The training files and their hashes; a weight average of runs trained on different
    files has none of its own (its members are listed under Training)."""
    if not data["fingerprint"]:
        return [f"- data set `{data['name']}`: members trained on different files"]
    return [f"- data set `{data['name']}`, fingerprint `{data['fingerprint']['sha256']}`",
            *[f"  - `{f['uri']}`: {f['bytes']} bytes, sha256 `{f['sha256'][:16]}…`"
              for f in data["fingerprint"]["files"]]]


def write_card(cfg: CardConfig) -> Path:
    run_dir = Path(local_run(cfg.run, "run")).expanduser().resolve()
    meta, config = _load(run_dir / "run_meta.json"), _load(run_dir / "config.json")
    if meta is None or config is None:
        raise ConfigError("run", f"{run_dir} is not a finished shardtune run (no run_meta.json)")
    final = _load(run_dir / "metrics.json") or {}
    evaluation = _load(run_dir / "eval" / cfg.split / "metrics.json")
    data = meta["dataset"]
    front = {
        "base_model": config["model"]["name_or_path"],
        "library_name": "peft" if config["peft"]["method"] != "none" else "transformers",
        "pipeline_tag": {"seq_cls": "text-classification", "token_cls": "token-classification",
                         "causal_lm": "text-generation"}[config["task"]["kind"]],
        "datasets": [f"{data['name']}" + (f" (sha256 {data['fingerprint']['sha256'][:16]})"
                                          if data["fingerprint"] else "")],
        "metrics": {k: round(v, 4) for k, v in final.items() if isinstance(v, float)
                    and k.split("/")[0] in ("val", "test")
                    and k.split("/")[-1] in ("accuracy", "macro_f1", "entity_f1", "perplexity")},
        "tags": ["shardtune", config["peft"]["method"], config["task"]["kind"]],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {meta['run_name']}", "",
             f"{config['task']['kind']} model fine-tuned from `{config['model']['name_or_path']}` "
             f"with `{config['peft']['method']}` by shardtune.", "",
             "## Intended use", "", cfg.intended_use, "",
             "## Limitations", "", cfg.limitations, "",
             "## Training data", "",
             *_fingerprint_lines(data),
             *[f"- {split}: {s['rows']} rows, {s['skipped']} skipped"
               for split, s in data["splits"].items()],
             f"- data check: `{json.dumps(meta.get('data_check', {}))}`", "",
             "## Training", "",
             *[f"- a weight average of `{m['run']}` (seed {m['seed']}, data sha256 "
               f"`{m['data_sha256']}`)" for m in meta.get("averaged_from", [])],
             f"- seed {meta['seed']}, git `{meta['git']['commit']}`"
             f"{' (dirty tree)' if meta['git']['dirty'] else ''}, config group "
             f"`{meta['config_group']}`",
             f"- adapter: r={config['peft']['r']}, alpha={config['peft']['alpha']}, targets "
             f"{config['peft']['target_modules'] or 'PEFT default'}; optimizer lr "
             f"{config['optim']['lr']}, {config['trainer']['epochs']} epochs, batch "
             f"{config['trainer']['batch_size']}",
             f"- versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}", ""]
    lines += _evaluation_section(evaluation, run_dir, cfg.split)
    out = run_dir / "MODEL_CARD.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def _evaluation_section(evaluation: dict | None, run_dir: Path, split: str) -> list[str]:
    if evaluation is None:
        return ["## Evaluation", "", f"Not evaluated on `{split}` yet: run "
                f"`shardtune evaluate run={run_dir} split={split}`, then regenerate the card."]
    m, base = evaluation["metrics"], evaluation.get("baseline")
    lines = ["## Evaluation", "", f"On `{evaluation['data']}` / {split}:", "",
             f"- accuracy {_est(m['accuracy'])}", f"- macro-F1 {_est(m['macro_f1'])}",
             f"- expected calibration error {m['ece']:.4f}"]
    if base:
        lines.append(f"- TF-IDF + logistic regression baseline on the same split: accuracy "
                     f"{_est(base['accuracy'])}")
    lines += ["", "Worst slices:", ""]
    lines += [f"- {s['slice']} (n={s['n']}): {s['value']:.4f} "
              f"[{s['ci_low']:.4f}, {s['ci_high']:.4f}]" for s in evaluation["slices"][:5]]
    predictions = run_dir / "eval" / split / "predictions.parquet"
    if predictions.is_file():
        import pandas as pd  # pandas loads only here: the CLI imports this module to compose

        frame = pd.read_parquet(predictions, columns=["gold_label", "pred_label"])
        wrong = frame[frame["gold_label"] != frame["pred_label"]]
        pairs = Counter(zip(wrong["gold_label"], wrong["pred_label"], strict=True))
        lines += ["", "## Known failure modes", "", "Most frequent confusions:", ""]
        lines += [f"- `{g}` predicted as `{p}`: {c} times" for (g, p), c in pairs.most_common(5)]
    if evaluation.get("gates"):
        lines += ["", "## Gates", ""]
        lines += [f"- {g['gate']}: {'pass' if g['passed'] else 'FAIL'} ({g['detail']})"
                  for g in evaluation["gates"]]
    return lines
