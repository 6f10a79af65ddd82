"""Knowledge distillation: the loss by hand, student init, provenance, real runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data.errors import ConfigError
from distill.loss import distill_loss
from shardtune.cli import main
from tests.conftest import FAST, HEAVY_TIMEOUT_S, PLUMBING_MODEL, SHARED, needs_shared, train_run

SPEED_ROWS = "distill.speed_rows=32"  # the report's speed figures, timed on fewer texts


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_kd_loss_equals_a_hand_computation(alpha, direction):
    student = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    teacher = np.array([[3.0, 2.0, 1.0], [0.0, 0.0, 4.0]])
    labels = np.array([2, 0])
    t = 2.0
    p_s, p_t = _softmax(student / t), _softmax(teacher / t)
    if direction == "forward":
        kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1).mean()
    else:
        kl = (p_s * (np.log(p_s) - np.log(p_t))).sum(-1).mean()
    ce = -np.log(_softmax(student)[np.arange(2), labels]).mean()
    want = alpha * ce + (1 - alpha) * t * t * kl  # T² keeps the KL gradients' scale
    teacher_logp = torch.log_softmax(torch.tensor(teacher) / t, -1)
    got, parts = distill_loss(torch.tensor(student), torch.tensor(labels), teacher_logp,
                              alpha, t, direction)
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert parts["ce"] == pytest.approx(ce if alpha > 0 else 0.0, rel=1e-6)
    assert float(got) >= 0  # a KD loss that goes negative is a bug (seen elsewhere)


def test_top_k_kd_over_the_whole_vocabulary_equals_full_kd_and_ignores_masked_tokens():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    labels[1, 3:] = -100  # padding: must not count
    t = 1.5
    full_logp = torch.log_softmax(teacher / t, -1)
    full, _ = distill_loss(student, labels, full_logp, 0.0, t, causal=True)
    top = full_logp.topk(7, -1)
    topk, _ = distill_loss(student, labels, top.values, 0.0, t, teacher_index=top.indices,
                           causal=True)
    assert float(topk) == pytest.approx(float(full), rel=1e-5)
    student2 = student.clone()
    student2[1, 3:] += 100.0  # change only masked positions (shifted: 2 and later)
    again, _ = distill_loss(student2, labels, full_logp, 0.0, t, causal=True)
    assert float(again) == pytest.approx(float(full), rel=1e-6)


def _tiny_llama(vocab: int) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "llama", vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8)).eval()


def test_teacher_top_k_of_packed_chats_on_answers_equals_each_chat_alone():
    """The offline pass sees packed rows as training does (attention per chat) and runs the
    head only where the KD term reads it; the scored positions match a full pass per chat."""
    from data.batches import collate
    from data.packing import pack
    from distill.teacher import lm_top_k

    vocab, k = 97, 5
    model = _tiny_llama(vocab)
    g = np.random.default_rng(0)
    chats = []
    for n, prompt in ((9, 4), (7, 3)):
        ids = g.integers(3, vocab, n)
        chats.append({"input_ids": ids, "labels": np.where(np.arange(n) < prompt, -100, ids)})

    def rows(examples):
        cols = {key: np.empty(len(examples), dtype=object) for key in examples[0]}
        for i, e in enumerate(examples):
            for key in cols:
                cols[key][i] = e[key]
        return {**cols, "uid": np.arange(len(examples))}

    [packed] = pack(chats, 16)
    with torch.no_grad():
        values, ids = lm_top_k(model, collate(rows([packed]), 0), 2.0, k, labelled=True)
        alone_values, alone_ids = lm_top_k(model, collate(rows(chats), 0), 2.0, k,
                                           labelled=False)
    scored = packed["labels"][1:] != -100
    start = 0
    for c, chat in enumerate(chats):
        for p in range(len(chat["input_ids"]) - 1):
            if scored[start + p]:
                assert torch.equal(ids[0, start + p], alone_ids[c, p])
                assert torch.allclose(values[0, start + p], alone_values[c, p], atol=1e-5)
        start += len(chat["input_ids"])
    assert scored.sum() == 5 + 4 and not values[0, :-1][~torch.from_numpy(scored)].any()


@pytest.mark.parametrize("top_k", [None, 6])
def test_a_causal_students_kd_loss_on_labelled_positions_is_the_full_logits_one(top_k):
    """The student's head runs only where CE and KD read it: same loss, same gradients."""
    from types import SimpleNamespace

    from distill.objective import Distiller
    from trainers.config import TaskKind

    vocab = 97
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, vocab, (2, 10), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100
    labels[1, 8:] = -100  # padding
    teacher = torch.log_softmax(torch.randn(2, 10, vocab, generator=g), -1)
    batch = {"input_ids": ids, "attention_mask": (labels != -100) | (torch.arange(10) < 8),
             "labels": labels, "teacher_logp": teacher}
    if top_k:
        top = teacher.topk(top_k, -1)
        batch["teacher_logp"], batch["teacher_index"] = top.values, top.indices
    run = SimpleNamespace(distill=SimpleNamespace(teacher_mode="offline", hidden_loss="none",
                                                  alpha=0.3, temperature=2.0, kl="forward"),
                          task=SimpleNamespace(kind=TaskKind.causal_lm,
                                               embedding=SimpleNamespace(gather=False)))
    results = []
    for labelled in (False, True):
        student = _tiny_llama(vocab).train()
        objective = Distiller(run, torch.device("cpu"), labelled_head=labelled)
        loss, parts = objective.loss(student, objective.forward(student, batch), batch)
        loss.backward()
        results.append((loss, parts, [p.grad for p in student.parameters()]))
    (full, full_parts, full_grads), (got, parts, grads) = results
    assert torch.allclose(got, full, atol=1e-6) and parts["kd"] > 0
    assert parts == pytest.approx(full_parts, abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-5)
               for a, b in zip(grads, full_grads, strict=True))


