"""Text pairs for embedding models: which fields hold them, and the two layouts read whole.

Rows in jsonl/csv/parquet shards name their sides with ``data.pairs.*`` (query/positive,
an optional hard negative, an optional similarity score) and go through the usual pipeline.
Two layouts are joined on the driver before any Ray work, since a row needs several files:
BEIR (``data.format=beir``: a ``qrels/<split>.tsv`` path, its corpus and queries two levels
up; one row per relevant pair) and STS-B (``data.format=sts``: tab-separated, no header).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from data.errors import ConfigError, DataError
from data.retrieval import read_beir, read_sts, training_pairs

PAIR_TASKS = ("embedding", "rerank")  # the tasks that read rows as text pairs


@dataclass
class PairSpec:
    """Which fields of a row hold a pair (``data.pairs.*``, ``task=embedding``).

    Args:
        query_field: The query (or first sentence).
        document_field: Its relevant document (or the second sentence).
        negative_field: An optional hard negative: a document known not to be relevant.
        score_field: For scored pairs (STS-B): the similarity; unset for query/positive pairs.
        score_low: The lowest score the data declares (a score outside the range is an error).
        score_high: The highest.
        negatives_path: A BEIR split's mined hard negatives (``shardtune mine`` writes it:
            ``negatives.jsonl`` beside its ``provenance.json``); the qrels file they were
            mined for gets one negative per pair, other splits are read as they are.
    """

    query_field: str = "query"
    document_field: str = "positive"
    negative_field: Optional[str] = None
    score_field: Optional[str] = None
    score_low: float = 0.0
    score_high: float = 5.0
    negatives_path: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.score_low < self.score_high:
            raise ConfigError("data.pairs.score_low", f"must be below data.pairs.score_high "
                              f"({self.score_low} >= {self.score_high})")


def _side(where: str, record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if not isinstance(value, str):
        raise DataError(where, f"missing text field '{name}' (has: {', '.join(map(str, record))})"
                        if value is None else f"field '{name}' is {type(value).__name__}, not "
                        "a string", "set data.pairs.* to the row's fields")
    if not value.strip():
        raise DataError(where, f"empty text in field '{name}': a pair needs both sides")
    return value


def pair_row(where: str, record: dict[str, Any], spec: PairSpec) -> dict[str, Any]:
    """One validated pair; ``text`` is the query side, so the validation split, dedup and
    leakage checks group the rows of one query."""
    row: dict[str, Any] = {"text": _side(where, record, spec.query_field),
                           "document": _side(where, record, spec.document_field)}
    if spec.negative_field:
        row["negative"] = _side(where, record, spec.negative_field)
    if spec.score_field:
        raw = record.get(spec.score_field)
        try:
            score = float(raw)
        except (TypeError, ValueError):
            raise DataError(where, f"score field '{spec.score_field}' is {raw!r}, not a "
                            "number") from None
        if math.isnan(score) or not spec.score_low <= score <= spec.score_high:
            raise DataError(where, f"score {score} outside the declared range "
                            f"[{spec.score_low}, {spec.score_high}]",
                            "set data.pairs.score_low/score_high to the data's range")
        row["score"] = score
    return row


def dropped_judgments(counts: dict[str, int]) -> dict[str, int]:
    """What a BEIR split read and did not keep, by reason; queries of the other splits are not
    a loss (the queries file holds every split's)."""
    return {k: v for k, v in counts.items() if v and k != "queries_not_in_split"}


def beir_root(location: str | Path) -> tuple[Path, str]:
    """(BEIR root, split) of a ``<root>/qrels/<split>.tsv`` path (or its ``file://`` URI)."""
    qrels = Path(location[7:] if isinstance(location, str) and location.startswith("file://")
                 else location)
    if qrels.suffix != ".tsv" or qrels.parent.name != "qrels":
        raise ConfigError("data.path", f"{qrels}: data.format=beir takes a qrels file, "
                          "<root>/qrels/<split>.tsv",
                          "e.g. data.path=/data/scifact/qrels/train.tsv")
    return qrels.parent.parent, qrels.stem


def read_pair_files(paths: list[str], fmt: str, spec: PairSpec) -> tuple[Any, list[str],
                                                                          dict[str, int]]:
    """(a Ray Dataset of validated rows, the files read, what was counted and not kept) of
    BEIR qrels or STS-B files, joined on the driver (small: a row needs several files)."""
    import ray.data  # Ray loads only when data is read: the CLI imports this module without it

    rows: list[dict[str, Any]] = []
    files: list[str] = []
    counts: dict[str, int] = {}
    for path in paths:
        got, read, dropped = read_whole(path, fmt, spec)
        rows += got
        files += [f for f in read if f not in files]
        for reason, n in dropped.items():
            counts[reason] = counts.get(reason, 0) + n
    for row in rows:
        row["_error"] = ""
    return ray.data.from_items(rows), files, counts


def read_whole(path: str, fmt: str, spec: PairSpec) -> tuple[list[dict[str, Any]], list[str],
                                                              dict[str, int]]:
    """(validated rows with ``_src``, the files read, what was counted and not kept) of one
    BEIR qrels file or STS-B file."""
    local = Path(path[7:] if path.startswith("file://") else path)
    if fmt == "sts":
        rows = [{"text": r["sentence1"], "document": r["sentence2"], "score": r["score"],
                 "_src": f"{local}:{i}"}  # read_sts checked both sides and the range
                for i, r in enumerate(read_sts(local, spec.score_low, spec.score_high), 1)]
        return rows, [str(local)], {}
    root, split = beir_root(local)
    beir = read_beir(root, split)
    pairs = training_pairs(beir)
    files = [str(root / "corpus.jsonl"), str(root / "queries.jsonl"), str(local)]
    counts = dropped_judgments(beir.counts)
    negatives = mined_for(spec.negatives_path, local)
    if negatives is not None:
        pairs = _with_negatives(pairs, negatives, beir.docs_by_id(), counts,
                                Path(spec.negatives_path) / NEGATIVES_FILE)
        files.append(str(Path(spec.negatives_path) / NEGATIVES_FILE))
    rows = [{"text": p["query"], "document": p["positive"],
             **({"negative": p["negative"]} if "negative" in p else {}),
             "_src": f"{local}#{p['query_id']}/{p['doc_id']}"} for p in pairs]
    return rows, files, counts


NEGATIVES_FILE = "negatives.jsonl"
PROVENANCE_FILE = "provenance.json"


def mined_for(negatives_path: str | None, qrels: Path) -> dict[tuple[str, str], str] | None:
    """{(query id, relevant doc id): negative doc id} when ``negatives_path`` was mined for
    this qrels file, else None (the other splits of the same data read as they are)."""
    if not negatives_path:
        return None
    folder = Path(negatives_path)
    try:
        provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError("data.pairs.negatives_path", f"{folder}: no readable "
                          f"{PROVENANCE_FILE} ({type(exc).__name__})",
                          "pass the folder `shardtune mine` printed") from None
    if Path(provenance["qrels"]).resolve() != qrels.resolve():
        return None
    found: dict[tuple[str, str], str] = {}
    if not (folder / NEGATIVES_FILE).is_file():
        raise ConfigError("data.pairs.negatives_path", f"{folder}: no {NEGATIVES_FILE}",
                          "pass the folder `shardtune mine` printed, or mine again")
    with open(folder / NEGATIVES_FILE, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                found[(record["query_id"], record["doc_id"])] = record["negative_id"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{folder / NEGATIVES_FILE}:{number}", "not a "
                                "{query_id, doc_id, negative_id} record") from None
    return found


def _with_negatives(pairs: list[dict[str, Any]], negatives: dict[tuple[str, str], str],
                    docs: dict[str, str], counts: dict[str, int], source: Path
                    ) -> list[dict[str, Any]]:
    """Each pair with its mined negative; a pair the miner found none for is not kept (every
    row of a batch needs one) and counted as ``no_hard_negative``."""
    kept = []
    for pair in pairs:
        negative = negatives.get((pair["query_id"], pair["doc_id"]))
        if negative is None:
            counts["no_hard_negative"] = counts.get("no_hard_negative", 0) + 1
            continue
        if negative not in docs:
            raise DataError(f"{source} ({pair['query_id']}/{pair['doc_id']})",
                            f"negative {negative!r} is not in the corpus",
                            "mine again against this corpus (`shardtune mine`)")
        kept.append({**pair, "negative": docs[negative]})
    return kept
