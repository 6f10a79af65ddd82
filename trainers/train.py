"""The ``train`` job: read the data, tokenise it, run the shared loop on Ray Train, export.

The driver turns config into typed objects and Ray Datasets, fails early on bad input, then
hands workers a plain ``TrainConfig``. Results land in ``runs/<run_name>/`` in every mode.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.check import check_dataset_splits, summary_line
from data.local import to_ray
from data.pipeline import build_splits
from data.read import driver_reads_all
from data.slots import unseen_line
from data.tokenize import tokenize_splits, tokenizes_here
from data.truncation import count_truncation, count_truncation_raw
from trainers.checkpoint import (
    checkpoint_name,
    checkpoint_step,
    latest_checkpoint,
    scan,
)
from trainers.cluster_config import ClusterMode
from trainers.config import TaskKind, TrainConfig, config_dict, single_locations
from trainers.console_logs import announce_no_ray
from trainers.data_loss import due_per_epoch
from trainers.embedding import write_sentence_transformers_layout
from trainers.identity import data_digest, read_json, refuse_if_changed, run_identity
from trainers.loop import train_loop
from trainers.metadata import append_index, run_metadata
from trainers.models import (
    check_model,
    import_loop_libraries,
    load_tokenizer,
    load_trained,
    tokenizer_location,
)
from trainers.objective import ObjectiveFactory, task_loss
from trainers.quantize import merge_full_precision
from trainers.report import write_report
from trainers.scaling import (
    bounded_start,
    check_placement,
    check_strategy,
    ensure_ray,
    ray_not_needed,
    scaling_config,
    unplaced_workers,
    without_ray,
)
from trainers.stop import received, stop_flag, stopped
from trainers.storage import Store, run_store, upload_written
from trainers.tracking import METRICS_FILE, upload_artifacts

EXPORTED = ("adapter", "tokenizer", "label_map.json")


@dataclass
class Prepared:
    """What every seed of one configuration shares: data read, checked and tokenised once."""

    splits: Any
    datasets: dict[str, Any]
    train_rows: int
    data_check: dict[str, Any]
    # rows (LM: blocks) each evaluation split must give; the loop counts any shortfall
    eval_rows: dict[str, int] = field(default_factory=dict)
    # rows joined to the train split beyond the data's own (distillation: KD copies, answered
    # transfer prompts), with their counts: run_meta.json and report.md say where they came from
    added: dict[str, Any] = field(default_factory=dict)


def needs_no_ray(run: TrainConfig) -> bool:
    """A local run whose every file this process reads (data/local.py): Ray would only hold
    its rows, and starting it costs ~4.5 s of a 2-core machine before the first step. A Ray
    already running (a notebook's, the test session's) is used as before."""
    return run.cluster.mode == ClusterMode.local and not run.cluster.address and \
        ray_not_needed(driver_reads_all(run.data))


def prepare(run: TrainConfig, ray_free: bool = False) -> Prepared:
    """Start Ray (unless ``ray_free``: :func:`needs_no_ray`), check model and placement, read,
    split, check and tokenise the data."""
    # while Ray starts (3–10 s, mostly waiting on its processes): load-check the model and,
    # when the loop runs in this process, import its libraries (first step ~5 s sooner)
    with ThreadPoolExecutor(1) as pool:
        model_ok = pool.submit(check_model, run.model)
        if run.cluster.mode == ClusterMode.local:
            pool.submit(import_loop_libraries, run.peft.method)
        if not ray_free:
            ensure_ray(run.cluster)
        model_ok.result()
    check_placement(run.cluster)
    check_strategy(run.cluster, run.trainer.strategy.value)
    task = run.task.data_task  # "sft" for chats (task=sft), else the task kind
    chat = {"chat_template": run.task.chat_template,
            "train_on_prompt": run.data.chat.train_on_prompt}
    splits = build_splits(run.data, task)
    here = tokenizes_here(splits.datasets, run.data.materialize, run.data.driver_rows)
    if ray_free and not here:  # more rows than this process tokenises: Ray's actors do
        ensure_ray(run.cluster)
        splits.datasets = {name: to_ray(ds) for name, ds in splits.datasets.items()}
    elif ray_free:
        announce_no_ray()
    datasets = tokenize_splits(
        splits.datasets, tokenizer_location(run.model), task, run.task.max_length, splits.labels,
        run.task.pack, run.data.tokenize_actors, run.data.materialize, run.data.task_rows,
        **chat, driver_rows=run.data.driver_rows)
    if task != "causal_lm" or not run.task.pack:  # packed text blocks lose no token
        if run.data.materialize:
            counted = count_truncation(datasets, here)
        else:
            counted = count_truncation_raw(
                splits.datasets, tokenizer_location(run.model), task, run.task.max_length,
                splits.labels, run.task.pack, **chat)
        for split, (examples, tokens) in counted.items():
            splits.summaries[split].truncated_examples = examples
            splits.summaries[split].truncated_tokens = tokens
    if task in ("causal_lm", "sft"):  # packing changes the row count: count rows made
        rows = {name: ds.count() for name, ds in datasets.items()}
    else:
        rows = {name: summary.rows for name, summary in splits.summaries.items()}
    checked = summary_line(check_dataset_splits(
        splits, fast=True, slot_pattern=run.data.slot_pattern,
        delexicalized=run.data.chat.delexicalize))
    for split, unseen in checked.get("unseen_slots", {}).items():
        if unseen["prompts"]:  # values the model will meet first at test time: say so now
            print(f"warning: {unseen_line(split, unseen)}", flush=True)
    return Prepared(splits, datasets, rows["train"], checked,
                    {name: n for name, n in rows.items() if name != "train"})


def train(run: TrainConfig) -> dict[str, Any]:
    """Run one training job end to end (a seed group, ``seeds=[...]``, is tuning/seeds.py)."""
    if run.seeds:
        raise ValueError("a seed group (seeds=[...]) trains with tuning.seeds.train_group")
    if scan(Path(run.run_dir))[0]:  # a changed config is refused before any data is read
        _check_resume_config(Path(run.run_dir), run, None)
    if not needs_no_ray(run):
        return fit(run, prepare(run))
    with without_ray():
        return fit(run, prepare(run, ray_free=True))


def fit(run: TrainConfig, prep: Prepared,
        callbacks: list[Any] | None = None, stop_key: str | None = None,
        objective: ObjectiveFactory = task_loss) -> dict[str, Any]:
    """Train one seed on prepared data, export its artefacts and return its summary.

    ``objective``: what the loop minimises (trainers/objective.py); a student passes KD's.
    ``callbacks``: Ray Train callbacks, called in local mode too (a sweep trial passes the
    one that hands its reports to Tune).
    ``stop_key``: the stop flag of the driver that started this fit in a Ray task (a seed
    group's concurrent runs); by default the fit's own.
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig  # slow import

    splits, datasets, train_rows = prep.splits, prep.datasets, prep.train_rows
    run_dir = Path(run.run_dir)
    if received():  # a stop asked for before this run began (a seed group's next member)
        stopped(str(run_dir))
        return {"run_dir": str(run_dir), "metrics": {}, "status": "stopped"}
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    store = run_store(run.paths.store, run.run_dir, run.paths.runs)
    resume_from, half_written = _resume_candidates(run_dir, store)
    if resume_from is not None:
        _check_resume_config(run_dir, run, splits.fingerprint)
    config = config_dict(run)  # what config.json and W&B record
    meta = run_metadata(run, splits)
    meta["train_rows"] = train_rows  # per epoch; more than the split's with KD copies
    world = 1 if run.cluster.mode == ClusterMode.local else run.cluster.num_workers
    meta["train_split"] = {"workers": world,  # Ray Train's equal split: the rest sits out
                           "rows_left_out_per_epoch": train_rows - due_per_epoch(train_rows,
                                                                                 world)}
    meta["data_check"] = prep.data_check
    if prep.added:
        meta["train_rows_added"] = prep.added
    (run_dir / "config.json").write_text(json.dumps(config, indent=1, default=str))
    (run_dir / "run_meta.json").write_text(json.dumps(meta, indent=1, default=str))
    if store is not None:  # a resume on another machine checks its config against this one
        upload_written(run_dir, store, started)
    if half_written:  # a kill during a save: said once, never resumed from
        print(f"ignoring half-written checkpoint(s) {', '.join(half_written)} in "
              f"{store.shown if store else run_dir}; resuming from "
              f"{checkpoint_name(resume_from) if resume_from else 'the start'}", file=sys.stderr)
    loop_cfg = {
        "run": run, "labels": splits.labels, "train_rows": train_rows,
        "eval_rows": prep.eval_rows,
        "local_mode": run.cluster.mode == ClusterMode.local,
        "has_validation": "validation" in datasets, "has_test": "test" in datasets,
        "tracked_config": config, "config_group": meta["config_group"],
        "objective": objective,
    }
    # SIGTERM / Ctrl-C: checkpoint at the next step, then stop
    with stop_flag() as key, bounded_start(run.cluster) as start_retries:
        loop_cfg["stop_key"] = stop_key or key
        trainer = _trainer_class()(
            train_loop, train_loop_config=loop_cfg, scaling_config=scaling_config(run.cluster),
            datasets=datasets, dataset_config=DataConfig(datasets_to_split=["train"]),
            run_config=RunConfig(
                name=run_dir.name, **_ray_storage(run_dir, store),
                failure_config=FailureConfig(max_failures=run.trainer.max_failures,
                                             controller_failure_limit=start_retries),
                checkpoint_config=CheckpointConfig(num_to_keep=run.trainer.keep_checkpoints),
                callbacks=callbacks,
            ),
        )
        try:
            result = trainer.fit()
        except Exception as exc:
            if (unplaced := unplaced_workers(exc, run.cluster)) is not None:
                raise unplaced from None
            raise
    metrics = {k: v for k, v in (result.metrics or {}).items() if not k.startswith("_")}
    summary: dict[str, Any] = {"run_dir": str(run_dir), "metrics": metrics,
                               "resumed_from": str(run_dir / checkpoint_name(resume_from))
                               if resume_from is not None else None}
    if store is not None:
        summary["store"] = store.shown
    if metrics.get("preempted"):
        summary["status"] = "stopped"
        if received():
            stopped(str(run_dir))
        return summary
    final_ckpt = _final_checkpoint(run_dir, store)
    summary["checkpoint"] = str(final_ckpt)
    for name in EXPORTED:
        src, dst = final_ckpt / name, run_dir / name
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        summary[name] = str(dst)
    if run.task.kind == TaskKind.embedding and run.peft.method.value == "none":
        # a full fine-tune's adapter/ is the whole encoder: with its tokenizer, a
        # sentence-transformers model (a LoRA run's is merged/, peft.merged_export)
        tokenizer_dir = run_dir / "tokenizer"
        for item in tokenizer_dir.iterdir() if tokenizer_dir.is_dir() else ():
            shutil.copy2(item, run_dir / "adapter" / item.name)
        write_sentence_transformers_layout(run_dir / "adapter", run.task.max_length)
    if run.peft.merged_export and run.peft.method.value != "none":
        summary["merged"] = str(export_merged(run, run_dir))
    metrics_out = {k: v for k, v in metrics.items() if k != "already_done"}
    (run_dir / "metrics.json").write_text(json.dumps(metrics_out, indent=1, default=str))
    meta["final_metrics"] = metrics_out
    (run_dir / "run_meta.json").write_text(json.dumps(meta, indent=1, default=str))
    summary["report"] = str(write_report(run, meta, metrics_out, run_dir))
    summary["status"] = "done"
    if store is not None:  # the run's artefacts beside its checkpoints in the store
        upload_written(run_dir, store, started)
    if metrics.get("already_done"):  # finished earlier: indexed and uploaded then
        return summary
    append_index(run, meta, metrics_out)
    if run.tracking.wandb and run.tracking.log_artifacts:
        upload_artifacts(run, [run_dir / "adapter", run_dir / "report.md",
                               run_dir / "metrics.json"], meta["config_group"], config)
    return summary


def _trainer_class() -> Any:
    """TorchTrainer without Ray Train's Ctrl-C handler (Ray 2.60 aborts the run on SIGINT and
    loses the work since the last checkpoint; trainers/stop.py checkpoints first), whose local
    mode tells the run's callbacks of every report as Train's controller does (Ray 2.60's local
    mode ignores them; a sweep trial trained in its own Tune actor reports through one)."""
    from ray.train.torch import TorchTrainer  # seconds to import: only when a run starts

    class Trainer(TorchTrainer):
        def _register_sigint_handler(self, controller: Any) -> None:
            pass

        def _initialize_and_run_local_controller(self, train_func: Any) -> Any:
            callbacks, context = list(self.run_config.callbacks or []), self.train_run_context

            def reporting() -> Any:
                from ray.train.v2._internal.execution.train_fn_utils import get_train_fn_utils

                utils = get_train_fn_utils()  # the local controller's, set before this runs
                report = utils.report

                def report_and_tell(metrics: dict[str, Any], checkpoint: Any = None,
                                    **kwargs: Any) -> None:
                    report(metrics, checkpoint=checkpoint, **kwargs)
                    for callback in callbacks:
                        callback.after_report(run_context=context, metrics=[metrics],
                                              checkpoint=checkpoint)

                utils.report = report_and_tell
                return train_func()

            return super()._initialize_and_run_local_controller(
                reporting if callbacks else train_func)

    return Trainer


def _resume_candidates(run_dir: Path, store: Store | None) -> tuple[int | None, list[str]]:
    """(step of the newest complete checkpoint on disk or in the store, half-written names
    newer than it). A store's config.json comes down first: the resume check needs it."""
    complete, half = scan(run_dir)
    best = checkpoint_step(complete[-1]) if complete else None
    partial = [p.name for p in half]
    if store is not None:
        remote, remote_partial = store.checkpoints()
        if remote and (best is None or checkpoint_step(remote[-1]) > best):
            best = checkpoint_step(remote[-1])
        partial += remote_partial
        saved = store.read_text("config.json")
        if saved is not None and not (run_dir / "config.json").exists():
            (run_dir / "config.json").write_text(saved)
    return best, sorted({p for p in partial if best is None or checkpoint_step(p) > best},
                        key=checkpoint_step)


def _ray_storage(run_dir: Path, store: Store | None) -> dict[str, Any]:
    """Where Ray Train persists checkpoints: the store when there is one (any node can
    upload), else the run directory's parent on this filesystem."""
    if store is None:
        return {"storage_path": str(run_dir.parent.resolve())}
    return {"storage_path": store.path.rsplit("/", 1)[0], "storage_filesystem": store.fs}


def _final_checkpoint(run_dir: Path, store: Store | None) -> Path:
    """The run's last checkpoint on this machine: fetched from the store when a worker on
    another node wrote it (with the metrics log rank 0 kept there)."""
    local = latest_checkpoint(run_dir)
    if store is not None:
        remote = store.checkpoints()[0]
        if remote and (local is None or checkpoint_step(remote[-1]) > checkpoint_step(local)):
            local = run_dir / remote[-1]
            store.download_dir(remote[-1], local)
        log = local / METRICS_FILE
        if log.is_file() and not (run_dir / METRICS_FILE).is_file():
            shutil.copy2(log, run_dir / METRICS_FILE)
    return local


def saved_run_identity(run_dir: Path) -> dict[str, Any] | None:
    """The identity of the run saved in ``run_dir`` (None: nothing saved there yet)."""
    saved = read_json(run_dir / "config.json")
    if saved is None:
        return None
    meta = read_json(run_dir / "run_meta.json") or {}
    code = (saved.get("paths") or {}).get("code")
    return run_identity(single_locations(saved),  # saved by this version or an older one
                        data_digest(meta.get("dataset", {}).get("fingerprint"), code),
                        code_relative=True)


def _check_resume_config(run_dir: Path, run: TrainConfig, fingerprint: dict[str, Any]) -> None:
    """Refuse to continue a run's checkpoint under a configuration (or data) that changes what
    it trains: the weights would load (or fail to load) and the result would be neither run.
    Where the code lives is not part of it (a Ray job's working_dir moves with each edit)."""
    refuse_if_changed(run_dir, "checkpoints", saved_run_identity(run_dir),
                      run_identity(config_dict(run), data_digest(fingerprint, run.paths.code),
                                   code_relative=True))


def export_merged(run: TrainConfig, run_dir: Path) -> Path:
    """Merge the adapter into full-precision base weights and save a standalone model (a
    QLoRA base is dequantised first: the adapter was trained against the 4-bit weights)."""
    tokenizer = load_tokenizer(run.model)
    merged = merge_full_precision(load_trained(run_dir)[0])
    out = run_dir / "merged"
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if run.task.kind == TaskKind.embedding:  # also loads as SentenceTransformer(out)
        write_sentence_transformers_layout(out, run.task.max_length)
    return out
