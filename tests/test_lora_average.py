"""LoRA runs averaged by stacking (bench/lora_average.py): peft loads the stacked adapter and
the model it gives has the members' mean weights, not the product of averaged factors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file

from bench.lora_average import average_adapters


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _member(path: Path, seed: int, **lora: object) -> torch.nn.Module:
    model = get_peft_model(_tiny(), LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"],
                                               **lora))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_()
    model.save_pretrained(path)
    return model.merge_and_unload()


def test_the_stacked_adapter_gives_the_mean_of_the_members_weights(tmp_path: Path) -> None:
    merged = [_member(tmp_path / f"m{i}", seed=i) for i in range(3)]
    tensors, config = average_adapters([tmp_path / f"m{i}" for i in range(3)])
    assert config["r"] == 6 and config["lora_alpha"] == 12  # alpha / r kept
    out = tmp_path / "avg"
    out.mkdir()
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps(config))
    soup = PeftModel.from_pretrained(_tiny(), str(out)).merge_and_unload()
    for layer in ("0", "2"):
        mean = torch.stack([dict(m.named_parameters())[f"{layer}.weight"] for m in merged]).mean(0)
        torch.testing.assert_close(dict(soup.named_parameters())[f"{layer}.weight"], mean)


def test_members_that_differ_or_do_not_stack_are_refused(tmp_path: Path) -> None:
    _member(tmp_path / "a", seed=0)
    _member(tmp_path / "rs", seed=1, use_rslora=True)
    with pytest.raises(SystemExit, match="differ in use_rslora"):
        average_adapters([tmp_path / "a", tmp_path / "rs"])
    _member(tmp_path / "rs2", seed=2, use_rslora=True)
    with pytest.raises(SystemExit, match="only plain LoRA stacks"):
        average_adapters([tmp_path / "rs", tmp_path / "rs2"])


def test_the_soup_names_its_members_not_the_first_ones_training(tmp_path: Path) -> None:
    from bench.lora_average import soup_meta

    def member(name: str, seed: int, sha: str, commit: str = "abc") -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "run_meta.json").write_text(json.dumps({
            "run_name": name, "seed": seed, "git": {"commit": commit, "dirty": False},
            "dataset": {"name": "e2e_nlg", "fingerprint": {"sha256": sha}},
            "train_rows": 4672, "final_metrics": {"test/perplexity": 3.5}}))
        return tmp_path / name

    draws = [member("draw0", 0, "aa"), member("draw1", 0, "bb")]
    meta = soup_meta(draws, tmp_path / "soup")
    assert meta["run_name"] == "soup" and meta["seed"] == 0 and meta["git"]["commit"] == "abc"
    assert meta["dataset"]["fingerprint"] is None  # two data files: neither is the soup's
    assert [m["data_sha256"] for m in meta["averaged_from"]] == ["aa", "bb"]
    assert "final_metrics" not in meta and "train_rows" not in meta
    from evaluation.card import _fingerprint_lines
    assert _fingerprint_lines(meta["dataset"]) == [  # the model card says so, not crashes
        "- data set `e2e_nlg`: members trained on different files"]
    seeds = [draws[0], member("seed1", 1, "aa", commit="def")]
    meta = soup_meta(seeds, tmp_path / "soup")
    assert meta["dataset"]["fingerprint"] == {"sha256": "aa"} and meta["seed"] is None
    assert meta["git"]["commit"] == "members differ (averaged_from)"
