"""Retrieval and sentence-similarity data: BEIR-layout corpora and STS-B pairs.

Plain Python (stdlib only), so the readers run on the driver before any Ray or model starts and
a bad file fails in seconds. Every judgment or query that is not kept is counted in
``BeirSplit.counts``; a file that cannot be read as documented raises a one-line ``DataError``
naming ``file:line``.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.errors import DataError

QRELS_HEADER = ("query-id", "corpus-id", "score")
STS_COLUMNS = 7  # genre, file, year, id, score, sentence 1, sentence 2 (then optional notes)


@dataclass
class BeirSplit:
    """One split of a BEIR data set, aligned lists plus the judgments.

    Args:
        doc_ids: Every corpus document, in file order (the split does not narrow the corpus).
        doc_texts: ``title + " " + text`` of each document, stripped (see ``document_text``).
        query_ids: Queries of this split with at least one relevant document, in file order.
        query_texts: Their text, aligned with ``query_ids``.
        qrels: query id -> {document id: score}, only scores > 0 (the relevant documents).
        counts: What was read but not kept, by reason (see ``read_beir``); zeros included.
    """

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    counts: dict[str, int] = field(default_factory=dict)

    def docs_by_id(self) -> dict[str, str]:
        return dict(zip(self.doc_ids, self.doc_texts, strict=True))

    def queries_by_id(self) -> dict[str, str]:
        return dict(zip(self.query_ids, self.query_texts, strict=True))


def document_text(title: str, text: str) -> str:
    """``title + " " + text``, stripped: what BEIR's dense models embed (its SentenceBERT
    wrapper joins with ``sep=" "``) and what bm25s's BEIR benchmark indexes, so scores stay
    comparable with published ones. No ". " is added: titles already end as they end."""
    return f"{title} {text}".strip()


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of each non-blank line; a missing file or bad UTF-8 is a
    DataError naming the file (and line)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(str(path), f"cannot open ({exc.strerror or exc})") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}:{number}", "not valid UTF-8",
                                "re-encode the file as UTF-8") from None
            if line.strip():
                yield number, line


def _jsonl_records(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, str, dict]]:
    """(line, id, record) of each JSON line, with ``_id`` and the ``required`` string fields
    checked; ids may be written as JSON numbers and are compared as strings."""
    for number, line in _lines(path):
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(where, f"malformed JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(where, "each line must be a JSON object")
        raw_id = record.get("_id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or str(raw_id) == "":
            raise DataError(where, f"missing or empty '_id' (got {raw_id!r:.40})")
        for key in required:
            if not isinstance(record.get(key), str):
                raise DataError(where, f"'{key}' must be a string (got {record.get(key)!r:.40})")
        yield number, str(raw_id), record


def _read_corpus(path: Path) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for number, doc_id, record in _jsonl_records(path, ("text",)):
        if doc_id in seen:
            raise DataError(f"{path}:{number}", f"duplicate document id {doc_id!r:.40}, first "
                            f"on line {seen[doc_id]}")
        seen[doc_id] = number
        title = "" if record.get("title") is None else record["title"]
        if not isinstance(title, str):
            raise DataError(f"{path}:{number}", f"'title' must be a string (got {title!r:.40})")
        ids.append(doc_id)
        texts.append(document_text(title, record["text"]))
    if not ids:
        raise DataError(str(path), "the corpus holds no documents")
    return ids, texts


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    seen: dict[str, int] = {}
    for number, query_id, record in _jsonl_records(path, ("text",)):
        if query_id in seen:
            raise DataError(f"{path}:{number}", f"duplicate query id {query_id!r:.40}, first "
                            f"on line {seen[query_id]}")
        seen[query_id] = number
        queries[query_id] = record["text"]
    return queries


def _read_qrels(path: Path) -> Iterator[tuple[int, str, str, int]]:
    """(line, query id, document id, score) of each judgment after a checked header."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None or tuple(first[1].rstrip("\r\n").split("\t")) != QRELS_HEADER:
        got = "an empty file" if first is None else repr(first[1].rstrip("\r\n")[:60])
        raise DataError(f"{path}:{first[0] if first else 1}",
                        f"expected the tab-separated header {' '.join(QRELS_HEADER)!r}, got {got}")
    for number, line in lines:
        where = f"{path}:{number}"
        cells = line.rstrip("\r\n").split("\t")
        if len(cells) != 3:
            raise DataError(where, f"expected 3 tab-separated columns, got {len(cells)}")
        query_id, doc_id, score = (cell.strip() for cell in cells)
        try:
            value = int(score)
        except ValueError:
            raise DataError(where, f"score {score!r:.20} is not an integer") from None
        yield number, query_id, doc_id, value


