"""The embedding losses of trainers/contrastive.py, checked against numbers.

Two real gloo processes (a tiny Linear encoder, a global batch of 8 split 4+4) must give the
one-process loss and gradients of the whole batch, and the labels must point at each query's
own positive when hard negatives are gathered too. Each of those checks is also run on the
bug it guards against (a gradient-less gather, a row-by-row layout) to show that it fails.
The ranks are spawned, not forked: a fork of a process with Ray or OpenMP threads can hang.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import distributed as dist

from trainers import contrastive
from trainers.contrastive import (
    Scale,
    cosent_loss,
    cosine_similarity_loss,
    embed_in_chunks,
    gather_with_grad,
    in_batch_logits,
    in_batch_negatives_loss,
)

WORLD, B, N, D_IN, H = 2, 4, 2, 6, 5  # 2 ranks x 4 queries, 2 hard negatives each
ALIGN_H = 16


def _batch() -> dict[str, torch.Tensor]:
    """Float64 throughout: gradients of ~10 (scale 20) then compare at atol 1e-6 exactly."""
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(rows, D_IN, generator=g, dtype=torch.float64)
            for k, rows in (("q", WORLD * B), ("p", WORLD * B), ("n", WORLD * B * N))}


def _model(dropout: float = 0.0) -> tuple[torch.nn.Module, Scale]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(D_IN, H), torch.nn.Dropout(dropout))
    return net.double(), Scale().double()


def _encoder(net: torch.nn.Module) -> Any:
    return lambda x: F.normalize(net(x["x"] if isinstance(x, dict) else x), dim=-1)


def _plain_loss(net: torch.nn.Module, scale: Scale, q: torch.Tensor, p: torch.Tensor,
                n: torch.Tensor | None) -> torch.Tensor:
    enc = _encoder(net)
    negatives = None if n is None else enc(n).view(len(q), -1, H)
    return in_batch_negatives_loss(enc(q), enc(p), negatives, scale())


class _ChunkedPairs(torch.nn.Module):
    """A BiEncoder in miniature: one forward embeds every side ``chunk`` rows at a time
    (``embed_in_chunks``) and returns the in-batch loss over the gathered batch."""

    def __init__(self, net: torch.nn.Module, scale: Scale, chunk: int) -> None:
        super().__init__()
        self.net, self.scale, self.chunk = net, scale, chunk

    def forward(self, q: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        def embed(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.net(x), dim=-1)

        q, p, n = (embed_in_chunks(embed, x, torch.ones_like(x, dtype=torch.long), self.chunk)
                   for x in (q, p, n))
        return in_batch_negatives_loss(q, p, n.view(len(q), -1, H), self.scale())


def _grads(net: torch.nn.Module, scale: Scale, world: int = 1) -> list[torch.Tensor]:
    """The parameter gradients, averaged over ranks as DDP does."""
    grads = [p.grad.clone() for p in [*net.parameters(), *scale.parameters()]]
    for g in grads if world > 1 else []:
        dist.all_reduce(g)
        g /= world
    return grads


def _alignment(rank: int, world: int, row_by_row: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax of each local query's logits, its label) where each query equals its positive
    and each hard negative is a near-duplicate of it: a right layout has argmax == label."""
    g = torch.Generator().manual_seed(1)
    pos = F.normalize(torch.randn(world * B, ALIGN_H, generator=g), dim=-1)
    neg = F.normalize(pos[:, None] + 0.05 * torch.randn(world * B, N, ALIGN_H, generator=g),
                      dim=-1)
    q, p, n = (t[rank * B:(rank + 1) * B] for t in (pos, pos, neg))
    logits, labels = in_batch_logits(q, p, n, scale=20.0)
    if row_by_row:  # sentence-transformers before #3453: gathered P N N P N N ..., same labels
        logits = 20.0 * q @ gather_with_grad(torch.cat([p[:, None], n], 1).flatten(0, 1)).T
    return logits.argmax(dim=1), labels


