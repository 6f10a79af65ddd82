"""Build tokenizer, model and adapter from typed config: one place for every task.

transformers and peft are imported inside the functions that use them: the evaluation driver,
the speed probe and distillation import this module for ``load_run_config`` and
``tokenizer_location`` and must not pay seconds of imports (or their memory) for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError

from data.errors import ConfigError
from data.locations import resolve_location
from trainers.config import ModelConfig, PeftMethod, PeftSpec, TaskKind, TrainConfig
from trainers.embedding import EMBEDDING_CONFIG, BiEncoder, load_encoder
from trainers.embedding_spec import EmbeddingSpec
from trainers.heads import MeanPoolClassifier
from trainers.identity import GROUP_FILE
from trainers.quant_spec import QuantSpec
from trainers.quantize import load_quantized, quantize_linears
from trainers.reranker import RERANKER_CONFIG, CrossEncoder

_AUTO_CLASSES = {
    TaskKind.seq_cls: "AutoModelForSequenceClassification",
    TaskKind.token_cls: "AutoModelForTokenClassification",
    TaskKind.causal_lm: "AutoModelForCausalLM",
}
_PEFT_TASK = {
    TaskKind.seq_cls: "SEQ_CLS",
    TaskKind.token_cls: "TOKEN_CLS",
    TaskKind.causal_lm: "CAUSAL_LM",
}


def tokenizer_location(model: ModelConfig) -> str:
    if model.tokenizer:
        return resolve_location(model.tokenizer, "model.tokenizer")
    if model.init_config is not None:
        raise ConfigError("model.tokenizer", "a randomly initialised model needs a tokenizer")
    return resolve_location(model.name_or_path, "model.name_or_path")


def check_model(model: ModelConfig) -> None:
    """Fail on the driver, before any data work, when weights or tokenizer cannot be found."""
    from transformers import AutoConfig  # slow import: see the docstring

    load_tokenizer(model)
    if model.init_config is None:
        location = resolve_location(model.name_or_path, "model.name_or_path")
        try:
            AutoConfig.from_pretrained(location, trust_remote_code=model.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                "model.name_or_path", f"cannot load {model.name_or_path!r}: "
                f"{str(exc).splitlines()[0]}",
                "pass a local model directory or a hub id reachable from this machine",
            ) from None


def import_loop_libraries(peft_method: PeftMethod) -> None:
    """Import the training loop's libraries ahead (transformers' model code, peft: ~5 s of
    CPU here), on a thread while the main one waits for Ray to start. Best effort: a failure
    here shows again, with its real context, where the loop imports them."""
    with contextlib.suppress(Exception):
        import transformers.modeling_utils  # noqa: F401 - imported for its side effect
        import transformers.trainer_utils  # noqa: F401 - set_seed's module (pulls peft in)
        if peft_method != PeftMethod.none:
            import peft  # noqa: F401


def load_tokenizer(model: ModelConfig):
    from transformers import AutoTokenizer  # slow import: see the docstring

    key = "model.tokenizer" if model.tokenizer else "model.name_or_path"
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer_location(model))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            key, f"cannot load a tokenizer from it: {str(exc).splitlines()[0]}",
            "pass a local directory with tokenizer files or a reachable hub id",
        ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.sep_token
    return tok


def _dtype(name: str) -> Any:
    if name == "auto":
        return "auto"
    try:
        return getattr(torch, name)
    except AttributeError:
        raise ConfigError("model.dtype", f"unknown dtype {name!r}") from None


def build_base_model(model: ModelConfig, task: TaskKind, labels: list[str], tokenizer,
                     embedding: EmbeddingSpec | None = None,
                     score_range: tuple[float, float] = (0.0, 5.0)) -> Any:
    """Load pretrained weights (or build from ``init_config``) with the task's head."""
    import transformers  # slow import: see the docstring

    if task == TaskKind.embedding:
        return _bi_encoder(model, embedding or EmbeddingSpec(loss="in_batch"), score_range)
    if task == TaskKind.rerank:  # the architecture's own head with one output, as hub
        # rerankers are (a mean-pooling head would ignore theirs)
        return CrossEncoder(build_base_model(dataclasses.replace(model, pooling="cls"),
                                             TaskKind.seq_cls, ["relevance"], tokenizer))
    if task == TaskKind.seq_cls and model.pooling == "mean":
        return _mean_pool_model(model, labels, tokenizer)
    auto = getattr(transformers, _AUTO_CLASSES[task])
    head: dict[str, Any] = {}
    if task != TaskKind.causal_lm:
        head = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)}}
    if model.init_config is not None:
        cfg_kwargs = dict(model.init_config)
        model_type = cfg_kwargs.pop("model_type", None)
        if not model_type:
            raise ConfigError("model.init_config.model_type", "is required, e.g. llama or gpt2")
        cfg_kwargs.setdefault("vocab_size", len(tokenizer))
        cfg_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        config = transformers.AutoConfig.for_model(model_type, **cfg_kwargs, **head)
        return auto.from_config(config)
    location = resolve_location(model.name_or_path, "model.name_or_path")
    try:
        net = auto.from_pretrained(
            location, dtype=_dtype(model.dtype), low_cpu_mem_usage=model.low_cpu_mem_usage,
            trust_remote_code=model.trust_remote_code, **head,
        )
    except OSError as exc:
        raise ConfigError(
            "model.name_or_path", f"cannot load {model.name_or_path!r}: {str(exc).splitlines()[0]}",
            "pass a local directory or a hub id reachable from this machine",
        ) from None
    if net.config.pad_token_id is None:
        net.config.pad_token_id = tokenizer.pad_token_id
    return net


