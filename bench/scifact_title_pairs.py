"""SciFact's corpus as pseudo-queries: each document's title as the query for its own abstract.

A cross-encoder started from a bi-encoder's weights has a fresh one-output head and, in
SciFact, only 811 training pairs: it fits them without learning relevance that transfers
(docs/benchmarks.md, sessions 12 and 18). The corpus itself holds ~5k more (title, abstract)
pairs, with no relevance label used: the self-supervision GPL/InPars-style domain adaptation
draws on. Documents judged relevant to any *test* query are left out (their titles would
otherwise preview test documents; the count is printed). Each pair gets one negative: the
abstract BM25 ranks highest for the title that is not its own (ranks 1-10 searched).

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
from evaluation.retrieval import bm25_search  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=SHARED / "scifact")
    parser.add_argument("--out", type=Path, default=Path("runs/scifact_title_pairs"))
    args = parser.parse_args()
    docs = [json.loads(line) for line in (args.root / "corpus.jsonl").open() if line.strip()]
    test_docs = {line.split("\t")[1] for line in (args.root / "qrels" / "test.tsv").open()
                 if line.strip() and not line.startswith("query-id")}
    untitled = sum(not (d["title"].strip() and d["text"].strip()) for d in docs)
    kept = [d for d in docs if d["_id"] not in test_docs and d["title"].strip()
            and d["text"].strip()]
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
    summary = {"documents": len(docs), "test_relevant_left_out": sum(
                   d["_id"] in test_docs for d in docs), "without_title_or_text": untitled,
               "pairs": written, "no_negative_in_top_10": no_negative,
               "self_ranked_first": sum(bool(r) and r[0] == i for i, r in enumerate(found))}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