def test_teacher_only_examples_count_in_the_kd_term_and_not_in_ce():
    """distill.augment's copies carry label -100: KD learns from them, CE does not; a batch of
    copies only is pure KD (no NaN from an empty CE)."""
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    teacher_logp = torch.log_softmax(teacher / 2.0, -1)
    labels = torch.tensor([1, 3, -100, -100])
    loss, parts = distill_loss(student, labels, teacher_logp, 0.5, 2.0)
    ce_two = torch.nn.functional.cross_entropy(student[:2], labels[:2])
    _, kd_all = distill_loss(student, torch.tensor([1, 3, 0, 0]), teacher_logp, 0.0, 2.0)
    assert parts["ce"] == pytest.approx(float(ce_two), rel=1e-6)
    assert parts["kd"] == pytest.approx(kd_all["kd"], rel=1e-6)  # all four examples
    assert float(loss) == pytest.approx(0.5 * float(ce_two) + 0.5 * kd_all["kd"], rel=1e-6)
    only, parts = distill_loss(student, torch.full((4,), -100), teacher_logp, 0.5, 2.0)
    assert parts["ce"] == 0.0 and float(only) == pytest.approx(0.5 * kd_all["kd"], rel=1e-6)


def test_augmented_copies_are_perturbed_reproducibly_and_keep_a_word():
    from distill.augment import copy_rows, perturb

    batch = {"text": np.array(["how do i top up my card today please", "refund"], dtype=object),
             "label": np.array(["top_up", "refund"], dtype=object),
             "_src": np.array(["train.jsonl:1", "train.jsonl:2"], dtype=object)}
    out = copy_rows(batch, copies=3, p=0.2, mask_token="[MASK]")
    assert len(out["text"]) == 6 and list(out["label"][:3]) == ["top_up"] * 3
    assert list(out["_src"][:2]) == ["train.jsonl:1#copy1", "train.jsonl:1#copy2"]
    assert len(set(out["text"][:3])) > 1  # the copies differ from each other
    assert all(t != batch["text"][0] for t in out["text"][:3])  # and from the original
    assert list(out["text"][3:]) == ["refund"] * 3  # one word: nothing to perturb
    # a row's copies do not depend on the batch it arrives in (the teacher pass is cached)
    alone = copy_rows({k: v[:1] for k, v in batch.items()}, copies=3, p=0.2, mask_token="[MASK]")
    assert list(alone["text"]) == list(out["text"][:3])
    rng = np.random.default_rng(0)
    for _ in range(200):  # even at the largest p a real word survives
        words = perturb("a b c", rng, 0.49, "[MASK]").split()
        assert [w for w in words if w != "[MASK]"]


