"""New E2E meaning representations, recombined from the dev set's own attributes and values.

A transfer set for distilling a chat run trained on the whole dev set (``distill.transfer_path``):
once every dev MR is a training prompt, the teacher's generalisation can only be handed on
through prompts nobody answered. Each synthetic MR keeps E2E's shape: a ``name``, then a
subset of the other seven attributes in E2E's order, the subset's size drawn from the dev
set's distribution of MR sizes, each attribute with the probability it has in dev MRs of that
size, each value by its frequency in the dev set. MRs equal to a dev or test MR are drawn
again (the distill verb would drop a test prompt anyway, and count it); no reference is read.

``--new-names``: ``name`` and ``near`` take made-up venue names (syllables, an optional "The"
or a venue word) instead of the dev set's 20. A student cut from the teacher's layers and
trained on those 20 names writes them from memory: on the test MRs whose name the dev set
lacks it wrote the name 3 times in 221 (the teacher 221), so the teacher's answers to MRs with
names nobody trained on are what it has to learn copying from. Names of the dev or test set are
never made.

    python bench/e2e_synthetic_mrs.py --out runs/e2e_synthetic_mrs.csv --n 2000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "e2e_nlg"
ORDER = ["name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly",
         "near"]
PAIR = re.compile(r"\s*([^\[,:]+?)\[([^\]]*)\]")  # no ":": a prompt's instruction is no key
ONSETS = ["B", "Br", "C", "Ch", "D", "F", "G", "Gr", "K", "L", "M", "N", "P", "R", "S", "St",
          "T", "V", "W", "Z"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
CODAS = ["", "", "n", "l", "r", "s", "t", "m", "x", "nd"]
VENUE_WORDS = ["House", "Kitchen", "Bistro", "Garden", "Inn", "Tavern", "Grill", "Palace",
               "Lounge", "Table", "Corner", "Rooms"]


def parse(mr: str) -> dict[str, str]:
    """``name[X], food[Y]`` → ``{"name": "X", "food": "Y"}``."""
    return {k.strip(): v for k, v in PAIR.findall(mr)}


def render(attrs: dict[str, str]) -> str:
    return ", ".join(f"{k}[{attrs[k]}]" for k in ORDER if k in attrs)


def made_up_name(rng: np.random.Generator) -> str:
    """A venue name of two or three made-up syllables, maybe with "The" or a venue word."""
    word = "".join(str(rng.choice(ONSETS)) + str(rng.choice(VOWELS)) + str(rng.choice(CODAS))
                   for _ in range(int(rng.integers(2, 4)))).capitalize()
    form = int(rng.integers(0, 3))
    return word if form == 0 else f"The {word}" if form == 1 else \
        f"{word} {rng.choice(VENUE_WORDS)}"


def sample(dev: list[dict[str, str]], n: int, exclude: set[str], seed: int,
           taken_names: set[str] | None = None) -> tuple[list[str], dict[str, int]]:
    """``n`` distinct MRs none of which is in ``exclude``; the draws they took. With
    ``taken_names``, ``name`` and ``near`` are made up, never one of those."""
    rng = np.random.default_rng(seed)
    sizes = Counter(len(a) for a in dev)
    size_keys = sorted(sizes)
    size_p = np.array([sizes[s] for s in size_keys], dtype=float) / sum(sizes.values())
    with_attr: dict[int, Counter] = defaultdict(Counter)
    for a in dev:
        with_attr[len(a)].update(k for k in a if k != "name")
    values = {k: Counter(a[k] for a in dev if k in a) for k in ORDER}
    out: list[str] = []
    seen, draws = set(exclude), 0
    while len(out) < n:
        draws += 1
        size = int(rng.choice(size_keys, p=size_p))
        others = [k for k in ORDER[1:] if with_attr[size][k]]
        weight = np.array([with_attr[size][k] for k in others], dtype=float)
        chosen = rng.choice(others, size=min(size - 1, len(others)), replace=False,
                            p=weight / weight.sum())
        attrs = {}
        for k in ["name", *chosen]:
            vals, counts = zip(*values[k].items(), strict=True)
            attrs[k] = str(rng.choice(vals, p=np.array(counts, dtype=float) / sum(counts)))
            if taken_names is not None and k in ("name", "near"):
                attrs[k] = made_up_name(rng)
                while attrs[k] in taken_names or (k == "near" and attrs[k] == attrs["name"]):
                    attrs[k] = made_up_name(rng)
        mr = render(attrs)
        if mr not in seen:
            seen.add(mr)
            out.append(mr)
    return out, {"draws": draws, "kept": len(out), "redrawn": draws - len(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--new-names", action="store_true",
                        help="made-up name and near values, never a dev or test name")
    args = parser.parse_args()
    dev_mrs = pd.read_csv(args.data / "devset.csv")["mr"].drop_duplicates()
    test_mrs = pd.read_csv(args.data / "testset_w_refs.csv")["mr"].drop_duplicates()
    dev = [parse(mr) for mr in dev_mrs]
    bad = [mr for mr, a in zip(dev_mrs, dev, strict=True) if "name" not in a]
    if bad:
        sys.exit(f"{args.data / 'devset.csv'}: an MR without name[...]: {bad[0]!r}")
    exclude = {render(a) for a in dev} | {render(parse(mr)) for mr in test_mrs}
    taken = None
    if args.new_names:
        test = [parse(mr) for mr in test_mrs]
        taken = {a[k] for a in dev + test for k in ("name", "near") if k in a}
    mrs, counts = sample(dev, args.n, exclude, args.seed, taken)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"mr": mrs}).to_csv(args.out, index=False)
    sizes = Counter(len(parse(mr)) for mr in mrs)
    print(json.dumps({"out": str(args.out), "seed": args.seed, "new_names": args.new_names,
                      **counts,
                      "sizes": dict(sorted(sizes.items()))}))


if __name__ == "__main__":
    main()
