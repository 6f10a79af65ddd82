"""SciFact's corpus as pseudo-queries: each document's title as the query for its own abstract.

A cross-encoder started from a bi-encoder's weights has a fresh one-output head and, in
SciFact, only 811 training pairs: it fits them without learning relevance that transfers
(docs/benchmarks.md, sessions 12 and 18). The corpus itself holds ~5k more (title, abstract)
pairs, with no relevance label used: the self-supervision GPL/InPars-style domain adaptation
draws on. Documents judged relevant to a test query, or to a training query that the runs'
``data.val_fraction`` hash holds out (the validation queries ``rerank.fusion=validation`` picks
its weight on), are left out, so neither split's documents are previewed; counts are
printed. Each pair gets one negative: the abstract BM25 ranks highest for the title that is
not its own (ranks 1-10 searched). Measured (session 34): pre-training on these lifts the
cross-encoder alone from below its first stage to level with it, and adds nothing once its
score is fused with the first stage's.

    python bench/scifact_title_pairs.py --out runs/scifact_title_pairs
    shardtune train task=rerank data.path=runs/scifact_title_pairs/train.jsonl \\
      data.pairs.negative_field=negative ...          # docs/benchmarks.md, session 34
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED  # noqa: E402
from data.retrieval import BeirSplit, read_beir  # noqa: E402
from evaluation.embedding_eval import held_out  # noqa: E402
from evaluation.retrieval import bm25_search  # noqa: E402


def relevant(split: BeirSplit) -> set[str]:
    """Documents the split's qrels judge relevant to any of its queries."""
    return {doc for judged in split.qrels.values() for doc, score in judged.items() if score > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=SHARED / "scifact")
    parser.add_argument("--out", type=Path, default=Path("runs/scifact_title_pairs"))
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="data.val_fraction of the runs the pairs are for (their held-out "
                             "queries' documents are left out too)")
    args = parser.parse_args()
    docs = [json.loads(line) for line in (args.root / "corpus.jsonl").open() if line.strip()]
    test_docs = relevant(read_beir(args.root, "test"))
    validation_docs = relevant(held_out(read_beir(args.root, "train"), args.val_fraction))
    untitled = sum(not (d["title"].strip() and d["text"].strip()) for d in docs)
    kept = [d for d in docs if d["_id"] not in test_docs | validation_docs
            and d["title"].strip() and d["text"].strip()]
    abstracts = [d["text"].strip() for d in kept]
    found = bm25_search(abstracts, [d["title"].strip() for d in kept], 10)
    args.out.mkdir(parents=True, exist_ok=True)
    written = no_negative = 0
    with (args.out / "train.jsonl").open("w") as fh:
        for i, (doc, ranked) in enumerate(zip(kept, found, strict=True)):
            negative = next((j for j in ranked if j != i), None)
            if negative is None:
                no_negative += 1
                continue
            fh.write(json.dumps({"query": doc["title"].strip(), "positive": abstracts[i],
                                 "negative": abstracts[negative], "id": doc["_id"]}) + "\n")
            written += 1
    summary = {"documents": len(docs), "test_relevant_left_out": len(test_docs),
               "validation_relevant_left_out": len(validation_docs - test_docs),
               "without_title_or_text": untitled,
               "pairs": written, "no_negative_in_top_10": no_negative,
               "self_ranked_first": sum(bool(r) and r[0] == i for i, r in enumerate(found))}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
