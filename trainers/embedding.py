"""A bi-encoder for ``task=embedding``: one encoder embeds queries and documents alike.

Its forward takes both sides of a batch of pairs and returns the loss, so the shared loop,
DDP/FSDP, checkpoints and PEFT treat it as any other model. Embeddings are the mean of the
token states over the attention mask, L2-normalised: how MiniLM and most sentence-transformers
models were trained (reading [CLS] instead would be another model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from trainers.contrastive import (
    Scale,
    cosent_loss,
    cosine_similarity_loss,
    embed_in_chunks,
    in_batch_logits,
)
from trainers.embedding_spec import EmbeddingSpec

if TYPE_CHECKING:
    from transformers.modeling_outputs import SequenceClassifierOutput

SCALE_FILE = "embedding_scale.safetensors"
EMBEDDING_CONFIG = "embedding.json"
# sentence-transformers' module types (its modules.json names them; its loader imports them)
ST_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
              "sentence_transformers.models.Normalize")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class BiEncoder(torch.nn.Module):
    """Encoder → mean pooling → (normalised) embedding; the pair loss in ``forward``.

    In training the documents of every worker are gathered (``task.embedding.gather``), so each
    query meets the global batch's documents as negatives; in evaluation each batch stands
    alone (ranks score different numbers of batches, a collective there would hang).
    """

    def __init__(self, encoder: Any, spec: EmbeddingSpec,
                 score_range: tuple[float, float] = (0.0, 5.0)) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config  # PEFT reads model_type from here
        self.name_or_path = getattr(encoder.config, "_name_or_path", None)
        self.spec = spec
        self.score_range = score_range
        self.scale = Scale(spec.scale, learnable=spec.learnable_scale)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              output_hidden_states: bool = False) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=output_hidden_states)
        pooled = mean_pool(out.last_hidden_state, attention_mask)
        return F.normalize(pooled.float(), dim=-1) if self.spec.normalize else pooled.float()

    def _embed_side(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One side of the pairs; in training with ``cache_chunk``, chunk by chunk (GradCache)."""
        if self.training and self.spec.cache_chunk:
            return embed_in_chunks(self.embed, input_ids, attention_mask, self.spec.cache_chunk)
        return self.embed(input_ids, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                doc_input_ids: torch.Tensor | None = None,
                doc_attention_mask: torch.Tensor | None = None,
                neg_input_ids: torch.Tensor | None = None,
                neg_attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        """Queries alone: their embeddings as ``logits``. With documents: the loss, and as
        ``logits`` the in-batch similarity rows (in_batch) or each pair's cosine (scored);
        in evaluation, in-batch pairs also give ``hidden_states`` = (query, document[,
        negative]) embeddings."""
        from transformers.modeling_outputs import SequenceClassifierOutput  # with a model

        queries = self._embed_side(input_ids, attention_mask)
        if doc_input_ids is None:
            return SequenceClassifierOutput(logits=queries)
        docs = self._embed_side(doc_input_ids, doc_attention_mask)
        if self.spec.loss == "in_batch":
            negatives = None
            if neg_input_ids is not None:
                negatives = self._embed_side(neg_input_ids, neg_attention_mask).unsqueeze(1)
            logits, target = in_batch_logits(queries, docs, negatives, self.scale(),
                                             gather=self.training and self.spec.gather)
            # in evaluation, the pooled embeddings themselves: validation ranks each query
            # against the whole split's documents (trainers/ranking.py), not the batch's
            embedded = None if self.training else \
                (queries, docs, *(() if negatives is None else (negatives[:, 0],)))
            return SequenceClassifierOutput(loss=F.cross_entropy(logits, target),
                                            logits=logits, hidden_states=embedded)
        cosine = (queries * docs).sum(-1) if self.spec.normalize else \
            F.cosine_similarity(queries, docs, dim=-1)
        loss = None
        if labels is not None:
            loss = cosent_loss(queries, docs, labels, float(self.scale())) \
                if self.spec.loss == "cosent" else \
                cosine_similarity_loss(queries, docs, labels, self.score_range)
        return SequenceClassifierOutput(loss=loss, logits=cosine)

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        """The encoder in Hugging Face format, the scale and spec beside it (full FT)."""
        path = Path(path)
        self.encoder.save_pretrained(path, safe_serialization=True)
        save_file({"log_scale": self.scale.log_scale.detach().contiguous()}, str(path / SCALE_FILE))
        self.save_spec(path)

    def save_spec(self, path: Path) -> None:
        """``embedding.json``: pooling, the spec and the score range (what ``read_spec`` reads
        back; a quantised copy saves it too)."""
        (path / EMBEDDING_CONFIG).write_text(json.dumps({"pooling": "mean", **vars(self.spec),
                                                         "score_range": self.score_range}))

    @staticmethod
    def read_spec(path: Path) -> tuple[EmbeddingSpec, tuple[float, float]]:
        saved = json.loads((Path(path) / EMBEDDING_CONFIG).read_text())
        saved.pop("pooling")
        score_range = tuple(saved.pop("score_range"))
        return EmbeddingSpec(**saved), score_range

    @classmethod
    def from_pretrained(cls, path: str | Path) -> BiEncoder:
        path = Path(path)
        model = cls(load_encoder(str(path)), *cls.read_spec(path))
        model.scale.log_scale.data.copy_(load_file(str(path / SCALE_FILE))["log_scale"])
        return model


def load_encoder(location: Any, **kwargs: Any) -> Any:
    """The bare encoder (no pooler: mean pooling never trained one); ``location`` a path or
    hub id, or a config (an architecture to fill, as a quantised model is rebuilt)."""
    from transformers import AutoModel, PretrainedConfig  # loads with a model

    build = AutoModel.from_config if isinstance(location, PretrainedConfig) else \
        AutoModel.from_pretrained
    try:
        return build(location, add_pooling_layer=False, **kwargs)
    except TypeError:  # architectures without that option
        return build(location, **kwargs)


def write_sentence_transformers_layout(path: str | Path, max_length: int) -> None:
    """Make a saved bi-encoder folder a sentence-transformers model too.

    The encoder and tokenizer already sit at its root in Hugging Face format; these files say
    how sentence-transformers turns their output into the embedding shardtune trains and
    evaluates (mean pooling over the mask, then L2 normalisation when the run normalised), so
    ``SentenceTransformer(path)`` gives the same vectors. The layout of the packaged MiniLM.
    """
    path = Path(path)
    spec = json.loads((path / EMBEDDING_CONFIG).read_text())
    hidden = json.loads((path / "config.json").read_text())["hidden_size"]
    modules = [("", ST_MODULES[0]), ("1_Pooling", ST_MODULES[1])]
    if spec.get("normalize", True):
        modules.append(("2_Normalize", ST_MODULES[2]))
        (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": where, "type": kind}
         for i, (where, kind) in enumerate(modules)], indent=2))
    (path / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": max_length, "do_lower_case": False}, indent=2))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
         "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
         "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (path / "config_sentence_transformers.json").write_text(json.dumps(
        {"model_type": "SentenceTransformer", "similarity_fn_name": "cosine",
         "prompts": {}, "default_prompt_name": None}, indent=2))
