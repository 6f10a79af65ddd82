"""Quantised linear layers: build, save as safetensors, reload exactly.

One codec per method turns an ``nn.Linear`` into its quantised module, lists the tensors that
module stores (weights, scales, quantisation state) and rebuilds the module from them. The
saved model is ``quantized.safetensors`` + ``quantization.json`` (method, which modules) + the
architecture's config: reloading rebuilds the skeleton from the config and swaps the listed
modules back in, so the reloaded model computes exactly what was evaluated.

Order matters: adapters are merged into full-precision weights first (``merge_full_precision``);
merging LoRA deltas into already-quantised weights rounds them away (a known peft trap), so it
is refused.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from data.errors import ConfigError
from trainers.embedding import EMBEDDING_CONFIG, BiEncoder, load_encoder
from trainers.heads import HEAD_CONFIG, MeanPoolClassifier
from trainers.quant_spec import QuantSpec
from trainers.reranker import RERANKER_CONFIG, CrossEncoder

QUANT_FILE = "quantization.json"
WEIGHTS_FILE = "quantized.safetensors"


class QuantError(ConfigError):
    """A quantisation the model or backend cannot do (exit 2, one line)."""


def resolve_device(spec: QuantSpec) -> torch.device:
    want = spec.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise QuantError("quant.device", "cuda was asked for but no GPU is visible",
                         "use quant.device=cpu or auto")
    if spec.method == "dynamic_int8" and want != "cpu":
        raise QuantError("quant.method", "dynamic_int8 runs on CPU only (torch dynamic "
                         "quantisation kernels)", "use quant=int8 or nf4 on GPU, or "
                         "quant.device=cpu")
    return torch.device(want)


# bitsandbytes logs a note on every int8 CPU matmul (inputs cast to float16)
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)


def _bnb() -> Any:
    """bitsandbytes, imported on first use: optional (CUDA-built), and it warns on import."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bitsandbytes as bnb
    return bnb


class DynamicInt8:
    """torch per-channel symmetric int8 weights; activations quantised per batch (CPU)."""

    def quantize(self, linear: torch.nn.Linear, spec: QuantSpec, device: torch.device) -> Any:
        w = linear.weight.detach().float().cpu()
        scales = (w.abs().amax(1) / 127.0).clamp(min=1e-8).double()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_channel(w, scales, torch.zeros_like(scales).long(),
                                                 0, torch.qint8)
        return self._module(qweight, linear.bias, linear.in_features, linear.out_features)

    @staticmethod
    def _module(qweight: torch.Tensor, bias: torch.Tensor | None, n_in: int, n_out: int) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = DynamicLinear(n_in, n_out, bias_=bias is not None, dtype=torch.qint8)
            module.set_weight_bias(qweight, None if bias is None else bias.detach().float())
        return module

    def tensors(self, module: Any) -> dict[str, torch.Tensor]:
        qweight, bias = module._weight_bias()
        out = {"weight": qweight.int_repr(), "weight_scale": qweight.q_per_channel_scales().float()}
        if bias is not None:
            out["bias"] = bias.detach()
        return out

    def rebuild(self, t: dict[str, torch.Tensor], n_in: int, n_out: int, spec: QuantSpec,
                device: torch.device) -> Any:
        scales = t["weight_scale"].double()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(
                t["weight"], scales, torch.zeros_like(scales).long(), 0)
        return self._module(qweight, t.get("bias"), n_in, n_out)

    def dequantize(self, module: Any) -> torch.Tensor:
        return module._weight_bias()[0].dequantize()


