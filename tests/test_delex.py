"""Delexicalised data-to-text chats: values in as placeholders, back out after generation
(data/delex.py, data/read.py, evaluation/generate.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data.chat import ChatSpec
from data.config import DataConfig
from data.delex import delexicalize, relexicalize
from data.errors import ConfigError

SLOTS = r"([^\[,:]+?)\[([^\]]*)\]"
E2E = ChatSpec(prompt_template="Describe: {mr}", completion_field="ref",
               delexicalize=["name", "near"])


def _chat(mr: str, ref: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Describe: {mr}"},
            {"role": "assistant", "content": ref}]


def test_values_become_placeholders_in_prompt_and_answer_and_come_back():
    out = delexicalize(_chat("name[The Eagle], eatType[pub], near[Express by Holiday Inn]",
                             "Near the express by Holiday Inn, the Eagle is a pub. "
                             "The Eagle's food is fine."), SLOTS, ["name", "near"])
    assert out.messages[0]["content"] == \
        "Describe: name[X-name], eatType[pub], near[X-near]"  # other slots untouched
    assert out.messages[1]["content"] == \
        "Near the X-near, X-name is a pub. X-name's food is fine."
    assert out.values == {"X-name": "The Eagle", "X-near": "Express by Holiday Inn"}
    assert (out.replaced, out.missed) == (3, 0)
    assert relexicalize("X-name is near X-near.", out.values) == \
        "The Eagle is near Express by Holiday Inn."


def test_a_value_the_answer_phrases_otherwise_is_kept_and_counted():
    """"Eagles" is not the value written verbatim: the answer keeps it, one miss counted; a
    value inside a longer word is no match either."""
    out = delexicalize(_chat("name[Eagle], near[Inn]", "The Eagles pub by the Innkeeper."),
                       SLOTS, ["name", "near"])
    assert out.messages[1]["content"] == "The Eagles pub by the Innkeeper."
    assert (out.replaced, out.missed) == (0, 2)
    assert out.messages[0]["content"] == "Describe: name[X-name], near[X-near]"


def test_delexicalize_needs_a_slot_pattern_and_a_placeholder_per_attribute():
    with pytest.raises(ConfigError, match="data.chat.delexicalize.*needs data.slot_pattern"):
        DataConfig(path="x.csv", chat=E2E)
    with pytest.raises(ConfigError, match="data.chat.placeholder.*lacks \\{slot\\}"):
        ChatSpec(prompt_template="{mr}", completion_field="ref", delexicalize=["name"],
                 placeholder="X")


def test_rows_keep_the_datas_prompt_and_reference_and_count_misses():
    """The chat the model trains on holds placeholders; ``text`` (splits, slices, slot
    analysis) and the kept reference are the data's own; a miss is counted per row."""
    from data.read import _chat_row
    from data.summary import _summarize

    cfg = DataConfig(path="x.csv", chat=E2E, slot_pattern=SLOTS)
    rows = [_chat_row("x.csv:2", {"mr": "name[Aromi], near[Café Sicilia]",
                                  "ref": "Aromi is near Café Sicilia."}, cfg),
            _chat_row("x.csv:3", {"mr": "name[Aromi], near[Café Sicilia]",
                                  "ref": "Aromi is by the Sicilia café."}, cfg)]
    assert json.loads(rows[0]["chat"])[1]["content"] == "X-name is near X-near."
    assert json.loads(rows[0]["chat"])[0]["content"] == "Describe: name[X-name], near[X-near]"
    assert rows[0]["text"] == "Describe: name[Aromi], near[Café Sicilia]"
    assert json.loads(rows[1]["delex"]) == {
        "values": {"X-name": "Aromi", "X-near": "Café Sicilia"},
        "reference": "Aromi is by the Sicilia café."}
    assert [r["_delex_missed"] for r in rows] == [0, 1]
    batch = {k: np.array([r.get(k, "") for r in rows] if k != "_error" else ["", ""],
                         dtype=object) for k in ("text", "chat", "_delex_missed", "_error")}
    batch["_src"] = np.array(["x.csv:2", "x.csv:3"], dtype=object)
    assert _summarize(batch)["delex_missed"] == [1]


