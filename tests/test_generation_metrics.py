"""Generation scores equal the libraries' own on fixed strings; intervals bracket them."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from data.errors import DataError
from evaluation.generation import bootstrap, corpus_scores, per_example, reference_streams

HYPS = ["The Eagle is a cheap coffee shop near Burger King.",
        "Alimentum is not family-friendly.",
        "Zizzi serves French food in the city centre.",
        "The Punter is a pub."]
REFS = [["The Eagle is a low-priced coffee shop near Burger King.",
         "Near Burger King, The Eagle is a cheap coffee shop."],
        ["Alimentum is not family-friendly."],
        ["Zizzi is a French restaurant in the city centre.", "In the city centre, Zizzi "
         "serves French food.", "Zizzi offers French food in the centre of the city."],
        ["The Punter is a riverside pub with a high customer rating."]]


def test_corpus_bleu_chrf_and_rouge_l_equal_the_libraries_with_uneven_references():
    streams = reference_streams(REFS)
    assert len(streams) == 3 and streams[2][1] is None  # one input, one reference
    scores = corpus_scores(HYPS, REFS)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, streams).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, streams).score)
    rouge = rouge_scorer.RougeScorer(["rougeL"])
    expected = sum(rouge.score_multi(r, h)["rougeL"].fmeasure
                   for h, r in zip(HYPS, REFS, strict=True)) / 4
    assert scores["rouge_l"] == pytest.approx(100 * expected)
    assert scores["exact_match"] == 25.0  # the second input, word for word
    examples = per_example(HYPS, REFS)
    assert examples["exact_match"] == [0.0, 100.0, 0.0, 0.0]
    assert examples["bleu"][1] == pytest.approx(100.0)


def test_bootstrap_intervals_bracket_the_corpus_scores_and_are_not_zero_width():
    hyps, refs = HYPS * 5, REFS * 5
    examples = per_example(hyps, refs)
    scores = corpus_scores(hyps, refs, examples)
    intervals = bootstrap(hyps, refs, examples, n=300, seed=0)
    for name, value in scores.items():
        assert intervals[name]["low"] <= value <= intervals[name]["high"], name
        assert intervals[name]["high"] > intervals[name]["low"], name


def test_an_input_without_references_is_an_error_naming_it():
    with pytest.raises(DataError, match="example 1: has no reference"):
        corpus_scores(HYPS[:2], [REFS[0], []])


def test_uncased_bleu_is_the_e2e_scorers_and_counts_a_case_slip_as_a_match():
    """``bleu_uncased``: what the E2E challenge's scorer and GEM report (case ignored), so
    their published figures compare like for like; ``bleu`` counts case, as sacrebleu does."""
    streams = reference_streams(REFS)
    slipped = [h.lower() for h in HYPS]  # "the eagle" for "The Eagle"
    scores = corpus_scores(slipped, REFS)
    assert scores["bleu_uncased"] == pytest.approx(
        sacrebleu.corpus_bleu(slipped, streams, lowercase=True).score)
    assert scores["bleu_uncased"] == pytest.approx(corpus_scores(HYPS, REFS)["bleu_uncased"])
    assert scores["bleu"] < scores["bleu_uncased"] - 10  # the cased score punishes the slip
    examples = per_example(slipped, REFS)
    assert examples["bleu_uncased"][1] == pytest.approx(100.0)
    assert examples["bleu"][1] < 100.0


E2E_SLOTS = r"([^\[,:]+?)\[([^\]]*)\]"


def test_slot_mentions_set_each_value_the_answers_name_against_the_references():
    from evaluation.slots import slot_mentions

    prompts = ["Describe: name[The Punter], eatType[pub], familyFriendly[yes]",
               "Describe: name[Zizzi], eatType[pub], food[French]"]
    answers = ["The Punter is a kid friendly restaurant.", "Zizzi is a French pub."]
    refs = [["The Punter is a pub for kids.", "A family friendly pub, The Punter."],
            ["Zizzi is a pub serving French food.", "Zizzi, a French restaurant."]]
    slots = slot_mentions(prompts, answers, refs, E2E_SLOTS)
    rows = {r["slot"]: r for r in slots["values"]}
    assert set(rows) == {"name=the punter", "name=zizzi", "eatType=pub",
                         "familyFriendly=yes", "food=french"}
    # the pub: 1 answer in 2 names it, the references 3 in 4 (a mean per prompt: 1 and 0.5)
    assert rows["eatType=pub"]["n"] == 2
    assert rows["eatType=pub"]["answers"] == 50.0 and rows["eatType=pub"]["references"] == 75.0
    # a value people say in other words: neither side names it, no gap
    assert rows["familyFriendly=yes"]["gap"] == 0.0
    assert slots["values"][0]["slot"] == "eatType=pub"  # the widest shortfall first
    assert slots["total"]["n"] == 6


def test_a_slot_pattern_without_two_groups_is_a_config_error():
    from data.config import DataConfig
    from data.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.slot_pattern.*1 groups, not 2"):
        DataConfig(path="x.csv", slot_pattern=r"\[([^\]]*)\]")
    with pytest.raises(ConfigError, match="data.slot_pattern.*no regular expression"):
        DataConfig(path="x.csv", slot_pattern="([")