def _rank_main(rank: int, init_file: str, out: str) -> None:
    # this rank's stderr (a C++ abort's message included) to a file the fixture shows on failure
    log = os.open(Path(out) / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 2)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        mine = {k: v[rank * len(v) // WORLD:(rank + 1) * len(v) // WORLD]
                for k, v in _batch().items()}
        result: dict[str, Any] = {}
        for name, negatives in (("plain", None), ("hard", mine["n"])):
            net, scale = _model()
            loss = _plain_loss(net, scale, mine["q"], mine["p"], negatives)
            loss.backward()
            result[name] = (loss.detach(), _grads(net, scale, WORLD))
        net, scale = _model()
        with mock.patch.object(contrastive, "gather_with_grad", _no_grad_gather):
            _plain_loss(net, scale, mine["q"], mine["p"], mine["n"]).backward()
        result["no_grad_gather"] = _grads(net, scale, WORLD)
        net, scale = _model()  # chunked under DDP, as the loop trains a BiEncoder
        ddp = torch.nn.parallel.DistributedDataParallel(_ChunkedPairs(net, scale, chunk=3))
        loss = ddp(mine["q"], mine["p"], mine["n"])
        loss.backward()
        result["cached"] = (loss.detach(), _grads(net, scale))  # DDP averaged them
        result["aligned"] = _alignment(rank, WORLD)
        result["row_by_row"] = _alignment(rank, WORLD, row_by_row=True)
        try:
            gather_with_grad(torch.zeros(2 + rank, H))
        except ValueError as e:
            result["ragged"] = str(e)
        torch.save(result, Path(out) / f"rank{rank}.pt")
        dist.barrier()  # neither rank closes its sockets while the other still uses them
    finally:
        dist.destroy_process_group()
    sys.stderr.flush()
    # skip interpreter teardown: gloo's and torch's C++ threads are not this test's subject,
    # and a destructor racing them at exit can abort a rank whose results are already saved
    os._exit(0)


def _no_grad_gather(x: torch.Tensor) -> torch.Tensor:
    """The gather of sentence-transformers #2831/#3149: other ranks' rows are constants, only
    the own slot keeps its gradient."""
    parts = [torch.empty_like(x) for _ in range(WORLD)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each of two gloo processes computed on its half of the batch."""
    tmp = tmp_path_factory.mktemp("contrastive")
    procs = mp.start_processes(_rank_main, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD,
                               join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    try:
        while not procs.join(timeout=1):  # raises if a rank failed
            if time.monotonic() > deadline:
                for p in procs.processes:
                    p.kill()
                pytest.fail("the 2-process run did not finish within 120 s" + _logs(tmp))
    except mp.ProcessExitedException as e:
        pytest.fail(f"{e}{_logs(tmp)}")
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def _logs(tmp: Path) -> str:
    """What each rank wrote to stderr, for a failure message."""
    return "".join(f"\n--- rank {r} stderr ---\n{(tmp / f'rank{r}.log').read_text()[-3000:]}"
                   for r in range(WORLD) if (tmp / f"rank{r}.log").is_file())


def _reference(hard: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss and gradients of the whole batch of 8 in one process."""
    batch = _batch()
    net, scale = _model()
    loss = _plain_loss(net, scale, batch["q"], batch["p"], batch["n"] if hard else None)
    loss.backward()
    return loss.detach(), _grads(net, scale)


def _close(got: list[torch.Tensor], want: list[torch.Tensor], atol: float = 1e-6) -> bool:
    return all(torch.allclose(a, b, atol=atol, rtol=0) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("name", ["plain", "hard"])
def test_two_ranks_give_the_one_process_loss_and_gradients(ranks, name):
    want_loss, want_grads = _reference(hard=name == "hard")
    assert sum(r[name][0] for r in ranks) / WORLD == pytest.approx(want_loss.item(), abs=1e-6)
    for r in ranks:
        assert _close(r[name][1], want_grads)


def test_a_gather_without_gradient_would_fail_the_gradient_check(ranks):
    _, want_grads = _reference(hard=True)
    assert not _close(ranks[0]["no_grad_gather"], want_grads, atol=1e-4)


def test_labels_point_at_each_querys_own_positive_across_ranks(ranks):
    for rank, r in enumerate(ranks):
        argmax, labels = r["aligned"]
        assert labels.tolist() == list(range(rank * B, (rank + 1) * B))
        assert torch.equal(argmax, labels)
        bad_argmax, bad_labels = r["row_by_row"]  # the same check fails on the #3453 layout
        assert not torch.equal(bad_argmax, bad_labels)


def test_cached_step_across_ranks_gives_the_one_process_gradients(ranks):
    want_loss, want_grads = _reference(hard=True)
    assert sum(r["cached"][0] for r in ranks) / WORLD == pytest.approx(want_loss.item(),
                                                                      abs=1e-6)
    for r in ranks:
        assert _close(r["cached"][1], want_grads)


def test_ragged_shapes_raise_on_every_rank(ranks):
    for r in ranks:
        assert "same shape on every rank" in r["ragged"] and "[(2, 5), (3, 5)]" in r["ragged"]


def test_one_process_gather_is_the_identity():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


def test_loss_matches_a_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    hand = (-2.0 + math.log(math.exp(2.0) + math.exp(1.2))
            - 1.6 + math.log(math.exp(0.0) + math.exp(1.6))) / 2  # scale 2: logits 2*q.p
    assert in_batch_negatives_loss(q, p, scale=2.0).item() == pytest.approx(hand, abs=1e-6)
    n = torch.tensor([[[0.0, 1.0]], [[0.8, 0.6]]])  # documents: p1 p2 n1 n2
    row1 = [2.0, 1.2, 0.0, 1.6]
    row2 = [0.0, 1.6, 2.0, 1.2]
    hand = (-row1[0] + math.log(sum(map(math.exp, row1)))
            - row2[1] + math.log(sum(map(math.exp, row2)))) / 2
    assert in_batch_negatives_loss(q, p, n, scale=2.0).item() == pytest.approx(hand, abs=1e-6)
    argmax, labels = _alignment(0, 1)
    assert torch.equal(argmax, labels) and labels.tolist() == list(range(B))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="positives must be"):
        in_batch_negatives_loss(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="negatives must be"):
        in_batch_negatives_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))


