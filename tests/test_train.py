"""End-to-end training runs in Ray Train local mode on the shipped sample (no ../shared needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FAST, train_run

pytestmark = pytest.mark.usefixtures("ray_session")

SHORT = [*FAST, "trainer.max_steps=8", "trainer.epochs=2"]


def test_default_job_end_to_end_and_adapter_reloads_with_plain_peft(tmp_path):
    summary = train_run(tmp_path, [*FAST, "trainer.max_steps=24", "trainer.epochs=3",
                                   "model.pooling=cls"])
    run_dir = Path(summary["run_dir"])
    assert summary["status"] == "done"
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                 "tokenizer/tokenizer.json", "label_map.json", "config.json", "metrics.json",
                 "run_meta.json", "report.md", "metrics.jsonl"):
        assert (run_dir / name).exists(), name
    meta = json.loads((run_dir / "run_meta.json").read_text())
    assert len(meta["dataset"]["fingerprint"]["sha256"]) == 64
    assert meta["seed"] == 0 and meta["versions"]["torch"].startswith("2.13")
    assert meta["data_check"]["exact_leakage"] == {"validation": 0, "test": 0}
    assert meta["data_check"]["pii_hits"]["train"] == 0
    assert meta["dataset"]["splits"]["train"]["rows"] + \
        meta["dataset"]["splits"]["validation"]["rows"] == 360
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 24
    assert metrics["test/accuracy"] > 1 / 6  # better than chance after 24 steps

    # Plain transformers + peft, no shardtune code: the logged test accuracy is reproduced.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    labels = json.loads((run_dir / "label_map.json").read_text())["labels"]
    config = json.loads((run_dir / "adapter/adapter_config.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(
        config["base_model_name_or_path"], num_labels=len(labels))
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
    tok = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    rows = [json.loads(line) for line in
            (Path(__file__).parent.parent / "data/sample/test.jsonl").read_text().splitlines()]
    correct = 0
    with torch.no_grad():
        for i in range(0, len(rows), 32):
            chunk = rows[i:i + 32]
            enc = tok([r["text"] for r in chunk], truncation=True, max_length=64,
                      padding=True, return_tensors="pt")
            pred = model(**enc).logits.argmax(-1).tolist()
            correct += sum(labels[p] == r["label"] for p, r in zip(pred, chunk, strict=True))
    assert correct / len(rows) == pytest.approx(metrics["test/accuracy"], abs=1.5 / len(rows))


def test_mean_pooling_adapter_and_merged_export_agree(tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    from trainers.heads import MeanPoolClassifier

    summary = train_run(tmp_path, [*SHORT, "model.pooling=mean", "peft.merged_export=true"])
    run_dir = Path(summary["run_dir"])
    labels = json.loads((run_dir / "label_map.json").read_text())["labels"]
    config = json.loads((run_dir / "adapter/adapter_config.json").read_text())
    assert config["base_model_name_or_path"].endswith("model")
    base = MeanPoolClassifier(AutoModel.from_pretrained(config["base_model_name_or_path"],
                                                        add_pooling_layer=False), len(labels))
    adapted = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
    merged = MeanPoolClassifier.from_pretrained(summary["merged"]).eval()
    tok = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    enc = tok(["my card was charged twice", "where is my parcel"], padding=True,
              return_tensors="pt")
    with torch.no_grad():
        a = adapted(**enc).logits
        b = merged(**enc).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a[0], a[1])  # a real classifier, not a constant


def test_cluster_threads_sets_the_local_loops_torch_threads(tmp_path):
    """cluster.threads: a local run on a machine shared with another job uses that many
    torch threads (the loop runs in this process, so this process keeps them after)."""
    import torch

    from tests.conftest import PLUMBING_MODEL

    before = torch.get_num_threads()
    wanted = before + 1  # never torch's default here, so the loop must have set it
    try:
        summary = train_run(tmp_path, [*FAST, PLUMBING_MODEL, "trainer.max_steps=1",
                                       f"cluster.threads={wanted}"])
        assert summary["status"] == "done" and torch.get_num_threads() == wanted
        assert summary["metrics"]["dist/torch_threads"] == [wanted]  # what the throughput had
    finally:
        torch.set_num_threads(before)
    saved = json.loads((Path(summary["run_dir"]) / "config.json").read_text())
    assert saved["cluster"]["threads"] == wanted
