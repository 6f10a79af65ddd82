"""New E2E meaning representations, recombined from the dev set's own attributes and values.

A transfer set for distilling a chat run trained on the whole dev set (``distill.transfer_path``):
once every dev MR is a training prompt, the teacher's generalisation can only be handed on
through prompts nobody answered. Each synthetic MR keeps E2E's shape: a ``name``, then a
subset of the other seven attributes in E2E's order, the subset's size drawn from the dev
set's distribution of MR sizes, each attribute with the probability it has in dev MRs of that
size, each value by its frequency in the dev set. MRs equal to a dev or test MR are drawn
again (the distill verb would drop a test prompt anyway, and count it); no reference is read.

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
PAIR = re.compile(r"\s*([^\[,]+?)\[([^\]]*)\]")


def parse(mr: str) -> dict[str, str]:
    """``name[X], food[Y]`` → ``{"name": "X", "food": "Y"}``."""
    return {k.strip(): v for k, v in PAIR.findall(mr)}


def render(attrs: dict[str, str]) -> str:
    return ", ".join(f"{k}[{attrs[k]}]" for k in ORDER if k in attrs)


def sample(dev: list[dict[str, str]], n: int, exclude: set[str], seed: int
           ) -> tuple[list[str], dict[str, int]]:
    """``n`` distinct MRs none of which is in ``exclude``; the draws they took."""
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
    args = parser.parse_args()
    dev_mrs = pd.read_csv(args.data / "devset.csv")["mr"].drop_duplicates()
    test_mrs = pd.read_csv(args.data / "testset_w_refs.csv")["mr"].drop_duplicates()
    dev = [parse(mr) for mr in dev_mrs]
    bad = [mr for mr, a in zip(dev_mrs, dev, strict=True) if "name" not in a]
    if bad:
        sys.exit(f"{args.data / 'devset.csv'}: an MR without name[...]: {bad[0]!r}")
    exclude = {render(a) for a in dev} | {render(parse(mr)) for mr in test_mrs}
    mrs, counts = sample(dev, args.n, exclude, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"mr": mrs}).to_csv(args.out, index=False)
    sizes = Counter(len(parse(mr)) for mr in mrs)
    print(json.dumps({"out": str(args.out), "seed": args.seed, **counts,
                      "sizes": dict(sorted(sizes.items()))}))


if __name__ == "__main__":
    main()