def test_scale_learnable_or_fixed_and_clamped():
    learnt, fixed = Scale(20.0), Scale(20.0, learnable=False)
    assert learnt().item() == pytest.approx(20.0) and fixed().item() == pytest.approx(20.0)
    assert [n for n, _ in learnt.named_parameters()] == ["log_scale"]
    assert list(fixed.parameters()) == [] and "log_scale" in dict(fixed.named_buffers())
    assert "log_scale" in fixed.state_dict()
    with torch.no_grad():
        learnt.log_scale.fill_(math.log(1000.0))
    assert learnt().item() == pytest.approx(100.0)
    with pytest.raises(ValueError, match="scale init"):
        Scale(200.0)


def _unit(cosines: list[float]) -> torch.Tensor:
    return torch.tensor([[c, math.sqrt(1 - c * c)] for c in cosines])


def test_cosent_matches_a_hand_computation_and_prefers_the_gold_order():
    b = torch.tensor([[1.0, 0.0]] * 3)
    gold = torch.tensor([3.0, 1.0, 2.0])
    c = [0.9, 0.1, 0.5]  # same order as gold: pairs (0,1), (0,2), (2,1) have gold_i > gold_j
    hand = math.log(1 + math.exp(2 * (c[1] - c[0])) + math.exp(2 * (c[2] - c[0]))
                    + math.exp(2 * (c[1] - c[2])))
    assert cosent_loss(_unit(c), b, gold, scale=2.0).item() == pytest.approx(hand, abs=1e-6)
    against = cosent_loss(_unit([0.1, 0.9, 0.5]), b, gold, scale=2.0).item()
    assert cosent_loss(_unit(c), b, gold, scale=2.0).item() < against


