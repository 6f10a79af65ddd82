"""Retrieval groundwork: BEIR/STS-B readers, search, and metrics checked against hand
arithmetic and ranx. Fast: no Ray, no model (the real-data test reads ../shared)."""

from __future__ import annotations

import json
import os
from math import log2
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from data.errors import DataError
from data.retrieval import read_beir, read_sts, training_pairs
from evaluation.retrieval import (
    METRICS,
    bm25_search,
    exact_search,
    judged_queries,
    per_query_metrics,
    sts_correlations,
    sts_paired_difference,
    summarise,
    worst_queries,
)
from tests.conftest import SHARED, needs_shared

# Four rankings with known answers: binary gains (q1, q3, q4), graded (q2), a relevant document
# past rank 10 (q3), and one never retrieved (q4's d8).
QRELS = {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 2, "d4": 1}, "q3": {"d5": 1},
         "q4": {"d6": 1, "d7": 1, "d8": 1}}
RUN = {"q1": ["d9", "d1", "d8", "d2"],                      # relevant at ranks 2 and 4
       "q2": ["d4", "d3", "dx"],                            # gain 1 at rank 1, gain 2 at rank 2
       "q3": [f"n{i}" for i in range(11)] + ["d5"],         # the only relevant one at rank 12
       "q4": ["d6", "dz", "d7"]}                            # 2 of 3 relevant, ranks 1 and 3
BY_HAND = {
    "q1": {"ndcg@10": (1 / log2(3) + 1 / log2(5)) / (1 + 1 / log2(3)),
           "mrr@10": 1 / 2, "recall@10": 2 / 2, "recall@100": 2 / 2,
           "map@100": (1 / 2 + 2 / 4) / 2},
    "q2": {"ndcg@10": (1 / log2(2) + 2 / log2(3)) / (2 / log2(2) + 1 / log2(3)),
           "mrr@10": 1 / 1, "recall@10": 1.0, "recall@100": 1.0,
           "map@100": (1 / 1 + 2 / 2) / 2},
    "q3": {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@10": 0.0, "recall@100": 1 / 1,
           "map@100": (1 / 12) / 1},
    "q4": {"ndcg@10": (1 / log2(2) + 1 / log2(4)) / (1 / log2(2) + 1 / log2(3) + 1 / log2(4)),
           "mrr@10": 1 / 1, "recall@10": 2 / 3, "recall@100": 2 / 3,
           "map@100": (1 / 1 + 2 / 3) / 3},
}


def test_metrics_equal_the_hand_arithmetic():
    got = per_query_metrics(RUN, QRELS)
    assert judged_queries(QRELS) == ["q1", "q2", "q3", "q4"]
    for metric in METRICS:
        assert got[metric] == pytest.approx([BY_HAND[q][metric] for q in QRELS], abs=1e-12), metric
    assert got["ndcg@10"] == pytest.approx([0.650921, 0.859719, 0.0, 0.703918], abs=1e-6)


RANX_SCRIPT = """
import json, sys
import ranx
qrels, run, metrics = json.load(sys.stdin)
print(json.dumps({q: ranx.evaluate(ranx.Qrels({q: qrels[q]}), ranx.Run({q: run[q]}), metrics)
                  for q in qrels}))
"""


