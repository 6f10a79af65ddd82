"""A LoRA run's adapter merged into its base model, saved as a Hugging Face directory.

Why: a further fine-tune that starts where a run ended (``bench/best_of_n.py``'s
self-training) needs that run's weights as its base model; ``model.name_or_path`` takes any
directory, so the merged weights (safetensors) and the run's tokenizer go into one.

    python bench/merge_lora.py runs/sft_lora_dev_values --out runs/sft_lora_dev_values_merged
    shardtune train ... model.name_or_path=$PWD/runs/sft_lora_dev_values_merged
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainers.models import load_trained  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a LoRA run folder (with adapter/)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not (args.run / "adapter" / "adapter_config.json").is_file():
        raise SystemExit(f"{args.run}: no adapter/adapter_config.json (not a LoRA run?)")
    model, tokenizer, _, _ = load_trained(args.run, merge_adapters=True)
    if hasattr(model, "peft_config"):
        raise SystemExit(f"{args.run}: its adapter does not merge (QLoRA keeps a 4-bit base)")
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
