"""The weight average ("model soup") of LoRA runs of one base model, as one run to evaluate.

Why: two draws of ``bench/e2e_value_swap.py`` trained with one recipe differ by 2.2 BLEU; a
soup of fine-tunes from one pretrained start often scores above its members at no training
cost. Averaging the LoRA factors A and B one by one is not the average of the weight updates
(``B @ A``); stacking them is: with ``A = [A_1; …; A_k]`` and ``B = [B_1/k, …, B_k/k]``,
``B @ A = mean_i(B_i @ A_i)`` exactly, an adapter of rank ``k * r`` (alpha scaled with it, so
each member keeps its own ``alpha / r``). peft's ``add_weighted_adapter(...,
combination_type="cat")`` builds the same adapter, but on a loaded base model; this works on
the saved files alone (the test checks it against peft's merged weights). The members must
share the base model, the target modules, the rank and alpha. The output is a run folder (the
first member's config, tokenizer and label map; the stacked adapter; a run_meta.json and a
metrics.json naming the members) that ``shardtune evaluate`` and ``compare`` read like any
other.

    python bench/lora_average.py runs/sft_lora_dev_values runs/sft_lora_dev_values_s1 \\
        --out runs/soup_d01
    shardtune evaluate run=runs/soup_d01 split=test baseline=false
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SAME = ("base_model_name_or_path", "target_modules", "r", "lora_alpha", "use_dora",
        "use_rslora", "modules_to_save", "rank_pattern", "alpha_pattern")
COPIED = ("config.json", "label_map.json", "tokenizer")
TRAINING_ONLY = ("train_rows", "train_split", "data_check", "final_metrics", "train_rows_added")


def average_adapters(adapters: list[Path]) -> tuple[dict[str, torch.Tensor], dict]:
    """The stacked tensors and adapter config whose update is the members' mean update."""
    configs = [json.loads((a / "adapter_config.json").read_text()) for a in adapters]
    for key in SAME:
        values = {json.dumps(sorted(v) if isinstance(v := c.get(key), list) else v,
                             sort_keys=True) for c in configs}  # module lists come unordered
        if len(values) > 1:
            raise SystemExit(f"{adapters[0]} and the others differ in {key}: {sorted(values)}")
    if any(configs[0].get(k) for k in ("use_dora", "use_rslora", "modules_to_save",
                                       "rank_pattern", "alpha_pattern")):
        raise SystemExit(f"{adapters[0]}: only plain LoRA stacks (no DoRA, rsLoRA, saved "
                         "modules or per-module ranks)")
    weights = [load_file(str(a / "adapter_model.safetensors")) for a in adapters]
    k = len(weights)
    out: dict[str, torch.Tensor] = {}
    for name in weights[0]:
        parts = [w[name] for w in weights]
        if ".lora_A." in name:
            out[name] = torch.cat(parts, dim=0)
        elif ".lora_B." in name:
            out[name] = torch.cat([p / k for p in parts], dim=1)
        else:
            raise SystemExit(f"{adapters[0]}: {name} is neither a LoRA A nor B factor")
    config = {**configs[0], "r": configs[0]["r"] * k,
              "lora_alpha": configs[0]["lora_alpha"] * k}
    return out, config


def soup_meta(runs: list[Path], out: Path) -> dict:
    """The soup's run_meta.json: the first member's, less what only its training measured, named
    for the soup and listing every member. The data fingerprint is kept only when all members
    trained on the same files (two draws of a data set do not: then none is the soup's), and
    the seed and git commit only when they share them."""
    metas = [json.loads((r / "run_meta.json").read_text()) for r in runs]
    prints = [(m.get("dataset") or {}).get("fingerprint") for m in metas]
    seeds = {m.get("seed") for m in metas}
    meta = {k: v for k, v in metas[0].items() if k not in TRAINING_ONLY}
    meta["dataset"] = {**(metas[0].get("dataset") or {}),
                       "fingerprint": prints[0] if all(p == prints[0] for p in prints) else None}
    commits = {(m.get("git") or {}).get("commit") for m in metas}
    if len(commits) > 1:  # the card and reports show one commit: not any one member's
        meta["git"] = {"commit": "members differ (averaged_from)",
                       "dirty": any((m.get("git") or {}).get("dirty") for m in metas)}
    meta.update(run_name=out.name, group_name=None, seed=seeds.pop() if len(seeds) == 1 else None,
                averaged_from=[{"run": str(r), "run_name": m.get("run_name"),
                                "seed": m.get("seed"), "git": m.get("git"),
                                "data_sha256": (p or {}).get("sha256")}
                               for r, m, p in zip(runs, metas, prints, strict=True)])
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="LoRA run folders (with adapter/)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if len(args.runs) < 2:
        raise SystemExit("give at least two runs to average")
    for run in args.runs:
        for needed in ("adapter/adapter_config.json", "run_meta.json"):
            if not (run / needed).exists():
                raise SystemExit(f"{run}: no {needed} (not a finished LoRA run?)")
    tensors, config = average_adapters([r / "adapter" for r in args.runs])
    (args.out / "adapter").mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = args.runs[0] / name
        if src.is_dir():
            shutil.copytree(src, args.out / name, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, args.out / name)
    (args.out / "run_meta.json").write_text(json.dumps(soup_meta(args.runs, args.out), indent=1))
    save_file(tensors, str(args.out / "adapter" / "adapter_model.safetensors"))
    (args.out / "adapter" / "adapter_config.json").write_text(json.dumps(config, indent=2))
    # a finished run has a metrics.json (compare and seed groups look for it); this one was
    # not trained, so it says what it averages instead of copying a member's training figures
    (args.out / "metrics.json").write_text(json.dumps(
        {"averaged_from": [str(r) for r in args.runs]}, indent=2))
    print(json.dumps({"out": str(args.out), "members": [str(r) for r in args.runs],
                      "rank": config["r"], "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
