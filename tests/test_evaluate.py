"""``shardtune evaluate``: reproduces the run's own metric, writes its artefacts, gates exit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from shardtune.cli import main
from tests.conftest import FAST, needs_shared, train_run

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def trained(sample_run) -> dict:
    """The session's sample run, as ``train`` returned it."""
    run_dir = sample_run[1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"run_dir": str(run_dir), "metrics": metrics}


def test_evaluate_reproduces_logged_metric_and_writes_artefacts(trained, capsys):
    code = main(["evaluate", f"run={trained['run_dir']}", "resamples=200"])
    assert code == 0, capsys.readouterr().err
    out_dir = Path(trained["run_dir"]) / "eval" / "test"
    result = json.loads((out_dir / "metrics.json").read_text())
    assert result["metrics"]["accuracy"]["value"] == pytest.approx(
        trained["metrics"]["test/accuracy"], abs=1 / 120)
    acc = result["metrics"]["accuracy"]
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"] and acc["n"] == 120
    assert result["baseline"]["accuracy"]["value"] > 0.5  # TF-IDF on the same split
    frame = pd.read_parquet(out_dir / "predictions.parquet")
    assert {"_src", "text", "gold_label", "pred_label", "probs", "confidence"} <= set(frame)
    assert len(frame) == 120 and len(frame["probs"].iloc[0]) == 6
    slices = {s["slice"].split("=")[0] for s in result["slices"]}
    assert {"channel", "length", "gold"} <= slices
    values = [s["value"] for s in result["slices"]]
    assert values == sorted(values)  # worst first
    report = (out_dir / "report.md").read_text()
    assert "TF-IDF" in report and "Most confident mistakes" in report
    assert "Errors in the worst slices" in report
    assert (out_dir / "reliability.png").stat().st_size > 1000
    assert (out_dir / "confusion.png").stat().st_size > 1000


def test_new_data_is_evaluated_beside_the_runs_own_results_never_over_them(
        trained, tmp_path, capsys, monkeypatch):
    """The README's own-data workflow: a run evaluated on its test split, then on a new batch
    given as ``data.test_path`` alone (the run's data config is the base)."""
    import evaluation.eval_report

    run_dir = Path(trained["run_dir"])
    assert main(["evaluate", f"run={run_dir}", "resamples=200"]) == 0
    own = run_dir / "eval" / "test"

    def snapshot() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(own.iterdir())}

    before = snapshot()
    test_path = json.loads((run_dir / "config.json").read_text())["data"]["test_path"]
    rows = Path(test_path).read_text().splitlines()[:40]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(reversed(rows)) + "\n")  # other ids, other order, 40 rows
    assert main(["evaluate", f"run={run_dir}", f"data.test_path={batch}", "resamples=200"]) == 0
    [other] = [p for p in run_dir.glob("eval-sample-*") if p.is_dir()]  # name + fingerprint
    result = json.loads((other / "test" / "metrics.json").read_text())
    assert result["metrics"]["examples"] == 40 and result["baseline"] is not None
    predicted = pd.read_parquet(other / "test" / "predictions.parquet")
    baseline = pd.read_parquet(run_dir / f"baseline-{other.name[5:]}" / "test" /
                               "predictions.parquet")  # fitted for the new rows
    assert sorted(baseline["_src"]) == sorted(predicted["_src"])
    assert all(str(s).startswith(f"{batch}:") for s in predicted["_src"])
    assert snapshot() == before  # the run's own evaluation untouched
    assert result["lost"] == {"skipped_rows": 0, "lost_shards": [], "max_length": 64,
                              "truncated_examples": 0, "truncated_tokens": 0}
    # what the scores leave out is in metrics.json and the report: skipped rows, truncation
    long = json.loads(rows[0]) | {"text": " ".join(["refund"] * 80)}
    with batch.open("a") as f:
        f.write("{broken\n" + json.dumps(long) + "\n")
    assert main(["evaluate", f"run={run_dir}", f"data.test_path={batch}", "name=march",
                 "data.on_error=skip", "resamples=200"]) == 0
    march = json.loads((run_dir / "eval-march" / "test" / "metrics.json").read_text())
    assert march["metrics"]["examples"] == 41
    from transformers import AutoTokenizer

    cut = len(AutoTokenizer.from_pretrained(run_dir / "tokenizer")(long["text"])["input_ids"]) - 64
    assert march["lost"] == {"skipped_rows": 1, "lost_shards": [], "max_length": 64,
                             "truncated_examples": 1, "truncated_tokens": cut}
    assert ("Not scored: 1 bad rows skipped and 0 unreadable shard(s) left out "
            f"(data.on_error=skip); 1 examples truncated at task.max_length=64 ({cut} tokens not "
            "seen).") in (run_dir / "eval-march" / "test" / "report.md").read_text()

    def fail(*args, **kwargs):
        raise RuntimeError("injected after prediction")

    monkeypatch.setattr(evaluation.eval_report, "write_eval_report", fail)
    with pytest.raises(RuntimeError, match="injected"):
        main(["evaluate", f"run={run_dir}", "resamples=200"])
    assert snapshot() == before  # byte-identical, and no staging folder left behind
    assert not [p for p in own.parent.iterdir() if p.name.startswith(".")]
    capsys.readouterr()


