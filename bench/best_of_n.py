"""A run's own best answers to its training MRs, chosen by BLEU against their references, as a
training file (reward-ranked self-training: RAFT / expert iteration, with BLEU as the reward).

Why: on E2E, the n-best of a fine-tuned model holds answers far closer to the references than
its top beam (oracle 68.6 vs 61.5 uncased BLEU on test MRs, ``bench/bench_nbest.py``), but
nothing that reads only the MR finds them at test time. On the training MRs the references are
known: each MR's ``--beams`` candidates are scored by sentence BLEU (uncased) against that
MR's references in the training file, and the best becomes the MR's one answer. Training on
these teaches the model which of its own phrasings the references reward. Only the training
file is read: no test text. One row per distinct MR; counts are printed and saved.

    python bench/best_of_n.py --run runs/sft_lora_dev_values --data runs/e2e_dev_values.csv \\
        --beams 4 --out runs/e2e_dev_values_best4.csv

More teachers: ``--pool`` takes earlier outputs of this script over the same ``--data`` (one
per teacher) and keeps per MR the answer of highest sentence BLEU among them. Each file
already holds its run's best, so the pool is the best of all the teachers' candidates, with no
generation.

    python bench/best_of_n.py --pool runs/e2e_dev_values_best4.csv \\
        runs/e2e_dev_values_seed1_best4.csv --data runs/e2e_dev_values.csv \\
        --out runs/e2e_dev_values_pool8.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_nbest import n_best  # noqa: E402
from bench.common import save  # noqa: E402
from data.delex import as_model_reads, relexicalize  # noqa: E402
from evaluation.generation import corpus_metric  # noqa: E402
from trainers.models import load_run_config  # noqa: E402


def best_candidates(candidates: list[list[str]], references: list[list[str]]
                    ) -> tuple[list[str], list[float], list[float], int]:
    """Per MR the candidate of highest sentence BLEU against its references (ties: the higher
    beam); the chosen and top-beam scores; how many MRs kept their top beam."""
    bleu = corpus_metric("bleu_uncased", sentence=True)
    chosen, chosen_bleu, top_bleu, kept_top = [], [], [], 0
    for cands, refs in zip(candidates, references, strict=True):
        scores = [bleu.sentence_score(c, refs).score for c in cands]
        k = int(np.argmax(scores))
        chosen.append(cands[k])
        chosen_bleu.append(scores[k])
        top_bleu.append(scores[0])
        kept_top += k == 0
    return chosen, chosen_bleu, top_bleu, kept_top


def pooled_candidates(files: list[Path], mrs: list[str]) -> list[list[str]]:
    """Per MR the answers of every earlier best-of-n file, in the files' order (so a tie keeps
    the first file's). A file whose MRs are not exactly those of ``--data``, or that holds one
    twice, is refused."""
    answers = []
    for path in files:
        frame = pd.read_csv(path)
        repeated = frame["mr"][frame["mr"].duplicated()]
        if len(repeated):
            raise SystemExit(f"{path}: MR {repeated.iloc[0]!r} appears twice")
        by_mr = dict(zip(frame["mr"], frame["ref"], strict=True))
        missing = [mr for mr in mrs if mr not in by_mr]
        if missing:
            raise SystemExit(f"{path}: {len(missing)} MRs of --data missing, "
                             f"e.g. {missing[0]!r}")
        if len(by_mr) > len(mrs):  # every MR of --data is there: the rest are not its
            raise SystemExit(f"{path}: {len(by_mr) - len(mrs)} MRs not in --data (made from "
                             "another training file?)")
        answers.append([by_mr[mr] for mr in mrs])
    return [list(per_mr) for per_mr in zip(*answers, strict=True)]


def run_prompts(mrs: list[str], data: Any) -> tuple[list[str], list[dict[str, str]]]:
    """Each MR as the run reads it (its turns as JSON) and the placeholders' values to put
    back into its answers. A run that reads placeholders (``data.chat.delexicalize``) is
    asked with them; its answers, values back in, are scored against the file's own texts
    and saved with values (the student's data path delexicalises them again)."""
    chat, prompts, values = data.chat, [], []
    for mr in mrs:
        turns = [{"role": "user", "content": chat.prompt_template.format(mr=mr)}]
        found = as_model_reads(turns, data)
        prompts.append(json.dumps(found.messages if found else turns))
        values.append(found.values if found else {})
    return prompts, values


def chat_data(run: Path) -> Any:
    """The run's data config; refused unless the run read mr/ref rows through a prompt
    template that holds ``{mr}`` once."""
    data = load_run_config(run).data
    template = data.chat.prompt_template if data.chat else None
    if not template or template.count("{mr}") != 1 or data.chat.completion_field != "ref":
        raise SystemExit(f"{run}: not trained from mr/ref rows with a prompt_template "
                         "holding {mr} once")
    return data


def answer_mrs(run: Path, data: Any, mrs: list[str], beams: int, batch: int
               ) -> tuple[list[list[str]], float]:
    """Each MR's ``beams`` candidates from ``run`` (whose :func:`chat_data` is ``data``),
    asked as it reads MRs (placeholders in) and with the values put back; and the
    generation's seconds."""
    prompts, values = run_prompts(mrs, data)
    began = time.perf_counter()
    candidates = n_best(run, prompts, beams, batch)
    seconds = time.perf_counter() - began
    return [[relexicalize(c, v) for c in cands]
            for cands, v in zip(candidates, values, strict=True)], seconds


def read_rows(path: Path) -> pd.DataFrame:
    """An (mr, ref) file; refused in one line without those columns."""
    frame = pd.read_csv(path)
    missing = {"mr", "ref"} - set(frame.columns)
    if missing:
        raise SystemExit(f"{path}: no {', '.join(sorted(missing))} column (an E2E mr/ref file)")
    return frame


def references_by_mr(path: Path) -> pd.Series:
    """Each distinct MR of a training file, in file order, with its references."""
    return read_rows(path).groupby("mr", sort=False)["ref"].apply(list)


def write_choice(out: Path, groups: pd.Series, candidates: list[list[str]], first: str,
                 **about: Any) -> None:
    """Keep each MR's best candidate, write them as a training file and save (and print) the
    counts; ``first`` names what each MR's first candidate is (its top beam, or the first
    file's answer)."""
    chosen, chosen_bleu, first_bleu, kept_first = best_candidates(candidates, list(groups))
    pd.DataFrame({"mr": groups.index, "ref": chosen}).to_csv(out, index=False)
    save(f"best_of_n_{out.stem}", {**about, "out": str(out), "mrs": len(groups),
                                   f"{first}_kept": kept_first,
                                   f"mean_sentence_bleu_{first}": float(np.mean(first_bleu)),
                                   "mean_sentence_bleu_chosen": float(np.mean(chosen_bleu))})


def pool(files: list[Path], data_path: Path, out: Path) -> None:
    """Write the best, per MR, of several teachers' best-of-n files; save the counts."""
    groups = references_by_mr(data_path)
    write_choice(out, groups, pooled_candidates(files, list(groups.index)), "first_file",
                 pool=[str(f) for f in files], data=str(data_path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="the chat run that answers")
    source.add_argument("--pool", type=Path, nargs="+",
                        help="earlier outputs of this script over --data, one per teacher")
    parser.add_argument("--data", type=Path, required=True, help="its training file (mr, ref)")
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.beams < 2:
        raise SystemExit("--beams must be at least 2 (one candidate leaves nothing to choose)")
    torch.set_num_threads(args.threads)
    if args.pool:
        pool(args.pool, args.data, args.out)
        return
    data = chat_data(args.run)  # refused before the training file is read
    groups = references_by_mr(args.data)
    candidates, seconds = answer_mrs(args.run, data, list(groups.index), args.beams, args.batch)
    write_choice(args.out, groups, candidates, "top_beam", run=str(args.run),
                 data=str(args.data), beams=args.beams, generation_seconds=seconds)


if __name__ == "__main__":
    main()
