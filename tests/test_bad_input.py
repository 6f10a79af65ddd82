"""Bad input: one clear line naming the file, line or key; exit code 2; no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainers.cli import main

pytestmark = pytest.mark.usefixtures("ray_session")


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _row(text: object, label: str) -> str:
    return json.dumps({"text": text, "label": label})


GOOD = [json.dumps({"text": f"example {i}", "label": "ab"[i % 2]}) for i in range(20)]


def _cases(tmp: Path) -> list[tuple[str, list[str], list[str]]]:
    (tmp / "empty").mkdir()
    bad_utf8 = tmp / "latin1.jsonl"
    bad_utf8.write_bytes(GOOD[0].encode() + b"\n" + b'{"text": "caf\xe9", "label": "a"}\n')
    return [
        ("missing path", [f"data.path={tmp}/nope.jsonl"], ["nope.jsonl", "no such file"]),
        ("empty directory", [f"data.path={tmp}/empty"], ["empty", "no data files"]),
        ("malformed json line",
         [f"data.path={_jsonl(tmp / 'broken.jsonl', GOOD[:4] + ['{text: oops'] + GOOD)}"],
         ["broken.jsonl:5", "malformed JSON"]),
        ("missing text field",
         [f"data.path={_jsonl(tmp / 'nofield.jsonl', GOOD)}", "data.text_field=body"],
         ["nofield.jsonl:1", "missing text field 'body'", "data.text_field"]),
        ("missing label field",
         [f"data.path={_jsonl(tmp / 'nolabel.jsonl', GOOD)}", "data.label_field=queue"],
         ["nolabel.jsonl:1", "'queue'"]),
        ("empty text",
         [f"data.path={_jsonl(tmp / 'emptytext.jsonl', GOOD + [_row(' ', 'a')])}"],
         ["emptytext.jsonl:21", "empty text"]),
        ("wrong column type",
         [f"data.path={_jsonl(tmp / 'numtext.jsonl', GOOD + [_row(42, 'a')])}"],
         ["numtext.jsonl:21", "int, not a string"]),
        ("non-utf8 bytes", [f"data.path={bad_utf8}"], ["latin1.jsonl:2", "UTF-8"]),
        ("unseen test label",
         [f"data.path={_jsonl(tmp / 'tr.jsonl', GOOD)}", "data.test_path="
          f"{_jsonl(tmp / 'te.jsonl', [json.dumps({'text': 'x', 'label': 'zzz'})])}"],
         ["test", "zzz", "not seen in training"]),
        ("too many workers", ["cluster=ray", "cluster.num_workers=16"],
         ["cluster.num_workers", "16 workers", "CPUs"]),
        ("fsdp on cpu", ["cluster=ray", "cluster.num_workers=2", "cluster.cpus_per_worker=0.5",
                         "trainer.strategy=fsdp", "cluster.use_gpu=false"],
         ["trainer.strategy", "GPU"]),
        ("fsdp in local mode", ["trainer.strategy=fsdp"], ["trainer.strategy", "cluster=ray"]),
        ("model path missing", ["model.name_or_path=/nonexistent/model"],
         ["model.name_or_path", "/nonexistent/model"]),
    ]


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    failures = []
    for name, overrides, fragments in _cases(tmp_path):
        code = main(["train", f"paths.root={tmp_path}", *overrides])
        err = capsys.readouterr().err.strip().splitlines()
        last = err[-1] if err else ""
        ok = code == 2 and last.startswith("error: ") and all(f in last for f in fragments)
        ok = ok and not any("Traceback" in line for line in err)
        if not ok:
            failures.append(f"{name}: exit {code}: {last!r}")
    assert not failures, "\n".join(failures)


def test_on_error_skip_counts_bad_rows_and_records_them(tmp_path, capsys):
    rows = GOOD + ["{broken", json.dumps({"text": "", "label": "a"}), json.dumps({"x": 1})]
    path = _jsonl(tmp_path / "mixed.jsonl", rows)
    code = main(["train", f"paths.root={tmp_path}", f"data.path={path}", "data.on_error=skip",
                 "data.val_fraction=0.2", "trainer.max_steps=2", "trainer.batch_size=8",
                 "data.test_path=null"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "runs/default/run_meta.json").read_text())
    train = meta["dataset"]["splits"]["train"]
    assert train["skipped"] == 3
    assert any("mixed.jsonl:21" in e for e in train["first_errors"])
    assert "skipped" in (tmp_path / "runs/default/report.md").read_text()
