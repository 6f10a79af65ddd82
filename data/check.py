"""``shardtune data check``: what is in the data before anyone trains on it.

Row counts, label distribution, short and very long texts, exact and near duplicates within
train (MinHash LSH from datasketch), train↔validation/test leakage (exact and near), and a PII
scan. ``fast=True`` (run automatically at the start of ``train``) skips the MinHash work.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

from data.pii import find_pii
from data.slots import unseen_line, unseen_slots

NEAR_THRESHOLD = 0.7
NUM_PERM = 128
LONG_WORDS = 256
EXAMPLES = 5


def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _shingles(text: str) -> set[bytes]:
    """Character 5-grams of the normalised text: one changed word in a short intent text
    still leaves most of them shared (word 3-grams would drop Jaccard to ~0.5)."""
    joined = normalise(text)
    return {joined[i:i + 5].encode() for i in range(max(len(joined) - 4, 1))}


def _minhashes(texts: list[str]) -> list[Any]:
    from datasketch import LeanMinHash, MinHash  # ~1 s import: only near-duplicate search

    return [LeanMinHash(m) for m in MinHash.bulk([_shingles(t) for t in texts],
                                                 num_perm=NUM_PERM)]


def near_duplicates(texts: list[str]) -> list[tuple[int, int, float]]:
    """Pairs (i, j, estimated Jaccard) within ``texts`` above the threshold, not exact dups."""
    from datasketch import MinHashLSH  # ~1 s import: only near-duplicate search

    hashes = _minhashes(texts)
    lsh = MinHashLSH(threshold=NEAR_THRESHOLD, num_perm=NUM_PERM)
    pairs = []
    norm = [normalise(t) for t in texts]
    for i, mh in enumerate(hashes):
        for j in lsh.query(mh):  # LSH gives candidates; keep those above the threshold
            similarity = mh.jaccard(hashes[j])
            if norm[i] != norm[j] and similarity >= NEAR_THRESHOLD:
                pairs.append((j, i, similarity))
        lsh.insert(i, mh)
    return pairs


def leakage(train: list[str], other: list[str], near: bool) -> dict[str, Any]:
    """Examples of ``other`` whose text appears (exactly, or nearly) in ``train``."""
    train_norm = {normalise(t): t for t in train}
    exact = [t for t in other if normalise(t) in train_norm]
    out: dict[str, Any] = {"exact": len(exact), "exact_examples": exact[:EXAMPLES]}
    if near:
        from datasketch import MinHashLSH  # ~1 s import: only near-duplicate search

        lsh = MinHashLSH(threshold=NEAR_THRESHOLD, num_perm=NUM_PERM)
        train_hashes = _minhashes(train)
        for i, mh in enumerate(train_hashes):
            lsh.insert(i, mh)
        found = []
        for text, mh in zip(other, _minhashes(other), strict=True):
            if normalise(text) in train_norm:
                continue
            hits = [j for j in lsh.query(mh) if mh.jaccard(train_hashes[j]) >= NEAR_THRESHOLD]
            if hits:
                found.append({"text": text, "train": train[hits[0]]})
        out.update(near=len(found), near_examples=found[:EXAMPLES])
    return out


def check_splits(texts: dict[str, list[str]], labels: dict[str, Counter],
                 fast: bool = False, slot_pattern: str | None = None,
                 delexicalized: Any = ()) -> dict[str, Any]:
    """The whole report as a dict; ``texts`` and ``labels`` are keyed by split name. With
    ``slot_pattern`` (``data.slot_pattern``), also the slot values of each other split that
    no training text holds (not of ``delexicalized`` attributes: the model reads none)."""
    start = time.perf_counter()
    report: dict[str, Any] = {"splits": {}, "fast": fast}
    for split, rows in texts.items():
        lengths = [len(t.split()) for t in rows]
        norm = Counter(normalise(t) for t in rows)
        dup_groups = {k: v for k, v in norm.items() if v > 1}
        pii: Counter = Counter()
        pii_examples: list[str] = []
        for t in rows:
            hit = find_pii(t)
            if hit:
                pii.update(hit)
                if len(pii_examples) < EXAMPLES:
                    pii_examples.append(t)
        entry = {
            "rows": len(rows), "labels": dict(sorted(labels.get(split, Counter()).items())),
            "short_texts": sum(n < 3 for n in lengths),
            "long_texts": sum(n > LONG_WORDS for n in lengths),
            "max_words": max(lengths, default=0),
            "exact_duplicates": sum(v - 1 for v in dup_groups.values()),
            "duplicate_examples": list(dup_groups)[:EXAMPLES],
            "pii": dict(pii), "pii_examples": pii_examples,
        }
        if split == "train" and not fast:
            pairs = near_duplicates(rows)
            entry["near_duplicates"] = len(pairs)
            entry["near_duplicate_examples"] = [{"a": rows[i], "b": rows[j], "jaccard": round(s, 3)}
                                                for i, j, s in pairs[:EXAMPLES]]
        report["splits"][split] = entry
    for split in texts:
        if split != "train" and "train" in texts:
            report.setdefault("leakage", {})[split] = leakage(texts["train"], texts[split],
                                                              near=not fast)
            if slot_pattern:
                report.setdefault("unseen_slots", {})[split] = unseen_slots(
                    texts["train"], texts[split], slot_pattern,
                    delexicalized=delexicalized)
    report["seconds"] = time.perf_counter() - start
    return report


def render_markdown(report: dict[str, Any], name: str) -> str:
    lines = [f"# Data check: `{name}`", "",
             "| split | rows | classes | exact dups | near dups | short | long | PII hits | "
             "truncated (tokens) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for split, e in report["splits"].items():
        cut = (f"{e['truncated_examples']} ({e['truncated_tokens']})"
               if "truncated_examples" in e else "—")
        lines.append(f"| {split} | {e['rows']} | {len(e['labels'])} | {e['exact_duplicates']} | "
                     f"{e.get('near_duplicates', '—')} | {e['short_texts']} | {e['long_texts']} "
                     f"| {sum(e['pii'].values())} | {cut} |")
    if "max_length" in report:
        lines += ["", f"Truncated: examples longer than task.max_length={report['max_length']} "
                  "tokens, as training tokenises them (the tokens they lose in brackets)."]
    for split, read in report.get("read", {}).items():
        if read["skipped"] or read["lost_shards"]:
            lines.append(f"- {split}: {read['skipped']} bad rows skipped, "
                         f"{len(read['lost_shards'])} unreadable shard(s) "
                         f"{', '.join(read['lost_shards'])} (data.on_error=skip)")
    for key, files in report.get("hidden_files", {}).items():
        lines.append(f"- {key}: {len(files)} hidden or _-prefixed file(s) not read: "
                     f"{', '.join(files[:5])}{' …' if len(files) > 5 else ''}")
    for split, leak in report.get("leakage", {}).items():
        lines += ["", f"## Leakage train → {split}", "",
                  f"- exact: {leak['exact']}" + (f", near: {leak['near']}" if "near" in leak
                                                  else "")]
        lines += [f"  - `{t[:100]}`" for t in leak["exact_examples"]]
        lines += [f"  - `{x['text'][:80]}` ~ `{x['train'][:80]}`"
                  for x in leak.get("near_examples", [])]
    for split, unseen in report.get("unseen_slots", {}).items():
        if unseen["prompts"]:
            lines += ["", f"## Slot values only {split} holds", "", unseen_line(split, unseen)]
    for split, e in report["splits"].items():
        if e["pii"]:
            lines += ["", f"## PII in {split}: {e['pii']}", ""]
            lines += [f"- `{t[:100]}`" for t in e["pii_examples"]]
        if e.get("near_duplicate_examples"):
            lines += ["", f"## Near duplicates in {split}", ""]
            lines += [f"- `{x['a'][:70]}` ~ `{x['b'][:70]}` ({x['jaccard']})"
                      for x in e["near_duplicate_examples"]]
    label_rows = report["splits"].get("train", {}).get("labels", {})
    if label_rows:
        counts = sorted(label_rows.values())
        lines += ["", f"Train label counts: min {counts[0]}, median {counts[len(counts) // 2]}, "
                  f"max {counts[-1]} over {len(counts)} classes.", ""]
    lines.append(f"Checked in {report['seconds']:.1f} s.")
    return "\n".join(lines) + "\n"


FAST_CHECK_MAX_ROWS = 200_000


def check_dataset_splits(splits: Any, fast: bool, slot_pattern: str | None = None,
                         delexicalized: Any = ()) -> dict[str, Any]:
    """Run the check over the Ray Datasets of a :class:`data.pipeline.Splits`."""
    sizes = {name: s.rows for name, s in splits.summaries.items()}
    if fast and max(sizes.values()) > FAST_CHECK_MAX_ROWS:
        return {"skipped": f"splits larger than {FAST_CHECK_MAX_ROWS} rows; run "
                           "'shardtune data check' for the full report", "rows": sizes}
    texts = {name: [str(t) for t in ds.to_pandas()["text"]]
             for name, ds in splits.datasets.items()}
    labels = {name: s.labels for name, s in splits.summaries.items()}
    return check_splits(texts, labels, fast=fast, slot_pattern=slot_pattern,
                        delexicalized=delexicalized)


def summary_line(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a run's metadata keeps from the fast check."""
    if "skipped" in report:
        return report
    train = report["splits"].get("train", {})
    return {"train_exact_duplicates": train.get("exact_duplicates"),
            "pii_hits": {k: sum(e["pii"].values()) for k, e in report["splits"].items()},
            "exact_leakage": {k: v["exact"] for k, v in report.get("leakage", {}).items()},
            **({"unseen_slots": report["unseen_slots"]} if "unseen_slots" in report else {}),
            "seconds": round(report["seconds"], 2)}


