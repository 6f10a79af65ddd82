"""Tokenisation as a Ray Data class UDF: the tokenizer loads once per actor, not per batch;
small materialised data is tokenised by the same class in the driver."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from data.chat import IGNORE
from data.chat import encode as chat_encode
from data.errors import DataError
from data.inprocess import from_blocks, local_batches, to_block
from data.packing import pack
from data.pipeline import uid

IGNORE_INDEX = IGNORE  # one ignored-label value for every task (data/chat.py)


def encode(tok: Any, inputs: list, max_length: int, **kwargs: Any) -> tuple[Any, np.ndarray]:
    """Tokenise with truncation at ``max_length``; and the tokens each input lost to it.

    Tokenised whole first (one pass when nothing is too long, the usual case); only when an
    input is longer is the batch tokenised again, truncated. ``verbose=False``: a text longer
    than the model's own limit is no warning here, it is counted.
    """
    enc = tok(inputs, verbose=False, **kwargs)
    cut = np.array([max(len(x) - max_length, 0) for x in enc["input_ids"]], dtype=np.int32)
    if cut.any():
        enc = tok(inputs, truncation=True, max_length=max_length, **kwargs)
    return enc, cut


def tokens_cut(tok: Any, inputs: list, max_length: int, **kwargs: Any) -> np.ndarray:
    """The tokens truncation at ``max_length`` cuts from each input (evaluation's count)."""
    return _cut(_untruncated_lengths(tok, inputs, **kwargs), max_length)


def cut_and_order(tok: Any, inputs: list, max_length: int, **kwargs: Any
                  ) -> tuple[np.ndarray, np.ndarray]:
    """From one untruncated pass: the tokens truncation cuts from each input, and the inputs'
    order by the length the model reads (batches of near-equal token counts pad least:
    BANKING77's 10,003 training texts in batches of 64 hold 164,678 tokens in this order,
    204,358 ordered by characters, for 162,186 real ones)."""
    full = _untruncated_lengths(tok, inputs, **kwargs)
    return _cut(full, max_length), np.argsort(np.minimum(full, max_length), kind="stable")


def _untruncated_lengths(tok: Any, inputs: list, **kwargs: Any) -> np.ndarray:
    return np.array([len(ids) for ids in tok(inputs, verbose=False, **kwargs)["input_ids"]],
                    dtype=np.int64)


def _cut(full: np.ndarray, max_length: int) -> np.ndarray:
    return np.maximum(full - max_length, 0).astype(np.int32)


def _ragged(seqs: list[list[int]]) -> np.ndarray:
    out = np.empty(len(seqs), dtype=object)
    out[:] = [np.asarray(s, dtype=np.int32) for s in seqs]
    return out


class Tokenize:
    """Turn validated rows into token ids and integer labels for one task.

    seq_cls → ``input_ids`` + ``labels``; token_cls → per-token ``labels`` aligned to the first
    sub-word of each word (-100 elsewhere); causal_lm → packed ``max_length`` blocks. Every row
    also carries ``truncated``: the tokens truncation at ``max_length`` cut from it (packed
    blocks lose none), summed per split by :func:`count_truncation`.
    """

    def __init__(self, tokenizer_path: str, task: str, max_length: int,
                 labels: list[str], pack: bool = True, chat_template: str | None = None,
                 train_on_prompt: bool = False) -> None:
        from transformers import AutoTokenizer  # in the tokenizing actor; the driver skips it

        self.tok = AutoTokenizer.from_pretrained(tokenizer_path)
        self.task = task
        self.max_length = max_length
        self.label2id = {name: i for i, name in enumerate(labels)}
        self.pack = pack
        self.chat_template, self.train_on_prompt = chat_template, train_on_prompt

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        if "split" not in batch:
            return self._one_split(batch)
        parts = []  # a batch may span splits; LM packing must never mix them
        for name in dict.fromkeys(batch["split"]):
            keep = batch["split"] == name
            out = self._one_split({k: v[keep] for k, v in batch.items()})
            out["split"] = np.full(len(out["length"]), name, dtype=object)
            parts.append(out)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _one_split(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        if self.task == "seq_cls":
            return self._seq_cls(batch)
        if self.task == "token_cls":
            return self._token_cls(batch)
        if self.task == "sft":
            return self._sft(batch)
        if self.task == "embedding":
            return self._pairs(batch)
        if self.task == "rerank":
            return self._rerank(batch)
        return self._causal_lm(batch)

    def _label_id(self, label: str, src: str) -> int:
        try:
            return self.label2id[label]
        except KeyError:
            raise DataError(src, f"label '{label}' was not seen in training") from None

    def _seq_cls(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        enc, cut = encode(self.tok, list(batch["text"]), self.max_length)
        ids = enc["input_ids"]
        return {
            "input_ids": _ragged(ids),
            "length": np.array([len(x) for x in ids], dtype=np.int32),
            "truncated": cut,
            "labels": np.array(
                [self._label_id(str(lab), str(src))
                 for lab, src in zip(batch["label"], batch["_src"], strict=True)],
                dtype=np.int64,
            ),
            "uid": np.array([uid(str(s)) for s in batch["_src"]], dtype=np.int64),
        }

    def _pairs(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """Query (``input_ids``), document (``doc_input_ids``) and an optional hard negative,
        each truncated at ``max_length`` and counted; ``labels``: the pair's score (scored
        pairs) or 0 (the loss finds each query's positive by position)."""
        out: dict[str, Any] = {}
        cut = np.zeros(len(batch["text"]), dtype=np.int32)
        for side, prefix in (("text", ""), ("document", "doc_"), ("negative", "neg_")):
            # splits are tokenised together and Ray Data merges their blocks: rows without a
            # negative (the test qrels beside mined training pairs: None, or no column in a
            # block of their own) get an empty one, so every block has the same columns
            values = batch.get(side, [None] * len(cut))
            present = [i for i, t in enumerate(values) if isinstance(t, str)]
            ids: list[list[int]] = [[] for _ in values]
            if present:
                enc, lost = encode(self.tok, [values[i] for i in present],
                                   self.max_length)
                for i, row_ids in zip(present, enc["input_ids"], strict=True):
                    ids[i] = row_ids
                cut[present] += lost
            out[f"{prefix}input_ids"] = _ragged(ids)
        out["length"] = np.array([len(q) + len(d) for q, d in zip(
            out["input_ids"], out["doc_input_ids"], strict=True)], dtype=np.int32)
        out["truncated"] = cut
        out["labels"] = (np.asarray(batch["score"], dtype=np.float32) if "score" in batch
                         else np.zeros(len(cut), dtype=np.int64))
        out["uid"] = np.array([uid(str(s)) for s in batch["_src"]], dtype=np.int64)
        return out

    def _rerank(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """(query, positive) as one sequence (``input_ids``, ``token_type_ids``) and (query,
        negative) as another (``neg_*``), truncated from the longer side's end (the document's,
        unless a query is longer: ``longest_first``) and counted. A row without a negative of
        its own (none given or mined) takes the positive of the next row of another query in
        the batch: a random negative, so every split, the test qrels included, has pairs to
        compare."""
        queries = [str(t) for t in batch["text"]]
        positives = [str(t) for t in batch["document"]]
        given = batch.get("negative", [None] * len(queries))
        negatives = [t if isinstance(t, str) else _other_query_document(i, queries, positives,
                                                                         str(batch["_src"][i]))
                     for i, t in enumerate(given)]
        out: dict[str, Any] = {}
        cut = np.zeros(len(queries), dtype=np.int32)
        for prefix, documents in (("", positives), ("neg_", negatives)):
            enc, lost = encode(self.tok, queries, self.max_length, text_pair=documents)
            cut += lost
            out[f"{prefix}input_ids"] = _ragged(enc["input_ids"])
            if "token_type_ids" in enc:
                out[f"{prefix}token_type_ids"] = _ragged(enc["token_type_ids"])
        out["length"] = np.array([len(p) + len(n) for p, n in zip(
            out["input_ids"], out["neg_input_ids"], strict=True)], dtype=np.int32)
        out["truncated"] = cut
        out["labels"] = np.zeros(len(cut), dtype=np.int64)  # the positive is column 0
        out["uid"] = np.array([uid(str(s)) for s in batch["_src"]], dtype=np.int64)
        return out

    def _token_cls(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        words = [list(t) for t in batch["tokens"]]
        enc, cut = encode(self.tok, words, self.max_length, is_split_into_words=True)
        all_labels = []
        for i, (tags, src) in enumerate(zip(batch["tags"], batch["_src"], strict=True)):
            previous = None
            aligned = []
            for word in enc.word_ids(i):
                if word is None or word == previous:
                    aligned.append(IGNORE_INDEX)
                else:
                    aligned.append(self._label_id(str(tags[word]), str(src)))
                previous = word
            all_labels.append(aligned)
        ids = enc["input_ids"]
        return {
            "input_ids": _ragged(ids),
            "length": np.array([len(x) for x in ids], dtype=np.int32),
            "labels": _ragged(all_labels),
            "truncated": cut,
            "uid": np.array([uid(str(s)) for s in batch["_src"]], dtype=np.int64),
        }

    def _sft(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """Chats → ids with assistant-only labels (data/chat.py), truncated from the right and
        counted; with ``pack``, several conversations per row (data/packing.py)."""
        encoded = [chat_encode(self.tok, json.loads(str(c)), self.max_length,
                               self.train_on_prompt, self.chat_template)
                   for c in batch["chat"]]
        srcs = [str(s) for s in batch["_src"]]
        cut = np.array([e["truncated_tokens"] for e in encoded], dtype=np.int32)
        if not self.pack:
            ids = [e["input_ids"] for e in encoded]
            return {"input_ids": _ragged(ids), "labels": _ragged([e["labels"] for e in encoded]),
                    "length": np.array([len(x) for x in ids], dtype=np.int32),
                    "truncated": cut, "uid": np.array([uid(s) for s in srcs], dtype=np.int64)}
        rows = pack(encoded, self.max_length)
        # a packed row's truncation is the sum of its conversations': counts stay exact
        ends = np.cumsum([int(r["segments"]) for r in rows])
        starts = np.concatenate([[0], ends[:-1]]).astype(int)
        return {"input_ids": _ragged([r["input_ids"] for r in rows]),
                "labels": _ragged([r["labels"] for r in rows]),
                "position_ids": _ragged([r["position_ids"] for r in rows]),
                "length": np.array([len(r["input_ids"]) for r in rows], dtype=np.int32),
                "truncated": np.array([int(cut[a:b].sum()) for a, b in zip(starts, ends,
                                                                           strict=True)],
                                      dtype=np.int32),
                "truncated_rows": np.array([int((cut[a:b] > 0).sum()) for a, b in
                                            zip(starts, ends, strict=True)], dtype=np.int32),
                "uid": np.array([uid(srcs[a]) for a in starts], dtype=np.int64)}

    def _causal_lm(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        eos = self.tok.eos_token_id if self.tok.eos_token_id is not None else self.tok.sep_token_id
        enc = self.tok(list(batch["text"]), add_special_tokens=False)["input_ids"]
        srcs = [str(s) for s in batch["_src"]]
        if not self.pack:
            ids = [(x + [eos])[: self.max_length] for x in enc]
            return {"input_ids": _ragged(ids), "labels": _ragged(ids),
                    "length": np.array([len(x) for x in ids], dtype=np.int32),
                    "truncated": np.array([max(len(x) + 1 - self.max_length, 0) for x in enc],
                                          dtype=np.int32),
                    "uid": np.array([uid(s) for s in srcs], dtype=np.int64)}
        stream: list[int] = []
        for x in enc:
            stream.extend(x)
            stream.append(eos)
        # Full blocks, then the batch's tail as one shorter block (padded at collation), so no
        # token is dropped; a 1-token tail has no next token to predict and carries nothing.
        blocks = [stream[i:i + self.max_length] for i in range(0, len(stream), self.max_length)]
        blocks = [b for b in blocks if len(b) > 1]
        first = srcs[0] if srcs else ""
        return {
            "input_ids": _ragged(blocks),
            "labels": _ragged(blocks),
            "length": np.array([len(b) for b in blocks], dtype=np.int32),
            "truncated": np.zeros(len(blocks), dtype=np.int32),
            "uid": np.array([uid(f"{first}#block{i}") for i in range(len(blocks))],
                            dtype=np.int64),
        }


def _other_query_document(i: int, queries: list[str], documents: list[str], src: str) -> str:
    """The document of the next row (cyclically) whose query differs from row ``i``'s."""
    for step in range(1, len(queries)):
        j = (i + step) % len(queries)
        if queries[j] != queries[i] and documents[j] != documents[i]:
            return documents[j]
    raise DataError(src, "no negative for this query: every row of its batch has the same "
                    "query", "give negatives (data.pairs.negative_field, or "
                    "data.pairs.negatives_path from `shardtune mine`)")


def tag_split(batch: dict[str, np.ndarray], split: str) -> dict[str, np.ndarray]:
    return {**batch, "split": np.full(len(batch["_src"]), split, dtype=object)}


def _only(batch: dict[str, np.ndarray], split: str) -> dict[str, np.ndarray]:
    keep = batch["split"] == split
    return {k: v[keep] for k, v in batch.items() if k != "split"}


@functools.lru_cache(maxsize=4)
def _cached(tokenizer_path: str, stamp: float, task: str, max_length: int,
            labels: tuple[str, ...], pack: bool, chat_template: str | None = None,
            train_on_prompt: bool = False) -> Tokenize:
    return Tokenize(tokenizer_path, task, max_length, list(labels), pack, chat_template,
                    train_on_prompt)


def _stamp(tokenizer_path: str) -> float:
    """Newest file time of a local tokenizer directory (0 for a hub id): a tokenizer rewritten
    at the same path is loaded again, not served from the cache."""
    path = Path(tokenizer_path)
    return max((f.stat().st_mtime for f in path.iterdir()), default=0.0) if path.is_dir() \
        else 0.0


def tokenize_task(batch: dict[str, np.ndarray], **kwargs: Any) -> dict[str, Any]:
    """Task form of :class:`Tokenize`: the tokenizer is cached in the (reused) worker."""
    return _cached(stamp=_stamp(kwargs["tokenizer_path"]), **kwargs)(batch)


def tokenize_splits(datasets: dict[str, Any], tokenizer_path: str, task: str, max_length: int,
                    labels: list[str], pack: bool, actors: int, materialize: bool,
                    task_rows: int = 0, chat_template: str | None = None,
                    train_on_prompt: bool = False, driver_rows: int = 0) -> dict:
    """Tokenise every split in one pass through :class:`Tokenize` actors.

    One pipeline for all splits starts the actor pool once (each start imports transformers
    and loads the tokenizer: seconds on a small machine); splits are told apart by a tag.
    Up to ``task_rows`` rows in all, plain Ray tasks do it instead: no actor to start, and
    the tokenizer stays cached in Ray's reused worker processes from one run to the next.
    Up to ``driver_rows`` (:func:`tokenizes_here`), this process does it.
    """
    names = list(datasets)
    kwargs = {"tokenizer_path": tokenizer_path, "task": task, "max_length": max_length,
              "pack": pack, "chat_template": chat_template, "train_on_prompt": train_on_prompt}
    if tokenizes_here(datasets, materialize, driver_rows):
        return _tokenize_here(datasets, {**kwargs, "labels": tuple(labels)})
    tagged = [datasets[n].map_batches(tag_split, fn_kwargs={"split": n}, batch_size=None)
              for n in names]
    union = tagged[0].union(*tagged[1:]) if len(tagged) > 1 else tagged[0]
    if materialize and task_rows and sum(datasets[n].count() for n in names) <= task_rows:
        tokenized = union.map_batches(tokenize_task, fn_kwargs={**kwargs,
                                                                "labels": tuple(labels)},
                                      batch_size=1024, num_cpus=0.5)
    else:
        tokenized = union.map_batches(
            Tokenize, fn_constructor_kwargs={**kwargs, "labels": labels},
            batch_size=1024, concurrency=actors, num_cpus=0.5,
        )
    if materialize:
        tokenized = tokenized.materialize()
    out = {}
    for name in names:
        part = tokenized.map_batches(_only, fn_kwargs={"split": name}, batch_size=None)
        out[name] = part.materialize() if materialize else part
    return out


def tokenizes_here(datasets: dict[str, Any], materialize: bool, driver_rows: int) -> bool:
    """Whether :func:`tokenize_splits` tokenises in this process: materialised splits of up
    to ``driver_rows`` rows in all, none of them empty.

    A Ray worker that has not tokenised before imports transformers and loads the tokenizer
    first: ~4 s of a small run on 2 cores, paid again by every fresh worker, while the driver
    has both loaded for the run anyway."""
    if not (materialize and driver_rows):
        return False
    counts = [ds.count() for ds in datasets.values()]  # materialised: from block metadata
    return 0 not in counts and sum(counts) <= driver_rows


def _concatenated(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def _tokenize_here(datasets: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Each split tokenised on its own in 1,024-row batches, then one block per split.

    A split's rows are never batched with another's (so LM packing never mixes them); the
    block is built by Ray's own batch-to-block conversion, as ``map_batches`` builds it."""
    tokenize = _cached(stamp=_stamp(kwargs["tokenizer_path"]), **kwargs)
    out = {}
    for name, ds in datasets.items():  # its blocks fetched here, cut as iter_batches cuts
        rows = _concatenated(list(local_batches(ds)))
        parts = [tokenize({key: column[start:start + 1024] for key, column in rows.items()})
                 for start in range(0, len(next(iter(rows.values()))), 1024)]
        out[name] = from_blocks([to_block(_concatenated(parts))])
    return out
