"""Resolve model and tokenizer locations: weights shipped inside Python packages, GGUF files."""

from __future__ import annotations

import importlib.util
import os

from data.errors import ConfigError
from data.gguf import hf_directory

PKG_SCHEME = "pkg://"


def resolve_location(location: str, key: str) -> str:
    """``pkg://package/folder`` → that folder inside the installed package; else unchanged.

    Hub ids and local paths pass through untouched so users on clusters keep the real
    ``from_pretrained`` behaviour (download, cache, offline mode).
    """
    if location.startswith(("/", "./", "../", "~")):  # a path, never a hub id
        if not os.path.exists(os.path.expanduser(location)):
            raise ConfigError(key, f"no such file or directory: {location}",
                              "check the path (relative paths start from the current directory)")
        return _unpacked(os.path.expanduser(location), key)
    if not location.startswith(PKG_SCHEME):
        return location
    package, _, folder = location[len(PKG_SCHEME):].partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(key, f"package '{package}' is not installed", f"pip install {package}")
    path = os.path.join(list(spec.submodule_search_locations)[0], folder)
    if not os.path.exists(path):
        raise ConfigError(key, f"'{folder}' not found inside package '{package}'")
    return _unpacked(path, key)


def _unpacked(path: str, key: str) -> str:
    """A GGUF file becomes its cached Hugging Face directory (data/gguf.py); a directory or
    any other file is returned as it is."""
    if path.endswith(".gguf") and os.path.isfile(path):
        return hf_directory(path, key)
    return path