def read_beir(root: Path, split: str) -> BeirSplit:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` under ``root``.

    Kept: every document; the queries of this split with at least one judgment of score > 0
    on a known document. Counted in ``counts`` (one per qrels row unless noted):
    ``qrels_unknown_query`` / ``qrels_unknown_doc`` (ids absent from the files),
    ``qrels_nonpositive`` (score <= 0: judged not relevant), ``qrels_duplicate`` (the same pair
    again with the same score), ``queries_without_relevant`` (queries of the split left with
    no relevant document, also when its documents are unknown) and ``queries_not_in_split``
    (queries that other splits judge, or none).
    Bad files raise DataError; so does a qrels file whose judgments all name unknown ids
    (most likely the wrong corpus), and a split that keeps no query.
    """
    root = Path(root)
    doc_ids, doc_texts = _read_corpus(root / "corpus.jsonl")
    queries = _read_queries(root / "queries.jsonl")
    known_docs = set(doc_ids)
    path = root / "qrels" / f"{split}.tsv"
    counts = Counter({key: 0 for key in ("qrels_unknown_query", "qrels_unknown_doc",
                                         "qrels_nonpositive", "qrels_duplicate",
                                         "queries_without_relevant", "queries_not_in_split")})
    judged: dict[str, dict[str, tuple[int, int]]] = {}  # query -> doc -> (score, line)
    rows = 0
    for number, query_id, doc_id, score in _read_qrels(path):
        rows += 1
        if query_id not in queries:
            counts["qrels_unknown_query"] += 1
            continue
        judgments = judged.setdefault(query_id, {})  # a query of this split from here on
        if doc_id not in known_docs:
            counts["qrels_unknown_doc"] += 1
            continue
        earlier = judgments.get(doc_id)
        if earlier is not None:
            if earlier[0] != score:
                raise DataError(f"{path}:{number}", f"query {query_id!r:.40} and document "
                                f"{doc_id!r:.40} are scored {score} here but {earlier[0]} on "
                                f"line {earlier[1]}")
            counts["qrels_duplicate"] += 1
            continue
        judgments[doc_id] = (score, number)
        counts["qrels_nonpositive"] += int(score <= 0)
    if rows == 0:
        raise DataError(str(path), "the qrels file holds no judgments")
    if not any(judged.values()):
        raise DataError(str(path), f"none of its {rows} judgments names a query in queries.jsonl "
                        "and a document in corpus.jsonl", "is it the qrels of this corpus?")
    qrels = {}
    for query_id in queries:  # file order
        relevant = {d: s for d, (s, _) in judged.get(query_id, {}).items() if s > 0}
        if relevant:
            qrels[query_id] = relevant
        elif query_id in judged:
            counts["queries_without_relevant"] += 1
        else:
            counts["queries_not_in_split"] += 1
    if not qrels:
        raise DataError(str(path), "no query of this split has a relevant document (score > 0)")
    return BeirSplit(doc_ids, doc_texts, list(qrels), [queries[q] for q in qrels], qrels,
                     dict(counts))


def training_pairs(split: BeirSplit) -> list[dict[str, Any]]:
    """One ``{"query", "positive", "query_id", "doc_id"}`` row per relevant pair, in query
    order: the (anchor, positive) rows a contrastive loss with in-batch negatives trains on."""
    docs = split.docs_by_id()
    return [{"query": text, "positive": docs[doc_id], "query_id": query_id, "doc_id": doc_id}
            for query_id, text in zip(split.query_ids, split.query_texts, strict=True)
            for doc_id, score in split.qrels[query_id].items() if score > 0]


def read_sts(path: Path, low: float = 0.0, high: float = 5.0) -> list[dict[str, Any]]:
    """STS-B pairs as ``{"sentence1", "sentence2", "score"}`` rows, in file order.

    The format of its README: tab-separated, no header, no quoting (sentences hold bare ``"``),
    score in column 5 and the sentences in 6-7; the trailing source notes some lines carry are
    ignored. A score outside ``[low, high]`` or not a number, an empty sentence, or a line
    with fewer than 7 columns is a DataError naming ``file:line``: a silently skipped pair
    would shift every correlation computed on the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()  # a few MB at most: decode at once to name a bad line exactly
    except OSError as exc:
        raise DataError(str(path), f"cannot open ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}", "not valid UTF-8", "re-encode the file as UTF-8") \
            from None
    rows: list[dict[str, Any]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    for cells in reader:
        if any(cell.strip() for cell in cells):
            rows.append(_sts_row(cells, f"{path}:{reader.line_num}", low, high))
    if not rows:
        raise DataError(str(path), "the file holds no sentence pairs")
    return rows


def _sts_row(cells: list[str], where: str, low: float, high: float) -> dict[str, Any]:
    if len(cells) < STS_COLUMNS:
        raise DataError(where, f"{len(cells)} tab-separated columns, expected at least "
                        f"{STS_COLUMNS} (score in 5, sentences in 6 and 7)")
    raw, first, second = cells[4], cells[5], cells[6]
    try:
        score = float(raw)
    except ValueError:
        raise DataError(where, f"score {raw!r:.20} is not a number") from None
    if not low <= score <= high:  # also rejects nan
        raise DataError(where, f"score {raw!r:.20} is outside [{low:g}, {high:g}]")
    if not first.strip() or not second.strip():
        raise DataError(where, f"sentence {1 if not first.strip() else 2} is empty")
    return {"sentence1": first, "sentence2": second, "score": score}