def test_compare_on_other_data_pairs_each_runs_evaluation_of_it(trained, tmp_path, capsys,
                                                              monkeypatch):
    """``compare A B data=<group>``: each run's ``evaluate data=…`` folder, made when missing,
    reused while current, made again once the data's files change; the data read once."""
    import shutil

    from evaluation import evaluate as evaluate_module

    reads = []
    build_splits = evaluate_module.build_splits
    monkeypatch.setattr(evaluate_module, "build_splits",
                        lambda *a, **k: reads.append(a) or build_splits(*a, **k))

    run_dir = Path(trained["run_dir"])
    twin = tmp_path / "runs" / "twin"  # the same weights under another name: every delta 0
    shutil.copytree(run_dir, twin, ignore=lambda d, names: [
        n for n in names if n.startswith(("eval", "baseline", "compare"))])
    test_path = json.loads((run_dir / "config.json").read_text())["data"]["test_path"]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(line + "\n" for line in Path(test_path).read_text().splitlines()[:40]))
    args = ["compare", str(run_dir), str(twin), "data=sample", f"data.test_path={batch}",
            "compare.metric=accuracy", "compare.resamples=200"]
    assert main(args) == 0, capsys.readouterr().err
    assert len(reads) == 1  # two runs evaluated on one data set: read once, not once a run
    [folder] = [p.name for p in twin.glob("eval-sample-*")]  # evaluated for the comparison
    assert (run_dir / folder / "test" / "predictions.parquet").is_file()
    assert not (twin / "eval").exists()  # the runs' own test split was never scored
    out = twin / "compare" / f"{run_dir.name}-{folder[len('eval-'):]}"
    result = json.loads((out / "compare.json").read_text())
    assert result["data"] == folder and result["effects"]["accuracy"]["n"] == 40
    assert result["effects"]["accuracy"]["delta"] == 0
    assert f"each run's `{folder}/`, test split" in (out / "compare.md").read_text()
    saved = [run_dir / folder / "test" / "predictions.parquet",
             twin / folder / "test" / "predictions.parquet"]
    made = [p.stat().st_mtime_ns for p in saved]
    assert main([*args[:-2], "compare.metric=test/accuracy"]) == 0  # the evaluations' metric
    assert [p.stat().st_mtime_ns for p in saved] == made  # current: reused, not re-evaluated
    seeds_only = json.loads((out / "compare.json").read_text())["effects"]["test/accuracy"]
    scored = json.loads((twin / folder / "test" / "metrics.json").read_text())
    assert seeds_only["b"] == pytest.approx(scored["metrics"]["accuracy"]["value"])
    batch.write_text("".join(batch.read_text().splitlines(keepends=True)[:30]))  # new contents
    assert main(args) == 0
    fresh = {p.name for p in twin.glob("eval-sample-*")} - {folder}
    assert len(fresh) == 1  # a new fingerprint, a new folder beside the first
    result = json.loads((twin / "compare" / f"{run_dir.name}-{fresh.pop()[5:]}" /
                         "compare.json").read_text())
    assert result["effects"]["accuracy"]["n"] == 30
    capsys.readouterr()


