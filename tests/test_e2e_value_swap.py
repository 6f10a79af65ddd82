"""The E2E dev set with eatType and food swapped (bench/e2e_value_swap.py): the texts say what
their rewritten MRs say, and what cannot be rewritten stays as it was and is counted."""

from __future__ import annotations

import re

import pandas as pd

from bench.e2e_synthetic_mrs import parse, render
from bench.e2e_value_swap import ONTOLOGY, swap_set, swap_text
from tests.conftest import SHARED, needs_shared


def test_a_swapped_value_is_written_with_its_article_and_case() -> None:
    assert swap_text("Aromi is an English coffee shop.", "food", "English", "French") == \
        "Aromi is a French coffee shop."
    assert swap_text("It is a Chinese place. Chinese food is served.", "food", "Chinese",
                     "Italian") == "It is an Italian place. Italian food is served."
    # fast food is no proper adjective: lower case inside a sentence, and no "food food"
    assert swap_text("They serve English food. English cuisine, too.", "food", "English",
                     "Fast food") == "They serve fast food. Fast food, too."
    assert swap_text("Coffee shops aside, this coffee shop is fine.", "eatType", "coffee shop",
                     "pub") == "Pubs aside, this pub is fine."


def test_a_made_up_near_name_is_written_as_it_stands() -> None:
    assert swap_text("It is near the Café Rouge.", "near", "Café Rouge", "The Brax") == \
        "It is near The Brax."
    assert swap_text("Near Café Rouge.", "near", "Café Rouge", "Brax House") == "Near Brax House."
    dev = pd.DataFrame({"mr": ["name[Aromi], eatType[pub], near[Café Rouge]"],
                        "ref": ["Aromi is a pub near Café Rouge."]})
    out, counts = swap_set(dev, set(), seed=0, near_share=1.0,
                           taken_names=frozenset({"Aromi", "Café Rouge"}))
    near = parse(out.loc[0, "mr"])["near"]
    assert near not in {"Aromi", "Café Rouge"} and near in out.loc[0, "ref"]
    assert counts["rows_near_made_up"] == 1


def test_a_text_that_phrases_the_value_otherwise_cannot_be_swapped() -> None:
    assert swap_text("A British café by the river.", "food", "English", "French") is None
    assert swap_text("A café by the river.", "eatType", "coffee shop", "pub") is None


def test_rows_are_kept_and_counted_when_unswappable_and_no_test_mr_is_made() -> None:
    dev = pd.DataFrame({
        "mr": ["name[Aromi], eatType[coffee shop], food[English]"] * 2,
        "ref": ["Aromi is an English coffee shop.", "Aromi is a British café."]})
    # every draw but the MR's own values would be a test MR: those are drawn again
    test_mrs = {render({"name": "Aromi", "eatType": e, "food": f})
                for e in ONTOLOGY["eatType"] for f in ONTOLOGY["food"]
                if (e, f) != ("coffee shop", "English")}
    out, counts = swap_set(dev, test_mrs, seed=0)
    assert len(out) == len(dev)
    assert list(out["ref"]) == list(dev["ref"]) and list(out["mr"]) == list(dev["mr"])
    assert counts["rows_drew_their_own_values"] == 2  # its own values need no rewriting
    assert "rows_kept_value_not_verbatim" not in counts
    out, counts = swap_set(dev, set(), seed=3)
    swapped = out[out["mr"] != dev["mr"]]
    assert counts.get("rows_swapped", 0) == len(swapped) == 1
    assert counts["rows_kept_value_not_verbatim"] == 1
    assert out.loc[1, "ref"] == "Aromi is a British café."


@needs_shared
def test_every_rewritten_dev_text_names_its_new_values() -> None:
    dev = pd.read_csv(SHARED / "e2e_nlg" / "devset.csv")
    test = {render(parse(m)) for m in pd.read_csv(SHARED / "e2e_nlg" / "testset_w_refs.csv")["mr"]}
    out, counts = swap_set(dev, test, seed=0)
    assert len(out) == len(dev) and not set(out["mr"]) & test
    changed = out["mr"] != dev["mr"]
    assert changed.sum() == counts["rows_swapped"] > len(dev) // 2
    for old, mr, ref in zip(dev["mr"][changed], out["mr"][changed], out["ref"][changed],
                            strict=True):
        before, attrs = parse(old), parse(mr)
        for key in ONTOLOGY:
            if key in attrs and attrs[key] != before[key]:
                assert attrs[key].lower() in ref.lower(), (mr, ref)
                assert not re.search(rf"\b{before[key]}\b", ref, re.IGNORECASE), (mr, ref)
    assert {v for mr in out["mr"] for v in [parse(mr).get("eatType")] if v} == \
        set(ONTOLOGY["eatType"])


def test_more_draws_give_each_row_its_own_copies_side_by_side() -> None:
    dev = pd.DataFrame({
        "mr": ["name[Aromi], eatType[coffee shop], food[English]",
               "name[Brax], eatType[coffee shop], food[Chinese]"],
        "ref": ["Aromi is an English coffee shop.", "Brax is a Chinese coffee shop."]})
    one, _ = swap_set(dev, set(), seed=5)
    three, counts = swap_set(dev, set(), seed=5, draws=3)
    assert len(three) == 6
    # the first copy of each row is the one a single draw gives; the copies follow it
    assert three.iloc[[0, 3]].reset_index(drop=True).equals(one)
    assert [parse(m)["name"] for m in three["mr"]] == ["Aromi"] * 3 + ["Brax"] * 3
    assert len(set(three["mr"][:3])) > 1  # the copies drew apart
    for mr, ref in zip(three["mr"], three["ref"], strict=True):
        attrs = parse(mr)
        assert attrs["eatType"] in ref.lower() and attrs["food"].lower() in ref.lower()
    assert counts.get("rows_swapped", 0) + counts.get("rows_drew_their_own_values", 0) == 6
