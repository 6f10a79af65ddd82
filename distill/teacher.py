"""The teacher: loaded from a run or a model path, frozen; offline outputs with provenance.

Offline mode runs the teacher once over the tokenised training split as a Ray Data batch
inference pass (an actor pool; GPU when present) and writes its outputs as parquet shards:
log-probabilities at the distillation temperature (full distribution for classification, a
reranker's softmax over each row's positive and negative, top-k per position for causal LM)
or an embedding model's embeddings of each row's texts, with ``provenance.json``: teacher
fingerprint, dataset fingerprint, tokenizer, temperature and k. Reusing outputs whose
provenance differs is an error.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.batches import collate, model_inputs
from data.errors import ConfigError
from data.inprocess import to_block
from data.locations import resolve_location
from trainers.config import TaskKind
from trainers.identity import replaced_on_success
from trainers.lm_head import labelled_head_applies, labelled_logits
from trainers.models import _AUTO_CLASSES, load_trained
from trainers.reranker import CrossEncoder
from trainers.scaling import inference_here, inference_window
from trainers.storage import local_run

PROVENANCE = "provenance.json"


def teacher_dir(location: str) -> Path | None:
    """A shardtune run directory for ``location`` (``runs/x`` or ``runs/x/adapter``), or None."""
    path = Path(local_run(location, "distill.teacher")).expanduser()
    for candidate in (path, path.parent):
        if (candidate / "config.json").exists() and (candidate / "label_map.json").exists():
            return candidate.resolve()
    return None


def load_teacher(location: str, task: Any) -> tuple[Any, Any, list[str]]:
    """(frozen model in eval mode, tokenizer, labels). A run's adapters come merged into its
    weights (``load_trained``); a QLoRA teacher's 4-bit base stays as loaded."""
    run_dir = teacher_dir(location)
    if run_dir is not None:
        model, tokenizer, labels, _ = load_trained(run_dir)
    else:
        import transformers  # loads with a model: importers of this module stay without it

        location = resolve_location(location, "distill.teacher")
        if task not in _AUTO_CLASSES and task != TaskKind.rerank:
            raise ConfigError("distill.teacher", f"the teacher of a task={task.value} student must "
                              f"be a finished shardtune run, got {location!r}", "train it first")
        try:
            if task == TaskKind.rerank:  # a hub cross-encoder: its one-output classifier
                model = CrossEncoder.from_pretrained(location)
            else:
                model = getattr(transformers, _AUTO_CLASSES[task]).from_pretrained(location)
            tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        except OSError as exc:
            raise ConfigError("distill.teacher", f"cannot load {location!r}: "
                              f"{str(exc).splitlines()[0]}",
                              "pass a finished run directory or a model with a task head") \
                from None
        id2label = getattr(model.config, "id2label", {}) or {}
        labels = [] if task == TaskKind.rerank else [id2label[i] for i in sorted(id2label)]
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), tokenizer, labels


def fingerprint(location: str) -> str:
    """sha256 of the teacher's weight files and config: a retrained teacher differs."""
    run_dir = teacher_dir(location)
    root = run_dir / "adapter" if run_dir is not None else Path(location)
    digest = hashlib.sha256()
    files = sorted(root.rglob("*")) if root.is_dir() else []
    if run_dir is not None:
        files.append(run_dir / "config.json")
    if not files:  # a hub id: its name and revision are all we know offline
        digest.update(location.encode())
    for f in files:
        if f.is_file() and f.suffix in (".safetensors", ".json", ".bin"):
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()


# one distribution per row: over the labels, or a reranker's over its (positive, negative)
PER_EXAMPLE = ("seq_cls", "rerank")
TEACHER_BATCH_ROWS = 1024  # rows handed to the teacher at a time (it batches them by length)


