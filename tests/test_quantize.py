"""Quantisation: exact reload, merge-then-quantise, refusals, QLoRA on CPU, quantize/compress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data.errors import ConfigError
from shardtune.cli import main
from tests.conftest import FAST, train_run
from trainers.quant_spec import QuantSpec
from trainers.quantize import (
    QuantError,
    is_quantized,
    linear_bytes,
    load_quantized,
    merge_full_precision,
    quantize_linears,
    resolve_device,
    save_quantized,
    target_linears,
)

CPU = torch.device("cpu")


def _tiny_classifier(seed: int = 0):
    from transformers import AutoModel, BertConfig

    from trainers.heads import MeanPoolClassifier

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128)
    return MeanPoolClassifier(AutoModel.from_config(config, add_pooling_layer=False), 5).eval()


def _batch():
    ids = torch.randint(1, 100, (4, 12), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("method,min_ratio", [("dynamic_int8", 3.5), ("int8", 3.5),
                                              ("nf4", 5.0), ("fp4", 5.0)])
def test_quantised_model_reloads_from_safetensors_to_identical_outputs(tmp_path, method,
                                                                       min_ratio):
    model, batch = _tiny_classifier(), _batch()
    with torch.no_grad():
        full = model(**batch).logits
    spec = QuantSpec(method=method, device="cpu")
    names = target_linears(model, list(spec.skip_modules))
    fp_bytes = linear_bytes(model, names)
    quantize_linears(model, spec, CPU, names)
    assert "classifier" not in names and len(names) == 12  # 6 linears x 2 layers; head kept
    assert all(is_quantized(model.get_submodule(n)) for n in names)
    # saved before the first forward: bitsandbytes repacks 4-bit weights for CPU inference
    # on a first no-grad forward (bf16 state on AVX512-BF16 machines), and its save undoes it
    save_quantized(model, spec, names, tmp_path, {})
    with torch.no_grad():
        quantized = model(**batch).logits
    assert not torch.equal(quantized, full)  # weights really changed ...
    assert torch.allclose(quantized, full, atol=0.05)  # ... by rounding only
    assert fp_bytes / linear_bytes(model, names) >= min_ratio
    assert (tmp_path / "quantized.safetensors").stat().st_size < 0.6 * 4 * sum(
        p.numel() for p in _tiny_classifier().parameters())
    reloaded = load_quantized(tmp_path, "seq_cls", "cpu")
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, quantized)


def test_llm_int8_outlier_columns_stay_unrounded_and_the_threshold_survives_a_reload(
        tmp_path):
    """``quant.threshold`` (LLM.int8): input columns holding a value above it skip int8. On
    inputs with a few large feature columns (the pattern of LLMs' residual streams) a layer's
    error falls several-fold, and a saved model reloads with its threshold."""
    from trainers.quantize import CODECS

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64)
    x[:, :2] *= 40.0  # two outlier features
    with torch.no_grad():
        full = linear(x)
        errors = {t: (CODECS["int8"].quantize(linear, QuantSpec(method="int8", threshold=t),
                                              CPU).eval()(x) - full).abs().mean().item()
                  for t in (0.0, 6.0)}  # eval: in training bitsandbytes runs fp on CPU
    assert errors[6.0] < errors[0.0] / 3, errors

    # a model whose hidden states carry outlier columns (two of the embedding LayerNorm's
    # gains scaled up), quantised with and without them, saved, the first one reloaded
    batch, out = _batch(), {}
    for t in (6.0, 0.0):
        model = _tiny_classifier()
        with torch.no_grad():
            model.encoder.embeddings.LayerNorm.weight[:2] *= 40.0
        spec = QuantSpec(method="int8", device="cpu", threshold=t)
        names = target_linears(model, list(spec.skip_modules))
        quantize_linears(model, spec, CPU, names)
        save_quantized(model, spec, names, tmp_path / str(t), {})
        with torch.no_grad():
            out[t] = model(**batch).logits
    assert json.loads((tmp_path / "6.0" / "quantization.json").read_text())["spec"][
        "threshold"] == 6.0
    reloaded = load_quantized(tmp_path / "6.0", "seq_cls", "cpu")
    with torch.no_grad():
        again = reloaded(**batch).logits
    assert torch.equal(again, out[6.0]) and not torch.equal(again, out[0.0])


def test_adapters_are_merged_in_full_precision_before_quantising():
    from peft import LoraConfig, get_peft_model

    base = _tiny_classifier()
    base_q = base.encoder.encoder.layer[0].attention.self.query.weight.detach().clone()
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["query"],
                                           init_lora_weights=False))
    merged = merge_full_precision(lora)
    weight = merged.encoder.encoder.layer[0].attention.self.query.weight.detach().clone()
    delta = (weight - base_q).abs().mean()
    assert delta > 0  # the adapter is in the merged weights
    quantize_linears(merged, QuantSpec(method="dynamic_int8", device="cpu"), CPU)
    layer = merged.encoder.encoder.layer[0].attention.self.query
    rounding = (layer._weight_bias()[0].dequantize() - weight).abs().mean()
    assert rounding < delta / 10  # the LoRA delta survives quantisation
    with pytest.raises(QuantError, match="already has quantised layers"):
        quantize_linears(merged, QuantSpec(method="int8", device="cpu"), CPU)


def test_qlora_base_stays_4bit_and_frozen_while_the_adapter_learns():
    from trainers.config import PeftMethod, PeftSpec, TaskKind
    from trainers.models import apply_peft

    net = apply_peft(_tiny_classifier(), PeftSpec(method=PeftMethod.qlora,
                                                  target_modules=["query", "value"]),
                     TaskKind.seq_cls, CPU)
    packed = {n: m.weight.data.clone() for n, m in net.named_modules()
              if type(m).__name__ == "Linear4bit"}
    assert len(packed) == 12 and all(w.dtype == torch.uint8 for w in packed.values())
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    batch, labels = _batch(), torch.tensor([0, 1, 2, 3])
    net.train()
    losses = []
    for _ in range(15):
        loss = net(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    for name, module in net.named_modules():
        if name in packed:
            assert torch.equal(module.weight.data, packed[name])  # bit-identical, 4-bit


def test_gate_metric_follows_the_task_and_a_wrong_one_fails_first():
    from distill.quant_run import gate_metric

    assert gate_metric("accuracy", "causal_lm") == "perplexity"  # the default: the headline
    assert gate_metric("macro_f1", "seq_cls") == "macro_f1"
    with pytest.raises(ConfigError, match="gate.metric.*entity_f1"):
        gate_metric("bleu", "token_cls")
    assert gate_metric("accuracy", "causal_lm", chat=True) == "bleu"  # chat: answers scored
    assert gate_metric("rouge_l", "causal_lm", chat=True) == "rouge_l"
    assert gate_metric("bleu_uncased", "causal_lm", chat=True) == "bleu_uncased"
    with pytest.raises(ConfigError, match="gate.metric.*bleu, bleu_uncased, chrf"):
        gate_metric("perplexity", "causal_lm", chat=True)
    assert gate_metric("accuracy", "embedding") == "ndcg@10"  # retrieval: ranked corpus
    assert gate_metric("recall@100", "embedding") == "recall@100"
    assert gate_metric("accuracy", "embedding", scored=True) == "spearman"  # STS-like pairs
    with pytest.raises(ConfigError, match="gate.metric.*spearman, pearson"):
        gate_metric("ndcg@10", "embedding", scored=True)


def test_unsupported_quantisations_are_clear_errors(tmp_path, monkeypatch, capsys):
    with pytest.raises(QuantError, match="no linear layers"):
        target_linears(torch.nn.Sequential(torch.nn.Embedding(10, 4)), [])
    with pytest.raises(ConfigError, match="quant.method"):
        QuantSpec(method="int4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(QuantError, match="CPU only"):
        resolve_device(QuantSpec(method="dynamic_int8", device="cuda"))
    monkeypatch.undo()

    import bitsandbytes as bnb

    def no_fp4(self, *args, **kwargs):
        raise NotImplementedError("fp4 kernels are not built for this backend")

    monkeypatch.setattr(bnb.nn.Linear4bit, "to", no_fp4)
    with pytest.raises(QuantError, match="fp4 is not supported by bitsandbytes on cpu"):
        quantize_linears(_tiny_classifier(), QuantSpec(method="fp4", device="cpu"), CPU)
    monkeypatch.undo()
    done = tmp_path / "q"
    (done / "model").mkdir(parents=True)
    (done / "config.json").write_text("{}")
    (done / "model" / "quantization.json").write_text("{}")
    for args, words in ((["run=/no/such/run"], "no config.json"),
                        ([f"run={done}"], "already quantised"),
                        (["run=x", "quant=int4"], "quant")):
        assert main(["quantize", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and words in err and "Traceback" not in err


def test_quantize_reloads_evaluates_measures_and_gates(sample_run, monkeypatch, capsys):
    from evaluation.config import EvaluateConfig
    from evaluation.evaluate import evaluate

    root, run_dir = sample_run
    assert main(["quantize", f"run={run_dir}", "quant=int8", "gate.max_drop=1.0",
                 "speed_rows=32", f"paths.root={root}"]) == 0
    out = run_dir / "quant" / "int8"
    result = json.loads((out / "quantize.json").read_text())
    assert result["linear_ratio"] >= 3.5 and result["gate"]["passed"]
    assert result["speed"]["quantized"]["disk_bytes"] < result["speed"]["full"]["disk_bytes"]
    assert result["speed"]["full"]["texts"] == 32  # speed_rows
    assert result["paired"]["n"] == result["full"]["n"]
    report = (out / "report.md").read_text()
    assert "full" in report and "quantized" in report and "passed" in report
    logged = json.loads((out / "metrics.json").read_text())["test/accuracy"]
    again = evaluate(EvaluateConfig(run=str(out), baseline=False))  # reloaded from disk
    assert again["metrics"]["accuracy"]["value"] == pytest.approx(logged, abs=1e-12)

    failed = {**result, "gate": {"max_drop": 0.001, "passed": False}, "drop": 0.02,
              "report": str(out / "report.md")}
    monkeypatch.setattr("distill.quant_run.quantize", lambda cfg: failed)
    assert main(["quantize", f"run={run_dir}", "gate.max_drop=0.001"]) == 1
    err = capsys.readouterr().err
    assert "gate failed" in err and "gate.max_drop=0.001" in err


def test_compress_chains_distill_and_quantize_and_stops_at_a_failed_gate(sample_run, capsys):
    root, teacher = sample_run
    args = ["compress", f"teacher={teacher}", f"paths.root={root}", *FAST,
            "trainer.max_steps=6", "seeds=[0]", "distill.control=false", "quant=dynamic_int8",
            "compress.speed=false", "distill.teacher_mode=online", "distill.speed_rows=32",
            "run_name=chain"]
    assert main([*args, "compress.max_drop_distill=1.0", "compress.max_drop_quantize=1.0"]) == 0
    result = json.loads((root / "runs" / "chain" / "compress.json").read_text())
    assert [s["stage"] for s in result["stages"]] == ["distill", "quantize"]
    assert all(s["passed"] for s in result["stages"])
    names = [row[0] for row in result["rows"]]
    assert names[0] == "teacher" and any("quantised" in n for n in names) and len(names) == 4
    capsys.readouterr()
    drop = result["stages"][0]["drop"]
    assert drop > 0.01  # six steps of a 3-layer student: clearly below the teacher
    assert main([*args, "compress.max_drop_distill=0.0"]) == 1  # finished stages are reused
    err = capsys.readouterr().err
    assert "stage 'distill'" in err and "compress.max_drop_distill" in err
    result = json.loads((root / "runs" / "chain" / "compress.json").read_text())
    assert result["failed"] == "distill" and len(result["stages"]) == 1


def test_qlora_run_checkpoints_only_the_adapter_resumes_and_quantizes(tmp_path, ray_session):
    from trainers.models import load_trained

    args = [*FAST, "peft=qlora", "trainer.max_steps=6", "trainer.ckpt_every=3",
            "run_name=qlora"]
    stopped = train_run(tmp_path, [*args, "trainer.stop_after_steps=3"])
    assert stopped["status"] == "stopped"
    checkpoint = Path(stopped["run_dir"]) / "checkpoint_000003"
    saved = {p.name for p in checkpoint.rglob("*") if p.is_file()}
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved
    assert (checkpoint / "adapter" / "adapter_model.safetensors").stat().st_size < 2**20
    base = json.loads((checkpoint / "adapter" / "base_quantization.json").read_text())
    assert base["quant_type"] == "nf4" and base["layers"] == 36
    resumed = train_run(tmp_path, args)
    assert resumed["resumed_from"].endswith("checkpoint_000003")
    assert resumed["metrics"]["step"] == 6
    run_dir = Path(resumed["run_dir"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["peft"]["method"] == "qlora" and config["peft"]["base"]["quant_type"] == "nf4"
    model = load_trained(run_dir)[0]  # the adapter back onto a 4-bit base
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    # dequantise the 4-bit base, merge the adapter in full precision, then quantise
    assert main(["quantize", f"run={run_dir}", "quant=nf4", "speed=false",
                 f"paths.root={tmp_path}"]) == 0
    result = json.loads((run_dir / "quant" / "nf4" / "quantize.json").read_text())
    assert result["modules"] == 36 and result["linear_ratio"] > 5


def test_gpt2_conv1d_layers_quantise_and_the_tied_head_reloads_tied(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2,
                                       n_positions=32)).eval()
    spec = QuantSpec(method="dynamic_int8", device="cpu")
    names = quantize_linears(model, spec, CPU)
    assert len(names) == 8 and all(is_quantized(model.get_submodule(n)) for n in names)
    save_quantized(model, spec, names, tmp_path, {})
    reloaded = load_quantized(tmp_path, "causal_lm", "cpu")
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight


def test_dequantising_after_cpu_inference_gives_the_weights_back():
    from trainers.quantize import CODECS

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    codec = CODECS["nf4"]
    layer = codec.quantize(linear, QuantSpec(method="nf4", device="cpu"), CPU).eval()
    fresh = codec.dequantize(layer).clone()
    with torch.no_grad():  # bitsandbytes may repack the weights for CPU inference here
        layer(torch.randn(3, 64))
    again = codec.dequantize(layer)
    assert torch.allclose(again, fresh, atol=1e-3)  # not the repacked bytes read as nf4
    assert (again - linear.weight).abs().mean() < 0.01
