"""bench/mbr_across_runs.py picks per prompt the answer most like the other runs', and
refuses folders that answered other prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.mbr_across_runs import pick


def _folder(path: Path, answers: dict[str, str], rendered: str = "as read: ") -> Path:
    """An evaluation folder: ``prompt`` as the model read it, ``text`` as the data has it."""
    path.mkdir()
    pd.DataFrame({"prompt": [rendered + t for t in answers], "text": list(answers),
                  "generated": list(answers.values()),
                  "new_tokens": [len(a.split()) for a in answers.values()],
                  "stopped": True, "references": json.dumps(["ref"]), "bleu": 0.0}
                 ).to_parquet(path / "predictions.parquet")
    return path


def test_the_consensus_answer_is_picked_per_prompt(tmp_path: Path) -> None:
    folders = [
        _folder(tmp_path / "a", {"p1": "Aromi is a pub in the city centre .",
                                 "p2": "Nobody would ever phrase it quite like this ."}),
        _folder(tmp_path / "b", {"p1": "Down by the river sits a small place .",
                                 "p2": "Zizzi is a coffee shop near the river ."}),
        _folder(tmp_path / "c", {"p1": "Aromi is a pub in the centre of the city .",
                                 "p2": "Zizzi is a cheap coffee shop near the river ."},
                rendered="with placeholders: ")]  # a delexicalised run: paired by the data
    frame, wins = pick(folders)
    chosen = dict(zip(frame["text"], frame["generated"], strict=True))
    assert chosen["p1"].startswith("Aromi is a pub") and chosen["p2"].startswith("Zizzi is a")
    assert sum(wins) == 2 and wins[1] + wins[2] >= 1 and "bleu" not in frame.columns
    assert list(frame["references"][0]) == ["ref"]


def test_folders_with_other_prompts_are_refused(tmp_path: Path) -> None:
    a = _folder(tmp_path / "a", {"p1": "x", "p2": "y"})
    b = _folder(tmp_path / "b", {"p1": "x", "p3": "y"})
    with pytest.raises(SystemExit, match="answered other prompts"):
        pick([a, b, a])