def test_the_control_trains_as_many_steps_as_a_student_with_copies():
    from distill.run import control_schedule
    from trainers.config import TrainConfig
    from trainers.schedule import plan_steps

    student = TrainConfig()
    student.trainer.epochs = 3
    rows = 8990
    _, kd_steps = plan_steps(student, rows * 2, 1)  # one copy per text
    control = dataclasses.replace(student, trainer=control_schedule(student.trainer, 1))
    assert plan_steps(control, rows, 1)[1] == kd_steps and control.trainer.epochs == 6
    assert control_schedule(student.trainer, 0) is student.trainer  # no copies: as given
    capped = dataclasses.replace(student.trainer, max_steps=100)
    assert control_schedule(capped, 1) is capped  # max_steps already caps both alike


@pytest.mark.parametrize("workers, batch, max_steps", [(1, 16, None), (2, 8, None),
                                                    (1, 16, 10)])
def test_the_control_trains_as_many_steps_as_a_student_with_transfer_rows(workers, batch,
                                                                         max_steps):
    """Transfer rows are no whole multiple of the answered ones: the control gets the
    student's steps as max_steps (its LR schedule spans them) and the epochs to reach them."""
    from distill.run import equal_steps
    from trainers.cluster_config import ClusterMode
    from trainers.config import TrainConfig
    from trainers.schedule import plan_steps

    student = TrainConfig()
    student.trainer.epochs, student.trainer.batch_size = 2, batch
    student.trainer.max_steps = max_steps
    if workers > 1:
        student.cluster.mode, student.cluster.num_workers = ClusterMode.ray, workers
    plain, kd = 191, 191 + 123  # E2E's packed rows, and with the teacher's answers
    trainer = equal_steps(student, kd, plain)
    kd_steps = plan_steps(student, kd, workers)[1]
    control = dataclasses.replace(student, trainer=trainer)
    assert plan_steps(control, plain, workers)[1] == kd_steps == trainer.max_steps
    # enough epochs of the answered rows to reach them, not one more
    per_epoch = plan_steps(dataclasses.replace(control, trainer=dataclasses.replace(
        trainer, epochs=1, max_steps=None)), plain, workers)[1]
    assert (trainer.epochs - 1) * per_epoch < kd_steps <= trainer.epochs * per_epoch