def test_model_card_is_written_from_tracked_artefacts(trained, capsys):
    import yaml

    assert main(["evaluate", f"run={trained['run_dir']}", "resamples=200"]) == 0
    assert main(["card", f"run={trained['run_dir']}", "intended_use=Routing tickets."]) == 0
    card = (Path(trained["run_dir"]) / "MODEL_CARD.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "peft" and front["pipeline_tag"] == "text-classification"
    assert front["metrics"]["test/accuracy"] == pytest.approx(
        trained["metrics"]["test/accuracy"], abs=1e-4)
    assert "Routing tickets." in card and "95% CI" in card and "baseline" in card
    assert "Known failure modes" in card and "sha256" in card
    capsys.readouterr()


def test_baseline_verb_matches_the_baseline_beside_the_model(trained, tmp_path, capsys):
    assert main(["baseline", f"paths.root={tmp_path}", "resamples=200"]) == 0
    alone = json.loads((tmp_path / "runs/baseline/sample/eval/test/metrics.json").read_text())
    assert main(["evaluate", f"run={trained['run_dir']}", "resamples=200"]) == 0
    beside = json.loads((Path(trained["run_dir"]) / "eval/test/metrics.json").read_text())
    assert alone["metrics"]["accuracy"]["value"] == beside["baseline"]["accuracy"]["value"]
    assert alone["baseline"] is None and alone["slices"]
    assert (tmp_path / "runs/baseline/sample/eval/test/report.md").exists()
    capsys.readouterr()


def test_gates_exit_non_zero_with_an_explanation(trained, capsys):
    strict = main(["evaluate", f"run={trained['run_dir']}", "resamples=200",
                   "+gate.min.accuracy=0.999", "gate.max_slice_drop=0.0",
                   "gate.min_slice_size=10"])
    out = capsys.readouterr().out
    assert strict == 1
    assert "min.accuracy: FAIL" in out and "0.9990" in out and "max_slice_drop: FAIL" in out
    lenient = main(["evaluate", f"run={trained['run_dir']}", "resamples=200",
                    "+gate.min.accuracy=0.2"])
    assert lenient == 0 and "min.accuracy: pass" in capsys.readouterr().out


def test_evaluate_bad_inputs(trained, tmp_path, capsys):
    assert main(["evaluate", f"run={tmp_path}/nothing"]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["evaluate"]) == 2
    assert "'run': is required" in capsys.readouterr().err
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"text": "hello", "label": "weather"}) + "\n")
    code = main(["evaluate", f"run={trained['run_dir']}", "data=sample",
                 f"data.test_path={odd}"])
    err = capsys.readouterr().err
    assert code == 2 and "weather" in err and "not seen in training" in err