class TeacherOutputs:
    """Ray Data class UDF: teacher log-probabilities at temperature T for tokenised rows."""

    def __init__(self, location: str, task: str, temperature: float, top_k: int,
                 pad_id: int, batch_size: int = 64, threads: int = 1) -> None:
        self.model, _, _ = load_teacher(location, TaskKind(task))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.model.to(self.device)
        self.task, self.t, self.k = task, temperature, top_k
        self.pad_id, self.batch_size = pad_id, batch_size
        self.labelled_head = task == "causal_lm" and labelled_head_applies(self.model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        n = len(batch["uid"])
        order = np.argsort(batch["length"], kind="stable")
        logp_out: list[Any] = [None] * n
        index_out: list[Any] = [None] * n
        sides: dict[str, list[Any]] = {}  # an embedding teacher's per-text embeddings
        with torch.no_grad():
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                t = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                     for k, v in collate({k: v[idx] for k, v in batch.items()},
                                         self.pad_id).items()}
                if self.task == "embedding":
                    for name, side in embed_sides(self.model, t).items():
                        for j, row in enumerate(idx):
                            sides.setdefault(name, [None] * n)[row] = side[j].cpu().numpy()
                    continue
                if self.task == "causal_lm":
                    values, ids = lm_top_k(self.model, t, self.t, self.k, self.labelled_head)
                    for j, row in enumerate(idx):
                        length = int(batch["length"][row])
                        logp_out[row] = values[j, :length].reshape(-1).numpy()
                        index_out[row] = ids[j, :length].reshape(-1).numpy().astype(np.int32)
                    continue
                logits = self.model(**model_inputs(t)).logits
                logp = torch.log_softmax(logits.float() / self.t, -1).cpu()
                for j, row in enumerate(idx):
                    length = int(batch["length"][row])
                    logp_out[row] = (logp[j].numpy() if self.task in PER_EXAMPLE
                                     else logp[j, :length].reshape(-1).numpy())
        out = dict(batch)
        if self.task == "embedding":  # its scale: what turns the cosines into its logits
            return {**out, **{k: np.stack(v) for k, v in sides.items()},
                    "teacher_scale": np.full(n, float(self.model.scale()), dtype=np.float32)}
        out["teacher_logp"] = _column(logp_out)
        if self.task == "causal_lm":
            out["teacher_index"] = _column(index_out)
        return out


EMBEDDED_SIDES = {"teacher_query": "", "teacher_doc": "doc_", "teacher_neg": "neg_"}


