"""A cross-encoder for ``task=rerank``: query and document read together, one score out.

A bi-encoder (trainers/embedding.py) embeds each side alone, so a corpus is embedded once and
searched; a cross-encoder attends across both and ranks better, but must read every
(query, candidate) pair, so it reorders a first stage's top-k. The model is the architecture's
sequence-classification head with one output (what hub rerankers such as
``cross-encoder/ms-marco-MiniLM-L6-v2`` are, so they load as a start); training compares each
query's relevant document with its negatives (listwise softmax cross-entropy, positive first:
FlagEmbedding's reranker loss; with one negative it is the pairwise logistic loss).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers.modeling_outputs import SequenceClassifierOutput

RERANKER_CONFIG = "reranker.json"


class CrossEncoder(torch.nn.Module):
    """A one-output sequence classifier scored on (query, document) pairs.

    ``forward`` takes the positive pairs and, when the batch has them, the negative pairs of the
    same queries (``neg_*``); ``logits`` are ``[batch, 2]`` (positive, negative) for the loss
    and pairwise accuracy, or ``[batch]`` scores for positives alone (scoring candidates).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.config = model.config  # PEFT reads model_type from here
        self.name_or_path = getattr(model.config, "_name_or_path", None)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """One relevance score per pair (a logit: higher ranks first)."""
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          **extra).logits[:, 0].float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None,
                neg_input_ids: torch.Tensor | None = None,
                neg_attention_mask: torch.Tensor | None = None,
                neg_token_type_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        from transformers.modeling_outputs import SequenceClassifierOutput  # with a model

        positive = self.score(input_ids, attention_mask, token_type_ids)
        if neg_input_ids is None:
            return SequenceClassifierOutput(logits=positive)
        negative = self.score(neg_input_ids, neg_attention_mask, neg_token_type_ids)
        logits = torch.stack([positive, negative], dim=1)
        target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        return SequenceClassifierOutput(loss=F.cross_entropy(logits, target), logits=logits)

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        """The classifier in Hugging Face format (it loads on its own), a marker beside it."""
        self.model.save_pretrained(path, safe_serialization=True)
        self.save_marker(path)

    @staticmethod
    def save_marker(path: str | Path) -> None:
        """The file that tells a loader (and ``shardtune quantize``'s) this is a reranker."""
        (Path(path) / RERANKER_CONFIG).write_text(json.dumps({"score": "logit", "num_labels": 1}))

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> CrossEncoder:
        from transformers import AutoModelForSequenceClassification  # loads with a model

        return cls(AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1,
                                                                      **kwargs))
