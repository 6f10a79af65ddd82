"""bench/bench_paired_generations.py pairs two evaluations only when they answered the same
prompts, and made alike unless the decoding is what is compared (--decoding-differs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.bench_paired_generations import main


def _folder(root: Path, name: str, rows: str, beams: int) -> Path:
    (root / name).mkdir()
    (root / name / "metrics.json").write_text(json.dumps({"made_by": {
        "rows": rows, "generation": {"max_new_tokens": 64, "num_beams": beams}}}))
    return root / name


def test_pairs_are_refused_unless_made_alike_or_the_decoding_is_compared(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    beam4, beam8 = _folder(tmp_path, "b4", "r1", 4), _folder(tmp_path, "b8", "r1", 8)
    other = _folder(tmp_path, "other", "r2", 8)

    def run(*args: object) -> None:
        monkeypatch.setattr(sys, "argv", ["bench", *map(str, args)])
        main()

    with pytest.raises(SystemExit, match="generated otherwise .*--decoding-differs"):
        run("--a", beam4, "--b", beam8)
    with pytest.raises(SystemExit, match="answered other prompts"):
        run("--a", beam4, "--b", other, "--decoding-differs")
    with pytest.raises(SystemExit, match="the seeds of one side generated otherwise"):
        run("--a", beam4, beam8, "--b", beam8, "--decoding-differs")