def test_metrics_equal_ranx():
    """ranx, an independent implementation, scores the same rankings the same. It runs in its
    own process with numba's compiler off: compiling ranx's metrics took 42 s of the CI run,
    and the interpreted functions are the same code."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("ranx") is None:  # a dev dependency (setup.cfg)
        pytest.skip("ranx is not installed")
    run = {q: {d: 1.0 / rank for rank, d in enumerate(docs, 1)} for q, docs in RUN.items()}
    done = subprocess.run([sys.executable, "-c", RANX_SCRIPT], capture_output=True, text=True,
                          input=json.dumps([QRELS, run, list(METRICS)]), check=True,
                          env={**os.environ, "NUMBA_DISABLE_JIT": "1"})
    theirs = json.loads(done.stdout)
    ours = per_query_metrics(RUN, QRELS)
    for i, q in enumerate(QRELS):
        for metric in METRICS:
            assert ours[metric][i] == pytest.approx(theirs[q][metric], abs=1e-9), (q, metric)


def test_missing_queries_score_zero_and_repeats_count_once():
    got = per_query_metrics({"q1": ["d1", "d1", "d2"], "other": ["d1"]},
                            {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 1}, "q0": {"d4": 0}})
    assert got["ndcg@10"].tolist() == [1.0, 0.0]  # q0 judges nothing relevant: not scored
    assert got["map@100"].tolist() == [1.0, 0.0]


def test_the_split_ranking_groups_queries_and_documents_and_ranks_distractors_too():
    """Validation's split-wide retrieval: query 1 asked twice (two relevant documents),
    document 10 relevant to two queries (one pool entry), a hard negative (12) ranked among
    them. Per pair instead of per query, or without the distractor, the figures differ."""
    from trainers.ranking import split_ranking

    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    d10, d11, d12 = np.array([0.9, 0.1]), np.array([0.5, 0.5]), np.array([0.8, 0.0])
    pairs = [(1, a, 10, d10), (1, a, 11, d11), (2, b, 10, d10)]
    got = split_ranking(pairs, [(12, d12)])
    # query 1 ranks 10, 12, 11 (both relevant: ranks 1 and 3); query 2 ranks 11, 10, 12
    ndcg_1 = (1 + 1 / log2(4)) / (1 + 1 / log2(3))
    assert got == pytest.approx({"ndcg@10": (ndcg_1 + 1 / log2(3)) / 2,
                                 "mrr@10": (1 + 1 / 2) / 2, "recall@10": 1.0,
                                 "queries": 2, "documents": 3})
    assert split_ranking(pairs)["ndcg@10"] == pytest.approx((1 + 1 / log2(3)) / 2)
    assert split_ranking([]) == {}


def test_text_keys_see_the_tokens_not_the_padding():
    from trainers.tasks import text_keys

    ids = torch.tensor([[101, 7, 8, 102, 0], [101, 7, 8, 102, 9], [101, 7, 9, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
    first, padded_otherwise, other = text_keys(ids, mask)
    assert first == padded_otherwise != other


def test_summary_has_a_seeded_interval_around_the_mean():
    per_query = {"ndcg@10": np.linspace(0, 1, 50), "mrr@10": np.ones(50)}
    first, again = summarise(per_query, resamples=500, seed=3), summarise(per_query, 500, 3)
    est = first["ndcg@10"]
    assert est.value == pytest.approx(0.5) and est.low < 0.5 < est.high and est.n == 50
    assert (est.low, est.high) == (again["ndcg@10"].low, again["ndcg@10"].high)
    assert (first["mrr@10"].low, first["mrr@10"].high) == (1.0, 1.0)


def test_worst_queries_show_what_came_first_instead():
    rows = worst_queries(per_query_metrics(RUN, QRELS), RUN, QRELS, {"q3": "a claim"},
                         {"n0": "x" * 200}, n=2)
    assert [r["query_id"] for r in rows] == ["q3", "q1"]
    assert rows[0] == {"query_id": "q3", "query": "a claim", "ndcg@10": 0.0,
                       "first_id": "n0", "first_text": "x" * 80,
                       "first_is_relevant": False, "relevant_ids": ["d5"],
                       "best_relevant_rank": 12}


def test_sts_correlations_match_scipy():
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 200)
    pred = gold + rng.normal(0, 1.5, 200)
    got = sts_correlations(pred, gold, resamples=200, seed=0)
    assert got["spearman"].value == pytest.approx(stats.spearmanr(gold, pred).statistic)
    assert got["pearson"].value == pytest.approx(stats.pearsonr(gold, pred).statistic)
    assert got["spearman"].low < got["spearman"].value < got["spearman"].high


def test_sts_paired_difference_is_the_difference_of_correlations_with_a_paired_interval():
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 300)
    better, worse = gold + rng.normal(0, 1.0, 300), gold + rng.normal(0, 2.0, 300)
    got = sts_paired_difference(better, worse, gold, resamples=300, seed=0)
    for name, corr in (("spearman", stats.spearmanr), ("pearson", stats.pearsonr)):
        want = corr(gold, better).statistic - corr(gold, worse).statistic
        assert got[name].value == pytest.approx(want)
        assert 0 < got[name].low < got[name].value < got[name].high  # clearly better
    same = sts_paired_difference(better, better, gold, resamples=300)
    assert same["spearman"].value == same["spearman"].low == same["spearman"].high == 0
    with pytest.raises(ValueError, match="equal-length"):
        sts_paired_difference(better[:10], worse, gold)


def test_bm25_ranks_the_planted_document_first():
    docs = ["The weather in spring is mild and pleasant.",
            "Stock markets fell sharply on Monday morning.",
            "Zygomorphic flowers attract euglossine bees for pollination.",
            "A recipe for bread needs flour, water and yeast.",
            "Flowers in the garden bloom in spring."]
    queries = ["which bees pollinate zygomorphic flowers", "quantum chromodynamics"]
    found = bm25_search(docs, queries, k=3)
    assert found[0][0] == 2
    assert found[1] == []  # no shared term: nothing retrieved rather than arbitrary documents


def test_exact_search_finds_the_planted_neighbour_in_any_batch_size():
    gen = torch.Generator().manual_seed(0)
    docs = torch.nn.functional.normalize(torch.randn(300, 32, generator=gen), dim=1)
    planted = torch.tensor([7, 123, 299, 7, 0])
    queries = torch.nn.functional.normalize(
        docs[planted] + 0.05 * torch.randn(5, 32, generator=gen), dim=1)
    scores, indices = exact_search(queries, docs, k=10)
    assert indices[:, 0].tolist() == planted.tolist()
    assert np.all(np.diff(scores, axis=1) <= 0) and scores.shape == (5, 10)
    small_scores, small_indices = exact_search(queries.numpy(), docs.numpy(), k=10, batch=2)
    assert np.array_equal(small_indices, indices)
    assert np.allclose(small_scores, scores, atol=1e-6)
    assert exact_search(queries, docs[:4], k=10)[1].shape == (5, 4)  # k above the corpus size


def _beir(root: Path, corpus: list, queries: list, qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        (root / name).write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n"
                                         for r in rows))
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


DOCS = [{"_id": "d1", "title": "Title", "text": "one."}, {"_id": "d2", "title": "", "text": "two"},
        {"_id": 3, "text": "three"}]
QUERIES = [{"_id": f"q{i}", "text": f"query {i}", "metadata": {}} for i in range(1, 6)]
HEADER = "query-id\tcorpus-id\tscore\n"


def test_read_beir_counts_what_it_drops(tmp_path):
    qrels = HEADER + ("q1\td1\t1\nq1\tdX\t1\nqZ\td1\t1\nq2\td2\t0\nq3\t3\t2\nq3\t3\t2\n"
                      "q5\td9\t1\n")
    split = read_beir(_beir(tmp_path, DOCS, QUERIES, qrels), "test")
    assert split.doc_ids == ["d1", "d2", "3"]
    assert split.doc_texts == ["Title one.", "two", "three"]  # title + " " + text
    assert (split.query_ids, split.query_texts) == (["q1", "q3"], ["query 1", "query 3"])
    assert split.qrels == {"q1": {"d1": 1}, "q3": {"3": 2}}
    assert split.counts == {"qrels_unknown_doc": 2, "qrels_unknown_query": 1,
                            "qrels_nonpositive": 1, "qrels_duplicate": 1,
                            "queries_without_relevant": 2,  # q2 (score 0), q5 (unknown doc)
                            "queries_not_in_split": 1}      # q4
    assert training_pairs(split) == [
        {"query": "query 1", "positive": "Title one.", "query_id": "q1", "doc_id": "d1"},
        {"query": "query 3", "positive": "three", "query_id": "q3", "doc_id": "3"}]


BAD_BEIR = {
    "empty corpus": (["\n"], QUERIES, HEADER + "q1\td1\t1\n", "corpus.jsonl: the corpus holds"),
    "duplicate id": ([DOCS[0], DOCS[1], {"_id": "d1", "text": "again"}], QUERIES,
                     HEADER + "q1\td1\t1\n", "corpus.jsonl:3: duplicate document id 'd1', first "
                     "on line 1"),
    "bad JSON": ([DOCS[0], '{"_id": "d2", "text": \n'], QUERIES, HEADER, "corpus.jsonl:2: "
                 "malformed JSON"),
    "no text": (DOCS, [{"_id": "q1"}], HEADER, "queries.jsonl:1: 'text' must be a string"),
    "no _id": (DOCS, [{"text": "q"}], HEADER, "queries.jsonl:1: missing or empty '_id'"),
    "bad header": (DOCS, QUERIES, "qid\tdocid\tscore\nq1\td1\t1\n", "test.tsv:1: expected the "
                   "tab-separated header"),
    "float score": (DOCS, QUERIES, HEADER + "q1\td1\t1\nq1\td2\t1.5\n", "test.tsv:3: score "
                    "'1.5' is not an integer"),
    "all unknown": (DOCS, QUERIES, HEADER + "q1\tdX\t1\nqZ\td1\t1\n", "test.tsv: none of its 2 "
                    "judgments"),
    "conflicting": (DOCS, QUERIES, HEADER + "q1\td1\t1\nq1\td1\t0\n", "test.tsv:3: query 'q1' "
                    "and document 'd1' are scored 0 here but 1 on line 2"),
}


@pytest.mark.parametrize("case", BAD_BEIR)
def test_read_beir_rejects_bad_input_in_one_line(tmp_path, case):
    corpus, queries, qrels, expected = BAD_BEIR[case]
    with pytest.raises(DataError) as err:
        read_beir(_beir(tmp_path, corpus, queries, qrels), "test")
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert str(tmp_path) in str(err.value)


def test_read_beir_names_a_missing_qrels_file(tmp_path):
    with pytest.raises(DataError, match=r"qrels/dev\.tsv: cannot open") as err:
        read_beir(_beir(tmp_path, DOCS, QUERIES, HEADER), "dev")
    assert "\n" not in str(err.value)


STS = ("main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is "
       "taking off.\n"
       'main-news\theadlines\t2015\t0002\t1.250\tSay "hi".\tNot now\tnote one\tnote two\n')


def test_read_sts_ignores_trailing_columns(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text(STS)
    assert read_sts(path) == [
        {"sentence1": "A plane is taking off.", "sentence2": "An air plane is taking off.",
         "score": 5.0},
        {"sentence1": 'Say "hi".', "sentence2": "Not now", "score": 1.25}]


@pytest.mark.parametrize("line, problem", [
    ("g\tf\ty\t3\t5.5\ta\tb", "score '5.5' is outside [0, 5]"),
    ("g\tf\ty\t3\tn/a\ta\tb", "score 'n/a' is not a number"),
    ("g\tf\ty\t3\t2.0\ta\t ", "sentence 2 is empty"),
    ("g\tf\ty\t3\t2.0\ta", "6 tab-separated columns, expected at least 7 (score in 5, "
                            "sentences in 6 and 7)"),
])
def test_read_sts_names_the_bad_line(tmp_path, line, problem):
    path = tmp_path / "sts.csv"
    path.write_text(STS + line + "\n")
    with pytest.raises(DataError) as err:
        read_sts(path)
    assert str(err.value) == f"{path}:3: {problem}"


def test_read_sts_names_a_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_bytes(STS.encode() + b"g\tf\ty\t3\t2.0\tcaf\xe9\tb\n")
    with pytest.raises(DataError, match=r"sts\.csv:3: not valid UTF-8"):
        read_sts(path)


@needs_shared
def test_real_scifact_and_stsb():
    split = read_beir(SHARED / "scifact", "test")
    assert (len(split.query_ids), len(split.doc_ids)) == (300, 5183)
    assert sum(len(docs) for docs in split.qrels.values()) == 339
    assert split.counts["queries_not_in_split"] == 809 and split.counts["qrels_unknown_doc"] == 0
    assert len(read_sts(SHARED / "stsb" / "sts-test.csv")) == 1379
    hits = bm25_search(split.doc_texts, split.query_texts, k=100)
    run = {q: [split.doc_ids[i] for i in found]
           for q, found in zip(split.query_ids, hits, strict=True)}
    ndcg = summarise(per_query_metrics(run, split.qrels), resamples=200)["ndcg@10"]
    assert 0.62 <= ndcg.value <= 0.70, ndcg  # BEIR's BM25: 0.665; bm25s 0.3.16 here: 0.6617
