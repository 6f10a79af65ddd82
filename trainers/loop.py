"""The one training loop every job kind shares (LoRA, DoRA, full fine-tuning, KD students).

A plain function, as in Ray's examples: Ray Train runs it in each worker (or in-process in
local mode). Task heads differ; the loop does not. Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from data.batches import bucketed_batches, budget_batches, collate, model_inputs
from data.errors import ConfigError
from trainers.checkpoint import (
    load_state,
    persist_local,
    persist_store,
    resume_point,
    rng_state,
    save_state,
    stop_when_disk_full,
)
from trainers.collective import all_reduce, distributed_checks, gather, unwrap
from trainers.config import TaskKind, TrainConfig
from trainers.data_loss import eval_rows_lost, rows_per_rank, train_rows_lost
from trainers.lm_head import labelled_head_applies, labelled_lm_loss
from trainers.manifest import Progress, checkpoint_name
from trainers.models import (
    apply_peft,
    build_base_model,
    load_tokenizer,
    score_range,
    trainable_summary,
)
from trainers.objective import task_loss
from trainers.progress import ProgressLine
from trainers.schedule import (
    build_optimizer,
    build_scheduler,
    optimizer_step,
    plan_steps,
)
from trainers.stop import StopPoll
from trainers.storage import run_store
from trainers.tasks import EvalState, accumulate, score
from trainers.tracking import METRICS_FILE, open_tracker, restore_metrics_log
from trainers.trainer_config import Strategy

FINAL_METRICS = "final_metrics.json"
PLACEMENT_GROUP_KEY = "_placement_group"


def _placement_group_id() -> str | None:
    from ray.util import get_current_placement_group  # in the worker; importers stay Ray-free

    pg = get_current_placement_group()
    return pg.id.hex() if pg is not None else None


def _device(run: TrainConfig, world: int) -> torch.device:
    if world > 1 or run.cluster.mode.value == "ray":
        import ray.train.torch  # in the worker; importers stay Ray-free

        return ray.train.torch.get_device()
    want_gpu = run.cluster.use_gpu is not False and torch.cuda.is_available()
    return torch.device("cuda" if want_gpu else "cpu")


def _multiple(device: torch.device) -> int:
    return 8 if device.type == "cuda" else 1


def evaluate(net: Any, dataset: Any, run: TrainConfig, labels: list[str], rank: int, world: int,
             device: torch.device, pad_id: int, split: str = "validation",
             expected: int | None = None) -> dict[str, float]:
    """Score one split; each rank takes every world-th batch, results are merged exactly.

    ``expected``: the rows the split had at the start; a difference is an error, or with
    ``data.on_error=skip`` a ``rows_lost`` entry in the metrics (data/data_loss.py)."""
    model = unwrap(net)
    model.eval()
    state = EvalState()
    use_bf16 = device.type == "cuda" and run.trainer.bf16
    scored = 0
    labelled_head = run.task.kind == TaskKind.causal_lm and labelled_head_applies(
        model, run.trainer.strategy.value)
    with torch.no_grad():
        batches = bucketed_batches(dataset, run.trainer.eval_batch_size, 8, 0, 0, shuffle=False)
        for i, rows in enumerate(batches):
            if i % world != rank:
                continue
            scored += len(rows["uid"])
            batch = {k: v.to(device) for k, v in collate(rows, pad_id, _multiple(device)).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                if labelled_head:  # no logits for the unscored positions (lm_head.py)
                    loss, logits = labelled_lm_loss(model, model_inputs(batch),
                                                    batch["labels"]), None
                    embedded = None
                else:
                    out = model(**model_inputs(batch), labels=batch["labels"])
                    loss, logits = out.loss, out.logits.float()
                    embedded = out.hidden_states if run.task.kind == TaskKind.embedding else None
            accumulate(state, run.task.kind, batch, loss.float(), logits, embedded)
    model.train()
    lost = eval_rows_lost(run.data.on_error.value, split, scored, expected, world, rank)
    merged = EvalState()
    for part in gather(state, world):
        merged.merge(part)
    return {**score(merged, run.task.kind, labels), **({"rows_lost": lost} if lost else {})}


class Publisher:
    """Report metrics from every rank; rank 0 adds a checkpoint. Same layout in both modes."""

    def __init__(self, run: TrainConfig, rank: int, world: int, local_mode: bool, tokenizer: Any,
                 labels: list[str], store: Any = None) -> None:
        self.run, self.rank, self.world, self.local_mode = run, rank, world, local_mode
        self.tokenizer, self.labels = tokenizer, labels
        self.placement_group = _placement_group_id() if not local_mode else None
        self.store = store if rank == 0 else None  # paths.store: where checkpoints also go

    def __call__(self, metrics: dict[str, Any], state: tuple | None, progress: Progress,
                 extra_files: dict[str, str] | None = None) -> None:
        import ray.train  # in the worker; importers stay Ray-free

        name = checkpoint_name(progress.step)
        if self.placement_group:  # lets a sweep free the workers of a trial it stops
            metrics = {**metrics, PLACEMENT_GROUP_KEY: self.placement_group}
        rng_by_rank = gather(rng_state(), self.world) if state is not None else []
        run_dir = Path(self.run.run_dir)
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as writing:
            checkpoint = None
            if state is not None:  # a full disk: one line naming the resume point
                writing.enter_context(stop_when_disk_full(run_dir, progress.step, Path(tmp)))
            if self.rank == 0 and state is not None:
                metrics_log = run_dir / METRICS_FILE
                if self.store is not None and metrics_log.is_file():  # for a resume elsewhere
                    extra_files = {**(extra_files or {}), METRICS_FILE: metrics_log.read_text()}
                save_state(Path(tmp), *state, progress, self.tokenizer, self.labels, rng_by_rank,
                           extra_files)
                if self.local_mode:
                    final = persist_local(Path(tmp), run_dir, progress.step,
                                          self.run.trainer.keep_checkpoints)
                    if self.store is not None:
                        persist_store(final, self.store, self.run.trainer.keep_checkpoints)
                else:
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
            if state is not None and not self.local_mode:
                ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
            else:
                ray.train.report(metrics)


def _release_on_error(loop: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """A loop that fails (a full disk, a bad row mid-stream) lets go of its frames at once: the
    Ray Data iterators they hold close while Ray runs, not when the garbage collector gets to
    them after the error line (their shutdown logs would print below it)."""
    @functools.wraps(loop)
    def run(loop_cfg: dict[str, Any]) -> None:
        try:
            loop(loop_cfg)
        except BaseException as exc:
            traceback.clear_frames(exc.__traceback__)
            raise
    return run


@_release_on_error
def train_loop(loop_cfg: dict[str, Any]) -> None:
    """Ray Train worker function: restore → train with periodic eval/checkpoints → final eval."""
    import ray.train  # in the worker; importers stay Ray-free
    from transformers import set_seed

    run: TrainConfig = loop_cfg["run"]
    labels: list[str] = loop_cfg["labels"]
    local_mode: bool = loop_cfg["local_mode"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = _device(run, world)
    task = run.task.kind

    set_seed(run.seed)  # adapter/head init, dropout and data order all follow the one seed
    if run.cluster.threads:  # a machine shared with another job (cluster.threads)
        torch.set_num_threads(run.cluster.threads)
    tokenizer = load_tokenizer(run.model)
    base = build_base_model(run.model, task, labels, tokenizer, run.task.embedding,
                            score_range(run))
    net = apply_peft(base, run.peft, task, device)
    objective = loop_cfg.get("objective", task_loss)(run, net, device)  # before the optimizer
    sizes = trainable_summary(net)
    micro_per_epoch, total_steps = plan_steps(run, loop_cfg["train_rows"], world)
    epoch_rows_due = rows_per_rank(loop_cfg["train_rows"], world)
    optimizer = build_optimizer(net, run)
    scheduler = build_scheduler(optimizer, run, total_steps, epoch_rows_due)
    by_examples = math.isinf(total_steps)  # token budgets: the schedule counts examples
    clock: float | None = None

    progress, final_metrics = Progress(seed=run.seed), None
    store = run_store(run.paths.store, run.run_dir, run.paths.runs)
    with resume_point(Path(run.run_dir), store) as resume:
        if resume is not None:
            progress = load_state(resume, net, optimizer, scheduler, rank)
            final = resume / FINAL_METRICS
            final_metrics = json.loads(final.read_text()) if final.exists() else None
            if rank == 0:
                restore_metrics_log(Path(run.run_dir), resume)
    if progress.seed != run.seed:
        raise ConfigError("seed", f"run '{run.run_name}' was started with seed {progress.seed}, "
                          f"not {run.seed}", "use another run_name for another seed")
    if progress.done and final_metrics is not None:  # finished earlier: nothing to redo
        ray.train.report({**final_metrics, "already_done": True})
        return

    if world > 1:
        strategy = "fsdp" if run.trainer.strategy == Strategy.fsdp else "ddp"
        net = ray.train.torch.prepare_model(net, parallel_strategy=strategy)
    else:
        net = net.to(device)
    net.train()
    pad_id = tokenizer.pad_token_id
    publish = Publisher(run, rank, world, local_mode, tokenizer, labels, store)
    tracker = open_tracker(run, rank, progress.step, loop_cfg.get("tracked_config", {}),
                           loop_cfg.get("config_group"))
    line = ProgressLine(None if by_examples else total_steps, progress.step, enabled=rank == 0)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation") if loop_cfg["has_validation"] else None
    use_bf16 = device.type == "cuda" and run.trainer.bf16
    accum = run.trainer.grad_accum
    seen_uids: list[int] = []
    window = {"loss": 0.0, "n": 0, "samples": 0, "tokens": 0, "real_tokens": 0, "wait": 0.0,
              "t0": time.perf_counter()}
    stopped_early = False

    def state() -> tuple:
        return (net, optimizer, scheduler)

    rows_lost = rows_extra = 0
    eval_rows = loop_cfg.get("eval_rows", {})
    poll = StopPoll(loop_cfg.get("stop_key"), rank, world, local_mode)
    while progress.epoch < run.trainer.epochs and progress.step < total_steps:
        micro = 0
        pending = 0
        epoch_rows = 0
        batches = _train_batches(run, train_shard, progress.epoch, world)
        fetch_start = time.perf_counter()
        for rows, position in batches:
            epoch_rows += len(rows["uid"])
            if micro < progress.micro_in_epoch:  # resume: skip what this epoch already consumed
                micro += 1
                fetch_start = time.perf_counter()
                continue
            tensors = collate(rows, pad_id, _multiple(device))
            batch = {k: v.to(device, non_blocking=True) for k, v in tensors.items()}
            window["wait"] += time.perf_counter() - fetch_start
            if progress.epoch == 0:
                seen_uids.extend(batch["uid"].tolist())
            boundary = (micro + 1) % accum == 0 or micro + 1 == micro_per_epoch or (
                position is not None and position >= epoch_rows_due)  # a budget epoch's last
            sync = contextlib.nullcontext() if boundary or world == 1 else net.no_sync()
            with sync, torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = objective.loss(net, objective.forward(net, batch), batch)[0]
                (loss / accum).backward()
            micro += 1
            pending += 1
            progress.micro_in_epoch = micro
            progress.samples += len(batch["input_ids"])
            if by_examples:  # the same on every rank (data/batches.py budget_batches)
                clock = progress.epoch * epoch_rows_due + position
            window["loss"] += float(loss.detach())
            window["n"] += 1
            window["samples"] += len(batch["input_ids"])
            for key in ("", "doc_", "neg_"):  # embedding pairs: every side is model work
                if f"{key}input_ids" in batch:
                    window["tokens"] += batch[f"{key}input_ids"].numel()
                    window["real_tokens"] += int(batch[f"{key}attention_mask"].sum())
            if boundary:
                optimizer_step(net, optimizer, scheduler, run, clock)
                pending = 0
                progress.step += 1
                stopped_early = _after_step(run, progress, total_steps, window, tracker, line,
                                            publish, state, evaluate_val=lambda: evaluate(
                                                net, val_shard, run, labels, rank, world, device,
                                                pad_id, "validation", eval_rows.get("validation")
                                            ) if val_shard is not None else {},
                                            world=world, scheduler=scheduler, signals=poll())
                if stopped_early or (progress.step >= total_steps
                                     and (micro_per_epoch is None or micro < micro_per_epoch)):
                    break
            fetch_start = time.perf_counter()
        else:  # the epoch ran to its end
            if pending:  # its micro-batch count was not a multiple of grad_accum
                optimizer_step(net, optimizer, scheduler, run, clock)
                progress.step += 1
            lost = train_rows_lost(run.data.on_error.value, progress.epoch, epoch_rows,
                                   loop_cfg["train_rows"], world, rank)
            rows_lost, rows_extra = rows_lost + max(lost, 0), rows_extra + max(-lost, 0)
            progress.epoch += 1
            progress.micro_in_epoch = 0
        if stopped_early:
            break

    line.close()
    if stopped_early:
        tracker.finish()
        return
    final: dict[str, Any] = {"step": progress.step, "epoch": progress.epoch, **sizes}
    if rows_lost:
        final["data/rows_lost"] = rows_lost
    if rows_extra:
        final["data/rows_extra"] = rows_extra
    for split, prefix in (("validation", "val"), ("test", "test")):
        shard = val_shard if split == "validation" else (
            ray.train.get_dataset_shard("test") if loop_cfg["has_test"] else None)
        if shard is None:
            continue
        scored = evaluate(net, shard, run, labels, rank, world, device, pad_id, split,
                          eval_rows.get(split))
        if "rows_lost" in scored:
            final[f"data/{split}_rows_lost"] = scored.pop("rows_lost")
        final.update({f"{prefix}/{k}": v for k, v in scored.items()})
    final.update(distributed_checks(net, seen_uids, world))
    progress.done = True
    tracker.log({k: v for k, v in final.items() if isinstance(v, (int, float))}, progress.step)
    tracker.summary(final)
    tracker.finish()
    publish(final, state(), progress, extra_files={FINAL_METRICS: json.dumps(final)})


def _train_batches(run: TrainConfig, shard: Any, epoch: int, world: int) -> Any:
    """(rows, position) per micro-batch: ``batch_size`` rows, or a token budget's worth with
    the position a schedule over examples reads (None for fixed batches)."""
    trainer = run.trainer
    if trainer.batch_tokens is None:
        return ((rows, None) for rows in bucketed_batches(
            shard, trainer.batch_size, trainer.bucket_batches, run.seed, epoch))
    agree = (lambda count: int(all_reduce([count], world, "max")[0])) if world > 1 else None
    return budget_batches(shard, trainer.batch_size, trainer.bucket_batches,
                          trainer.batch_tokens, run.seed, epoch, agree)


def _after_step(run: TrainConfig, progress: Progress, total_steps: int, window: dict,
                tracker: Any, line: ProgressLine, publish: Publisher, state: Any,
                evaluate_val: Any, world: int, scheduler: Any, signals: tuple[bool, bool]
                ) -> bool:
    """Log, evaluate and checkpoint on the configured rhythm; True when told to stop early.

    ``signals``: (a stop was asked for: checkpoint and stop; a node is being drained:
    checkpoint now and go on)."""
    step = progress.step
    if step % run.trainer.log_every == 0 or step == total_steps:
        elapsed = time.perf_counter() - window["t0"]
        loss, samples, tokens, real = all_reduce(  # ranks' batches differ under token budgets
            [window["loss"] / max(window["n"], 1), window["samples"], window["tokens"],
             window["real_tokens"]], world)
        elapsed = max(elapsed, 1e-9)
        metrics = {"train/loss": loss / world, "train/lr": scheduler.get_last_lr()[0],
                   "train/samples_per_s": samples / elapsed,
                   "train/tokens_per_s": tokens / elapsed,
                   "train/real_tokens_per_s": real / elapsed,
                   # per micro-batch and rank: what a token budget (trainer.batch_tokens) makes
                   "train/rows_per_batch": samples / max(window["n"] * world, 1),
                   "train/tokens_per_batch": tokens / max(window["n"] * world, 1),
                   "train/data_wait_frac": window["wait"] / elapsed,
                   "epoch": progress.epoch}
        tracker.log(metrics, step)
        line.update(step, metrics)
        window.update(loss=0.0, n=0, samples=0, tokens=0, real_tokens=0, wait=0.0,
                      t0=time.perf_counter())
    want_eval = run.trainer.eval_every and step % run.trainer.eval_every == 0 and step < total_steps
    want_ckpt = (signals[1] or run.trainer.ckpt_every and step % run.trainer.ckpt_every == 0) \
        and step < total_steps
    stop = signals[0] or (run.trainer.stop_after_steps is not None
                          and step >= run.trainer.stop_after_steps)
    if want_eval or want_ckpt or stop:
        metrics = {"step": step, "epoch": progress.epoch}
        if want_eval:
            metrics.update({f"val/{k}": v for k, v in evaluate_val().items()})
            tracker.log({k: v for k, v in metrics.items() if k.startswith("val/")}, step)
        if stop:
            metrics["preempted"] = True
        publish(metrics, state() if (want_ckpt or stop) else None, progress)
        window["t0"] = time.perf_counter()
    return stop and step < total_steps
