"""Greedy answers of an ensemble (bench/ensemble_generate.py): with one member it is greedy
search itself on left-padded batches; with more, each token is the argmax of the members'
mean probability, not of either member's."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench.ensemble_generate import ensemble_greedy

STOP = [3]


def _tiny(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2)).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts of different lengths, the shorter left-padded with 0."""
    ids = torch.tensor([[0, 0, 0, 7, 9, 11], [5, 6, 8, 10, 12, 14]])
    return ids, (ids != 0).long()


def test_one_member_is_generate_greedy_on_a_left_padded_batch() -> None:
    model = _tiny(0)
    ids, mask = _batch()
    ours = ensemble_greedy([model], ids, mask, STOP, max_new_tokens=8)
    theirs = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8,
                            do_sample=False, eos_token_id=STOP, pad_token_id=0)
    new = theirs[:, ids.shape[1]:]
    assert torch.equal(ours[:, :new.shape[1]], new)


def test_two_members_follow_their_mean_probability() -> None:
    a, b = _tiny(0), _tiny(1)
    ids, mask = _batch()
    first = ensemble_greedy([a, b], ids, mask, STOP, max_new_tokens=1)[:, 0]
    with torch.no_grad():
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        probs = [m(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
                 .softmax(-1) for m in (a, b)]
    assert torch.equal(first, ((probs[0] + probs[1]) / 2).argmax(-1))
    assert not torch.equal(probs[0].argmax(-1), probs[1].argmax(-1))  # the members disagree
    assert torch.equal(ensemble_greedy([a, a], ids, mask, STOP, 6),
                       ensemble_greedy([a], ids, mask, STOP, 6))
