"""Read shards into validated rows: one Ray Data read task per shard, or the driver for
small local files.

Each row is parsed (data/shards.py, so a bad row is reported as ``file:line``), checked and
mapped onto the internal columns (``text``/``label``, a chat, a pair); with
``data.on_error=skip`` a bad row becomes an ``_error`` row that the split step drops and the
summary counts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from data import inprocess
from data.chat import prompt_text, to_messages
from data.config import DataConfig, DataFormat, OnError
from data.delex import as_model_reads
from data.errors import DataError
from data.labels import label_kind
from data.metadata import metadata_columns
from data.pairs import PAIR_TASKS, pair_row, read_pair_files
from data.pii import redact
from data.shards import Shard, detect_format, expand_paths, iter_records
from data.summary import ROWS_PER_BLOCK


def _clean(where: str, record: dict[str, Any], cfg: DataConfig, task: str,
           typed: bool = True) -> dict[str, Any]:
    """Check one raw record and map it onto the internal columns; raise DataError if bad.

    ``typed``: the format keeps value types (JSON, parquet): the label's type is kept in
    ``_ltype`` so a column mixing ``1`` and ``"1"`` can be refused (data/labels.py)."""
    if task == "token_cls":
        tokens, tags = record.get("tokens"), record.get("tags")
        if not tokens or len(tokens) != len(tags or []):
            raise DataError(where, "sentence has no tokens or a tag count that differs")
        return {"text": " ".join(tokens), "tokens": tokens, "tags": tags}
    if task == "sft":
        return _chat_row(where, record, cfg)
    if task in PAIR_TASKS:
        return pair_row(where, record, cfg.pairs)
    if cfg.text_field not in record:
        raise DataError(
            where, f"missing text field '{cfg.text_field}' (has: {', '.join(map(str, record))})",
            "set data.text_field to the right column",
        )
    text = record[cfg.text_field]
    if not isinstance(text, str):
        raise DataError(
            where, f"text field '{cfg.text_field}' is {type(text).__name__}, not a string"
        )
    if not text.strip():
        raise DataError(where, f"empty text in field '{cfg.text_field}'")
    if len(text) > cfg.max_text_chars:
        raise DataError(where, f"text is {len(text):,} characters, over data.max_text_chars="
                        f"{cfg.max_text_chars:,}", "a file without line breaks? fix the row, "
                        "raise data.max_text_chars, or skip such rows with data.on_error=skip")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(where, "text holds an unpaired surrogate (invalid Unicode)") from None
    row: dict[str, Any] = {"text": text}
    if cfg.pii == "redact":
        row["text"], found = redact(text)
        row["_pii"] = sum(found.values())
    if task == "seq_cls":
        label = record.get(cfg.label_field)
        if label is None or (isinstance(label, str) and not label.strip()):
            chat = cfg.chat.completion_field or cfg.chat.output_field  # data made for task=sft
            raise DataError(
                where, f"missing or empty label field '{cfg.label_field}'",
                f"data.name={cfg.name} holds chats: use task=sft" if chat else
                "set data.label_field to the right column",
            )
        if isinstance(label, (list, dict, float)) and not (
            isinstance(label, float) and label.is_integer()
        ):
            raise DataError(where, f"label {label!r} is not a class name or integer id")
        row["label"] = str(int(label)) if isinstance(label, float) else str(label)
        if typed:
            row["_ltype"] = label_kind(label)
    row.update(metadata_columns(where, record, cfg))
    return row


def _chat_row(where: str, record: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
    """``task=sft``: the row's conversation (data/chat.py) as JSON in ``chat``; ``text`` is its
    prompt side (system and user turns), so the validation split, leakage checks and slices
    group the rows of one prompt (E2E: every reference of a meaning representation)."""
    messages = to_messages(record, cfg.chat, where)
    row: dict[str, Any] = {}
    if cfg.pii == "redact":
        found = 0
        for message in messages:
            message["content"], counts = redact(message["content"])
            found += sum(counts.values())
        row["_pii"] = found
    size = sum(len(m["content"]) for m in messages)
    if size > cfg.max_text_chars:
        raise DataError(where, f"conversation is {size:,} characters, over "
                        f"data.max_text_chars={cfg.max_text_chars:,}")
    row["text"] = prompt_text(messages)  # as the data has it: splits, slices, slots
    if delex := as_model_reads(messages, cfg):  # the model reads and writes placeholders
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        row["delex"] = json.dumps({"values": delex.values, "reference": answers[-1]},
                                  ensure_ascii=False)
        row["_delex_missed"] = delex.missed
        messages = delex.messages
    row["chat"] = json.dumps(messages, ensure_ascii=False)
    row.update(metadata_columns(where, record, cfg))
    return row


@dataclass(frozen=True)
class ReadSpec:
    """What one read task needs; plain data so Ray can ship it to any node."""

    cfg: DataConfig
    task: str
    split: str


def _read_shard(batch: dict[str, np.ndarray], spec: ReadSpec) -> Iterator[dict[str, Any]]:
    """Ray Data UDF: one row per shard in, parsed and validated examples out (streamed)."""
    rows: list[dict[str, Any]] = []
    for uri, fragment in zip(batch["uri"], batch["fragment"], strict=True):
        shard = Shard(str(uri), str(fragment) or None)
        fmt = detect_format(shard, spec.cfg.format)
        typed = fmt in (DataFormat.jsonl, DataFormat.json, DataFormat.parquet)
        skip = spec.cfg.on_error == OnError.skip
        try:
            for where, record in iter_records(shard, fmt, spec.cfg.columns, skip_bad=skip):
                try:
                    if isinstance(record, DataError):
                        raise record
                    row = _clean(where, record, spec.cfg, spec.task, typed)
                    row["_error"] = ""
                except DataError as exc:
                    if spec.cfg.on_error == OnError.error:
                        raise
                    row = {"_error": str(exc)}
                row["_src"] = where
                rows.append(row)
                if len(rows) >= ROWS_PER_BLOCK:
                    yield _to_columns(rows)
                    rows = []
        except OSError as exc:  # gone or unreadable since the run started (streamed reads)
            lost = DataError(shard.display, f"unreadable ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})",
                             "restore it and re-run the same command to resume, or set "
                             "data.on_error=skip to train on without its rows (counted)")
            if not skip:
                raise lost from None
            # a whole shard, not a row: counted apart (SplitSummary.lost_shards)
            rows.append({"_error": str(lost), "_src": shard.display,
                         "_lost_shard": shard.display})
    if rows:
        yield _to_columns(rows)


def _to_columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = sorted({k for row in rows for k in row})
    out: dict[str, Any] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        if key in ("tokens", "tags"):
            arr = np.empty(len(values), dtype=object)
            arr[:] = [list(v) if v is not None else [] for v in values]
            out[key] = arr
        else:
            out[key] = np.array(["" if v is None else v for v in values], dtype=object)
    return out


def read_split(paths: list[str], key: str, cfg: DataConfig, task: str, split: str,
               hidden: list[str] | None = None, dropped: dict[str, int] | None = None):
    """A Ray Dataset of validated rows from ``paths`` (the config ``key`` names them): lazy,
    or materialised when this process read it (:func:`reads_here`);
    ``hidden`` collects the hidden and ``_`` files of directories, which are not read;
    ``dropped`` the judgments a BEIR split counted and did not keep (data/retrieval.py)."""
    import ray.data  # Ray loads only when data is read: the CLI imports this module without it

    if cfg.format.value in ("beir", "sts"):  # a row needs several files: joined on the driver
        ds, files, counts = read_pair_files(paths, cfg.format.value, cfg.pairs)
        if dropped is not None:
            dropped.update(counts)
        return ds, [Shard(f if "://" in f else f"file://{f}") for f in files]
    shards = expand_paths(paths, key, cfg.format, hidden)
    spec = ReadSpec(cfg, task, split)
    items = [{"uri": s.uri, "fragment": s.fragment or ""} for s in shards]
    if cfg.materialize and reads_here(shards, cfg.driver_bytes):
        blocks = [inprocess.to_block(batch) for item in items
                  for batch in _read_shard({k: np.array([v], dtype=object)
                                            for k, v in item.items()}, spec)]
        if blocks:  # nothing read: Ray's path gives the same empty split
            return inprocess.from_blocks(blocks), shards
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    return ds.map_batches(_read_shard, fn_kwargs={"spec": spec}, batch_size=1), shards


def driver_reads_all(cfg: DataConfig) -> bool:
    """Every split of ``cfg`` is read by this process (:func:`reads_here`, all its files
    together), so a local run needs Ray for none of its data (data/local.py). Pair formats
    (BEIR, STS) and streamed data take Ray Data."""
    if not (cfg.materialize and cfg.driver_rows) or cfg.format.value in ("beir", "sts"):
        return False
    keys = {"data.path": cfg.path, "data.validation_path": cfg.validation_path,
            "data.test_path": cfg.test_path}
    try:
        shards = [s for key, paths in keys.items() if paths
                  for s in expand_paths(paths, key, cfg.format, [])]
    except DataError:  # said as the read says it, later
        return False
    return reads_here(shards, cfg.driver_bytes)


def reads_here(shards: list[Shard], limit: int) -> bool:
    """Files on this machine's disk of at most ``limit`` bytes in all: read in the driver.

    Ray's read would start a task worker, which imports the data modules first (~3 s on a
    2-core machine, before the first step of a small run); rows, order and errors are the same
    (tests/test_pipeline.py). Remote URIs always take Ray's read.
    """
    if not limit or not all(s.uri.startswith("file://") for s in shards):
        return False
    try:
        return sum(os.path.getsize(s.uri[7:]) for s in shards) <= limit
    except OSError:  # gone since expanded: Ray's read reports it as the run's setting asks
        return False