def _mean_pool_model(model: ModelConfig, labels: list[str], tokenizer) -> Any:
    from transformers import AutoConfig, AutoModel  # slow import: see the docstring

    if model.init_config is not None:
        cfg_kwargs = dict(model.init_config)
        config = AutoConfig.for_model(cfg_kwargs.pop("model_type"), **cfg_kwargs)
        return MeanPoolClassifier(AutoModel.from_config(config), len(labels))
    location = resolve_location(model.name_or_path, "model.name_or_path")
    if (Path(location) / "pooling_head.json").exists():  # e.g. a distilled student's init
        return MeanPoolClassifier.from_pretrained(location)
    encoder = AutoModel.from_pretrained(
        location, dtype=_dtype(model.dtype), low_cpu_mem_usage=model.low_cpu_mem_usage,
        trust_remote_code=model.trust_remote_code, add_pooling_layer=False,
    )
    return MeanPoolClassifier(encoder, len(labels))


def _bi_encoder(model: ModelConfig, spec: EmbeddingSpec, score_range: tuple[float, float]
                ) -> BiEncoder:
    from transformers import AutoConfig, AutoModel  # slow import: see the docstring

    if model.init_config is not None:
        cfg_kwargs = dict(model.init_config)
        config = AutoConfig.for_model(cfg_kwargs.pop("model_type"), **cfg_kwargs)
        return BiEncoder(AutoModel.from_config(config), spec, score_range)
    location = resolve_location(model.name_or_path, "model.name_or_path")
    if (Path(location) / EMBEDDING_CONFIG).exists():  # a trained bi-encoder as the start
        return BiEncoder.from_pretrained(location)
    try:
        encoder = load_encoder(location, dtype=_dtype(model.dtype),
                               low_cpu_mem_usage=model.low_cpu_mem_usage,
                               trust_remote_code=model.trust_remote_code)
    except OSError as exc:
        raise ConfigError(
            "model.name_or_path", f"cannot load {model.name_or_path!r}: {str(exc).splitlines()[0]}",
            "pass a local directory or a hub id reachable from this machine") from None
    return BiEncoder(encoder, spec, score_range)


def score_range(run: TrainConfig) -> tuple[float, float]:
    """The declared range of scored pairs (the cosine loss rescales gold scores from it)."""
    return (run.data.pairs.score_low, run.data.pairs.score_high)


def quantize_base(net: Any, spec: PeftSpec, device: Any = None) -> Any:
    """QLoRA: the frozen base's linear layers become 4-bit bitsandbytes layers on ``device``
    (bitsandbytes quantises when a layer moves to a device, CPU included)."""
    base = spec.base
    quant = QuantSpec(method=base.quant_type, skip_modules=list(base.skip_modules),
                      double_quant=base.double_quant, compute_dtype=base.compute_dtype)
    quantize_linears(net, quant, torch.device(device or "cpu"))
    for param in net.parameters():
        param.requires_grad_(False)
    return net


def apply_peft(net: Any, spec: PeftSpec, task: TaskKind, device: Any = None) -> Any:
    """Wrap ``net`` in LoRA/DoRA adapters (on a 4-bit base for QLoRA), or leave it whole
    for full fine-tuning."""
    if spec.method == PeftMethod.none:
        return net
    from peft import LoraConfig, get_peft_model  # peft takes seconds: not for full fine-tuning

    if spec.method == PeftMethod.qlora:
        net = quantize_base(net, spec, device)

    custom_head = isinstance(net, (MeanPoolClassifier, BiEncoder, CrossEncoder))
    saved = ["classifier"] if isinstance(net, (MeanPoolClassifier, CrossEncoder)) else None
    if isinstance(net, BiEncoder) and net.spec.learnable_scale:
        saved = ["scale"]  # a learnt temperature is part of the trained model
    lora = LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules) or None,
        use_dora=spec.method == PeftMethod.dora,
        task_type=None if custom_head else _PEFT_TASK[task],
        modules_to_save=saved,
    )
    try:
        return get_peft_model(net, lora)
    except ValueError as exc:
        raise ConfigError("peft.target_modules", str(exc).splitlines()[0]) from None


def inference_device(model: Any = None) -> torch.device:
    """CUDA when present, unless the model's kernels are CPU-only (dynamic int8)."""
    if getattr(model, "cpu_only", False) or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def trainable_summary(net: Any) -> dict[str, int]:
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return {"params_total": total, "params_trainable": trainable}