def dedup_plan(train: list[tuple[str, str, str]], others: list[str]
               ) -> tuple[set[str], dict[str, int], list[str]]:
    """Which train rows (by ``_src``) ``data.dedup`` drops: repeats after the first occurrence,
    and rows whose text occurs in validation/test. ``train`` holds (``_src``, text, label).

    Returns (ids, counts by reason, examples of conflicts). ``counts["conflicting"]`` is the
    part of ``duplicates`` whose label differs from the first occurrence's, the one kept: the
    data says two things about one text and the run keeps one without being told which."""
    held_out = {normalise(t) for t in others}
    kept: dict[str, tuple[str, str]] = {}
    drop: set[str] = set()
    counts = {"duplicates": 0, "leaked": 0, "conflicting": 0}
    conflicts: list[str] = []
    for src, text, label in train:
        key = normalise(text)
        if key in held_out:
            drop.add(src)
            counts["leaked"] += 1
        elif key in kept:
            drop.add(src)
            counts["duplicates"] += 1
            first_src, first_label = kept[key]
            if label != first_label:
                counts["conflicting"] += 1
                if len(conflicts) < EXAMPLES:
                    conflicts.append(f"{src} ({label!r}) dropped, {first_src} ({first_label!r}) "
                                     "kept")
        else:
            kept[key] = (src, label)
    return drop, counts, conflicts