def test_cosine_similarity_loss_matches_a_hand_computation():
    b = torch.tensor([[1.0, 0.0]] * 2)
    got = cosine_similarity_loss(_unit([0.8, 0.2]), b, torch.tensor([5.0, 0.0]), (0.0, 5.0))
    assert got.item() == pytest.approx(((0.8 - 1.0) ** 2 + 0.2 ** 2) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="outside the declared range"):
        cosine_similarity_loss(_unit([0.8]), b[:1], torch.tensor([4.0]), (0.0, 1.0))


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_chunked_embedding_gives_the_plain_gradients(chunk):
    batch = _batch()
    want_loss, want_grads = _reference(hard=True)
    net, scale = _model()
    loss = _ChunkedPairs(net, scale, chunk)(batch["q"], batch["p"], batch["n"])
    loss.backward()
    assert loss.item() == pytest.approx(want_loss.item(), abs=1e-9)
    assert _close(_grads(net, scale), want_grads)


def test_chunked_embedding_replays_dropout_masks():
    """With dropout, the recomputed chunks see the forward's masks: the gradients equal those
    of a plain pass over the same chunks in the same order from the same seed, and the RNG
    ends where that pass leaves it (the replay does not shift later randomness)."""
    batch = _batch()
    net, scale = _model(dropout=0.5)
    torch.manual_seed(5)
    enc = _encoder(net)
    q, p, n = (torch.cat([enc(c) for c in batch[k].split(3)]) for k in "qpn")
    in_batch_negatives_loss(q, p, n.view(len(q), N, H), scale()).backward()
    want_grads, want_next = _grads(net, scale), torch.rand(1)
    net, scale = _model(dropout=0.5)
    torch.manual_seed(5)
    _ChunkedPairs(net, scale, chunk=3)(batch["q"], batch["p"], batch["n"]).backward()
    assert _close(_grads(net, scale), want_grads) and torch.equal(torch.rand(1), want_next)
    from torch.utils.checkpoint import checkpoint

    def no_replay(*args: Any, **kwargs: Any) -> torch.Tensor:
        return checkpoint(*args, **{**kwargs, "preserve_rng_state": False})

    net, scale = _model(dropout=0.5)  # the check can fail: recomputed with fresh masks
    torch.manual_seed(5)
    with mock.patch.object(contrastive, "checkpoint", no_replay):
        _ChunkedPairs(net, scale, chunk=3)(batch["q"], batch["p"], batch["n"]).backward()
    assert not _close(_grads(net, scale), want_grads)


def test_chunks_are_cut_to_their_longest_row_and_left_padding_is_kept():
    seen: list[int] = []

    def embed(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seen.append(ids.shape[1])
        return ids.double().sum(1, keepdim=True).requires_grad_()

    right = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    embed_in_chunks(embed, right, right, chunk=2)
    assert seen == [2, 3]  # 2 and 3 real tokens: padding past them dropped
    seen.clear()
    left = right.flip(1)
    embed_in_chunks(embed, left, left, chunk=2)
    assert seen == [4, 4]
    seen.clear()
    with torch.no_grad():  # nothing to recompute without a graph: one plain pass
        embed_in_chunks(embed, right, right, chunk=2)
    assert seen == [4]
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        embed_in_chunks(embed, right, right, chunk=0)


def test_bi_encoder_with_cache_chunk_trains_on_the_plain_gradients():
    """``task.embedding.cache_chunk``: a real (tiny, random) BERT BiEncoder, right-padded pairs
    of uneven length with a hard negative each, gives the plain forward's loss and gradients."""
    from transformers import BertConfig, BertModel

    from trainers.embedding import BiEncoder
    from trainers.embedding_spec import EmbeddingSpec

    def run(chunk: int) -> tuple[float, list[torch.Tensor], int]:
        torch.manual_seed(0)
        bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=32,
                                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                         add_pooling_layer=False)
        model = BiEncoder(bert, EmbeddingSpec(loss="in_batch", cache_chunk=chunk)).train()
        calls = []
        bert.register_forward_hook(lambda *_: calls.append(1))
        g = torch.Generator().manual_seed(1)
        sides = {}
        for side in ("", "doc_", "neg_"):
            lengths = torch.randint(2, 9, (5,), generator=g)
            mask = (torch.arange(8)[None, :] < lengths[:, None]).long()
            sides[f"{side}input_ids"] = torch.randint(1, 50, (5, 8), generator=g) * mask
            sides[f"{side}attention_mask"] = mask
        out = model(**sides)
        out.loss.backward()
        return (out.loss.item(), [p.grad for p in model.parameters() if p.grad is not None],
                len(calls))

    plain_loss, plain_grads, plain_calls = run(0)
    chunked_loss, chunked_grads, chunked_calls = run(2)
    assert (plain_calls, chunked_calls) == (3, 18)  # 3 sides x 3 chunks, each run twice
    assert chunked_loss == pytest.approx(plain_loss, abs=1e-5)
    assert len(chunked_grads) == len(plain_grads) > 10
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4)
               for a, b in zip(chunked_grads, plain_grads, strict=True))


