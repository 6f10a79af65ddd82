"""The ``evaluate`` job: batch inference through Ray Data, metrics with CIs, slices, baseline.

Writes ``runs/<run>/eval/<split>/``: predictions.parquet (id, text, gold, predicted,
probabilities; later comparisons pair on ``_src``), metrics.json, report.md with PNG plots.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from data.errors import ConfigError, DataError
from data.pipeline import build_splits
from data.read import driver_reads_all
from data.slots import find_slots
from data.tokenize import cut_and_order
from evaluation.baseline import BASELINE_DIR, baseline_predictions
from evaluation.config import EvaluateConfig, check_name
from evaluation.embedding_eval import evaluate_retrieval, evaluate_similarity
from evaluation.evaluate_tasks import (
    PredictTags,
    ScoreLM,
    lm_metrics,
    token_metrics,
    write_task_report,
)
from evaluation.gates import check_gates
from evaluation.generate import Generate, GenerateBase, finish_generation, group_prompts
from evaluation.inference import place_for_inference, score_split
from evaluation.outputs import (
    EVAL_DIR,
    data_config,
    data_identity,
    data_lost,
    generation_settings,
    is_current,
    output_dir,
    own_data,
    replaced_answers,
    rows_digest,
    weights_hash,
)
from evaluation.rerank_eval import check_retriever, evaluate_rerank
from evaluation.scoring import score_frame
from trainers.cluster_config import ClusterConfig
from trainers.config import TaskKind
from trainers.console_logs import announce_no_ray
from trainers.identity import digest, read_json, replaced_on_success
from trainers.models import load_run_config, load_trained
from trainers.scaling import ensure_ray, ray_not_needed, without_ray
from trainers.storage import local_run


class Predict:
    """Ray Data class UDF: the trained model loads once per actor, batches are length-sorted."""

    def __init__(self, run_dir: str, batch_size: int, threads: int = 1) -> None:
        self.model, self.tok, self.labels, run = load_trained(Path(run_dir))
        self.device = place_for_inference(self.model, threads)
        self.max_length = run.task.max_length
        self.batch_size = batch_size
        self.label_id = {name: i for i, name in enumerate(self.labels)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        texts = [str(t) for t in batch["text"]]
        # what truncation hides from it, and the texts by token count: batches pad least
        cut, order = cut_and_order(self.tok, texts, self.max_length)
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        n_tokens = np.zeros(len(texts), dtype=np.int32)
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tok([texts[i] for i in idx], truncation=True,
                               max_length=self.max_length, padding=True, return_tensors="pt")
                logits = self.model(input_ids=enc["input_ids"].to(self.device),
                                    attention_mask=enc["attention_mask"].to(self.device)).logits
                probs[idx] = torch.softmax(logits.float(), -1).cpu().numpy()
                n_tokens[idx] = enc["attention_mask"].sum(1).numpy()
        gold = []
        for label, src in zip(batch["label"], batch["_src"], strict=True):
            if str(label) not in self.label_id:
                raise DataError(str(src), f"label '{label}' was not seen in training",
                                "evaluate on data with the run's label set")
            gold.append(self.label_id[str(label)])
        out = {k: v for k, v in batch.items() if k in ("_src", "text") or k.startswith("meta_")}
        out.update(gold=np.array(gold), pred=probs.argmax(1), confidence=probs.max(1),
                   n_tokens=n_tokens, truncated=cut)
        out["probs"] = list(probs)
        return out


def _predict(cfg: EvaluateConfig, run_dir: Path, dataset: Any) -> tuple[pd.DataFrame, float]:
    gpus = 1 if torch.cuda.is_available() else 0
    start = time.perf_counter()
    frame = score_split(Predict, cfg, run_dir, dataset, cfg.batch_size * 32, num_gpus=gpus,
                        num_cpus=0 if gpus else 1)
    return frame, time.perf_counter() - start


def evaluate(cfg: EvaluateConfig, splits: Any = None, data_overrides: list[str] = (),
             reuse: bool = False, read: dict[tuple, Any] | None = None) -> dict[str, Any]:
    """Evaluate one split of a finished run; returns the metrics and where files went.

    ``splits``: data already read for this run's data config (a seed group reads it once).
    ``data_overrides``: ``data.*`` keys applied to the run's own data config (no ``data=``).
    ``reuse``: return the saved evaluation when it is current (the same weights, data config
    and file contents; answers with whatever generation settings they were saved with)
    instead of evaluating again over it (``compare``, which checks both sides' settings).
    ``read``: the splits this command has read so far, by data config (``compare`` evaluates
    each run on the same data: read once, not once a run); filled as data is read.
    """
    run_dir = Path(local_run(cfg.run, "run", cfg.paths)).expanduser().resolve()
    run = load_run_config(run_dir)
    check_name(cfg.name)
    if run.task.kind == TaskKind.rerank:  # the keys not given: the run's task.rerank.*
        cfg = dataclasses.replace(cfg, rerank=cfg.rerank.resolve(run.task.rerank))
        check_retriever(cfg)  # a wrong first stage fails before any data is read
    data = data_config(run.data, cfg.data, list(data_overrides))
    # scored in this process from files it reads: no Ray (data/local.py); generation, retrieval
    # and reranking build their inputs through Ray Data and start it
    if splits is None and run.task.kind in (TaskKind.seq_cls, TaskKind.token_cls,
                                            TaskKind.causal_lm) and not run.task.chat and \
            ray_not_needed(driver_reads_all(data)):
        with without_ray():
            announce_no_ray()
            return _evaluate(cfg, run_dir, run, data,
                             _splits(data, run.task.data_task, read, local=True), reuse)
    ensure_ray(ClusterConfig())
    return _evaluate(cfg, run_dir, run, data,
                     splits or _splits(data, run.task.data_task, read, local=False), reuse)


def _splits(data: Any, task: str, read: dict[tuple, Any] | None, local: bool) -> Any:
    """The data's splits, read once a command when ``read`` keeps them."""
    if read is None:
        return build_splits(data, task)
    key = (local, task, json.dumps(dataclasses.asdict(data), sort_keys=True, default=str))
    if key not in read:
        read[key] = build_splits(data, task)
    return read[key]


def _evaluate(cfg: EvaluateConfig, run_dir: Path, run: Any, data: Any, splits: Any,
              reuse: bool = False) -> dict[str, Any]:
    splits.pick(cfg.split)
    files = splits.fingerprint
    out_dir = output_dir(run_dir, cfg.split, own_data(run_dir, run.data, data, files), data,
                         files, cfg.name)
    made_by = {"weights": weights_hash(run_dir), "data": data_identity(data, files)}
    saved = read_json(out_dir / "metrics.json") or {}
    if reuse and is_current(out_dir, run_dir, any_generation=True) and \
            (saved.get("made_by") or {}).get("data") == made_by["data"]:
        return {**saved, "out_dir": str(out_dir), "reused": True}
    # a BEIR validation split without a file of its own: the queries training held out
    hold_out = data.val_fraction if cfg.split == "validation" and not data.validation_path \
        else None
    if run.task.kind == TaskKind.rerank:  # reorder a first stage's top-k of a corpus
        if data.format.value != "beir":
            raise ConfigError("data.format", "evaluating a rerank run needs a BEIR corpus "
                              "with queries and qrels (data.format=beir)")
        return evaluate_rerank(cfg, run_dir, run, data.split_paths(cfg.split), data.name,
                               out_dir, made_by, hold_out)
    if run.task.kind == TaskKind.embedding:  # rank a corpus (BEIR) or score pairs (STS)
        if data.format.value == "beir":
            return evaluate_retrieval(cfg, run_dir, run, data.split_paths(cfg.split),
                                      data.name, out_dir, made_by, hold_out)
        return evaluate_similarity(cfg, run_dir, run, splits.datasets[cfg.split].to_pandas(),
                                   splits.summaries[cfg.split], data.name, out_dir, made_by)
    if cfg.copy_values and not run.task.chat:
        raise ConfigError("copy_values", "only chat runs (task=sft) generate answers to mend")
    if run.task.chat:  # task=sft: answers generated and scored against references
        return _evaluate_chat(cfg, run_dir, run, splits, data, out_dir, made_by)
    if run.task.kind != TaskKind.seq_cls:
        return _evaluate_other(cfg, run_dir, run, splits, data.name, out_dir, made_by)
    labels = json.loads((run_dir / "label_map.json").read_text())["labels"]
    frame, seconds = _predict(cfg, run_dir, splits.datasets[cfg.split])
    base_frame = None
    if cfg.baseline:
        cache = run_dir / out_dir.parent.name.replace(EVAL_DIR, BASELINE_DIR, 1) / cfg.split
        base_frame = baseline_predictions(cache, cfg.split, splits, labels,
                                          digest(made_by["data"]))
    return score_frame(frame, labels, cfg, run_dir, data.name, seconds, base_frame,
                       out_dir=out_dir, made_by=made_by,
                       lost=data_lost(frame, splits.summaries[cfg.split], run.task.max_length))


def _evaluate_chat(cfg: EvaluateConfig, run_dir: Path, run: Any, splits: Any, data: Any,
                   out_dir: Path, made_by: dict[str, Any]) -> dict[str, Any]:
    """Each distinct prompt answered once by the run (and zero-shot by its base model), scored
    against all of its references (evaluation/generate.py)."""
    import ray.data  # Ray loads only when a job runs

    rows = splits.datasets[cfg.split].to_pandas()
    prompts = group_prompts(rows)
    dataset = ray.data.from_pandas(prompts.drop(columns=["references"]))
    settings = generation_settings(run, cfg)
    udf_kwargs = dict(settings)
    if cfg.copy_values:
        if not data.slot_pattern:
            raise ConfigError("copy_values", f"{cfg.copy_values} needs data.slot_pattern (the "
                              "prompts' attribute[value] slots): the data sets none")
        finder = re.compile(str(data.slot_pattern))
        held = {k for text in prompts["text"] for k, _ in find_slots(str(text), finder)}
        if missing := sorted(set(cfg.copy_values) - held):
            raise ConfigError("copy_values", f"no prompt of {data.name}/{cfg.split} holds "
                              f"{', '.join(missing)} (its attributes: {', '.join(sorted(held))})")
        udf_kwargs["slot_pattern"] = data.slot_pattern
    made_by = {**made_by, "generation": settings}
    if replacing := replaced_answers(out_dir, settings):
        print(replacing, flush=True)
    frame = score_split(Generate, cfg, run_dir, dataset, cfg.batch_size * 8, udf_kwargs,
                        num_cpus=1)
    pretrained = run.model.init_config is None  # a random-init model has no base to ask
    base = score_split(GenerateBase, cfg, run_dir, dataset, cfg.batch_size * 8, udf_kwargs,
                       num_cpus=1) if cfg.baseline and pretrained else None
    lost = data_lost(rows, splits.summaries[cfg.split], run.task.max_length)  # prompts whole
    return finish_generation(cfg, run_dir, data.name, out_dir, made_by, prompts, frame, base,
                             lost, data.slot_pattern)


def _evaluate_other(cfg: EvaluateConfig, run_dir: Path, run: Any, splits: Any, data_name: str,
                    out_dir: Path, made_by: dict[str, Any]) -> dict[str, Any]:
    """token_cls (entity F1 per type) and causal_lm (perplexity per slice)."""
    task = run.task.kind
    udf = PredictTags if task == TaskKind.token_cls else ScoreLM
    frame = score_split(udf, cfg, run_dir, splits.datasets[cfg.split], cfg.batch_size * 8,
                        num_cpus=1)
    metrics = (token_metrics(frame, cfg.resamples) if task == TaskKind.token_cls
               else lm_metrics(frame, cfg.resamples))
    result = {"run": str(run_dir), "split": cfg.split, "data": data_name,
              "metrics": metrics, "baseline": None, "slices": [],
              "made_by": {**made_by, "rows": rows_digest(frame)},
              "lost": data_lost(frame, splits.summaries[cfg.split], run.task.max_length)}
    result["gates"] = check_gates(cfg.gate, result)
    with replaced_on_success(out_dir) as staging:
        frame.to_parquet(staging / "predictions.parquet")
        report = write_task_report(result, staging).name
    result["report"] = str(out_dir / report)
    result["out_dir"] = str(out_dir)
    return result