def embed_sides(model: Any, t: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A bi-encoder teacher's embeddings of each row's texts ([B, H] per side): the query,
    its positive and its hard negative where the rows have one, under the names the offline
    pass stores them by. The student's KD term builds the teacher's similarities from these
    (online: computed here each step; offline: read back from the batch), so caching them
    gives the online term exactly, one teacher pass per text."""
    return {name: model.embed(t[f"{prefix}input_ids"], t[f"{prefix}attention_mask"]).float()
            for name, prefix in EMBEDDED_SIDES.items() if f"{prefix}input_ids" in t}


def lm_top_k(model: Any, t: dict[str, Any], temperature: float, k: int, labelled: bool
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """A causal LM's top-k log-probs at T per position and their token ids ([B, L, k], CPU).

    The KD term reads position p only where the token after it is labelled (distill/loss.py),
    so with ``labelled`` (trainers/lm_head.py) the head and softmax run there alone and the
    other positions hold zeros: in a chat, the answers instead of every prompt and pad token.
    Packed rows go in as training sees them (``model_inputs``: attention kept per chat).
    """
    if not labelled:
        logits = model(**model_inputs(t)).logits
        top = torch.log_softmax(logits.float() / temperature, -1).topk(
            min(k, logits.shape[-1]), -1)
        return top.values.cpu(), top.indices.cpu()
    out = labelled_logits(model, model_inputs(t), t["labels"])
    keep, k = out.keep, min(k, out.logits.shape[-1])
    top = torch.log_softmax(out.logits.float() / temperature, -1).topk(k, -1)
    values = torch.zeros((*t["input_ids"].shape, k), dtype=top.values.dtype)
    ids = torch.zeros((*t["input_ids"].shape, k), dtype=top.indices.dtype)
    values[:, :-1][keep.cpu()] = top.values.cpu()
    ids[:, :-1][keep.cpu()] = top.indices.cpu()
    return values, ids


def _column(values: list[Any]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def provenance(spec: Any, location: str, data_fingerprint: dict[str, Any], tokenizer: str,
               task: str, max_length: int) -> dict[str, Any]:
    return {"teacher": location, "teacher_fingerprint": fingerprint(location),
            "data_fingerprint": hashlib.sha256(json.dumps(data_fingerprint, sort_keys=True,
                                                          default=str).encode()).hexdigest(),
            "tokenizer": tokenizer, "task": task, "max_length": max_length,
            # embeddings do not depend on T: one cache serves every temperature
            "temperature": None if task == "embedding" else spec.temperature,
            "top_k": spec.top_k if task == "causal_lm" else None,
            "augment": [spec.augment, spec.augment_p] if spec.augment else None}


def check_provenance(stored: dict[str, Any], wanted: dict[str, Any], where: Path) -> None:
    diff = [k for k in wanted if k != "teacher" and stored.get(k) != wanted[k]]
    if diff:
        detail = "; ".join(f"{k}: stored {stored.get(k)!r}, now {wanted[k]!r}"[:160]
                           for k in diff)
        raise ConfigError("distill.outputs_dir", f"teacher outputs at {where} were made "
                          f"for something else ({detail})",
                          "set distill.recompute=true to rebuild them, or point "
                          "distill.outputs_dir elsewhere")


def check_rows(stored: dict[str, Any], found: int, where: Path) -> None:
    """Cached outputs hold every row they were made with (a shard file lost since, in a copy
    or a sync, would drop training rows without a word). Stamps older than the count pass."""
    made = stored.get("rows")
    if made is not None and made != found:
        raise ConfigError("distill.outputs_dir", f"teacher outputs at {where} hold {found} "
                          f"rows, made with {made}: shard files are missing",
                          "set distill.recompute=true to rebuild them")


def offline_outputs(dataset: Any, spec: Any, location: str, out_dir: Path,
                    wanted: dict[str, Any], task: str, pad_id: int) -> Any:
    """The train split with teacher outputs: reused when provenance matches, else made."""
    import ray  # Ray loads only when a job runs: the CLI and tests import this module without it
    import ray.data

    stamp = out_dir / PROVENANCE
    if stamp.exists() and not spec.recompute:
        stored = json.loads(stamp.read_text())
        check_provenance(stored, wanted, out_dir)
        cached = ray.data.read_parquet(str(out_dir / "shards")).materialize()
        check_rows(stored, cached.count(), out_dir)
        return cached
    with replaced_on_success(out_dir) as staging:  # whole, even with two runs at once
        with_teacher = _make_outputs(dataset, spec, location, task, pad_id, staging / "shards")
        # last: the count it holds, and what it was made from
        (staging / PROVENANCE).write_text(json.dumps({**wanted, "rows": with_teacher.count()},
                                                     indent=1))
    return with_teacher


def _make_outputs(dataset: Any, spec: Any, location: str, task: str, pad_id: int,
                  shards: Path) -> Any:
    """The split with the teacher's outputs, each block also written into ``shards``."""
    import ray  # see offline_outputs
    import ray.data

    made = {"location": location, "task": task, "temperature": spec.temperature,
            "top_k": spec.top_k, "pad_id": pad_id}
    rows = dataset.count()
    if inference_here(rows, spec.inprocess_rows):
        # here, where torch and transformers are loaded, the same blocks the actor would hand
        # on (an actor's start is a process, imports and a model load): the whole split
        # sorted by length in one call, or windows of inprocess_rows rows; each written
        # straight from here and handed on from the object store, not read back
        import pyarrow.parquet as pq  # with Ray Data's dependencies

        teacher = TeacherOutputs(**made, threads=torch.get_num_threads())
        shards.mkdir(parents=True)
        refs = []
        for i, batch in enumerate(dataset.iter_batches(
                batch_size=inference_window(rows, spec.inprocess_rows), batch_format="numpy")):
            block = to_block(teacher(batch))
            pq.write_table(block, shards / f"part-{i:05d}.parquet")
            refs.append(ray.put(block))  # out of this process's memory, window by window
        with_teacher = ray.data.from_arrow_refs(refs)
    else:
        gpus = 1 if torch.cuda.is_available() else 0
        threads = max(int(ray.cluster_resources().get("CPU", 1)), 1)
        with_teacher = dataset.map_batches(
            TeacherOutputs, fn_constructor_kwargs={**made, "threads": threads},
            batch_size=TEACHER_BATCH_ROWS, concurrency=1, num_gpus=gpus,
            num_cpus=0 if gpus else 1).materialize()  # kept: handed on without a read-back
        with_teacher.write_parquet(str(shards))
    return with_teacher