def test_an_embedding_students_kd_term_reads_the_teachers_similarities_in_its_layout():
    """distill/objective.py for task=embedding: the teacher's log-softmax over the same
    candidate columns (positives, then hard negatives) as the student's in-batch logits; a
    student equal to the teacher has zero KL, another one does not."""
    from types import SimpleNamespace

    from transformers import BertConfig, BertModel

    from distill.config import DistillSpec
    from distill.objective import Distiller
    from trainers.embedding import BiEncoder
    from trainers.embedding_spec import EmbeddingSpec

    def bi_encoder(seed: int) -> BiEncoder:
        torch.manual_seed(seed)
        return BiEncoder(BertModel(BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
            add_pooling_layer=False), EmbeddingSpec(loss="in_batch")).eval()

    g = torch.Generator().manual_seed(3)
    batch = {f"{side}{key}": value for side in ("", "doc_", "neg_") for key, value in (
        ("input_ids", torch.randint(1, 50, (4, 6), generator=g)),
        ("attention_mask", torch.ones(4, 6, dtype=torch.long)))}
    run = SimpleNamespace(distill=DistillSpec(teacher="t", alpha=0.0, temperature=2.0,
                                              teacher_mode="online"),
                          task=SimpleNamespace(kind=SimpleNamespace(value="embedding"),
                                               embedding=EmbeddingSpec(loss="in_batch")))
    teacher = bi_encoder(0)
    with mock.patch("distill.objective.load_teacher", return_value=(teacher, None, [])):
        kd = Distiller(run, torch.device("cpu"))
    logp, labels = kd.similarity_logp(batch, gather=True)
    assert logp.shape == (4, 8) and labels.tolist() == [0, 1, 2, 3]  # 4 positives + 4 negatives
    with torch.no_grad():
        same = teacher(**batch)
        other = bi_encoder(1)(**batch)
    assert torch.allclose(same.logits.float().log_softmax(-1),
                          (2.0 * logp).log_softmax(-1), atol=1e-5)  # undo T, renormalise
    assert kd.loss(teacher, same, batch)[0].item() == pytest.approx(0.0, abs=1e-6)
    assert kd.loss(teacher, other, batch)[0].item() > 1e-3

    # offline: the teacher's embeddings of each row's texts, cached by the teacher pass and
    # collated as training collates them, give the online term (no teacher loaded here)
    import dataclasses

    import numpy as np

    from data.batches import collate
    from distill.teacher import TeacherOutputs

    rows = {"input_ids": _object_column(batch["input_ids"]),
            "doc_input_ids": _object_column(batch["doc_input_ids"]),
            "neg_input_ids": _object_column(batch["neg_input_ids"]),
            "labels": np.zeros(4, dtype=np.int64), "uid": np.arange(4),
            "length": np.array([6, 6, 6, 6])}
    with mock.patch("distill.teacher.load_teacher", return_value=(teacher, None, [])):
        cached = TeacherOutputs("t", "embedding", 2.0, 8, pad_id=0, batch_size=3)(rows)
    assert cached["teacher_query"].shape == (4, 16) and "teacher_logp" not in cached
    offline_run = dataclasses.replace(run.distill, teacher_mode="offline")
    with mock.patch("distill.objective.load_teacher") as loads:
        offline = Distiller(SimpleNamespace(distill=offline_run, task=run.task),
                            torch.device("cpu"))
    assert not loads.called
    offline_batch = collate(cached, pad_id=0)
    offline_logp, offline_labels = offline.similarity_logp(offline_batch, gather=True)
    assert torch.allclose(offline_logp, logp, atol=1e-5) and torch.equal(offline_labels, labels)
    assert offline.loss(teacher, other, offline_batch)[0].item() == pytest.approx(
        kd.loss(teacher, other, batch)[0].item(), abs=1e-5)  # the same student outputs
    without_negatives = {k: v for k, v in cached.items()
                         if not k.startswith(("neg_", "teacher_neg"))}
    assert offline.similarity_logp(collate(without_negatives, pad_id=0), True)[0].shape == (4, 4)


