"""Greedy answers of several chat runs at once: each next token from their averaged
probabilities (an ensemble), scored as ``evaluate`` scores one run.

Why: three runs of one E2E recipe (two swap draws, two training seeds) score 62.8, 60.6 and
61.8 uncased BLEU; their weight average (``bench/lora_average.py``) lands between them.
Averaging predictions instead of weights is the classic way to spend several seeds (fairseq's
``EnsembleModel`` averages probabilities the same way). Every member keeps its own KV cache;
prompts are left-padded, so positions come from the attention mask, as ``generate`` does.
With one member this is greedy search itself (the test checks it against ``generate``).

The prompts and references come from an evaluation folder of the first member (``--prompts``,
e.g. ``runs/A/eval/test``); the answers go to ``--out`` as predictions.parquet, metrics.json
and report.md, which ``bench/bench_paired_generations.py`` pairs with any member's folder.

    python bench/ensemble_generate.py runs/A runs/B runs/C --prompts runs/A/eval/test \\
        --out runs/ensemble_abc/eval/test
    python bench/bench_paired_generations.py --a runs/A/eval/test --b runs/ensemble_abc/eval/test
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluation.generate import (  # noqa: E402
    cut_at_stop,
    end_of_turn_ids,
    for_generation,
    render_prompts,
    score_generations,
    write_generation_report,
)
from evaluation.slots import slot_mentions  # noqa: E402
from trainers.models import inference_device, load_trained  # noqa: E402

SCORES = ("bleu", "bleu_uncased", "chrf", "rouge_l", "exact_match")


@torch.no_grad()
def ensemble_greedy(models: list[Any], input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    stop: list[int], max_new_tokens: int) -> torch.Tensor:
    """The new tokens (batch, steps) of greedy search over the members' mean next-token
    probabilities; a row that has stopped is padded with its stop token."""
    caches: list[Any] = [None] * len(models)
    # transformers 5.x renamed past_key_values to cache (the old name warns, then goes)
    cache_arg = ("cache" if "cache" in inspect.signature(models[0].forward).parameters
                 else "past_key_values")
    mask = attention_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    step_ids = input_ids
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    stop_ids = torch.tensor(stop, device=input_ids.device)
    out: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        log_probs = []
        for k, model in enumerate(models):
            res = model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                        **{cache_arg: caches[k]}, use_cache=True)
            caches[k] = res[cache_arg]
            log_probs.append(torch.log_softmax(res.logits[:, -1].float(), dim=-1))
        mean = torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(models))
        token = mean.argmax(-1)
        token = torch.where(done, torch.full_like(token, stop[0]), token)
        out.append(token)
        done |= torch.isin(token, stop_ids)
        if bool(done.all()):
            break
        step_ids = token[:, None]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        positions = positions[:, -1:] + 1
    return torch.stack(out, dim=1)


def answer(models: list[Any], tok: Any, template: str | None, chats: list[str],
           max_new_tokens: int, batch_size: int) -> tuple[list[str], list[int], list[bool]]:
    """Each prompt's ensemble answer (text, new tokens, whether it stopped), in input order."""
    prompts = render_prompts(tok, chats, template)
    stop = end_of_turn_ids(tok)
    result: list[tuple[str, int, bool]] = [("", 0, False)] * len(prompts)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    for start in range(0, len(prompts), batch_size):
        idx = order[start:start + batch_size]
        enc = tok([prompts[i] for i in idx], add_special_tokens=False, padding=True,
                  return_tensors="pt").to(next(models[0].parameters()).device)
        new = ensemble_greedy(models, enc["input_ids"], enc["attention_mask"], stop,
                              max_new_tokens)
        for row, ids in zip(idx, new, strict=True):
            result[row] = cut_at_stop(tok, ids.tolist(), stop)
    answers, tokens, stopped = (list(x) for x in zip(*result, strict=True))
    return answers, tokens, stopped


def load_members(runs: list[Path]) -> tuple[list[Any], Any, str | None]:
    """The members' merged models, and the tokenizer and chat template they must share."""
    models, tok, template = [], None, None
    for run in runs:
        model, run_tok, _, cfg = load_trained(run)
        if cfg.data.chat.delexicalize:  # its answers would be scored with placeholders in
            raise SystemExit(f"{run}: reads placeholders (data.chat.delexicalize), which "
                             "this script does not put back; ensemble runs that read values")
        if tok is None:
            tok, template = run_tok, cfg.task.chat_template
        elif run_tok.get_vocab() != tok.get_vocab() or cfg.task.chat_template != template:
            raise SystemExit(f"{run}: its tokenizer or chat template differs from {runs[0]}'s")
        models.append(model.to(inference_device(model)).eval())
    return models, for_generation(tok), template


def save_scored(frame: pd.DataFrame, result: dict[str, Any], out: Path, resamples: int
                ) -> dict[str, Any]:
    """Score ``frame``'s answers as ``evaluate`` does and write predictions.parquet,
    metrics.json and report.md into ``out`` (an evaluation folder ``compare``'s pairing tool
    reads); the corpus metrics."""
    scored = score_generations(frame, resamples)
    frame = frame.assign(**scored["per_example"])
    result = {**result, "metrics": scored["metrics"], "baseline": None}
    out.mkdir(parents=True, exist_ok=True)
    frame.assign(references=[json.dumps(r, ensure_ascii=False) for r in frame["references"]]
                 ).to_parquet(out / "predictions.parquet")
    write_generation_report(result, frame, out)
    return scored["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="chat run folders (the members)")
    parser.add_argument("--prompts", type=Path, required=True,
                        help="an evaluation folder (predictions.parquet) giving the prompts")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--slot-pattern", default=r"([^\[,:]+?)\[([^\]]*)\]",
                        help="data.slot_pattern for the slot report ('' for none)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    saved = pd.read_parquet(args.prompts / "predictions.parquet")
    frame = saved.drop(columns=[c for c in (*SCORES, "generated", "new_tokens", "stopped")
                                if c in saved.columns])
    frame = frame.assign(references=[json.loads(r) for r in frame["references"]])
    models, tok, template = load_members(args.runs)
    began = time.perf_counter()
    answers, tokens, stopped = answer(models, tok, template, list(frame["prompt"]),
                                      args.max_new_tokens, args.batch_size)
    seconds = time.perf_counter() - began
    frame = frame.assign(generated=answers, new_tokens=tokens, stopped=stopped)
    prompts_meta = json.loads((args.prompts / "metrics.json").read_text())
    prompts_made = prompts_meta["made_by"]  # the same prompts: pairable with that folder
    m = save_scored(frame, {
        "run": str(args.out), "split": prompts_meta["split"], "data": str(args.prompts),
        "members": [str(r) for r in args.runs], "generation_seconds": seconds,
        "made_by": {"ensemble": [str(r) for r in args.runs], "rows": prompts_made["rows"],
                    "generation": {"max_new_tokens": args.max_new_tokens, "num_beams": 1}},
        "slots": slot_mentions(frame["text"], frame["generated"], frame["references"],
                               args.slot_pattern) if args.slot_pattern else None},
        args.out, args.resamples)
    print(json.dumps({"members": len(models), "prompts": len(frame), "seconds": round(seconds, 1),
                      **{k: round(m[k]["value"], 2) for k in SCORES}}))


if __name__ == "__main__":
    main()