def load_run_config(run_dir: Path) -> Any:
    """The typed TrainConfig a finished run was trained with (from its config.json)."""
    path = run_dir / "config.json"
    if not path.is_file():
        members = sorted(d.name for d in run_dir.glob("seed*") if (d / "config.json").is_file())
        if (run_dir / GROUP_FILE).is_file() and members:
            # A seed group evaluates its members itself; a verb that takes one run needs one.
            raise ConfigError("run", f"{run_dir} is a seed group, not one run "
                              f"(members: {', '.join(members)})",
                              f"pass one member, e.g. run={run_dir / members[0]}; the group's "
                              "evaluation is in its aggregate.json")
        raise ConfigError("run", f"{run_dir} is not a shardtune run (no config.json)",
                          "pass runs/<run_name> of a finished training run")
    saved = _migrate(json.loads(path.read_text()))
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), saved))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or str(exc).splitlines()[0]
        raise ConfigError("run", f"{path}: {key} is not a key this shardtune version knows "
                          "(written by another version?)",
                          "re-train the run, or use the shardtune version that wrote it") \
            from None


# Keys that moved between versions: a run saved before the move still loads.
MOVED_KEYS = {("cluster", "max_failures"): ("trainer", "max_failures")}
# Keys config.json records for the verb that made the run (shardtune/config.py JobConfig);
# the trained model does not depend on them, so the core config leaves them out.
JOB_KEYS = ("sweep", "ablation", "distill", "quant", "compress", "mine")


def _migrate(saved: dict[str, Any]) -> dict[str, Any]:
    for key in JOB_KEYS:
        saved.pop(key, None)
    for (old_group, old_key), (new_group, new_key) in MOVED_KEYS.items():
        old = saved.get(old_group)
        if isinstance(old, dict) and old_key in old:
            value = old.pop(old_key)
            saved.setdefault(new_group, {}).setdefault(new_key, value)
    return saved


def _rebuilt_base(run: Any, labels: list[str], tokenizer: Any) -> Any:
    """The frozen base an adapter was trained on. A random-init base (``init_config``) is not
    saved: it is rebuilt from the run's seed, as training built it (``set_seed`` then
    ``build_base_model``); ``load_trained`` forks the RNG so the caller's state is untouched.
    Without the seed every load drew another base: evaluating a run twice gave two answers."""
    if run.model.init_config is not None:
        torch.manual_seed(run.seed)
    return build_base_model(run.model, run.task.kind, labels, tokenizer, run.task.embedding,
                            score_range(run))


def load_trained(run_dir: Path, merge_adapters: bool = True) -> tuple[Any, Any, list[str], Any]:
    """(model, tokenizer, labels, TrainConfig) of a finished run, ready for inference.

    ``merge_adapters``: LoRA/DoRA adapters folded into the weights they adapt (one matmul per
    adapted layer where the adapter adds two more, and no per-layer adapter dispatch: what a
    frozen model is for); a QLoRA base stays 4-bit with its adapter beside it, as trained,
    since merging into it would re-quantise. ``False`` keeps the ``PeftModel`` as saved."""
    from transformers import AutoTokenizer  # slow import: see the docstring

    run = load_run_config(run_dir)
    try:
        labels = json.loads((run_dir / "label_map.json").read_text())["labels"]
        tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError("run", f"{run_dir}: label_map.json or tokenizer/ unreadable "
                          f"({type(exc).__name__})", "copy them from a checkpoint of the run"
                          ) from None
    if (run_dir / "model" / "quantization.json").is_file():  # shardtune quantize output
        return load_quantized(run_dir / "model", run.task.kind.value), tokenizer, labels, run
    adapter = run_dir / "adapter"
    if not adapter.is_dir():
        raise ConfigError("run", f"{run_dir} has no adapter/ (did training finish?)")
    with torch.random.fork_rng(devices=[]):  # building draws random numbers: not the caller's
        model = _load_model(run, adapter, labels, tokenizer)
    if merge_adapters and run.peft.method in (PeftMethod.lora, PeftMethod.dora):
        model = model.merge_and_unload().eval()
    return model, tokenizer, labels, run


def _load_model(run: Any, adapter: Path, labels: list[str], tokenizer: Any) -> Any:
    try:
        if run.peft.method != PeftMethod.none:
            from peft import PeftModel  # peft takes seconds: only runs trained with adapters

            base = _rebuilt_base(run, labels, tokenizer)
            if run.peft.method == PeftMethod.qlora:  # the adapter was trained on a 4-bit base
                base = quantize_base(base, run.peft, inference_device())
            model = PeftModel.from_pretrained(base, str(adapter))
        elif (adapter / EMBEDDING_CONFIG).exists():
            model = BiEncoder.from_pretrained(adapter)
        elif (adapter / RERANKER_CONFIG).exists():
            model = CrossEncoder.from_pretrained(adapter)
        elif (adapter / "pooling_head.json").exists():
            model = MeanPoolClassifier.from_pretrained(adapter)
        else:
            import transformers

            auto = getattr(transformers, _AUTO_CLASSES[run.task.kind])
            model = auto.from_pretrained(str(adapter))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError("run", f"cannot load the trained model from {adapter}: {reason}",
                          "the adapter files may be corrupted; copy them from a checkpoint"
                          ) from None
    return model.eval()