@needs_shared
def test_evaluate_on_banking77_run(banking77_run, capsys):
    summary = banking77_run
    code = main(["evaluate", f"run={summary['run_dir']}", "resamples=200", "baseline=false",
                 "data=banking77", "data.max_examples=800"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((Path(summary["run_dir"]) / "eval/test/metrics.json").read_text())
    assert result["metrics"]["accuracy"]["value"] == pytest.approx(
        summary["metrics"]["test/accuracy"], abs=2 / result["metrics"]["examples"])


@needs_shared
def test_evaluate_token_cls_reproduces_token_accuracy(wnut17_run, capsys):
    summary = wnut17_run
    code = main(["evaluate", f"run={summary['run_dir']}", "resamples=100"])
    assert code == 0, capsys.readouterr().err
    out = Path(summary["run_dir"]) / "eval/test"
    result = json.loads((out / "metrics.json").read_text())
    # Other batch shapes change float sums slightly: allow a handful of borderline words.
    assert result["metrics"]["token_accuracy"] == pytest.approx(
        summary["metrics"]["test/token_accuracy"], abs=1e-3)
    f1 = result["metrics"]["entity_f1"]
    assert f1["ci_low"] <= f1["value"] <= f1["ci_high"]
    assert "Entity-level F1" in (out / "report.md").read_text()


@needs_shared
def test_evaluate_causal_lm_reports_perplexity_with_slices(tmp_path, capsys):
    summary = train_run(tmp_path, [*FAST, "task=causal_lm", "model=tiny_gpt2", "peft=none",
                                   "data=tinyshakespeare", "data.max_examples=800",
                                   "trainer.max_steps=4", "run_name=lm"])
    code = main(["evaluate", f"run={summary['run_dir']}", "split=validation", "resamples=100"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((Path(summary["run_dir"]) / "eval/validation/metrics.json").read_text())
    ppl = result["metrics"]["perplexity"]
    assert 1 < ppl["ci_low"] <= ppl["value"] <= ppl["ci_high"] < 1e6
    assert result["metrics"]["tokens"] > 0
    assert any(s["slice"].startswith("length=") for s in result["metrics"]["slices"])


def test_a_random_init_base_is_rebuilt_as_training_built_it(tmp_path):
    """An adapter on a random-init base (``init_config``) is saved without that base: loading
    rebuilds it from the run's seed, the base training built (each load once drew another
    one, so evaluating a run twice gave two answers), leaving the caller's RNG as it was."""
    from transformers import set_seed

    from trainers.models import build_base_model, load_tokenizer, load_trained, score_range

    summary = train_run(tmp_path, [*FAST, "task=causal_lm", "model=tiny_llama", "peft=lora",
                                   "data=tinyshakespeare", "data.max_examples=200",
                                   "trainer.max_steps=1", "run_name=lm_lora"])

    def base_weights(net) -> dict:
        return {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                for k, v in net.state_dict().items() if "lora_" not in k}

    rng = torch.random.get_rng_state()
    first, tokenizer, labels, run = load_trained(Path(summary["run_dir"]), merge_adapters=False)
    assert torch.equal(torch.random.get_rng_state(), rng)
    second = base_weights(load_trained(Path(summary["run_dir"]), merge_adapters=False)[0])
    set_seed(run.seed)  # as the training loop builds it
    built = base_weights(build_base_model(run.model, run.task.kind, labels,
                                          load_tokenizer(run.model), run.task.embedding,
                                          score_range(run)))
    first = base_weights(first)
    assert first.keys() == built.keys() and len(built) > 10
    assert all(torch.equal(first[k], built[k]) and torch.equal(second[k], built[k])
               for k in built)


def test_a_lora_run_loads_for_inference_merged_and_scores_as_saved(trained):
    """Inference gets the adapters folded into the weights (one matmul per adapted layer, no
    adapter dispatch), with the outputs of the model as saved (base + adapter)."""
    from trainers.models import load_trained

    run_dir = Path(trained["run_dir"])
    merged, tokenizer, _, run = load_trained(run_dir)
    saved = load_trained(run_dir, merge_adapters=False)[0]
    assert run.peft.method.value == "lora"
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert any("lora_" in name for name, _ in saved.named_parameters())
    enc = tokenizer(["my card has not arrived yet", "how do I top up by bank transfer?"],
                    padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with torch.no_grad():
        ours, theirs = merged(**batch).logits, saved(**batch).logits
    assert torch.allclose(ours, theirs, atol=1e-5) and not torch.equal(theirs, 0 * theirs)


def test_a_split_past_inprocess_rows_is_scored_here_in_windows_not_by_an_actor(
        trained, monkeypatch):
    """On a one-machine cluster an actor buys nothing a process here lacks, only its start (a
    process, imports, a model load): a split above ``inprocess_rows`` is scored here in
    windows of that many rows, to the predictions of the whole split in one call. An actor
    is still taken where the cluster is more than this machine, several are asked for, or
    ``inprocess_rows=0``."""
    import ray
    import ray.data

    from data.local import to_ray
    from data.pipeline import build_splits
    from evaluation.config import EvaluateConfig
    from evaluation.evaluate import _predict
    from trainers.models import load_trained
    from trainers.scaling import inference_here

    run_dir = Path(trained["run_dir"])
    run = load_trained(run_dir)[3]
    test = to_ray(build_splits(run.data, "seq_cls").datasets["test"])  # 120 rows, in Ray
    whole = _predict(EvaluateConfig(run=str(run_dir)), run_dir, test)[0]

    def no_actor(*_: object, **__: object) -> None:
        raise AssertionError("scored through a Ray Data actor")

    monkeypatch.setattr(ray.data.Dataset, "map_batches", no_actor)
    windows = _predict(EvaluateConfig(run=str(run_dir), inprocess_rows=50), run_dir, test)[0]
    assert len(windows) == len(whole) == 120
    assert list(windows["_src"]) == list(whole["_src"])
    assert (windows["pred"] == whole["pred"]).all()
    assert np.allclose(np.stack(windows["probs"]), np.stack(whole["probs"]), atol=1e-5)

    assert inference_here(120, 50) and inference_here(120, 200)
    assert not inference_here(120, 50, actors=2) and not inference_here(120, 0)
    this = ray.nodes()[0]
    monkeypatch.setattr(ray, "nodes", lambda: [this, {**this, "NodeID": "f" * 56}])
    assert not inference_here(120, 50)  # another node's cores: the actor may go there
    assert inference_here(120, 200)  # within inprocess_rows a split is scored here


def test_scoring_batches_texts_of_equal_token_counts_together(trained):
    """The UDF orders a split by token count (from the tokenisation that counts truncation),
    not by characters: short words of many tokens and long words of one pad least that way."""
    from evaluation.evaluate import Predict

    predict = Predict(trained["run_dir"], batch_size=2)
    texts = ["e f g h.", "transfer", "i j k l m", "currency", "withdrawal", "n o p q r",
             "restaurants", "s t u v w"]  # 7, 3, 7, 3, 3, 7, 3, 7 tokens
    lengths = [len(ids) for ids in predict.tok(texts)["input_ids"]]

    def padded(order: list[int]) -> int:
        return sum(2 * max(lengths[i] for i in order[k:k + 2]) for k in range(0, 8, 2))

    by_chars = sorted(range(8), key=lambda i: len(texts[i]))
    by_tokens = sorted(range(8), key=lengths.__getitem__)
    assert padded(by_tokens) == sum(lengths) < padded(by_chars)  # the texts tell them apart
    model, seen = predict.model, []

    def recording(**inputs: torch.Tensor) -> object:
        seen.append(inputs["attention_mask"].numel())
        return model(**inputs)

    predict.model = recording
    out = predict({"text": np.array(texts, dtype=object), "_src": np.array(["t"] * 8),
                   "label": np.array([predict.labels[0]] * 8)})
    assert sum(seen) == sum(lengths)  # no padding at all
    assert list(out["n_tokens"]) == lengths and not any(out["truncated"])