class BnbInt8:
    """bitsandbytes ``Linear8bitLt``: int8 rows with one absmax scale each."""

    def quantize(self, linear: torch.nn.Linear, spec: QuantSpec, device: torch.device) -> Any:
        bnb = _bnb()
        module = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features,
                                     bias=linear.bias is not None, has_fp16_weights=False,
                                     threshold=spec.threshold)
        module.weight = bnb.nn.Int8Params(linear.weight.detach().float().cpu().clone(),
                                          requires_grad=False, has_fp16_weights=False)
        if linear.bias is not None:
            module.bias = torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return module.to(device)  # bitsandbytes quantises on the move to a device

    def tensors(self, module: Any) -> dict[str, torch.Tensor]:
        return {k: v for k, v in module.state_dict().items()}

    def rebuild(self, t: dict[str, torch.Tensor], n_in: int, n_out: int, spec: QuantSpec,
                device: torch.device) -> Any:
        bnb = _bnb()
        module = bnb.nn.Linear8bitLt(n_in, n_out, bias="bias" in t, has_fp16_weights=False,
                                     threshold=spec.threshold).to(device)
        module.load_state_dict({k: v.to(device) for k, v in t.items()})
        return module

    def dequantize(self, module: Any) -> torch.Tensor:
        return module.weight.data.float() * module.weight.SCB.float().unsqueeze(1) / 127.0


class Bnb4bit:
    """bitsandbytes ``Linear4bit``: 64-weight blocks in NF4 or FP4, absmax per block."""

    def __init__(self, quant_type: str) -> None:
        self.quant_type = quant_type

    def quantize(self, linear: torch.nn.Linear, spec: QuantSpec, device: torch.device) -> Any:
        bnb = _bnb()
        module = bnb.nn.Linear4bit(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            compute_dtype=getattr(torch, spec.compute_dtype),
            compress_statistics=spec.double_quant, quant_type=self.quant_type)
        module.weight = bnb.nn.Params4bit(
            linear.weight.detach().float().cpu().clone(), requires_grad=False,
            compress_statistics=spec.double_quant, quant_type=self.quant_type)
        if linear.bias is not None:
            module.bias = torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        try:
            return module.to(device)  # bitsandbytes quantises on the move to a device
        except (NotImplementedError, RuntimeError) as exc:
            raise QuantError("quant.method", f"{self.quant_type} is not supported by "
                             f"bitsandbytes on {device.type}: {str(exc).splitlines()[0]}",
                             "try quant=int8 or dynamic_int8") from None

    def tensors(self, module: Any) -> dict[str, torch.Tensor]:
        return {k: v for k, v in module.state_dict().items()}

    def rebuild(self, t: dict[str, torch.Tensor], n_in: int, n_out: int, spec: QuantSpec,
                device: torch.device) -> Any:
        bnb = _bnb()
        module = bnb.nn.Linear4bit(n_in, n_out, bias="bias" in t,
                                   compute_dtype=getattr(torch, spec.compute_dtype),
                                   quant_type=self.quant_type)
        stats = {k[len("weight."):]: v for k, v in t.items() if k.startswith("weight.")}
        module.weight = bnb.nn.Params4bit.from_prequantized(t["weight"], stats,
                                                            requires_grad=False, device=device)
        if "bias" in t:
            module.bias = torch.nn.Parameter(t["bias"].to(device), requires_grad=False)
        return module

    def dequantize(self, module: Any) -> torch.Tensor:
        bnb = _bnb()
        module.state_dict()  # undoes bitsandbytes' CPU inference repacking, if it happened
        return bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)


CODECS: dict[str, Any] = {"dynamic_int8": DynamicInt8(), "int8": BnbInt8(),
                          "nf4": Bnb4bit("nf4"), "fp4": Bnb4bit("fp4")}


def codec_of(module: Any) -> Any:
    """The codec that reads a quantised layer, or None for anything else. (A 4-bit layer's
    own quantisation state says nf4 or fp4, so either 4-bit codec reads it.)"""
    name, where = type(module).__name__, type(module).__module__
    if where.startswith("torch.ao.nn.quantized.dynamic") and name == "Linear":
        return CODECS["dynamic_int8"]
    if where.startswith("bitsandbytes"):
        return {"Linear8bitLt": CODECS["int8"], "Linear4bit": CODECS["nf4"]}.get(name)
    return None


def is_quantized(module: Any) -> bool:
    """A linear layer whose weights are no longer plain floating point tensors."""
    return codec_of(module) is not None