def test_layer_subset_student_copies_the_right_layers():
    from distill.student import keep_layers
    from trainers.config import ModelConfig, TaskKind
    from trainers.models import build_base_model, load_tokenizer

    model = ModelConfig(pooling="mean")
    teacher = build_base_model(model, TaskKind.seq_cls, ["a", "b", "c"], load_tokenizer(model))
    student = keep_layers(teacher, [0, 2, 4])
    t_layers, s_layers = teacher.encoder.encoder.layer, student.encoder.encoder.layer
    assert len(t_layers) == 6 and len(s_layers) == 3
    assert student.encoder.config.num_hidden_layers == 3
    for s, t in enumerate([0, 2, 4]):
        for (name, a), (_, b) in zip(s_layers[s].named_parameters(),
                                     t_layers[t].named_parameters(), strict=True):
            assert torch.equal(a, b), name
    assert torch.equal(student.encoder.embeddings.word_embeddings.weight,
                       teacher.encoder.embeddings.word_embeddings.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    with pytest.raises(ConfigError, match="student_layers"):
        keep_layers(teacher, [0, 9])


def test_where_the_teacher_pass_runs_never_blocks_a_resume():
    """``distill.inprocess_rows`` says how the outputs are made, not what they are."""
    import dataclasses

    from distill.config import DistillSpec
    from trainers.config import TrainConfig, config_dict
    from trainers.identity import changes, run_identity

    def resolved(**spec: object) -> dict:
        config = config_dict(TrainConfig())
        config["distill"] = dataclasses.asdict(DistillSpec(teacher="t", **spec))
        return config

    before = run_identity(resolved(), None)
    assert changes(before, run_identity(resolved(inprocess_rows=0), None)) == []
    assert changes(before, run_identity(resolved(temperature=4.0), None)) == \
        ["distill.temperature"]


def test_offline_outputs_made_for_another_setting_are_rejected(tmp_path):
    from distill.teacher import check_provenance

    stored = {"teacher_fingerprint": "aa", "data_fingerprint": "d", "temperature": 2.0,
              "top_k": None, "tokenizer": "t", "task": "seq_cls", "max_length": 64}
    check_provenance(stored, dict(stored), tmp_path)  # same: reused
    with pytest.raises(ConfigError, match="temperature: stored 2.0, now 4.0"):
        check_provenance(stored, {**stored, "temperature": 4.0}, tmp_path)
    with pytest.raises(ConfigError, match="teacher_fingerprint"):
        check_provenance(stored, {**stored, "teacher_fingerprint": "bb"}, tmp_path)


def test_cached_outputs_are_stamped_with_the_rows_they_were_made_for(tmp_path):
    """The same files split another way (or sampled) are other training rows: their cached
    teacher outputs must not be reused; how the rows are read (driver_rows) changes nothing."""
    from types import SimpleNamespace

    from distill.run import outputs_stamp
    from shardtune.compose import verb_config

    files = {"sha256": "f", "files": [{"uri": "train.jsonl", "bytes": 9, "sha256": "f"}]}
    prep = SimpleNamespace(splits=SimpleNamespace(fingerprint=files))

    def stamp(*overrides: str) -> dict:
        return outputs_stamp(verb_config("distill", ["teacher=hub/model", *overrides,
                                                     f"paths.root={tmp_path}"]), prep)

    base = stamp()
    assert stamp("data.driver_rows=10") == base
    for other in ("data.val_fraction=0.2", "data.max_examples=50"):
        assert stamp(other)["data_fingerprint"] != base["data_fingerprint"], other
    # outputs made over a chat split with transfer answers in it are other rows, both ways
    transferred = outputs_stamp(verb_config("distill", ["teacher=hub/model",
                                                        f"paths.root={tmp_path}"]), prep, "ab:5")
    assert base["transfer"] is None and transferred == {**base, "transfer": "ab:5"}


def test_a_cache_is_written_apart_and_moved_in_whole(tmp_path):
    """A write that fails leaves nothing; two runs making one cache at once (each saw none)
    each write their own folder, and the last moved in is whole: no file of the other's."""
    from trainers.identity import replaced_on_success as staged  # what the caches use

    out = tmp_path / "cache" / "agnews"
    with pytest.raises(RuntimeError), staged(out) as staging:
        (staging / "part-00000.parquet").write_text("half")
        raise RuntimeError("killed mid-write")
    assert not out.exists() and not list(out.parent.iterdir())
    out.mkdir()
    (out / "part-00009.parquet").write_text("stale")
    with staged(out) as first, staged(out) as second:
        (first / "who").write_text("first")
        (second / "who").write_text("second")
        (second / "part-00001.parquet").write_text("second's only")
    assert sorted(p.name for p in out.iterdir()) == ["who"]  # the first's, alone
    assert (out / "who").read_text() == "first" and list(out.parent.iterdir()) == [out]
    import os

    move = os.replace

    def theirs_moved_in_meanwhile(src, dst):  # between our clearing the way and our move
        if Path(dst) == out and Path(src).name.endswith(".staging"):
            out.mkdir()
            (out / "who").write_text("theirs")
        move(src, dst)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(os, "replace", theirs_moved_in_meanwhile)
        with staged(out) as mine:
            (mine / "who").write_text("mine")
    assert (out / "who").read_text() == "theirs" and list(out.parent.iterdir()) == [out]


@pytest.mark.usefixtures("ray_session")
def test_cached_outputs_missing_rows_are_refused_not_read_short(tmp_path):
    """A cache whose shard files were not all copied (or synced) would train on fewer rows
    without a word: its stamp holds the count it was made with."""
    from types import SimpleNamespace

    import pandas as pd

    from distill.teacher import PROVENANCE, offline_outputs

    out, wanted = tmp_path / "outputs", {"teacher_fingerprint": "aa", "temperature": 2.0}
    (out / "shards").mkdir(parents=True)
    for i in range(2):
        pd.DataFrame({"uid": range(i * 5, i * 5 + 5)}).to_parquet(
            out / "shards" / f"part-{i:05d}.parquet")
    (out / PROVENANCE).write_text(json.dumps({**wanted, "rows": 10}))
    spec = SimpleNamespace(recompute=False)
    assert offline_outputs(None, spec, "t", out, wanted, "seq_cls", 0).count() == 10
    (out / "shards" / "part-00001.parquet").unlink()
    with pytest.raises(ConfigError, match=r"hold 5 rows, made with 10: shard files are missing"):
        offline_outputs(None, spec, "t", out, wanted, "seq_cls", 0)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, ray_session):
    """A briefly trained teacher on AG News (4 classes): the random-init 2-layer encoder, as
    these tests check the plumbing (gradients, provenance, two workers, student init), not
    what KD learns (docs/benchmarks.md measures that on MiniLM)."""
    if not SHARED.is_dir():
        pytest.skip(f"real data sets not found at {SHARED}")
    root = tmp_path_factory.mktemp("teacher")
    summary = train_run(root, [*FAST, "data=agnews_subset", "data.max_examples=300",
                               "trainer.max_steps=10", "run_name=teacher", PLUMBING_MODEL])
    return Path(summary["run_dir"])


