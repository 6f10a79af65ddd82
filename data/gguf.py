"""GGUF files as model locations: converted once into a cached Hugging Face directory.

transformers reads a GGUF file (``gguf_file=``, with the ``gguf`` package) by de-quantising
every tensor to fp32, which takes tens of seconds for a 135M model on 2 cores, and the loaded
model refuses ``save_pretrained``. Every worker, evaluation and tokenisation actor would pay
that again; instead the first use writes model.safetensors, the tokenizer and its chat template
into ``$SHARDTUNE_CACHE/gguf/<stem>-<sha256[:16]>/`` (default ``~/.cache/shardtune``), and
every later load reads that directory (under a second). The key is the file's content hash, so
a changed file is converted again and two files never share a directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from data.errors import ConfigError

CACHE_ENV = "SHARDTUNE_CACHE"
MARKER = "converted_from.txt"  # written last: a directory without it is a half-done conversion


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "shardtune")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hf_directory(gguf: str, key: str) -> str:
    """The cached Hugging Face directory of a GGUF file, converting it on first use.

    Concurrent first uses (several Ray workers) each convert into a private temporary
    directory and rename it into place; the first rename wins and the others are discarded.
    """
    path = Path(gguf)
    out = cache_root() / "gguf" / f"{path.stem}-{file_sha256(path)[:16]}"
    if (out / MARKER).is_file():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _convert(path, staging, key)
        (staging / MARKER).write_text(f"{path.resolve()}\n")
        try:
            os.rename(staging, out)
        except OSError:  # another process finished first (or a half-done one is in the way)
            if not (out / MARKER).is_file():
                shutil.rmtree(out, ignore_errors=True)
                os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(out)


def _convert(path: Path, out: Path, key: str) -> None:
    # gguf and transformers are imported here: only a GGUF location needs them, once
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise ConfigError(key, f"{path}: reading GGUF needs the 'gguf' package ({exc})",
                          "pip install gguf") from None
    folder, name = str(path.parent), path.name
    try:
        GGUFReader(path)  # maps every tensor: a truncated file fails here, in seconds
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        print(f"model: converting {name} once into {out.parent} (de-quantised to fp32)",
              file=sys.stderr, flush=True)
        hf_logging.disable_progress_bar()  # a bar per tensor otherwise: the line above says it
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        finally:
            hf_logging.enable_progress_bar()
    except Exception as exc:  # noqa: BLE001 - gguf/transformers raise many types on bad files
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError(key, f"{path} is not a readable GGUF model ({first})",
                          "the file may be truncated or corrupt: download it again") from None
    model.hf_quantizer = None  # de-quantised to fp32 already; lets save_pretrained write it
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