def test_evaluation_groups_by_the_datas_prompt_scores_its_references_and_relexicalises():
    """Two MRs that differ only in the name read alike to the model: they stay two prompts,
    each scored against its own (original) references, each answer given its own name."""
    from data.read import _chat_row
    from evaluation.generate import Generate, group_prompts

    cfg = DataConfig(path="x.csv", chat=E2E, slot_pattern=SLOTS)
    data = [("name[Aromi], eatType[pub]", "Aromi is a pub."),
            ("name[Aromi], eatType[pub]", "A pub: Aromi."),
            ("name[Zizzi], eatType[pub]", "Zizzi is a pub.")]
    rows = pd.DataFrame([{**_chat_row(f"x.csv:{i + 2}", {"mr": mr, "ref": ref}, cfg),
                          "_src": f"x.csv:{i + 2}"} for i, (mr, ref) in enumerate(data)])
    prompts = group_prompts(rows)
    assert prompts["prompt"].nunique() == 1 and len(prompts) == 2
    assert prompts["references"].tolist() == [["Aromi is a pub.", "A pub: Aromi."],
                                              ["Zizzi is a pub."]]

    class Answers(Generate):  # the model's side: a fixed answer with the placeholder
        def __init__(self) -> None:
            self.tok, self.template = None, None
            self.max_new_tokens, self.num_beams, self.batch_size = 8, 1, 2
            self.model, self.copy_values, self.slots = None, [], None

    import evaluation.generate as gen

    real = gen.answer_chats
    gen.answer_chats = lambda *a: (["X-name serves beer."] * 2, [4, 4], [True, True])
    try:
        out = Answers()({k: prompts[k].to_numpy() for k in prompts.columns})
    finally:
        gen.answer_chats = real
    assert out["generated"].tolist() == ["Aromi serves beer.", "Zizzi serves beer."]
    assert out["generated_delex"].tolist() == ["X-name serves beer."] * 2


def test_the_slot_pattern_binds_a_resumed_run_only_when_it_delexicalises():
    import copy

    from trainers.config import TrainConfig, config_dict
    from trainers.identity import changes, run_identity

    old = config_dict(TrainConfig())
    old["data"]["slot_pattern"] = SLOTS
    new = copy.deepcopy(old)
    new["data"]["slot_pattern"] = r"(\w+)=(\w+)"  # only the slot report reads it: free
    assert changes(run_identity(old, None), run_identity(new, None)) == []
    for cfg in (old, new):  # now it decides what the model reads
        cfg["data"]["chat"]["delexicalize"] = ["name"]
    assert changes(run_identity(old, None), run_identity(new, None)) == ["data.slot_pattern"]


def test_evaluations_saved_before_delexicalisation_existed_stay_current():
    """Saved answers are reused while the data config's digest is unchanged: the two keys
    this feature added leave it as it was at their defaults (else every saved evaluation
    would be made again, and `compare name=beam4` would overwrite 4-beam answers)."""
    from omegaconf import OmegaConf

    from evaluation.outputs import _real, data_identity
    from trainers.identity import RESUME_FREE, digest, identity

    cfg = DataConfig(path="x.csv", slot_pattern=SLOTS)
    tree = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    del tree["chat"]["delexicalize"], tree["chat"]["placeholder"]  # as an older version saw it
    for key in ("path", "validation_path", "test_path"):
        tree[key] = _real(tree[key])
    before = digest(identity({"data": tree}, ("data",), RESUME_FREE + ("data.name",)))
    assert data_identity(cfg, None)["config"] == before
    delex = DataConfig(path="x.csv", slot_pattern=SLOTS, chat=ChatSpec(delexicalize=["name"]))
    other = DataConfig(path="x.csv", slot_pattern=r"(\w+)=(\w+)",
                       chat=ChatSpec(delexicalize=["name"]))
    assert len({data_identity(c, None)["config"] for c in (cfg, delex, other)}) == 3


