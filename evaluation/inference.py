"""Run a scoring UDF over a split: the one path every evaluation's model inference takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from data.local import LocalDataset, to_ray
from evaluation.config import EvaluateConfig
from trainers.cluster_config import ClusterConfig
from trainers.models import inference_device
from trainers.scaling import ensure_ray, inference_here, inference_window


def place_for_inference(model: Any, threads: int) -> torch.device:
    """Move a scoring UDF's model to its device; on CPU use this actor's share of the cores
    (Ray pins actors to 1 thread)."""
    device = inference_device(model)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    model.to(device)
    return device


def score_split(udf: Any, cfg: EvaluateConfig, run_dir: Path, dataset: Any, rows: int,
                udf_kwargs: dict[str, Any] | None = None, **resources: Any) -> pd.DataFrame:
    """Run a scoring UDF (model loads in its constructor, with ``udf_kwargs`` beside the run,
    batch size and threads) over a split: in this process (:func:`inference_here`), the whole
    split in one call up to ``inprocess_rows`` rows and windows of that many above (the UDF
    sorts what it gets by length); otherwise through Ray Data actors, ``rows`` at a time."""
    import ray  # Ray loads only when a job runs: the CLI and tests import this module without it

    count = dataset.count()
    if inference_here(count, cfg.inprocess_rows, cfg.actors):
        score = udf(str(run_dir), cfg.batch_size, torch.get_num_threads(), **(udf_kwargs or {}))
        return pd.concat([pd.DataFrame(score(batch)) for batch in dataset.iter_batches(
            batch_size=inference_window(count, cfg.inprocess_rows), batch_format="numpy")],
            ignore_index=True)
    if isinstance(dataset, LocalDataset):  # rows held here: into Ray for its actors
        ensure_ray(ClusterConfig())
        dataset = to_ray(dataset)
    # On CPU, each actor reserves one core (so reads can still be scheduled) but runs its
    # matmuls on an equal share of the machine's cores; the driver only waits meanwhile.
    threads = max(int(ray.cluster_resources().get("CPU", 1)) // cfg.actors, 1)
    return dataset.map_batches(
        udf, fn_constructor_kwargs={"run_dir": str(run_dir), "batch_size": cfg.batch_size,
                                    "threads": threads, **(udf_kwargs or {})},
        batch_size=rows, concurrency=cfg.actors, **resources,
    ).to_pandas()
