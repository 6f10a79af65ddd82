"""task=sft end to end on real E2E rows with a tiny random Llama: chats are rendered, packed,
trained on their answers only, and the loss falls; the answers' perplexity is reported."""

from __future__ import annotations

import pytest

from tests.conftest import FAST, compose_run, logged, needs_shared
from tests.test_chat import CHATML

pytestmark = [pytest.mark.usefixtures("ray_session"), needs_shared]


def test_sft_on_e2e_rows_packs_trains_on_answers_and_counts_what_it_cut(tmp_path):
    from trainers.train import train

    run = compose_run(tmp_path, [*FAST, "task=sft", "model=tiny_llama", "data=e2e_nlg",
                                 "data.max_examples=300", "trainer.max_steps=8",
                                 "task.max_length=256", "optim.lr=1e-2", "run_name=sft"])
    run.task.chat_template = CHATML  # MiniLM's tokenizer has none; SmolLM2's has its own
    summary = train(run)
    losses = [r["train/loss"] for r in logged(summary["run_dir"]) if "train/loss" in r]
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3]), losses
    assert summary["metrics"]["val/perplexity"] > 1
    import json
    from pathlib import Path

    meta = json.loads((Path(summary["run_dir"]) / "run_meta.json").read_text())
    train_split = meta["dataset"]["splits"]["train"]
    assert train_split["rows"] <= 300 and meta["train_rows"] < train_split["rows"]  # packed
    assert "truncated" in json.dumps(train_split)
