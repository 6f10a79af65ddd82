"""E2E rows with a retrieved exemplar in the prompt: what people wrote for a similar training MR.

Why: session 45's reranker showed what BLEU rewards on E2E: the phrasing people share across
MRs of one shape, not one writer's or the model's own. Picking, among a run's 8 beams, the one
closest to the most similar training MRs' references gained +0.94, bounded by what the beams
hold. Here the model reads that phrasing before it writes: each prompt carries one exemplar,
a reference of a similar training MR with every value written verbatim replaced by its
placeholder (``X-name is a X-eatType near X-near``; ``data/delex.py``, as the reranker reads
them), and the model learns to write its own MR in the exemplar's words.

- ``train``: each training row's exemplar is, among the references of the ``--neighbours``
  training MRs most like its MR (MRs made from the same dev MR left out: the value swap keeps
  every slot but eatType and food, so another copy of the row would be its own answer), the
  one closest to the row's own reference (sentence BLEU, delexicalised): the model learns to
  follow an exemplar's words.
- ``test``: each test MR's exemplar is, among the same neighbours' references, the one of
  highest mean sentence BLEU against the other neighbours' references: the phrasing those
  MRs' writers share. Only the training file is read; no test reference.
- ``align``: the exemplar run's answers as an evaluation folder over another run's prompts
  (the same MRs, the plain template), so ``bench_paired_generations.py`` pairs the two.

    python bench/e2e_exemplars.py train --pool runs/e2e_dev_values.csv \\
        --out runs/e2e_dev_values_ex.csv
    python bench/e2e_exemplars.py test --pool runs/e2e_dev_values.csv \\
        --data ../shared/datasets/e2e_nlg/testset_w_refs.csv --out runs/e2e_test_ex.csv
    shardtune train … data.path=$PWD/runs/e2e_dev_values_ex.csv \\
        data.test_path=$PWD/runs/e2e_test_ex.csv "data.chat.prompt_template='$TEMPLATE'"
    python bench/e2e_exemplars.py align --answers runs/EX/eval/test \\
        --prompts runs/PLAIN/eval/test --out runs/EX_aligned/eval/test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.best_of_n import chat_data, read_rows, references_by_mr  # noqa: E402
from bench.common import save  # noqa: E402
from bench.e2e_synthetic_mrs import parse, render  # noqa: E402
from bench.ensemble_generate import SCORES, save_scored  # noqa: E402
from bench.neighbour_rerank import Neighbours, delexicalised, mrs_in_prompts  # noqa: E402
from evaluation.generation import corpus_metric  # noqa: E402

# the exemplar run's data.chat.prompt_template (align reads it back from the run)
TEMPLATE = "Write one fluent sentence describing this restaurant: {mr} Phrased like: {example}"
SWAPPED = ("eatType", "food")  # what e2e_value_swap.py redraws; the rest names the dev MR


def origin(mr: str) -> str:
    """The MR without the slots the value swap redraws: equal for copies of one dev MR."""
    return render({a: v for a, v in parse(mr).items() if a not in SWAPPED})


def nearest_references(neighbours: Neighbours, mr: str, k: int, same_origin: bool
                       ) -> list[list[str]]:
    """The delexicalised references of the ``k`` MRs most like ``mr``; with ``same_origin``
    every MR made from the same dev MR is left out too."""
    key = origin(mr)
    left_out = (lambda other: origin(other) == key) if same_origin else None
    return neighbours.references(mr, k, left_out)


def closest_to(target: str, groups: list[list[str]]) -> tuple[str, float]:
    """The reference of ``groups`` of highest sentence BLEU against ``target`` (ties: the
    nearer MR's, then file order), and that score."""
    bleu = corpus_metric("bleu_uncased", sentence=True)
    flat = [r for refs in groups for r in refs]
    scores = [bleu.sentence_score(r, [target]).score for r in flat]
    best = int(np.argmax(scores))
    return flat[best], scores[best]


def most_shared(groups: list[list[str]]) -> tuple[str, float]:
    """The reference of highest mean sentence BLEU against the other groups' references (each
    group scored as one MR is), and that mean: what the neighbours' writers share."""
    bleu = corpus_metric("bleu_uncased", sentence=True)
    best, best_score = groups[0][0], -1.0
    for g, refs in enumerate(groups):
        others = [o for h, o in enumerate(groups) if h != g]
        for r in refs:
            score = float(np.mean([bleu.sentence_score(r, o).score for o in others])) \
                if others else 0.0
            if score > best_score:
                best, best_score = r, score
    return best, best_score


def with_train_exemplars(pool: Path, k: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    frame = read_rows(pool)
    neighbours = Neighbours(frame.groupby("mr", sort=False)["ref"].apply(list))
    by_mr = {mr: nearest_references(neighbours, mr, k, same_origin=True)
             for mr in frame["mr"].unique()}
    picked = [closest_to(delexicalised(mr, ref), by_mr[mr])
              for mr, ref in zip(frame["mr"], frame["ref"], strict=True)]
    frame["example"] = [p[0] for p in picked]
    return frame, {"mrs": len(by_mr), "mean_bleu_to_own_reference":
                   float(np.mean([p[1] for p in picked]))}


def with_test_exemplars(pool: Path, data: Path, k: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    neighbours = Neighbours(references_by_mr(pool))
    frame = read_rows(data)
    by_mr = {mr: most_shared(nearest_references(neighbours, mr, k, same_origin=False))
             for mr in frame["mr"].unique()}
    frame["example"] = [by_mr[mr][0] for mr in frame["mr"]]
    return frame, {"mrs": len(by_mr), "mean_shared_bleu":
                   float(np.mean([v[1] for v in by_mr.values()]))}


def template_of(folder: Path) -> str:
    """The prompt template of the run an evaluation folder was made by (refused in one line
    for a folder no trained run made, e.g. one ``pick`` or ``align`` wrote)."""
    run = Path(json.loads((folder / "metrics.json").read_text())["run"])
    if not (run / "config.json").is_file():
        raise SystemExit(f"{folder}: made by {run}, not a trained run (align reads prompts "
                         "by their run's template): pass a run's own eval folder")
    return chat_data(run).chat.prompt_template


def align(answers: Path, prompts: Path, out: Path, resamples: int) -> None:
    """``answers``' generations over ``prompts``' rows, matched by MR, scored as one run.
    Each folder's prompts are read with its own run's template (``chat_data``)."""
    theirs = pd.read_parquet(answers / "predictions.parquet")
    base = pd.read_parquet(prompts / "predictions.parquet")
    mrs, wanted = (mrs_in_prompts(list(frame["text"]), template_of(folder), str(folder),
                                  f"{folder}'s run's")
                   for frame, folder in ((theirs, answers), (base, prompts)))
    by_mr = dict(zip(mrs, theirs["generated"], strict=True))
    missing = [m for m in wanted if m not in by_mr]
    if missing or len(by_mr) != len(wanted):
        raise SystemExit(f"{answers} and {prompts} answered other MRs "
                         f"({len(missing)} of {len(wanted)} missing)")
    index = {m: i for i, m in enumerate(mrs)}
    rows = theirs.iloc[[index[m] for m in wanted]].reset_index(drop=True)
    frame = base.drop(columns=[c for c in (*SCORES, "generated", "new_tokens", "stopped")
                               if c in base.columns]).assign(
        generated=list(rows["generated"]), new_tokens=list(rows["new_tokens"]),
        stopped=list(rows["stopped"]),
        references=[json.loads(r) if isinstance(r, str) else list(r)
                    for r in base["references"]])
    made = json.loads((prompts / "metrics.json").read_text())
    own = json.loads((answers / "metrics.json").read_text())
    metrics = save_scored(frame, {
        "run": str(out), "split": made["split"], "data": str(answers),
        "made_by": {"aligned_from": str(answers), "rows": made["made_by"]["rows"],
                    "generation": own["made_by"].get("generation")}}, out, resamples)
    print(json.dumps({"prompts": len(frame),
                      **{k: round(metrics[k]["value"], 2) for k in SCORES}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    for name in ("train", "test"):
        step = sub.add_parser(name)
        step.add_argument("--pool", type=Path, required=True, help="the training file (mr, ref)")
        step.add_argument("--neighbours", type=int, default=5)
        step.add_argument("--out", type=Path, required=True)
    sub.choices["test"].add_argument("--data", type=Path, required=True,
                                     help="the file to answer (mr, ref)")
    aligned = sub.add_parser("align")
    aligned.add_argument("--answers", type=Path, required=True)
    aligned.add_argument("--prompts", type=Path, required=True)
    aligned.add_argument("--out", type=Path, required=True)
    aligned.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    if args.step == "align":
        align(args.answers, args.prompts, args.out, args.resamples)
        return
    if args.step == "train":
        frame, about = with_train_exemplars(args.pool, args.neighbours)
    else:
        frame, about = with_test_exemplars(args.pool, args.data, args.neighbours)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    save(f"e2e_exemplars_{args.out.stem}", {"step": args.step, "pool": str(args.pool),
                                             "neighbours": args.neighbours, "rows": len(frame),
                                             "out": str(args.out), **about})


if __name__ == "__main__":
    main()
