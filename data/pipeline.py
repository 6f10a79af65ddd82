"""Build the Ray Data splits a training run consumes.

read shards and validate rows (data/read.py) → stable hash split → label vocabulary (one
summary pass) → tokenise with a class UDF in ``map_batches``. Workers then take their shard with
``ray.train.get_dataset_shard`` and batch it with :mod:`data.batches`.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data import inprocess
from data.check import dedup_plan
from data.config import DataConfig, OnError
from data.errors import ConfigError, DataError
from data.labels import check_label_types, check_labels
from data.read import read_split
from data.shards import Shard, fingerprint, why_no_rows
from data.summary import SplitSummary, summarize


def split_key(text: str) -> float:
    """A number in [0, 1) from the example's text alone, so shard order never moves examples."""
    return int(hashlib.blake2b(text.encode(), digest_size=8).hexdigest(), 16) / 2.0**64


def in_validation(text: str, fraction: float) -> bool:
    """Whether ``data.val_fraction`` holds this example out of training (no validation file)."""
    return split_key(text) < fraction


def uid(src: str) -> int:
    """A stable 63-bit id from the example's source position (file and line)."""
    return int(hashlib.blake2b(src.encode(), digest_size=8).hexdigest(), 16) >> 1


def _keep_split(batch: dict[str, np.ndarray], want_val: bool, fraction: float) -> dict:
    keep = np.array(
        [(not e) and (in_validation(t, fraction) == want_val)
         for t, e in zip(batch["text"], batch["_error"], strict=True)],
        dtype=bool,
    )
    return {k: v[keep] for k, v in batch.items()}


def _drop_errors(batch: dict[str, np.ndarray]) -> dict:
    keep = np.array([not e for e in batch["_error"]], dtype=bool)
    return {k: v[keep] for k, v in batch.items()}


def _keep_sampled(batch: dict[str, np.ndarray], fraction: float) -> dict:
    keep = np.array([split_key("sample:" + t) < fraction for t in batch["text"]], dtype=bool)
    return {k: v[keep] for k, v in batch.items()}


def subsample(ds, n: int, driver_rows: int = 0) -> tuple[Any, int]:
    """About ``n`` rows chosen by a stable hash of the text, not the first ``n``; and how many
    rows there were before.

    Files sorted by label (BANKING77 is) would otherwise lose whole classes; for the same
    reason the sample is not cut to exactly ``n`` (a cut would drop the file's tail).
    """
    # every split arrives with its bad rows dropped: its rows are its count (block metadata
    # for a materialised split; one counting pass otherwise)
    total = ds.count()
    if total <= n:
        return ds, total
    return inprocess.map_batches(ds, _keep_sampled, driver_rows, fraction=n / total), total


@dataclass
class Splits:
    """The raw (untokenised) splits plus everything the run records about them."""

    datasets: dict[str, Any]
    summaries: dict[str, SplitSummary]
    fingerprint: dict[str, Any]
    labels: list[str]
    # hidden and ``_`` files in the data directories, not read: {config key: paths}
    hidden: dict[str, list[str]] = field(default_factory=dict)

    def pick(self, split: str) -> Any:
        """The named split's dataset, or an error naming the config key that would add it."""
        if split not in self.datasets:
            raise ConfigError("split", f"the data has no '{split}' split "
                              f"(has: {', '.join(self.datasets)})",
                              f"set data.{split}_path, or split=<one of those>")
        return self.datasets[split]


def build_splits(cfg: DataConfig, task: str) -> Splits:
    """Read, validate and split; compute the label vocabulary and dataset fingerprint."""
    import ray.data  # Ray loads only when data is read: the CLI imports this module without it

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # same seed, same order (local mode)
    context.enable_progress_bars = False  # the loop prints its own progress line
    # ... and without the WARNING Ray Data prints once a process when they are off
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    hidden: dict[str, list[str]] = {"data.path": [], "data.validation_path": [],
                                    "data.test_path": []}
    dropped_pairs: dict[str, dict[str, int]] = {"train": {}, "test": {}}  # BEIR judgments
    train, shards = read_split(cfg.path, "data.path", cfg, task, "train", hidden["data.path"],
                               dropped_pairs["train"])
    if cfg.materialize:  # parse the source once: train, the held-out split and skip counts
        train = train.materialize()  # all read from it
    here = cfg.driver_rows  # small materialised splits: mapped in this process (inprocess.py)
    all_shards = list(shards)
    val = test = None
    datasets: dict[str, Any] = {}
    # where each split's rows come from: (config key, its files, the parsed rows)
    sources = {"train": Source("data.path", shards, train),
               "validation": Source("data.path", shards, train)}
    if cfg.validation_path:
        val, more = read_split(cfg.validation_path, "data.validation_path", cfg, task,
                               "validation", hidden["data.validation_path"])
        all_shards += more
        sources["validation"] = Source("data.validation_path", more, val)
        datasets["train"] = inprocess.map_batches(train, _drop_errors, here)
        datasets["validation"] = inprocess.map_batches(val, _drop_errors, here)
    else:
        datasets["train"] = inprocess.map_batches(train, _keep_split, here, want_val=False,
                                                  fraction=cfg.val_fraction)
        if cfg.val_fraction > 0:
            datasets["validation"] = inprocess.map_batches(
                train, _keep_split, here, want_val=True, fraction=cfg.val_fraction)
    if cfg.test_path:
        test, more = read_split(cfg.test_path, "data.test_path", cfg, task, "test",
                                hidden["data.test_path"], dropped_pairs["test"])
        all_shards += more
        sources["test"] = Source("data.test_path", more, test)
        datasets["test"] = inprocess.map_batches(test, _drop_errors, here)
    before: dict[str, int] = {}
    if cfg.max_examples:
        for k, v in datasets.items():
            datasets[k], before[k] = subsample(v, cfg.max_examples, here)
    if cfg.materialize:  # (~20 ms for those mapped here: they are already)
        datasets = {k: v.materialize() for k, v in datasets.items()}
    dropped: dict[str, int] = {}
    conflicts: list[str] = []
    if cfg.dedup:
        datasets["train"], dropped, conflicts = _dedup(datasets, cfg.materialize, here)
    summaries = {k: _count(v, k, sources[k], cfg) for k, v in datasets.items()}
    summaries["train"].dedup_dropped = dropped
    summaries["train"].dedup_conflicts = conflicts
    for split, total in before.items():
        summaries[split].rows_before_sampling = total
    for split, counts in dropped_pairs.items():
        if split in summaries:
            summaries[split].judgments_dropped = counts
    if cfg.on_error == OnError.skip:  # bad rows were dropped: count them once, per source
        raw = {"train": train, "validation": val, "test": test}
        for split, source in raw.items():
            if source is not None and split in summaries:
                counted = summarize(source, here)
                summaries[split].skipped = counted.skipped
                summaries[split].first_errors = counted.first_errors
                summaries[split].lost_shards = counted.lost_shards
    labels = sorted(summaries["train"].labels) if task in ("seq_cls", "token_cls") else []
    if task == "token_cls" and "O" in labels:  # keep "O" first: readable label maps
        labels = ["O"] + [t for t in labels if t != "O"]
    if task == "seq_cls":
        check_label_types(summaries, datasets, cfg.label_field)
    check_labels(summaries, labels, task, sources["train"])
    return Splits(datasets, summaries, fingerprint(all_shards), labels,
                  {key: files for key, files in hidden.items() if files})


