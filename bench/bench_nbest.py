"""What picking among a chat run's n-best answers could buy over its top beam.

E2E's systems (TGen among them) rerank their beam's n-best list by how many of the meaning
representation's attributes each candidate mentions. Before building such a reranker into
``evaluate``, this measures the headroom on a fixed subset of a chat run's test prompts (every
``--every``-th of its saved ``eval-beam4/test`` answers, whose prompts and references it
reuses): the n-best of a ``--beams`` beam search, then corpus BLEU (uncased, as
``bleu_uncased``) of the top beam, of minimum-Bayes-risk picks (the candidate most like the
others by sentence BLEU or chrF), of the attribute-coverage pick, and of the oracle (the
candidate closest to the references: no reranker can beat it).

    python bench/bench_nbest.py --run runs/sft_lora_dev --beams 8 --every 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import save  # noqa: E402
from bench.e2e_synthetic_mrs import parse  # noqa: E402
from evaluation.generate import cut_at_stop, end_of_turn_ids, for_generation  # noqa: E402
from evaluation.generation import corpus_metric, corpus_scores  # noqa: E402
from evaluation.outputs import is_current  # noqa: E402
from trainers.models import load_trained  # noqa: E402

# E2E attributes whose value is rarely written as it stands in the MR: what a mention is
LOOSE = {"familyFriendly": ("family", "child", "kid"), "customer rating": ("rat",),
         "priceRange": ("price", "£", "cheap", "moderate", "high")}


def n_best(run_dir: Path, prompts: list[str], beams: int, batch: int) -> list[list[str]]:
    """Every prompt's ``beams`` candidates, best first, each cut at the end-of-turn token."""
    model, tok, _, _ = load_trained(run_dir, merge_adapters=True)
    model.eval()
    for_generation(tok)
    stop = end_of_turn_ids(tok)
    texts = [tok.apply_chat_template(json.loads(p), tokenize=False, add_generation_prompt=True)
             for p in prompts]
    out: list[list[str]] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            enc = tok(texts[start:start + batch], add_special_tokens=False, padding=True,
                      return_tensors="pt")
            seqs = model.generate(**enc, max_new_tokens=64, num_beams=beams,
                                  num_return_sequences=beams, do_sample=False,
                                  eos_token_id=stop, pad_token_id=tok.pad_token_id)
            for ids in seqs[:, enc["input_ids"].shape[1]:].tolist():
                if len(out) == 0 or len(out[-1]) == beams:
                    out.append([])
                out[-1].append(cut_at_stop(tok, ids, stop)[0])
    return out


def coverage(mr: str, candidate: str) -> int:
    """How many of the MR's attributes the candidate mentions (values verbatim, ignoring
    case; :data:`LOOSE` attributes by their usual words)."""
    text = candidate.lower()
    return sum(any(w in text for w in LOOSE[key]) if key in LOOSE else value.lower() in text
               for key, value in parse(mr).items())


def mbr(candidates: list[str], metric: str) -> str:
    """The candidate with the highest mean sentence score against the other candidates."""
    scorer = corpus_metric(metric, sentence=True)
    mean = [np.mean([scorer.sentence_score(a, [b]).score
                     for j, b in enumerate(candidates) if j != i])
            for i, a in enumerate(candidates)]
    return candidates[int(np.argmax(mean))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--beams", type=int, default=8)
    parser.add_argument("--every", type=int, default=5, help="every n-th test prompt")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--name", default="nbest_rerank")
    args = parser.parse_args()
    torch.set_num_threads(2)

    out = args.run / "eval-beam4" / "test"
    made_by = json.loads((out / "metrics.json").read_text()).get("made_by") or {}
    if not is_current(out, args.run, any_generation=True) or \
            made_by.get("generation", {}).get("num_beams") != 4:
        sys.exit(f"{out}: not {args.run}'s present weights' 4-beam answers; make them with "
                 f"shardtune evaluate run={args.run} split=test num_beams=4 name=beam4")
    saved = pd.read_parquet(out / "predictions.parquet")
    subset = saved.iloc[::args.every].reset_index(drop=True)
    refs = [json.loads(r) if isinstance(r, str) else list(r) for r in subset["references"]]
    started = time.perf_counter()
    cands = n_best(args.run, list(subset["prompt"]), args.beams, args.batch)
    seconds = time.perf_counter() - started
    oracle = corpus_metric("bleu_uncased", sentence=True)
    picks = {
        "beam4_saved": list(subset["generated"]),
        f"beam{args.beams}_top": [c[0] for c in cands],
        "mbr_bleu": [mbr(c, "bleu_uncased") for c in cands],
        "mbr_chrf": [mbr(c, "chrf") for c in cands],
        "coverage": [max(c, key=lambda x, mr=mr: coverage(mr, x))  # first of the best
                     for c, mr in zip(cands, subset["text"], strict=True)],
        "oracle": [max(c, key=lambda x, r=r: oracle.sentence_score(x, r).score)
                   for c, r in zip(cands, refs, strict=True)],
    }
    scores = {arm: round(corpus_scores(hyps, refs)["bleu_uncased"], 2)
              for arm, hyps in picks.items()}
    result = {"run": str(args.run), "prompts": len(subset), "beams": args.beams,
              "every": args.every, "generation_s": round(seconds, 1),
              "bleu_uncased": scores}
    save(args.name, result)


if __name__ == "__main__":
    main()
