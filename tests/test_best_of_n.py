"""bench/best_of_n.py keeps per MR the candidate closest to that MR's references (not the top
beam when a lower one is closer)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import bench.common
from bench.best_of_n import best_candidates, pool, run_prompts
from data.chat import ChatSpec
from data.config import DataConfig
from data.delex import relexicalize


def test_the_candidate_closest_to_the_references_is_kept() -> None:
    candidates = [["Aromi is a place .", "Aromi is a pub in the city centre ."],
                  ["Zizzi is a cheap pub .", "Zizzi is a place that is a pub ."]]
    references = [["Aromi is a pub in the city centre .", "Aromi is a city centre pub ."],
                  ["Zizzi is a cheap pub .", "Zizzi is a pub and it is cheap ."]]
    chosen, chosen_bleu, top_bleu, kept_top = best_candidates(candidates, references)
    assert chosen == ["Aromi is a pub in the city centre .", "Zizzi is a cheap pub ."]
    assert kept_top == 1  # the second MR's top beam was already the closest
    assert chosen_bleu[0] > top_bleu[0] and chosen_bleu[1] == top_bleu[1] > 99.99


def test_a_run_that_reads_placeholders_is_asked_with_them() -> None:
    chat = ChatSpec(prompt_template="Describe: {mr}", completion_field="ref")
    mrs = ["name[Aromi], eatType[pub]"]
    plain = run_prompts(mrs, DataConfig(path="x.csv", chat=chat))
    assert plain == ([json.dumps([{"role": "user", "content": "Describe: " + mrs[0]}])], [{}])
    chat.delexicalize = ["name"]
    prompts, values = run_prompts(mrs, DataConfig(path="x.csv", chat=chat,
                                                  slot_pattern=r"([^\[,:]+?)\[([^\]]*)\]"))
    assert json.loads(prompts[0])[0]["content"] == "Describe: name[X-name], eatType[pub]"
    assert relexicalize("X-name is a pub.", values[0]) == "Aromi is a pub."


def test_a_pool_of_teachers_keeps_each_mrs_best_answer(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path / "results")  # not the repo's

    data = tmp_path / "train.csv"
    pd.DataFrame({"mr": ["a", "a", "b"],
                  "ref": ["Aromi is a pub in the city centre .", "Aromi is a city centre pub .",
                          "Zizzi is a cheap pub ."]}).to_csv(data, index=False)
    first, second = tmp_path / "t0.csv", tmp_path / "t1.csv"
    pd.DataFrame({"mr": ["a", "b"], "ref": ["Aromi is a place .", "Zizzi is a cheap pub ."]}
                 ).to_csv(first, index=False)
    pd.DataFrame({"mr": ["b", "a"], "ref": ["Zizzi is cheap .", "Aromi is a city centre pub ."]}
                 ).to_csv(second, index=False)  # other order: answers are matched by MR
    out = tmp_path / "pool.csv"
    pool([first, second], data, out)
    assert pd.read_csv(out).to_dict("list") == {
        "mr": ["a", "b"], "ref": ["Aromi is a city centre pub .", "Zizzi is a cheap pub ."]}
    assert json.loads((tmp_path / "results/best_of_n_pool.json").read_text())[
        "first_file_kept"] == 1

    pd.DataFrame({"mr": ["a"], "ref": ["Aromi ."]}).to_csv(second, index=False)
    with pytest.raises(SystemExit, match="t1.csv: 1 MRs of --data missing, e.g. 'b'"):
        pool([first, second], data, out)
    pd.DataFrame({"mr": ["a", "b", "c"], "ref": ["A .", "B .", "C ."]}).to_csv(second, index=False)
    with pytest.raises(SystemExit, match="t1.csv: 1 MRs not in --data"):
        pool([first, second], data, out)