def test_a_scored_pair_students_kd_term_ranks_its_pairs_as_the_teachers_cosines_do():
    """STS students: α·their own pair loss + (1−α)·CoSENT with the teacher's cosines as the
    target order; the teacher's cosines from its cached embeddings equal the online ones."""
    from types import SimpleNamespace

    import numpy as np
    from transformers import BertConfig, BertModel

    from data.batches import collate
    from distill.config import DistillSpec
    from distill.objective import Distiller
    from distill.teacher import TeacherOutputs
    from trainers.embedding import BiEncoder
    from trainers.embedding_spec import EmbeddingSpec

    def bi_encoder(seed: int) -> BiEncoder:
        torch.manual_seed(seed)
        return BiEncoder(BertModel(BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32), add_pooling_layer=False), EmbeddingSpec(loss="cosent")).eval()

    g = torch.Generator().manual_seed(7)
    ids = {side: torch.randint(1, 50, (5, 6), generator=g) for side in ("", "doc_")}
    rows = {"input_ids": _object_column(ids[""]), "doc_input_ids": _object_column(ids["doc_"]),
            "labels": np.array([0.5, 4.0, 2.5, 1.0, 3.0]), "uid": np.arange(5),
            "length": np.full(5, 6)}
    batch = collate(rows, pad_id=0)
    teacher, student = bi_encoder(0), bi_encoder(1)
    task = SimpleNamespace(kind=SimpleNamespace(value="embedding"),
                           embedding=EmbeddingSpec(loss="cosent"))
    spec = DistillSpec(teacher="t", alpha=0.3, teacher_mode="online")
    with mock.patch("distill.objective.load_teacher", return_value=(teacher, None, [])):
        online = Distiller(SimpleNamespace(distill=spec, task=task), torch.device("cpu"))
    with mock.patch("distill.teacher.load_teacher", return_value=(teacher, None, [])):
        cached = TeacherOutputs("t", "embedding", 2.0, 8, pad_id=0)(rows)
    offline = Distiller(SimpleNamespace(distill=dataclasses.replace(spec, teacher_mode="offline"),
                                        task=task), torch.device("cpu"))
    out = student(**batch)
    with torch.no_grad():
        teacher_cos = teacher(**batch).logits
    pairs_by_hand = [20.0 * (out.logits[j] - out.logits[i]) for i in range(5) for j in range(5)
                     if teacher_cos[i] > teacher_cos[j]]  # ordered against the teacher
    by_hand = 0.3 * out.loss + 0.7 * torch.log(1 + torch.exp(torch.stack(pairs_by_hand)).sum())
    for kd, inputs in ((online, batch), (offline, collate(cached, pad_id=0))):
        loss, parts = kd.loss(student, out, inputs)
        assert loss.item() == pytest.approx(by_hand.item(), abs=1e-6)
        assert parts["kd"] > 0
    as_teacher = online.loss(teacher, teacher(**batch), batch)[1]["kd"]
    assert as_teacher < parts["kd"]  # the teacher's own order: no pair ranked against it


def _object_column(ids: torch.Tensor):
    import numpy as np

    column = np.empty(len(ids), dtype=object)
    column[:] = [row.numpy() for row in ids]
    return column
