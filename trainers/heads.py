"""A mean-pooling classification head for encoders trained to be read that way.

sentence-transformers models (all-MiniLM-L6-v2 among them) were trained with mean pooling; their
[CLS] token and BERT pooler were never tuned as a sentence representation, which is what
``AutoModelForSequenceClassification`` reads. ``model.pooling=mean`` reads the mean of the
token states instead (on BANKING77: see docs/benchmarks.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from transformers.modeling_outputs import SequenceClassifierOutput

HEAD_FILE = "pooling_head.safetensors"
HEAD_CONFIG = "pooling_head.json"


class MeanPoolClassifier(torch.nn.Module):
    """Encoder → mean over non-padding tokens → dropout → linear.

    Reload a trained adapter with plain peft::

        base = MeanPoolClassifier(AutoModel.from_pretrained(base_dir), num_labels)
        model = PeftModel.from_pretrained(base, "runs/<run>/adapter")
    """

    def __init__(self, encoder: Any, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config  # PEFT reads model_type from here
        self.name_or_path = getattr(encoder.config, "_name_or_path", None)  # and this
        self.num_labels = num_labels
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None, output_hidden_states: bool = False,
                **kwargs: Any) -> SequenceClassifierOutput:
        # transformers loads with a model: trainers.models imports this module without it
        from transformers.modeling_outputs import SequenceClassifierOutput

        encoded = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                               output_hidden_states=output_hidden_states)
        hidden = encoded.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=encoded.hidden_states)

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        """Encoder in Hugging Face format plus the head beside it (merged export, full FT)."""
        path = Path(path)
        self.encoder.save_pretrained(path, safe_serialization=True)
        save_file({k: v.contiguous() for k, v in self.classifier.state_dict().items()},
                  str(path / HEAD_FILE))
        (path / HEAD_CONFIG).write_text(json.dumps({"pooling": "mean",
                                                    "num_labels": self.num_labels}))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> MeanPoolClassifier:
        from transformers import AutoModel  # loads with a model, as in forward

        path = Path(path)
        head = json.loads((path / HEAD_CONFIG).read_text())
        try:  # the mean-pooled encoder never had a pooler: do not add an untrained one
            encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
        except TypeError:  # architectures without that option
            encoder = AutoModel.from_pretrained(path)
        model = cls(encoder, head["num_labels"])
        model.classifier.load_state_dict(load_file(str(path / HEAD_FILE)))
        return model