def _is_conv1d(module: Any) -> bool:
    """GPT-2's ``Conv1D``: a linear layer with its weight stored transposed."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def as_linear(module: Any) -> torch.nn.Linear:
    if not _is_conv1d(module):
        return module
    n_in, n_out = module.weight.shape
    linear = torch.nn.Linear(n_in, n_out, bias=module.bias is not None)
    linear.weight.data = module.weight.detach().t().contiguous()
    if module.bias is not None:
        linear.bias.data = module.bias.detach().clone()
    return linear.train(module.training)


def target_linears(model: Any, skip: list[str]) -> list[str]:
    """Names of the linear layers (``nn.Linear``, GPT-2 ``Conv1D``) to quantise: all but
    those ending with a ``skip`` suffix."""
    names = [name for name, m in model.named_modules()
             if (type(m) is torch.nn.Linear or _is_conv1d(m)) and not any(
                 name == s or name.endswith("." + s) for s in skip)]
    if not names:
        raise QuantError("quant", f"{type(model).__name__} has no linear layers to quantise "
                         f"(skipped: {', '.join(skip) or 'none'})",
                         "quantisation here works on nn.Linear weights")
    return names


def _set(model: Any, name: str, module: Any) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def quantize_linears(model: Any, spec: QuantSpec, device: torch.device,
                     names: list[str] | None = None) -> list[str]:
    """Swap linear layers for quantised ones in place; returns the names swapped."""
    if any(is_quantized(m) for m in model.modules()):
        raise QuantError("run", "the model already has quantised layers",
                         "quantise a full-precision model (a training run or merged export)")
    codec = CODECS[spec.method]
    names = names if names is not None else target_linears(model, list(spec.skip_modules))
    for name in names:
        old = as_linear(model.get_submodule(name))
        _set(model, name, codec.quantize(old, spec, device).train(old.training))
    return names


def dequantize_linears(model: Any) -> int:
    """Replace quantised layers with ``nn.Linear`` holding their dequantised weights (a QLoRA
    base before its adapter is merged); returns how many were replaced."""
    swapped = 0
    for name, module in list(model.named_modules()):
        if not is_quantized(module):
            continue
        weight = codec_of(module).dequantize(module).float()
        bias = module.bias() if callable(getattr(module, "bias", None)) else module.bias
        plain = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        plain.weight.data = weight.cpu()
        if bias is not None:
            plain.bias.data = bias.detach().float().cpu()
        _set(model, name, plain)
        swapped += 1
    return swapped


def merge_full_precision(model: Any) -> Any:
    """Adapters folded into full-precision weights; a QLoRA base is dequantised first."""
    from peft import PeftModel  # peft takes seconds: only a model with adapters needs it

    if not isinstance(model, PeftModel):
        return model
    dequantize_linears(model)
    if any(is_quantized(m) for m in model.modules()):  # never merge into quantised weights
        raise QuantError("run", "an adapter would be merged into quantised weights",
                         "merge into full precision first, then quantise")
    return model.merge_and_unload()


def linear_bytes(model: Any, names: list[str]) -> int:
    """Bytes of the weights (and their quantisation state) of the named layers, bias excluded."""
    total = 0
    for name in names:
        module = model.get_submodule(name)
        if type(module) is torch.nn.Linear or _is_conv1d(module):
            total += module.weight.numel() * module.weight.element_size()
            continue
        total += sum(t.numel() * t.element_size()
                     for k, t in codec_of(module).tensors(module).items() if k != "bias")
    return total


def save_quantized(model: Any, spec: QuantSpec, names: list[str], out: Path,
                   extra: dict[str, Any]) -> Path:
    """``out/quantized.safetensors`` + ``quantization.json`` + the architecture's config."""
    out.mkdir(parents=True, exist_ok=True)
    codec = CODECS[spec.method]
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if not any(key == n or key.startswith(n + ".") for n in names):
            tensors[key] = value
    for name in names:
        for key, value in codec.tensors(model.get_submodule(name)).items():
            tensors[f"{name}.{key}"] = value
    seen: dict[int, str] = {}
    tied: dict[str, str] = {}
    for key in list(tensors):  # tied weights (e.g. embeddings = lm_head) are saved once
        ptr = tensors[key].data_ptr()
        if tensors[key].numel() and ptr in seen:
            tied[key] = seen[ptr]
            del tensors[key]
        else:
            seen[ptr] = key
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
              str(out / WEIGHTS_FILE))
    _save_architecture(model, out)
    meta = {"method": spec.method, "spec": {k: getattr(spec, k) for k in (
        "method", "skip_modules", "double_quant", "compute_dtype", "threshold")},
        "modules": {n: [model.get_submodule(n).in_features, model.get_submodule(n).out_features]
                    for n in names}, "tied": tied, **extra}
    (out / QUANT_FILE).write_text(json.dumps(meta, indent=1))
    return out


