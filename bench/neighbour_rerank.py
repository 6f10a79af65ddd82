"""Pick, per MR, the candidate of a run's n-best closest to what people wrote for the most
similar training MRs (delexicalised), scored as ``evaluate`` scores one run.

Why: the 8-best of a fine-tuned E2E model holds answers far closer to the references than its
top beam (oracle 68.6 vs 61.5 uncased BLEU, ``bench/bench_nbest.py``), but what reads only the
MR and the candidates cannot find them: attribute coverage buys 0.1 and consensus (MBR) among
the candidates loses a point, since it prefers the commonest phrasing *of the model*. The
training file holds what *people* wrote for MRs of the same shape. Each candidate and each
training reference is delexicalised by its own MR (every slot value written verbatim becomes
its placeholder, ``data/delex.py``; "an" reads "a"), and the candidate of highest sentence
BLEU against the references of the ``--neighbours`` training MRs most like the test MR (same
attributes first, then same values) is kept; ties keep the higher beam. Only the training file
is read: no test text. ``--how corpus`` instead picks all MRs' candidates together, for the
highest corpus BLEU against their neighbours' references (the test's own statistic, brevity
penalty included). Several runs' n-best files (``--candidates A B``) are joined per MR, the
earlier file winning ties. On E2E's test MRs: +0.94 uncased BLEU over the top of 8 beams
(docs/benchmarks.md, session 45).

    # the n-best, once (14-15 min for 630 MRs with 8 beams on 2 cores)
    python bench/neighbour_rerank.py nbest --run runs/R --beams 8 \\
        --prompts runs/R/eval-beam8/test --out runs/R/nbest8_test.parquet
    # the setting, chosen on the training MRs (each scored without its own references)
    python bench/neighbour_rerank.py nbest --run runs/R --beams 8 \\
        --data ../shared/datasets/e2e_nlg/devset.csv --out runs/R/nbest8_dev.parquet
    python bench/neighbour_rerank.py tune --candidates runs/R/nbest8_dev.parquet \\
        --pool ../shared/datasets/e2e_nlg/devset.csv --name neighbour_rerank_tune
    # the test answers, as an evaluation folder that compare's pairing tool reads
    python bench/neighbour_rerank.py pick --candidates runs/R/nbest8_test.parquet \\
        --pool ../shared/datasets/e2e_nlg/devset.csv --neighbours 5 --out runs/R_nrr/eval/test
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.best_of_n import (  # noqa: E402
    answer_mrs,
    best_candidates,
    chat_data,
    read_rows,
    references_by_mr,
)
from bench.common import save  # noqa: E402
from bench.e2e_synthetic_mrs import parse  # noqa: E402
from bench.ensemble_generate import SCORES, save_scored  # noqa: E402
from data.delex import delexicalize  # noqa: E402
from evaluation.generate import copied_values  # noqa: E402
from evaluation.generation import corpus_metric, reference_streams  # noqa: E402
from evaluation.outputs import weights_hash  # noqa: E402
from trainers.models import load_run_config, load_tokenizer  # noqa: E402

SLOT_PATTERN = r"([^\[,:]+?)\[([^\]]*)\]"
# values people write as they stand; familyFriendly[yes/no] is phrased, never copied
DELEXICALISED = ["name", "near", "eatType", "food", "area", "priceRange", "customer rating"]
OPEN = {"name", "near"}  # values no two MRs need share to be phrased alike
SETTINGS = [(k, how) for k in (1, 3, 5, 10, 20, 40) for how in ("pooled", "mean", "corpus")]


def delexicalised(mr: str, text: str) -> str:
    """``text`` with each of ``mr``'s values written verbatim as its placeholder, and the
    article before a placeholder made "a" (a pub, an Italian: the same phrasing)."""
    turns = [{"role": "user", "content": mr}, {"role": "assistant", "content": text}]
    out = delexicalize(turns, SLOT_PATTERN, DELEXICALISED).messages[1]["content"]
    return re.sub(r"\b[Aa]n\b", "a", out)


class Neighbours:
    """The training file's MRs with their delexicalised references, ranked by likeness.
    ``sources``: an MR's own training MR under other names (``bench/e2e_unseen_names.py``),
    left out of its neighbours as the MR itself is."""

    def __init__(self, pool: pd.Series, sources: dict[str, str] | None = None) -> None:
        self.entries = [(mr, parse(mr), [delexicalised(mr, r) for r in refs])
                        for mr, refs in pool.items()]
        self.sources = sources or {}

    def references(self, mr: str, k: int, left_out: Callable[[str], bool] | None = None
                   ) -> list[list[str]]:
        """The delexicalised references of the ``k`` MRs most like ``mr`` (itself, its
        source, and every MR ``left_out`` names left out): two points off per attribute one
        has and the other lacks, one on per shared value of a non-name attribute; ties in
        file order."""
        slots = parse(mr)
        own = {mr, self.sources.get(mr, mr)}

        def likeness(other: dict[str, str]) -> int:
            shared = set(slots) & set(other)
            return -2 * len(set(slots) ^ set(other)) + sum(
                slots[a] == other[a] for a in shared - OPEN)

        ranked = sorted((e for e in self.entries
                         if e[0] not in own and not (left_out and left_out(e[0]))),
                        key=lambda e: -likeness(e[1]))
        return [refs for _, _, refs in ranked[:k]]


def copied(mrs: list[str], candidates: list[list[str]]) -> tuple[list[list[str]], int]:
    """Every candidate with the MR's ``name`` and ``near`` values it writes in part written
    whole, as ``evaluate copy_values=[name,near]`` mends answers; how many values were
    mended in all."""
    slots, out, mended = re.compile(SLOT_PATTERN), [], 0
    for mr, cands in zip(mrs, candidates, strict=True):
        fixed, counts = copied_values(cands, [mr] * len(cands), slots, sorted(OPEN))
        out.append(fixed)
        mended += sum(counts)
    return out, mended


def per_neighbour(mr: str, candidates: list[str], neighbours: Neighbours, k: int) -> np.ndarray:
    """Each candidate (uncased, delexicalised) against each of the ``k`` nearest MRs'
    references, nearest first: shape (candidates, k, 11), the sentence BLEU then the corpus
    statistics (answer length, reference length, matches and totals of orders 1-4)."""
    bleu = corpus_metric("bleu_uncased", sentence=True)
    groups = neighbours.references(mr, k)
    scores = [[bleu.sentence_score(delexicalised(mr, c), refs) for refs in groups]
              for c in candidates]
    return np.array([[[s.score, s.sys_len, s.ref_len, *s.counts, *s.totals] for s in row]
                     for row in scores], dtype=float).reshape(len(candidates), len(groups), 11)


def mean_of_nearest(scores: np.ndarray, k: int) -> np.ndarray:
    """Each candidate's mean sentence BLEU over its first ``k`` neighbours (the same sum order
    for every ``k``, so a tune over k prefixes one matrix and picks as ``pick`` would)."""
    return np.array([row[:k, 0].mean() for row in scores])


def log_bleu(stats: np.ndarray) -> np.ndarray:
    """Corpus BLEU's logarithm from summed statistics (last axis as :func:`per_neighbour`'s
    columns 1-10), as sacrebleu computes it unsmoothed."""
    length, ref_length = stats[..., 0], stats[..., 1]
    matches, totals = stats[..., 2:6], stats[..., 6:10]
    with np.errstate(divide="ignore"):
        precision = np.log(matches / np.maximum(totals, 1)).mean(axis=-1)
    return np.minimum(0.0, 1 - ref_length / np.maximum(length, 1)) + precision


def corpus_picks(matrices: list[np.ndarray], k: int, rounds: int = 5) -> list[int]:
    """Each MR's candidate such that the answers' corpus BLEU against their ``k`` nearest
    MRs' references (each neighbour an MR of the corpus) is highest: coordinate ascent from
    the mean sentence BLEU's picks, one MR at a time, until no pick changes.

    Why: the test scores the corpus, not each answer; its brevity penalty and n-gram
    precisions are sums over MRs, which a per-answer smoothed score only approximates."""
    stats = [m[:, :k, 1:].sum(axis=1) for m in matrices]
    picks = [int(np.argmax(mean_of_nearest(m, k))) for m in matrices]
    total = sum(s[p] for s, p in zip(stats, picks, strict=True))
    for _ in range(rounds):
        changed = 0
        for i, own in enumerate(stats):
            rest = total - own[picks[i]]
            gains = log_bleu(rest + own)
            best = picks[i] if gains[picks[i]] >= gains.max() else int(np.argmax(gains))
            if best != picks[i]:
                changed += 1
                total, picks[i] = rest + own[best], best
        if not changed:
            break
    return picks


def ranks_by(how: str, k: int, mrs: list[str], candidates: list[list[str]],
             matrices: list[np.ndarray], neighbours: Neighbours | None) -> list[int]:
    """Every MR's picked candidate under one setting (``matrices``: :func:`per_neighbour`'s,
    at least ``k`` neighbours wide; ``neighbours``: only ``pooled`` reads them)."""
    if how == "top":  # the baseline every pick is paired with: the top beam
        return [0] * len(candidates)
    if how == "corpus":
        return corpus_picks(matrices, k)
    if how == "mean":
        return [int(np.argmax(mean_of_nearest(m, k))) for m in matrices]
    assert neighbours is not None, "pooled picks read the neighbours"
    return [pick(mr, c, neighbours, k, how) for mr, c in zip(mrs, candidates, strict=True)]


def pick(mr: str, candidates: list[str], neighbours: Neighbours, k: int, how: str) -> int:
    """The index of the candidate closest to the neighbours' references: sentence BLEU
    (uncased) against all their references at once (``pooled``) or its mean over the
    neighbours, each against its own (``mean``, as the test scores one MR); ties: the lower
    index (the higher beam)."""
    if how == "mean":
        return int(np.argmax(mean_of_nearest(per_neighbour(mr, candidates, neighbours, k), k)))
    bleu = corpus_metric("bleu_uncased", sentence=True)
    pooled = [r for refs in neighbours.references(mr, k) for r in refs]
    return int(np.argmax([bleu.sentence_score(delexicalised(mr, c), pooled).score
                          for c in candidates]))


def corpus_bleu(answers: list[str], references: list[list[str]]) -> float:
    return corpus_metric("bleu_uncased").corpus_score(answers, reference_streams(references)).score


def mrs_in_prompts(texts: list[str], template: str, source: str, whose: str) -> list[str]:
    """The MR each prompt was made from by ``template`` (``{mr}`` once; other fields may follow
    it, after some fixed text). A prompt the template did not make is refused in one line
    naming ``source``: answers matched by MR must be answers to the same MRs."""
    head, _, tail = template.partition("{mr}")
    fixed, more, _ = tail.partition("{")  # the fixed text between {mr} and the next field
    if more and not fixed:
        raise SystemExit(f"{whose} template {template!r}: no fixed text ends {{mr}}")
    mrs: list[str | None] = []
    for text in texts:
        body = text[len(head):] if text.startswith(head) else None
        if body is not None and more:
            end = body.find(fixed)
            mrs.append(body[:end] if end >= 0 else None)
        else:
            mrs.append(body[:len(body) - len(tail)]
                       if body is not None and body.endswith(tail) else None)
    alien = [t for t, m in zip(texts, mrs, strict=True) if m is None]
    if alien:
        raise SystemExit(f"{source}: {len(alien)} prompts not made by {whose} template, "
                         f"e.g. {alien[0]!r}")
    return [m for m in mrs if m is not None]


def make_nbest(args: argparse.Namespace) -> None:
    """Generate and save every MR's n-best (the run's own prompts, values put back)."""
    data = chat_data(args.run)
    template = data.chat.prompt_template
    if args.prompts:
        frame = pd.read_parquet(args.prompts / "predictions.parquet")
        mrs = mrs_in_prompts(list(frame["text"]), template, f"{args.prompts}", f"{args.run}'s")
        frame = frame.drop(columns=[c for c in (*SCORES, "generated", "new_tokens", "stopped")
                                    if c in frame.columns])
    else:
        groups = references_by_mr(args.data)
        mrs = list(groups.index)
        frame = pd.DataFrame({"text": [template.format(mr=m) for m in mrs],
                              "references": [json.dumps(r) for r in groups]})
    candidates, seconds = answer_mrs(args.run, data, mrs, args.beams, args.batch)
    frame.assign(mr=mrs, candidates=[json.dumps(c) for c in candidates]).to_parquet(args.out)
    about = {"run": str(args.run), "weights": weights_hash(args.run), "beams": args.beams,
             "source": str(args.prompts or args.data), "mrs": len(mrs),
             "generation_seconds": seconds}
    if args.prompts:  # which prompts: pick refuses a source folder evaluated again since
        about["rows"] = json.loads((args.prompts / "metrics.json").read_text())["made_by"]["rows"]
    Path(f"{args.out}.json").write_text(json.dumps(about, indent=1))
    print(json.dumps(about))


def read_candidates(paths: list[Path]) -> tuple[pd.DataFrame, list[list[str]], list[list[str]]]:
    """The first file's rows, each MR's candidates of every file in turn (so a tie keeps the
    earlier file's), and each MR's references. Files that answered other MRs are refused."""
    frames = [pd.read_parquet(p) for p in paths]
    first = frames[0]
    for path, frame in zip(paths[1:], frames[1:], strict=True):
        if list(frame["mr"]) != list(first["mr"]):
            raise SystemExit(f"{path} holds other MRs (or another order) than {paths[0]}")
    candidates = [sum(per_file, []) for per_file in zip(
        *[[json.loads(c) for c in f["candidates"]] for f in frames], strict=True)]
    return first, candidates, [json.loads(r) for r in first["references"]]


def tune(args: argparse.Namespace) -> None:
    """Corpus BLEU of each setting's picks on the training MRs, each MR's own references left
    out of its neighbours; beside the top beam and the oracle."""
    frame, candidates, references = read_candidates(args.candidates)
    made_from = [json.loads(Path(f"{p}.json").read_text()) for p in args.candidates]
    neighbours = Neighbours(references_by_mr(args.pool), sources_of(Path(made_from[0]["source"])))
    mended = 0
    if args.copy_values:
        candidates, mended = copied(list(frame["mr"]), candidates)
    oracle = best_candidates(candidates, references)[0]
    result: dict[str, Any] = {"candidates": list(map(str, args.candidates)),
                              # pick --tuned checks its test n-best came from these runs
                              "runs": [{k: m.get(k) for k in ("run", "weights")}
                                       for m in made_from],
                              "copy_values": args.copy_values, "values_mended": mended,
                              "sources_left_out": len(neighbours.sources),
                              "pool": str(args.pool), "mrs": len(frame),
                              "top_beam": corpus_bleu([c[0] for c in candidates], references),
                              "oracle": corpus_bleu(oracle, references), "settings": {}}
    # the mean's per-neighbour scores once, to the largest k: each k takes its first columns
    largest = max(k for k, _ in SETTINGS)
    matrices = [per_neighbour(mr, c, neighbours, largest)
                for mr, c in zip(frame["mr"], candidates, strict=True)]
    for k, how in SETTINGS:
        ranks = ranks_by(how, k, list(frame["mr"]), candidates, matrices, neighbours)
        chosen = [c[r] for c, r in zip(candidates, ranks, strict=True)]
        result["settings"][f"{how}_{k}"] = corpus_bleu(chosen, references)
        print(f"{how} k={k}: {result['settings'][f'{how}_{k}']:.2f}", flush=True)
    best = max(result["settings"], key=result["settings"].get)
    save(args.name, {**result, "best": best})


def sources_of(data: Path) -> dict[str, str]:
    """Each MR's original training MR where ``data`` (an nbest's source file) renamed its
    values (``source_mr``, ``bench/e2e_unseen_names.py``); else none."""
    if data.suffix != ".csv" or not data.is_file():
        return {}
    rows = read_rows(data)
    if "source_mr" not in rows.columns:
        return {}
    return dict(zip(rows["mr"], rows["source_mr"], strict=True))


def setting(args: argparse.Namespace, made_from: list[dict[str, Any]]) -> tuple[str, int]:
    """The (how, k) to pick with: ``--tuned``'s best setting, refused unless that tune read
    the n-best of the same runs, with the same weights, in the same order, and mended them as
    this pick does (``--copy-values``); else the flags (default: mean over 5, session 45's dev
    choice)."""
    if args.neighbours is not None and args.neighbours < 1:
        raise SystemExit(f"--neighbours {args.neighbours}: at least 1 neighbour")
    if not args.tuned:
        return args.how or "mean", args.neighbours or 5
    if args.how or args.neighbours is not None:
        raise SystemExit("give --tuned or --how/--neighbours, not both")
    tuned = json.loads(args.tuned.read_text())
    theirs = [(str(Path(r["run"]).resolve()), r["weights"]) for r in tuned.get("runs", [])]
    ours = [(str(Path(m["run"]).resolve()), m.get("weights")) for m in made_from]
    if theirs != ours:
        raise SystemExit(f"{args.tuned}: tuned on the n-best of {[t[0] for t in theirs]}, "
                         f"not of {[o[0] for o in ours]} (or of other weights): tune again")
    if bool(tuned.get("copy_values")) != bool(getattr(args, "copy_values", False)):
        raise SystemExit(f"{args.tuned}: tuned {'with' if tuned.get('copy_values') else 'without'}"
                         " --copy-values, picking without/with it: tune as you pick")
    how, k = tuned["best"].rsplit("_", 1)
    return how, int(k)


def choose(args: argparse.Namespace) -> None:
    """Write the picks as an evaluation folder (scored, with its report)."""
    frame, candidates, _ = read_candidates(args.candidates)
    made_from = [json.loads(Path(f"{p}.json").read_text()) for p in args.candidates]
    source = Path(made_from[0]["source"])
    if not (source / "metrics.json").exists():
        raise SystemExit(f"{args.candidates[0]}: made from {source}, not an evaluation folder "
                         "(pick writes one like it; tune reads training MRs)")
    made = json.loads((source / "metrics.json").read_text())
    if made["made_by"]["rows"] != made_from[0].get("rows"):
        raise SystemExit(f"{source} was evaluated on other prompts since "
                         f"{args.candidates[0]} was made: make the n-best again")
    for path, about in zip(args.candidates, made_from, strict=True):
        if about.get("weights") != weights_hash(Path(about["run"])):
            raise SystemExit(f"{path}: {about['run']}'s weights are not those it was made "
                             "with (trained again since?): make the n-best again")
    how, k = setting(args, made_from)
    # the top beam reads no neighbour: the pool is not delexicalised for it
    neighbours = Neighbours(references_by_mr(args.pool)) if how != "top" else None
    mrs = list(frame["mr"])
    mended = 0
    if args.copy_values:
        candidates, mended = copied(mrs, candidates)
    scored = neighbours is not None and how in ("mean", "corpus")
    matrices = [per_neighbour(mr, c, neighbours, k) if scored else np.empty(0)
                for mr, c in zip(mrs, candidates, strict=True)]
    ranks = ranks_by(how, k, mrs, candidates, matrices, neighbours)
    chosen = [c[r] for c, r in zip(candidates, ranks, strict=True)]
    tok = load_tokenizer(load_run_config(Path(made_from[0]["run"])).model)
    new_tokens = [len(tok(a, add_special_tokens=False)["input_ids"]) for a in chosen]
    out = frame.drop(columns=["candidates", "mr"]).assign(
        # n_best generates at most 64 new tokens: an answer that long may have been cut
        generated=chosen, new_tokens=new_tokens, stopped=[n < 64 for n in new_tokens],
        references=[json.loads(r) for r in frame["references"]])
    picked = np.bincount(ranks, minlength=len(candidates[0])).tolist()
    metrics = save_scored(out, {
        "run": str(args.out), "split": made["split"], "data": str(source),
        "picked_rank": picked,
        "made_by": {"neighbour_rerank": {"candidates": made_from, "pool": str(args.pool),
                                         "neighbours": k, "how": how,
                                         "copy_values": args.copy_values,
                                         "values_mended": mended,
                                         "tuned": str(args.tuned) if args.tuned else None},
                    "rows": made["made_by"]["rows"],
                    # not the source's decoding: pairing it with the source needs
                    # bench_paired_generations.py --decoding-differs
                    "generation": {**(made["made_by"].get("generation") or {}),
                                   "picked_by": f"neighbours {how} {k}",
                                   "candidates": len(candidates[0])}}},
        args.out, args.resamples)
    print(json.dumps({"prompts": len(out), "picked_rank": picked,
                      **{k: round(metrics[k]["value"], 2) for k in SCORES}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    gen = sub.add_parser("nbest", help="generate and save each MR's n-best")
    gen.add_argument("--run", type=Path, required=True)
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", type=Path, help="an evaluation folder: its prompts")
    source.add_argument("--data", type=Path, help="a training file (mr, ref): its MRs")
    gen.add_argument("--beams", type=int, default=8)
    gen.add_argument("--batch", type=int, default=8)
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--threads", type=int, default=torch.get_num_threads())
    for name in ("tune", "pick"):
        step = sub.add_parser(name)
        step.add_argument("--candidates", type=Path, nargs="+", required=True,
                          help="nbest outputs over the same MRs (one per run)")
        step.add_argument("--pool", type=Path, required=True, help="the training file (mr, ref)")
        step.add_argument("--copy-values", action="store_true",
                          help="first write each name/near value a candidate writes in part "
                               "whole (data.delex.copy_values)")
    sub.choices["tune"].add_argument("--name", default="neighbour_rerank_tune")
    sub.choices["pick"].add_argument("--tuned", type=Path,
                                     help="a tune result: its best setting, same runs checked")
    sub.choices["pick"].add_argument("--neighbours", type=int, help="k (default 5)")
    sub.choices["pick"].add_argument("--how", choices=["pooled", "mean", "corpus", "top"],
                                     help="default mean; top: the top beam, the baseline")
    sub.choices["pick"].add_argument("--out", type=Path, required=True)
    sub.choices["pick"].add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    if args.step == "nbest":
        if args.beams < 2:
            raise SystemExit("--beams must be at least 2 (one candidate leaves nothing to pick)")
        torch.set_num_threads(args.threads)
        make_nbest(args)
    elif args.step == "tune":
        tune(args)
    else:
        choose(args)


if __name__ == "__main__":
    main()
