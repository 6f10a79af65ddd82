"""bench/best_of_n.py keeps per MR the candidate closest to that MR's references (not the top
beam when a lower one is closer)."""

from __future__ import annotations

import json

from bench.best_of_n import best_candidates, run_prompts
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