def test_transfer_prompts_of_a_delexicalised_run_carry_placeholders(tmp_path):
    """A distillation's teacher reads its transfer prompts as training did; the held-out
    check still reads the data's own prompt."""
    from distill.transfer import read_prompts

    path = tmp_path / "mrs.csv"
    path.write_text('mr\n"name[Aromi], near[Zizzi]"\n"name[Blue Spice], near[Zizzi]"\n')
    cfg = DataConfig(path=str(path), chat=E2E, slot_pattern=SLOTS)
    prompts, counts = read_prompts(str(path), cfg)
    assert json.loads(prompts["prompt"][0])[0]["content"] == \
        "Describe: name[X-name], near[X-near]"
    assert counts["repeated"] == 1  # one prompt as the teacher reads it
    assert prompts["text"][0] == "Describe: name[Aromi], near[Zizzi]"


def test_a_value_written_in_part_is_written_whole_and_nothing_else_is_touched():
    from data.delex import copy_values

    values = ["The Punter", "Express by Holiday Inn"]
    assert copy_values("The Punter is near the Holiday Inn.", values) == (
        "The Punter is near the Express by Holiday Inn.", 1)
    # written whole (any case), or not at all: left as it is; nothing is inserted
    for text in ("The Punter is near express by Holiday Inn.", "The Punter is a pub."):
        assert copy_values(text, values) == (text, 0)
    # the longest part wins; a part of lower-case words alone, or written lower-case where
    # the value capitalises, is no mention of the venue
    old_mill = ["The Old Mill by the River"]
    assert copy_values("Near the Old Mill, a pub.", old_mill) == (
        "Near The Old Mill by the River, a pub.", 1)
    assert copy_values("It is a pub by the river.", old_mill) == ("It is a pub by the river.", 0)
    assert copy_values("a holiday inn nearby", values) == ("a holiday inn nearby", 0)
    # a misspelt word of the value beside the part found goes too, capitalised as a name is
    assert copy_values("A pub near the Courtyrd by Marriott.", ["Courtyard by Marriott"]) == (
        "A pub near the Courtyard by Marriott.", 1)


def test_evaluate_copy_values_mends_answers_and_is_part_of_the_generation_settings():
    """`evaluate copy_values=[near]`: each answer's partial mention of its own prompt's value
    (as the prompt writes it) becomes the value, counted; answers saved without the setting
    keep their recorded settings, so they stay current."""
    from types import SimpleNamespace

    import evaluation.generate as gen
    from evaluation.config import EvaluateConfig
    from evaluation.generate import Generate
    from evaluation.outputs import generation_settings

    class Answers(Generate):
        def __init__(self) -> None:
            self.tok, self.template, self.model = None, None, None
            self.max_new_tokens, self.num_beams, self.batch_size = 8, 1, 2
            self.copy_values, self.slots = ["near"], __import__("re").compile(SLOTS)

    prompts = ["name[Aromi], near[Express by Holiday Inn]", "name[Zizzi], near[Café Rouge]"]
    real = gen.answer_chats
    gen.answer_chats = lambda *a: (["Aromi is near the Holiday Inn.", "Zizzi is near the Inn."],
                                   [7, 6], [True, True])
    try:
        out = Answers()({"prompt": np.array(prompts), "text": np.array(prompts)})
    finally:
        gen.answer_chats = real
    assert out["generated"].tolist() == ["Aromi is near the Express by Holiday Inn.",
                                         "Zizzi is near the Inn."]
    assert out["values_mended"].tolist() == [1, 0]
    run = SimpleNamespace(task=SimpleNamespace(max_new_tokens=64, num_beams=4))
    assert generation_settings(run, EvaluateConfig(run="r")) == {"max_new_tokens": 64,
                                                                 "num_beams": 4}
    assert generation_settings(run, EvaluateConfig(run="r", copy_values=["near"])) == {
        "max_new_tokens": 64, "num_beams": 4, "copy_values": ["near"]}
