"""Each task type on real data (../shared/datasets), a few steps: loss falls, metric computed."""

from __future__ import annotations

import statistics

import pytest

from tests.conftest import FAST, logged, needs_shared, train_run

pytestmark = [pytest.mark.usefixtures("ray_session"), needs_shared]


def _losses(summary: dict) -> list[float]:
    return [r["train/loss"] for r in logged(summary["run_dir"]) if "train/loss" in r]


def _falls(losses: list[float]) -> bool:
    third = max(len(losses) // 3, 1)
    return statistics.mean(losses[-third:]) < statistics.mean(losses[:third])


@pytest.mark.parametrize("run, metric", [
    ("banking77_run", "val/macro_f1"),  # the session's runs, re-scored by test_evaluate
    ("wnut17_run", "val/entity_f1"),
    (["task=causal_lm", "model=tiny_gpt2", "peft=none", "data=tinyshakespeare",
      "data.max_examples=2000", "trainer.max_steps=12", "optim.lr=3e-3"], "val/perplexity"),
    (["task=causal_lm", "model=tiny_llama", "peft=dora", "data=tinyshakespeare",
      "data.max_examples=1000", "trainer.max_steps=6", "optim.lr=1e-2"], "val/perplexity"),
], ids=["seq_cls-banking77", "token_cls-wnut17", "causal_lm-gpt2-full", "causal_lm-llama-dora"])
def test_task_learns_on_real_data(request, tmp_path, run, metric):
    summary = (request.getfixturevalue(run) if isinstance(run, str)
               else train_run(tmp_path, [*FAST, *run]))
    losses = _losses(summary)
    assert len(losses) >= 6
    assert _falls(losses), losses
    assert metric in summary["metrics"] and summary["metrics"][metric] >= 0


def test_clinc150_and_agnews_configs_read_their_formats(tmp_path):
    from data.pipeline import build_splits
    from tests.conftest import compose_run

    run = compose_run(tmp_path, ["data=clinc150"])
    splits = build_splits(run.data, "seq_cls")
    assert splits.summaries["train"].rows == 15000 and len(splits.labels) == 150
    assert splits.summaries["validation"].rows == 3000
    run = compose_run(tmp_path, ["data=agnews_subset", "data.max_examples=50"])
    splits = build_splits(run.data, "seq_cls")
    assert set(splits.labels) <= {"World", "Sports", "Business", "Sci/Tech"}


def test_what_a_sweep_may_optimise_is_what_validation_reports():
    """tuning/space.py refuses sweep metrics outside REPORTED: every figure ``score`` gives
    (counts aside) must be in it, or a valid sweep would be refused."""
    import numpy as np

    from trainers.config import TaskKind
    from trainers.tasks import REPORTED, EvalState, score

    vec = np.ones(2)
    cases = [
        (TaskKind.seq_cls, EvalState(1.0, 2, [0, 1], [0, 0], [1, 2])),
        (TaskKind.token_cls, EvalState(1.0, 2, [[0, 1]], [[0, 1]], [1])),
        (TaskKind.causal_lm, EvalState(1.0, 2)),
        (TaskKind.embedding, EvalState(1.0, 2, [0, 1], [0, 1], [1, 2],
                                       pairs=[(1, vec, 2, vec), (3, vec, 4, -vec)])),
        (TaskKind.embedding, EvalState(1.0, 3, [0.5, 1.0, 2.0], [0.1, 0.3, 0.2], [1, 2, 3])),
        (TaskKind.rerank, EvalState(1.0, 2, [1, 1], [1, 0], [1, 2])),
    ]
    counts = {"examples", "tokens", "split_queries", "split_documents"}
    for kind, state in cases:
        reported = set(score(state, kind, ["O", "B-x"])) - counts
        assert reported <= set(REPORTED[kind]), (kind, reported - set(REPORTED[kind]))
    assert "split_ndcg@10" in score(cases[3][1], TaskKind.embedding, [])
