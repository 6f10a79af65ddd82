"""A causal LM's loss computed on its labelled positions only.

The vocabulary projection is the largest matmul of a small LM (SmolLM2-135M: 576 × 49,152,
a fifth of a token's FLOPs; the tiny test Llama: 64 × 30,522, ~90% of them) and its logits
the largest tensor of a step (batch × length × vocabulary floats). In a chat most positions
carry no label (system and user turns, padding), so the model is asked for its last hidden
states and the head runs on the positions that are scored: the same cross-entropy, averaged
over the same tokens, for a fraction of the work and memory.

Only for architectures whose logits are the head applied to the last hidden state, nothing
after it (no soft-capping, no logit scale): tested against the model's own loss for each.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from data.tokenize import IGNORE_INDEX
from trainers.collective import unwrap

# model_type → the head is a plain linear map of the final (normed) hidden state
LABELLED_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2"})


def plain_model(net: Any) -> Any:
    """The Hugging Face model under DDP's and PEFT's wrappers."""
    model = unwrap(net)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def labelled_head_applies(model: Any, strategy: str = "ddp") -> bool:
    """True where the loss may be computed on labelled positions only (module docstring).
    FSDP shards the head's weight outside the model's forward: it keeps the full logits."""
    config = getattr(plain_model(model), "config", None)
    return strategy != "fsdp" and getattr(config, "model_type", None) in LABELLED_HEAD_TYPES


def labelled_logits(net: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor
                    ) -> SimpleNamespace:
    """The head's logits at the positions whose next token is labelled (``logits``: [N,
    vocabulary]), where they are (``keep``: [batch, length − 1]) and every layer's hidden
    states. The forward goes through ``net`` itself (DDP's hooks see it); the head, asked for
    one position there, runs on the labelled ones here."""
    out = net(**inputs, output_hidden_states=True, logits_to_keep=1)
    keep = labels[:, 1:] != IGNORE_INDEX
    logits = plain_model(net).get_output_embeddings()(out.hidden_states[-1][:, :-1][keep])
    return SimpleNamespace(logits=logits, keep=keep, hidden_states=out.hidden_states)


def labelled_token_nll(net: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the next-token cross-entropy of each labelled position, flat; where they are, a
    [batch, length − 1] mask)."""
    out = labelled_logits(net, inputs, labels)
    return torch.nn.functional.cross_entropy(out.logits.float(), labels[:, 1:][out.keep],
                                             reduction="none"), out.keep


def labelled_lm_loss(net: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor
                     ) -> torch.Tensor:
    """What ``net(**inputs, labels=labels).loss`` gives: the mean over labelled positions."""
    return labelled_token_nll(net, inputs, labels)[0].mean()
