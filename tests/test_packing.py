"""Packed conversations: attention stays inside each, and each keeps the loss it has alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.batches import collate, model_inputs
from data.chat import IGNORE
from data.packing import pack


def _conversation(rng: np.random.Generator, n: int, answer_from: int) -> dict:
    ids = rng.integers(5, 500, size=n).tolist()
    return {"input_ids": ids, "labels": [IGNORE] * answer_from + ids[answer_from:]}


def _collate(rows: list[dict]) -> dict:
    """The loop's own collation of packed rows (data/batches.py)."""
    def ragged(key: str) -> np.ndarray:
        out = np.empty(len(rows), dtype=object)
        out[:] = [r[key] for r in rows]
        return out

    return collate({"input_ids": ragged("input_ids"), "labels": ragged("labels"),
                    "position_ids": ragged("position_ids"),
                    "uid": np.arange(len(rows))}, pad_id=0)


def _loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token loss, shifted as transformers shifts it."""
    return torch.nn.functional.cross_entropy(logits[:-1].float(), labels[1:],
                                             ignore_index=IGNORE, reduction="sum")


def test_a_packed_batch_gives_each_conversation_the_loss_it_has_alone():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, max_position_embeddings=128))
    model.eval()
    rng = np.random.default_rng(0)
    chats = [_conversation(rng, n, a) for n, a in ((9, 4), (14, 6), (7, 2), (20, 11))]
    rows = pack(chats, max_length=32)
    assert [int(r["segments"]) for r in rows] == [3, 1]  # 9+14+7, then 20
    batch = _collate(rows)
    assert batch["position_ids"][1].tolist()[20:] == list(range(10))  # padding: its own
    with torch.no_grad():
        packed = model(**model_inputs(batch)).logits  # position_ids, no mask, no cache
        alone = [_loss_sum(model(input_ids=torch.tensor([c["input_ids"]])).logits[0],
                           torch.tensor(c["labels"])) for c in chats]
    lengths = iter(len(c["input_ids"]) for c in chats)  # packing keeps the order
    got = []
    for r, row in enumerate(rows):
        start = 0
        for _ in range(int(row["segments"])):
            n = next(lengths)
            got.append(_loss_sum(packed[r, start:start + n], batch["labels"][r, start:start + n]))
            start += n
    assert torch.allclose(torch.stack(got), torch.stack(alone), atol=1e-4)
    # the batch's own loss counts exactly the answer tokens after each conversation's first
    answers = sum(sum(1 for label in c["labels"][1:] if label != IGNORE) for c in chats)
    assert int((batch["labels"] != IGNORE).sum()) == answers


def test_packing_keeps_order_labels_and_restarts_positions():
    rng = np.random.default_rng(1)
    chats = [_conversation(rng, n, 1) for n in (5, 5, 5)]
    rows = pack(chats, max_length=10)
    assert len(rows) == 2 and rows[0]["position_ids"].tolist() == [*range(5), *range(5)]
    assert rows[0]["labels"][5] == IGNORE  # predicted from the conversation before: never
    assert rows[0]["input_ids"].tolist() == chats[0]["input_ids"] + chats[1]["input_ids"]
    with pytest.raises(ValueError, match="longer than max_length"):
        pack([_conversation(rng, 12, 1)], max_length=10)
