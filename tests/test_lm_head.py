"""The causal-LM loss on labelled positions only (trainers/lm_head.py) equals the model's own
loss, with the same gradients: for every architecture it is used for, with LoRA and fully
trained, tied and untied heads, and under DDP."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from data.tokenize import IGNORE_INDEX
from trainers.lm_head import (
    LABELLED_HEAD_TYPES,
    labelled_head_applies,
    labelled_lm_loss,
    labelled_token_nll,
)
from trainers.objective import TaskLoss

VOCAB = 97


def _model(model_type: str, tied: bool, lora: bool) -> torch.nn.Module:
    small = ({"n_embd": 32, "n_layer": 2, "n_head": 4, "bos_token_id": 1, "eos_token_id": 2,
              "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
             if model_type == "gpt2" else
             {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8})
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, tie_word_embeddings=tied,
                                  **small)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear",
                                                 lora_dropout=0.0))
    return model.train()  # no dropout (set above for gpt2); train mode as the loop runs it


def _batch() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Two chats' worth of rows: a prompt, an answer, right padding (unlabelled)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    labels = ids.clone()
    labels[:, :5] = IGNORE_INDEX  # the prompt
    labels[mask == 0] = IGNORE_INDEX
    labels[2, 6] = IGNORE_INDEX  # a packed row's second prompt
    return {"input_ids": ids, "attention_mask": mask}, labels


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("model_type", sorted(LABELLED_HEAD_TYPES))
@pytest.mark.parametrize("tied, lora", [(True, False), (False, False), (False, True)])
def test_the_loss_on_labelled_positions_is_the_models_own(model_type, tied, lora):
    inputs, labels = _batch()
    reference = _model(model_type, tied, lora)
    want = reference(**inputs, labels=labels).loss
    want.backward()
    model = _model(model_type, tied, lora)
    got = labelled_lm_loss(model, inputs, labels)
    got.backward()
    assert torch.allclose(got, want, atol=1e-6, rtol=0), (got, want)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-5)
               for a, b in zip(_grads(model), _grads(reference), strict=True))
    # per token: the positions kept are the shifted labels that are not ignored
    nll, keep = labelled_token_nll(model, inputs, labels)
    assert keep.tolist() == (labels[:, 1:] != IGNORE_INDEX).tolist()
    assert nll.shape == (int(keep.sum()),) and torch.allclose(nll.mean(), want, atol=1e-6)


def test_architectures_with_something_after_the_head_keep_full_logits():
    gemma = AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "gemma2", vocab_size=VOCAB, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8))  # final logit soft-capping
    assert not labelled_head_applies(gemma)
    assert labelled_head_applies(_model("llama", True, True))  # through PEFT's wrapper
    assert not labelled_head_applies(_model("llama", True, False), "fsdp")


def test_under_ddp_the_head_outside_the_forward_gets_the_same_gradients(tmp_path):
    """DDP's reducer sees the head's weight used in the forward (one position) and again
    outside it: one gradient each, no "marked ready twice", the model's own gradients."""
    inputs, labels = _batch()
    if dist.is_initialized():
        pytest.skip("a process group is already open in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0,
                            world_size=1)
    try:
        grads = []
        for labelled in (False, True):
            ddp = torch.nn.parallel.DistributedDataParallel(_model("llama", True, False))
            batch = {**inputs, "labels": labels}
            objective = TaskLoss(labelled_head=labelled)
            loss = objective.loss(ddp, objective.forward(ddp, batch), batch)[0]
            loss.backward()
            grads.append(_grads(ddp.module))
    finally:
        dist.destroy_process_group()
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-5)
               for a, b in zip(*grads, strict=True))