def _drop_sources(batch: dict[str, np.ndarray], drop: frozenset) -> dict:
    keep = np.array([str(src) not in drop for src in batch["_src"]], dtype=bool)
    return {k: v[keep] for k, v in batch.items()}


def _dedup(datasets: dict[str, Any], materialize: bool, driver_rows: int
           ) -> tuple[Any, dict[str, int], list[str]]:
    """Drop exact duplicates within train and train rows leaked into validation/test; count
    the dropped duplicates whose label differs from the row kept."""
    def rows(name: str, label: bool) -> list[tuple[str, str, str]]:
        names = datasets[name].schema().names
        column = next((c for c in ("label", "tags") if label and c in names), None)
        frame = datasets[name].select_columns(["_src", "text"] + ([column] if column else [])
                                              ).to_pandas()
        labels = (frame[column].map(lambda v: " ".join(map(str, v)) if column == "tags"
                                    else str(v)) if column else [""] * len(frame))
        return list(zip(frame["_src"].astype(str), frame["text"].astype(str), labels,
                        strict=True))

    others = [text for name in datasets if name != "train" for _, text, _ in rows(name, False)]
    drop, counts, conflicts = dedup_plan(rows("train", True), others)
    train = inprocess.map_batches(datasets["train"], _drop_sources, driver_rows,
                                  drop=frozenset(drop))
    return (train.materialize() if materialize else train), counts, conflicts


@dataclass(frozen=True)
class Source:
    """Where a split's rows come from: the config key, its files and their parsed rows."""

    key: str
    shards: list[Shard]
    rows: Any

    @property
    def where(self) -> str:
        """The file, or the key when there are several."""
        if len(self.shards) == 1:
            return self.shards[0].display
        return f"{self.key} ({len(self.shards)} files)"


def _count(ds, split: str, source: Source, cfg: DataConfig) -> SplitSummary:
    summary = summarize(ds, cfg.driver_rows)
    if summary.rows == 0:
        raise _no_examples(split, source, cfg)
    return summary


def _no_examples(split: str, source: Source, cfg: DataConfig) -> DataError:
    """Why ``split`` ended up empty, naming the file or the key that made it so."""
    read = summarize(source.rows)
    if read.rows == 0 and read.skipped:
        return DataError(source.where, f"all {read.skipped} rows of split '{split}' are bad and "
                         f"were skipped (first: {read.first_errors[0]})",
                         f"fix them, or check {source.key}")
    if read.rows == 0:
        why = {s.display: why_no_rows(s, cfg.format, cfg.columns) for s in source.shards}
        if len(why) == 1:
            return DataError(source.where, why[source.where] or "the file holds no rows",
                             f"check {source.key}")
        kinds = Counter(reason or "holds no rows" for reason in why.values())
        return DataError(source.where, "none of the files holds a row ("
                         + ", ".join(f"{n}: {k.removeprefix('the file ')}"
                                     for k, n in sorted(kinds.items())) + ")",
                         f"check {source.key}")
    if source.key == "data.path" and split in ("train", "validation") and not cfg.max_examples:
        side = "into" if split == "validation" else "outside"
        return DataError(f"split '{split}'", f"none of the {read.rows} rows of {source.where} "
                         f"fell {side} the data.val_fraction={cfg.val_fraction} hold-out (chosen "
                         "by a hash of each text)", "give more rows, another data.val_fraction, "
                         "or a separate data.validation_path")
    return DataError(f"split '{split}'", "has no usable examples",
                     "check data.path / data.val_fraction / data.max_examples")