def _save_architecture(model: Any, out: Path) -> None:
    if isinstance(model, BiEncoder):  # the encoder's config; pooling, spec and scale range
        model.encoder.config.save_pretrained(out)
        model.save_spec(out)
    elif isinstance(model, MeanPoolClassifier):
        model.encoder.config.save_pretrained(out)
        (out / HEAD_CONFIG).write_text(json.dumps({"pooling": "mean",
                                                   "num_labels": model.num_labels}))
    elif isinstance(model, CrossEncoder):  # the classifier's config and the reranker marker
        model.config.save_pretrained(out)
        model.save_marker(out)
    else:
        model.config.save_pretrained(out)


def _skeleton(model_dir: Path, task: str) -> Any:
    # transformers loads when a model is rebuilt: trainers.models imports this module without it
    import transformers
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_dir)
    if (model_dir / EMBEDDING_CONFIG).exists():
        return BiEncoder(load_encoder(config), *BiEncoder.read_spec(model_dir))
    if (model_dir / HEAD_CONFIG).exists():
        head = json.loads((model_dir / HEAD_CONFIG).read_text())
        try:
            encoder = AutoModel.from_config(config, add_pooling_layer=False)
        except TypeError:
            encoder = AutoModel.from_config(config)
        return MeanPoolClassifier(encoder, head["num_labels"])
    if (model_dir / RERANKER_CONFIG).exists():
        return CrossEncoder(transformers.AutoModelForSequenceClassification.from_config(config))
    auto = {"seq_cls": "AutoModelForSequenceClassification",
            "token_cls": "AutoModelForTokenClassification",
            "causal_lm": "AutoModelForCausalLM"}[task]
    return getattr(transformers, auto).from_config(config)


def load_quantized(model_dir: Path, task: str, device: str | None = None) -> Any:
    """Rebuild the quantised model saved by ``save_quantized`` (eval mode)."""
    meta = json.loads((model_dir / QUANT_FILE).read_text())
    spec = QuantSpec(**meta["spec"], device=device or "auto")
    dev = resolve_device(spec)
    from accelerate import init_empty_weights  # ~1 s import: only to rebuild a saved model

    with init_empty_weights():  # parameters on the meta device: no full-precision copy
        model = _skeleton(model_dir, task)
    saved = load_file(str(model_dir / WEIGHTS_FILE))
    codec = CODECS[spec.method]
    own: dict[str, dict[str, torch.Tensor]] = {}
    for name in meta["modules"]:
        prefix = name + "."
        own[name] = {k[len(prefix):]: saved.pop(k) for k in list(saved) if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(saved, strict=False, assign=True)  # the rest
    for name, (n_in, n_out) in meta["modules"].items():
        _set(model, name, codec.rebuild(own[name], n_in, n_out, spec, dev))
    for alias, source in meta["tied"].items():  # e.g. lm_head.weight is the embedding matrix
        module, _, leaf = alias.rpartition(".")
        owner, _, src_leaf = source.rpartition(".")
        setattr(model.get_submodule(module), leaf,
                getattr(model.get_submodule(owner), src_leaf))
    quantized = set(meta["modules"])
    missing = [k for k in missing if k not in meta["tied"]
               and not any(k.startswith(n + ".") for n in quantized)]
    if missing or unexpected:
        raise ConfigError("run", f"{model_dir / WEIGHTS_FILE} does not match its architecture "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})",
                          "re-run shardtune quantize")
    empty = [n for n, p in model.named_parameters() if p.is_meta]
    if empty:
        raise ConfigError("run", f"{model_dir / WEIGHTS_FILE} lacks {empty[:3]}",
                          "re-run shardtune quantize")
    if spec.method != "dynamic_int8":
        model.to(dev)
    model.cpu_only = spec.method == "dynamic_int8"
    return model.eval()
