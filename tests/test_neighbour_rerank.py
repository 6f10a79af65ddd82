"""bench/neighbour_rerank.py keeps the candidate phrased as people phrased the training MRs
most like the test MR, values aside, and never reads an MR's own references."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.neighbour_rerank import Neighbours, delexicalised, pick, read_candidates


def test_values_become_placeholders_and_articles_agree() -> None:
    mr = "name[The Eagle], eatType[pub], food[Italian], area[city centre], familyFriendly[yes]"
    text = "The Eagle is an Italian pub in the City Centre. It is family friendly."
    assert delexicalised(mr, text) == ("X-name is a X-food X-eatType in the X-area. "
                                       "It is family friendly.")


def test_neighbours_share_attributes_then_values_and_leave_the_mr_itself_out() -> None:
    pool = pd.Series({
        "name[Aromi], eatType[pub], area[riverside]": ["Aromi is a pub by the riverside."],
        "name[Cocum], eatType[pub], area[city centre]": ["Cocum is a pub in the city centre."],
        "name[Zizzi], eatType[pub], area[riverside], familyFriendly[no]": ["Zizzi: pub."],
        "name[Strada], food[French]": ["Strada serves French food."],
    })
    neighbours = Neighbours(pool)
    # the same attributes first (value aside), then one attribute more, never itself
    assert neighbours.references("name[Aromi], eatType[pub], area[riverside]", 2) == [
        ["X-name is a X-eatType in the X-area."], ["X-name: X-eatType."]]
    # among MRs of the same attributes, the one sharing a value ranks first
    assert neighbours.references("name[Loch Fyne], eatType[pub], area[city centre]", 1) == [
        ["X-name is a X-eatType in the X-area."]]
    assert neighbours.references("name[Loch Fyne], eatType[pub], area[riverside]", 1) == [
        ["X-name is a X-eatType by the X-area."]]


def test_the_candidate_worded_as_the_neighbours_are_is_picked() -> None:
    pool = pd.Series({
        "name[Aromi], eatType[pub], area[riverside]": ["Aromi is a pub in the riverside area.",
                                                   "Aromi is a riverside pub."],
        "name[Cocum], eatType[coffee shop], area[city centre]": [
            "Cocum is a coffee shop in the city centre area."],
    })
    mr = "name[Giraffe], eatType[restaurant], area[riverside]"
    candidates = ["Giraffe, found near the river, is a restaurant.",
                  "Giraffe is a restaurant in the riverside area."]
    for how in ("pooled", "mean"):
        assert pick(mr, candidates, Neighbours(pool), 2, how) == 1
    # equal candidates: the higher beam
    assert pick(mr, [candidates[1], candidates[1]], Neighbours(pool), 2, "pooled") == 0


def test_several_runs_candidates_join_per_mr_and_other_mrs_are_refused(tmp_path) -> None:
    def nbest(name: str, mrs: list[str], answers: list[list[str]]) -> Path:
        path = tmp_path / f"{name}.parquet"
        pd.DataFrame({"mr": mrs, "references": [json.dumps(["ref"])] * len(mrs),
                      "candidates": [json.dumps(a) for a in answers]}).to_parquet(path)
        return path

    a = nbest("a", ["m1", "m2"], [["a1", "a2"], ["a3", "a4"]])
    b = nbest("b", ["m1", "m2"], [["b1", "b2"], ["b3", "b4"]])
    frame, candidates, references = read_candidates([a, b])
    assert candidates == [["a1", "a2", "b1", "b2"], ["a3", "a4", "b3", "b4"]]
    assert references == [["ref"], ["ref"]] and list(frame["mr"]) == ["m1", "m2"]
    other = nbest("c", ["m2", "m1"], [["c1"], ["c2"]])
    with pytest.raises(SystemExit, match="other MRs"):
        read_candidates([a, other])


def test_pick_refuses_candidates_of_a_run_trained_again_since(tmp_path) -> None:
    from argparse import Namespace

    from bench.neighbour_rerank import choose
    from evaluation.outputs import weights_hash

    run, source = tmp_path / "run", tmp_path / "eval" / "test"
    (run / "adapter").mkdir(parents=True)
    source.mkdir(parents=True)
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"first weights")
    (source / "metrics.json").write_text(json.dumps({"split": "test",
                                                     "made_by": {"rows": "abc"}}))
    nbest = tmp_path / "nbest.parquet"
    pd.DataFrame({"mr": ["name[Aromi]"], "references": [json.dumps(["Aromi."])],
                  "candidates": [json.dumps(["Aromi.", "It is Aromi."])]}).to_parquet(nbest)
    Path(f"{nbest}.json").write_text(json.dumps({"run": str(run), "weights": weights_hash(run),
                                                 "source": str(source), "rows": "abc"}))
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"trained again")
    args = Namespace(candidates=[nbest], pool=tmp_path / "pool.csv", neighbours=1, how="mean",
                     tuned=None, out=tmp_path / "out", resamples=10)
    with pytest.raises(SystemExit, match="weights are not those it was made with"):
        choose(args)


def test_mrs_are_read_back_from_prompts_by_their_own_template() -> None:
    from bench.neighbour_rerank import mrs_in_prompts

    plain = "Describe: {mr}"
    assert mrs_in_prompts(["Describe: name[A], food[Thai]"], plain, "f", "run's") == [
        "name[A], food[Thai]"]
    exemplar = "Describe: {mr} Phrased like: {example}"
    prompts = ["Describe: name[A] Phrased like: X-name is nice.",
               "Describe: name[B], area[riverside] Phrased like: Near X-near."]
    assert mrs_in_prompts(prompts, exemplar, "f", "run's") == [
        "name[A]", "name[B], area[riverside]"]
    with pytest.raises(SystemExit, match=r"eval/test: 1 prompts not made by R's template"):
        mrs_in_prompts(["Summarise: name[A]"] + prompts[:1], exemplar, "eval/test", "R's")
    with pytest.raises(SystemExit, match="no fixed text ends"):
        mrs_in_prompts(prompts, "Describe: {mr}{example}", "f", "R's")


def test_summed_statistics_give_sacrebleus_corpus_bleu() -> None:
    import numpy as np
    from sacrebleu.metrics import BLEU

    from bench.neighbour_rerank import log_bleu

    # every n-gram order matches somewhere, as in any real corpus (sacrebleu smooths zeros)
    answers = ["the pub is near the river bank", "a cheap place serving french food in the centre"]
    references = ["the pub is near the river", "a cheap place with french food in the city centre"]
    sentence = BLEU(effective_order=True, lowercase=True)
    stats = sum(np.array([s.sys_len, s.ref_len, *s.counts, *s.totals], dtype=float)
                for s in (sentence.sentence_score(a, [r])
                          for a, r in zip(answers, references, strict=True)))
    corpus = BLEU(lowercase=True).corpus_score(answers, [references]).score
    assert 100 * np.exp(log_bleu(stats)) == pytest.approx(corpus, rel=1e-9)


def test_corpus_picks_trade_a_sentences_score_for_the_corpus_brevity_penalty() -> None:
    import numpy as np

    from bench.neighbour_rerank import corpus_picks, mean_of_nearest

    # per candidate, one neighbour: sentence BLEU, length, reference length, matches, totals
    short = [90, 5, 10, 5, 4, 3, 2, 5, 4, 3, 2]      # precise, half the reference's length
    full = [80, 10, 10, 9, 7, 5, 3, 10, 9, 8, 7]     # less precise, the reference's length
    matrices = [np.array([[short], [full]], dtype=float)] * 2
    assert [int(np.argmax(mean_of_nearest(m, 1))) for m in matrices] == [0, 0]
    assert corpus_picks(matrices, 1) == [1, 1]


def test_pick_takes_the_tuned_setting_only_from_a_tune_of_the_same_runs(tmp_path) -> None:
    from argparse import Namespace

    from bench.neighbour_rerank import setting

    made_from = [{"run": str(tmp_path / "student"), "weights": "w1"}]
    tuned = tmp_path / "tune.json"
    tuned.write_text(json.dumps({"runs": made_from, "best": "corpus_10"}))
    args = Namespace(tuned=tuned, how=None, neighbours=None)
    assert setting(args, made_from) == ("corpus", 10)
    assert setting(Namespace(tuned=None, how=None, neighbours=None), made_from) == ("mean", 5)
    with pytest.raises(SystemExit, match="not both"):
        setting(Namespace(tuned=tuned, how="mean", neighbours=None), made_from)
    with pytest.raises(SystemExit, match="at least 1"):
        setting(Namespace(tuned=None, how=None, neighbours=0), made_from)
    for other in ([{"run": str(tmp_path / "teacher"), "weights": "w1"}],
                  [{"run": str(tmp_path / "student"), "weights": "w2"}], made_from * 2):
        with pytest.raises(SystemExit, match="tune again"):
            setting(args, other)


def test_the_top_setting_keeps_every_top_beam_without_reading_neighbours() -> None:
    from bench.neighbour_rerank import ranks_by

    candidates = [["a1", "a2"], ["b1", "b2", "b3"]]
    assert ranks_by("top", 5, ["m1", "m2"], candidates, [], None) == [0, 0]


def test_renamed_mrs_leave_their_source_out_and_stale_references_are_counted(tmp_path) -> None:
    from bench.e2e_unseen_names import INVENTED, renamed
    from bench.neighbour_rerank import copied, sources_of

    rows = pd.DataFrame({
        "mr": ["name[Aromi], eatType[pub], near[Burger King]"] * 2
              + ["name[Cocum], eatType[pub], near[Burger King]"],
        "ref": ["Aromi is a pub near Burger King.", "Aromi, a pub by the burger bar.",
                "Cocum is a pub near burger king."]})
    frame, counts = renamed(rows)
    # each value one invented venue, in the MR and in every reference writing it verbatim;
    # the reference that phrased it otherwise would keep a stale name: dropped, counted
    aromi, cocum = INVENTED["name"][0], INVENTED["name"][1]
    near = INVENTED["near"][0]
    assert list(frame["mr"]) == [f"name[{aromi}], eatType[pub], near[{near}]",
                                 f"name[{cocum}], eatType[pub], near[{near}]"]
    assert list(frame["ref"]) == [f"{aromi} is a pub near {near}.",
                                  f"{cocum} is a pub near {near}."]
    assert counts["references_dropped"] == 1 and counts["mrs_dropped"] == 0
    path = tmp_path / "unseen.csv"
    frame.to_csv(path, index=False)
    sources = sources_of(path)
    # the renamed MR's own training MR (its references, old names delexicalised away) is
    # never its neighbour; the other one is
    neighbours = Neighbours(rows.groupby("mr", sort=False)["ref"].apply(list), sources)
    assert neighbours.references(frame["mr"][0], 5) == [["X-name is a X-eatType near X-near."]]
    assert sources_of(tmp_path / "absent.csv") == {}
    # candidates mended by the MR's name and near values, counted
    mended, n = copied([f"name[{aromi}], near[Express by Holiday Inn]"],
                       [["It is near the Holiday Inn.", "A pub near Express by Holiday Inn."]])
    assert mended == [["It is near the Express by Holiday Inn.",
                       "A pub near Express by Holiday Inn."]] and n == 1


def test_pick_takes_a_tuned_setting_only_with_the_candidates_mended_as_tuned(tmp_path) -> None:
    from argparse import Namespace

    from bench.neighbour_rerank import setting

    made_from = [{"run": str(tmp_path / "student"), "weights": "w1"}]
    tuned = tmp_path / "tune.json"
    for copied in (False, True):
        tuned.write_text(json.dumps({"runs": made_from, "best": "mean_3",
                                     "copy_values": copied}))
        assert setting(Namespace(tuned=tuned, how=None, neighbours=None, copy_values=copied),
                       made_from) == ("mean", 3)
        with pytest.raises(SystemExit, match="tune as you pick"):
            setting(Namespace(tuned=tuned, how=None, neighbours=None, copy_values=not copied),
                    made_from)
