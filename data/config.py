"""Typed data config: where the examples live and how to read them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from data.chat import ChatSpec
from data.errors import ConfigError
from data.pairs import PairSpec


class DataFormat(str, Enum):
    auto = "auto"  # by file extension
    jsonl = "jsonl"
    json = "json"  # one JSON document: a list of rows, or a dict of them under `json_key`
    csv = "csv"
    tsv = "tsv"
    parquet = "parquet"
    text = "text"  # one example per non-blank line (causal LM)
    conll = "conll"  # token<TAB>tag lines, blank line between sentences (NER)
    beir = "beir"  # qrels/<split>.tsv with corpus.jsonl and queries.jsonl (retrieval pairs)
    sts = "sts"  # STS-B: tab-separated, score and two sentences (scored pairs)


class OnError(str, Enum):
    error = "error"  # stop at the first bad row, naming file and line
    skip = "skip"  # drop bad rows, count them and record the count in run metadata


@dataclass
class MetadataCount:
    """A slice column counted from a text field: how often ``pattern`` (a regular expression)
    matches in it. E2E's ``{field: mr, pattern: '\\['}`` gives each meaning representation's
    number of attributes, the slice the E2E literature reports by."""

    field: str = "???"
    pattern: str = "???"


@dataclass
class DataConfig:
    """Which examples to train on.

    Args:
        name: Short name of the data set, used in reports.
        path: A file, directory, glob, or a list of them; local paths or URIs
            (file://, s3://, gs://) read through pyarrow/fsspec filesystems.
        format: File format; ``auto`` picks by extension.
        text_field: Column holding the input text (token list for ``conll``).
        label_field: Column holding the gold label (tag list for ``conll``); unused for LM.
        columns: Column names for header-less CSV/TSV files or list-shaped JSON rows.
        validation_path: A separate validation set; if unset, ``val_fraction`` of train is
            held out by a stable hash of each example's text (shard order does not matter).
        test_path: An optional test set, evaluated once at the end.
        val_fraction: Share held out for validation when ``validation_path`` is unset.
        max_examples: Keep about N examples of each split, sampled by a stable hash of the
            text (debugging, benchmarks); the same N always gives the same subset.
        on_error: ``error`` stops at the first bad row; ``skip`` counts and drops bad rows.
        max_text_chars: A longer text is a bad row (a file without line breaks, a dump in a
            field): it would be read and tokenised whole only to be truncated.
        materialize: Keep tokenised splits in the object store so epochs do not re-tokenise;
            turn off to stream corpora larger than the cluster's memory.
        tokenize_actors: How many tokeniser actors Ray Data runs in parallel.
        task_rows: Data sets up to this many rows (all splits) are tokenised by Ray tasks
            instead: no actor start-up per run (it dominates small jobs); 0 = always actors.
        driver_rows: Materialised data sets up to this many rows (all splits) are tokenised
            in the driver process, which has the tokenizer loaded anyway: no Ray worker
            imports transformers for them (~4 s a fresh worker on 2 cores); a materialised
            split this small is also split, sampled, deduplicated and counted there (no Ray
            Data execution, ~0.2 s each: data/inprocess.py); 0 = never.
        driver_bytes: Materialised runs whose files sit on this machine's disk and total up
            to this many bytes are read and validated in the driver: a Ray read task would
            first start a worker and import the data modules (~3 s on 2 cores); 0 = never.
        metadata_fields: Columns kept beside each example for slice analysis (e.g. channel).
        metadata_counts: Slice columns counted from a field (name -> MetadataCount), kept
            beside ``metadata_fields`` and reported the same way.
        slot_pattern: Chat runs of data-to-text: a regular expression with two groups
            (attribute, value) finding the slots in each prompt; ``data check`` and ``train``
            then list the values only validation/test prompts hold, and ``evaluate`` how often
            answers and references name each value (data/slots.py, evaluation/slots.py).
        pii: ``keep`` the text as is, or ``redact`` e-mails, phone, card, IP and IBAN numbers
            inside the pipeline before tokenisation (counted in run metadata).
        dedup: Drop exact duplicates within train and train examples whose text also occurs in
            validation/test (counted in run metadata). Collects train texts on the driver.
        chat: ``task=sft`` only: how a row becomes a conversation (data/chat.py ChatSpec).
        pairs: ``task=embedding`` only: which fields hold a pair (data/pairs.py PairSpec).
    """

    name: str = "sample"
    path: Any = "???"
    format: DataFormat = DataFormat.auto
    text_field: str = "text"
    label_field: str = "label"
    columns: Optional[List[str]] = None
    validation_path: Optional[Any] = None
    test_path: Optional[Any] = None
    val_fraction: float = 0.1
    max_examples: Optional[int] = None
    on_error: OnError = OnError.error
    max_text_chars: int = 100_000
    materialize: bool = True
    tokenize_actors: int = 1
    task_rows: int = 50_000
    driver_rows: int = 20_000
    driver_bytes: int = 4 * 2**20
    metadata_fields: List[str] = field(default_factory=list)
    metadata_counts: Dict[str, MetadataCount] = field(default_factory=dict)
    slot_pattern: Optional[str] = None
    pii: str = "keep"
    dedup: bool = False
    chat: ChatSpec = field(default_factory=ChatSpec)
    pairs: PairSpec = field(default_factory=PairSpec)

    def split_paths(self, split: str) -> Any:
        """The files of one split: ``validation`` is held out of ``path`` unless given."""
        return {"train": self.path, "test": self.test_path}.get(split) or \
            self.validation_path or self.path

    def __post_init__(self) -> None:
        if self.path == "???":  # the schema's own default instance: nothing merged yet
            return
        for key in ("path", "validation_path", "test_path"):
            value = getattr(self, key)
            if value is None and key != "path":
                continue
            paths = value if isinstance(value, (list, tuple)) else [value]
            if not paths or not all(isinstance(p, str) and p and p != "???" for p in paths):
                raise ConfigError(
                    f"data.{key}",
                    f"expected a path, URI, glob or list of them, got {value!r}",
                    "e.g. data.path=/data/tickets/ or data.path='[a.jsonl,b.jsonl]'",
                )
            setattr(self, key, [str(p) for p in paths])
        named = [c for i, c in enumerate(self.columns or []) if c in (self.columns or [])[:i]]
        if named:  # rows become dicts: the last same-named column would win, silently
            raise ConfigError("data.columns", f"names {named[0]!r} twice ({self.columns})",
                              "give every column its own name")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("data.val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError("data.max_examples", f"must be >= 1, got {self.max_examples}")
        if self.pii not in ("keep", "redact"):
            raise ConfigError("data.pii", f"must be keep or redact, got {self.pii!r}")
        for key in ("driver_rows", "driver_bytes"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key}", f"must be >= 0, got {getattr(self, key)}")
        for name, count in self.metadata_counts.items():
            key = f"data.metadata_counts.{name}"
            if name in self.metadata_fields:
                raise ConfigError(key, f"{name!r} is also in data.metadata_fields",
                                  "give the counted column a name of its own")
            if count.field == "???" or count.pattern == "???":
                raise ConfigError(key, "needs both field and pattern",
                                  "e.g. data.metadata_counts.attributes="
                                  "{field: mr, pattern: '\\['}")
            _regex(f"{key}.pattern", count.pattern)
        if self.slot_pattern is not None:
            _check_slot_pattern(self.slot_pattern)
        if self.chat.delexicalize and self.slot_pattern is None:
            raise ConfigError("data.chat.delexicalize", "needs data.slot_pattern: the "
                              "attribute[value] slots whose values become placeholders")
        if self.tokenize_actors < 1:
            raise ConfigError("data.tokenize_actors", f"must be >= 1, got {self.tokenize_actors}")


def _regex(key: str, pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled, or a ConfigError naming ``key``."""
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ConfigError(key, f"{pattern!r} is no regular expression ({err})") from None


def _check_slot_pattern(pattern: str) -> None:
    groups = _regex("data.slot_pattern", pattern).groups
    if groups != 2:
        raise ConfigError("data.slot_pattern", f"{pattern!r} has {groups} groups, not 2 "
                          "(attribute, value)", "e.g. '([^\\[,:]+?)\\[([^\\]]*)\\]' for "
                          "E2E's name[Aromi], food[French]")