@needs_shared
def test_teacher_gets_no_gradients_and_stays_bit_identical(teacher_run):
    from distill.config import DistillSpec
    from distill.objective import Distiller
    from distill.student import keep_layers, merged_teacher
    from distill.teacher import load_teacher
    from trainers.config import TrainConfig

    run = TrainConfig()
    run.distill = DistillSpec(teacher=str(teacher_run), teacher_mode="online",
                              hidden_loss="mse")
    distiller = Distiller(run, torch.device("cpu"))
    before = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    student = keep_layers(merged_teacher(load_teacher(str(teacher_run), run.task.kind)[0]),
                          [1])
    for p in student.parameters():
        p.requires_grad_(True)
    batch = {"input_ids": torch.tensor([[101, 2054, 2003, 102], [101, 7592, 102, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
             "labels": torch.tensor([0, 1])}
    out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  output_hidden_states=True)
    loss, parts = distiller.loss(student, out, batch)
    loss.backward()
    assert "hidden" in parts and float(loss) > 0
    assert all(p.grad is None and not p.requires_grad for p in distiller.teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())
    after = distiller.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@needs_shared
@pytest.mark.timeout(HEAVY_TIMEOUT_S)
def test_distill_on_two_workers_with_control_and_cached_teacher_outputs(teacher_run, tmp_path):
    args = ["distill", f"teacher={teacher_run}", f"paths.root={tmp_path}",
            f"paths.datasets={SHARED}", *FAST, "data=agnews_subset", "data.max_examples=300",
            "trainer.max_steps=4", "peft=none", "run_name=kd", "cluster=ray", SPEED_ROWS,
            "cluster.num_workers=2", "cluster.cpus_per_worker=0.5",
            "distill.control=false",  # the control is a plain seed group: tested there
            # teacher-only copies: doubled train rows, offline outputs (made here: the Ray
            # Data actor a large split goes through is test_causal_lm_distillation_with_top_k's)
            "distill.augment=1"]
    assert main(args) == 0
    root = tmp_path / "runs" / "kd"
    final = json.loads((root / "student" / "seed0" / "metrics.json").read_text())
    assert final["dist/world_size"] == 2 and final["dist/weights_equal"] == 1.0
    figures = json.loads((root / "distill.json").read_text())
    assert figures["speed"]["student"]["params"] < figures["speed"]["teacher"]["params"]
    assert figures["speed"]["student"]["texts"] == 32  # distill.speed_rows
    # measured and reported, never asserted on: a timing depends on the machine's load (this
    # assert failed at 0.99 on a busy CI machine); speed belongs in bench/
    assert 0 < figures["throughput_ratio"] < float("inf")
    assert f"{figures['throughput_ratio']:.2f}×" in (root / "distill_report.md").read_text()
    assert figures["student_vs_teacher"]["verdict"] in ("ship", "iterate", "stop")
    assert 0 < figures["retention"] <= 2
    assert "| student |" in (root / "distill_report.md").read_text()
    outputs = teacher_run / "teacher_outputs" / "agnews_subset"
    stamp = json.loads((outputs / "provenance.json").read_text())
    assert stamp["temperature"] == 2.0 and len(stamp["teacher_fingerprint"]) == 64
    assert stamp["augment"] == [1, 0.1]  # other copies = other teacher outputs
    import pyarrow.parquet as pq

    table = pq.read_table(outputs / "shards")
    labels = table.column("labels").to_pylist()
    meta = json.loads((root / "student" / "seed0" / "run_meta.json").read_text())
    rows = meta["dataset"]["splits"]["train"]["rows"]
    assert len(labels) == meta["train_rows"] == 2 * rows  # every row and its copy, once
    assert meta["train_rows_added"] == {"distill.augment": {"rows": rows, "copies": 1}}
    assert labels.count(-100) == rows
    assert len(set(table.column("uid").to_pylist())) == len(labels)
    meta = json.loads((root / "student" / "seed0" / "config.json").read_text())
    assert meta["distill"]["alpha"] == 0.5 and meta["model"]["name_or_path"].endswith(
        "student_init")
    from distill.teacher import check_provenance  # the stored stamp guards later reuse

    with pytest.raises(ConfigError, match="temperature"):
        check_provenance(stamp, {**stamp, "temperature": 4.0}, outputs)


@needs_shared
@pytest.mark.usefixtures("ray_session")
def test_causal_lm_distillation_with_top_k_teacher_outputs(tmp_path):
    lm = ["task=causal_lm", "model=tiny_llama", "peft=none", "data=tinyshakespeare",
          f"paths.datasets={SHARED}", "data.max_examples=200", "task.max_length=32",
          "trainer.batch_size=8", "trainer.log_every=1"]
    teacher = train_run(tmp_path, [*lm, "trainer.max_steps=6", "run_name=lm_teacher"])
    assert main(["distill", f"teacher={teacher['run_dir']}", f"paths.root={tmp_path}", *lm,
                 "trainer.max_steps=4", "distill.top_k=8", "distill.control=false", SPEED_ROWS,
                 "run_name=lm_kd"]) == 0
    outputs = Path(teacher["run_dir"]) / "teacher_outputs" / "tinyshakespeare"
    assert json.loads((outputs / "provenance.json").read_text())["top_k"] == 8
    # a split this small got its outputs in the driver: a Ray Data actor gives the same,
    import pyarrow.parquet as pq
    import ray.data

    from distill.config import DistillSpec
    from distill.teacher import offline_outputs

    made = pq.read_table(outputs / "shards").to_pandas().sort_values("uid")
    rows = ray.data.from_pandas(made.drop(columns=["teacher_logp", "teacher_index"]))
    spec = DistillSpec(teacher=teacher["run_dir"], temperature=2.0, top_k=8, inprocess_rows=0)
    again = offline_outputs(rows, spec, teacher["run_dir"], tmp_path / "by_actor", {},
                            "causal_lm", 0).to_pandas().sort_values("uid")
    # above inprocess_rows on this one-machine cluster: windows in the driver, no actor
    spec.inprocess_rows = 5
    windows = offline_outputs(rows, spec, teacher["run_dir"], tmp_path / "in_windows", {},
                              "causal_lm", 0).to_pandas().sort_values("uid")
    assert len(list((tmp_path / "in_windows" / "shards").glob("*.parquet"))) == -(-len(made) // 5)
    assert len(made) > 10
    for other in (again, windows):
        assert other["uid"].tolist() == made["uid"].tolist()
        for column in ("teacher_logp", "teacher_index"):
            assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(other[column], made[column],
                                                                     strict=True))
    final = json.loads((tmp_path / "runs" / "lm_kd" / "student" / "seed0" / "metrics.json")
                       .read_text())
    assert np.isfinite(final["val/perplexity"])


@needs_shared
def test_student_from_a_resized_config_and_from_a_path(teacher_run, tmp_path):
    from distill.config import DistillSpec
    from distill.run import student_init
    from trainers.config import TrainConfig

    run = TrainConfig()
    run.distill = DistillSpec(teacher=str(teacher_run), student="config",
                              student_config={"num_hidden_layers": 2, "hidden_size": 128,
                                              "num_attention_heads": 2,
                                              "intermediate_size": 256})
    model, kept = student_init(run, tmp_path / "init")
    assert kept is None and model["init_config"]["num_hidden_layers"] == 2
    assert model["init_config"]["model_type"] == "bert" and model["pooling"] == "mean"
    assert (tmp_path / "init" / "tokenizer.json").exists()  # the teacher's vocabulary
    run.distill = DistillSpec(teacher=str(teacher_run), student="path")
    assert student_init(run, tmp_path / "p")[0]["name_or_path"] == run.model.name_or_path
    # the vocabulary check finds a pkg:// (or GGUF) student as training does: it used to
    # hand the raw location to AutoTokenizer, which read it as a malformed hub id
    from transformers import AutoTokenizer

    from distill.run import _check_vocab

    assert run.model.name_or_path.startswith("pkg://")
    _check_vocab(AutoTokenizer.from_pretrained(tmp_path / "init"), run.model)


def test_a_one_seed_arm_shows_its_interval_over_examples_not_a_collapsed_one(tmp_path):
    """The quality table of distill_report.md (and compress's) with a one-seed student, a
    one-seed control whose evaluation is not saved, and no zero-width interval anywhere."""
    import re

    from distill.compress import _quality
    from distill.report import quality_table
    from evaluation.aggregate import describe

    student = tmp_path / "student" / "seed0"
    (student / "eval" / "test").mkdir(parents=True)
    (student / "eval" / "test" / "metrics.json").write_text(json.dumps(
        {"metrics": {"accuracy": {"value": 0.81, "ci_low": 0.78, "ci_high": 0.84, "n": 700}}}))
    summary = {"student": {"metrics": {"test/accuracy": describe([0.81])},
                           "per_seed": [{"run_dir": str(student)}]},
               "control": {"metrics": {"test/accuracy": describe([0.79])},
                           "per_seed": [{"run_dir": str(tmp_path / "control" / "seed0")}]}}
    figures: dict = {}
    teacher = {"value": 0.9, "ci_low": 0.88, "ci_high": 0.92, "n": 700}
    text = "\n".join(quality_table(teacher, summary, "test", figures))
    for low, high in re.findall(r"\[(\d\.\d+), (\d\.\d+)\]", text):
        assert low != high, text
    row = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    assert "[0.7800, 0.8400] | 700 test examples (n=1 seed)" in row["student"]
    assert "n=1 seed, no interval" in row["control"] and "[" not in row["control"]
    assert "± 0.0000" not in text
    shown = _quality(figures["student_accuracy"])
    assert "[0.7800, 0.8400]" in shown and "700 test examples" in shown
    assert _quality(figures["control_accuracy"]) == "0.7900 (n=1 seed, no interval)"
