"""``evaluate`` for token classification (entity-level, seqeval) and causal LMs (perplexity).

Same shape as the classification path: a Ray Data class UDF loads the trained model once per
actor, predictions land in predictions.parquet, headline metrics carry 95% bootstrap CIs
(resampling sentences or documents), slices come worst first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from seqeval.metrics import classification_report, f1_score

from data.tokenize import IGNORE_INDEX, tokens_cut
from evaluation.outputs import lost_line
from evaluation.stats import Estimate, length_buckets
from trainers.lm_head import labelled_head_applies, labelled_token_nll
from trainers.models import inference_device, load_trained


class PredictTags:
    """Per-word tags from the first sub-word of each word (as training labelled them)."""

    def __init__(self, run_dir: str, batch_size: int, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.model, self.tok, self.labels, run = load_trained(Path(run_dir))
        self.device = inference_device(self.model)
        self.model.to(self.device)
        self.max_length, self.batch_size = run.task.max_length, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        words = [list(t) for t in batch["tokens"]]
        preds: list[list[str]] = []
        words_cut: list[int] = []
        with torch.no_grad():
            for start in range(0, len(words), self.batch_size):
                chunk = words[start:start + self.batch_size]
                enc = self.tok(chunk, is_split_into_words=True, truncation=True,
                               max_length=self.max_length, padding=True, return_tensors="pt")
                logits = self.model(input_ids=enc["input_ids"].to(self.device),
                                    attention_mask=enc["attention_mask"].to(self.device)
                                    ).logits.cpu()
                best = logits.argmax(-1).tolist()
                for i, sentence in enumerate(chunk):
                    tags, cut = word_tags(sentence, enc.word_ids(i), best[i], self.labels)
                    preds.append(tags)
                    words_cut.append(cut)
        return {"_src": batch["_src"], "text": batch["text"], "gold_tags": batch["tags"],
                "pred_tags": _objects(preds), "n_words": np.array([len(w) for w in words]),
                "truncated": tokens_cut(self.tok, words, self.max_length,
                                        is_split_into_words=True),
                "words_cut": np.array(words_cut, dtype=np.int32)}


def word_tags(sentence: list[str], word_ids: list[int | None], best: list[int],
              labels: list[str]) -> tuple[list[str], int]:
    """Each word's tag from its first sub-word, as training labelled them; and how many words
    truncation cut off: they have no sub-word left and count as predicted "O"."""
    tags = ["O"] * len(sentence)
    previous, seen = None, set()
    for pos, word in enumerate(word_ids):
        if word is not None and word != previous:
            tags[word] = labels[best[pos]]
            seen.add(word)
        previous = word
    return tags, len(sentence) - len(seen)


class ScoreLM:
    """Per-document negative log-likelihood and predicted-token count (no packing)."""

    def __init__(self, run_dir: str, batch_size: int, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.model, self.tok, _, run = load_trained(Path(run_dir))
        self.device = inference_device(self.model)
        self.model.to(self.device)
        self.max_length, self.batch_size = run.task.max_length, batch_size
        self.labelled_head = labelled_head_applies(self.model)
        self.eos = self.tok.eos_token_id if self.tok.eos_token_id is not None \
            else self.tok.sep_token_id

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        texts = [str(t) for t in batch["text"]]
        nll, count = np.zeros(len(texts)), np.zeros(len(texts), dtype=np.int64)
        cut = np.zeros(len(texts), dtype=np.int32)  # tokens past task.max_length: not scored
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                whole = self.tok(texts[start:start + self.batch_size], add_special_tokens=False,
                                 verbose=False)["input_ids"]
                cut[start:start + len(whole)] = [max(len(x) + 1 - self.max_length, 0)
                                                 for x in whole]
                ids = [(x + [self.eos])[: self.max_length] for x in whole]
                width = max(len(x) for x in ids)
                input_ids = torch.full((len(ids), width), self.tok.pad_token_id)
                labels = torch.full((len(ids), width), IGNORE_INDEX)
                for i, x in enumerate(ids):
                    input_ids[i, :len(x)] = torch.tensor(x)
                    labels[i, :len(x)] = torch.tensor(x)
                inputs = {"input_ids": input_ids.to(self.device),
                          "attention_mask": (labels != IGNORE_INDEX).long().to(self.device)}
                target = labels[:, 1:]
                if self.labelled_head:  # the head on scored positions only (lm_head.py)
                    flat, keep = labelled_token_nll(self.model, inputs, labels.to(self.device))
                    losses = torch.zeros(keep.shape).masked_scatter(keep.cpu(), flat.cpu())
                else:
                    logits = self.model(**inputs).logits.cpu()
                    losses = torch.nn.functional.cross_entropy(
                        logits[:, :-1].float().transpose(1, 2), target, reduction="none",
                        ignore_index=IGNORE_INDEX)
                nll[start:start + len(ids)] = losses.sum(1).numpy()
                count[start:start + len(ids)] = (target != IGNORE_INDEX).sum(1).numpy()
        out = {k: v for k, v in batch.items() if k in ("_src", "text") or k.startswith("meta_")}
        out.update(nll=nll, tokens=count, truncated=cut)
        return out


def _objects(rows: list[list[str]]) -> np.ndarray:
    arr = np.empty(len(rows), dtype=object)
    arr[:] = rows
    return arr


def _bootstrap_index(statistic, n: int, resamples: int) -> Estimate:
    """Percentile CI of ``statistic(indices)`` from ``scipy.stats.bootstrap`` over examples
    (sentences or documents), so corpus-level metrics resample whole examples."""
    value = float(statistic(np.arange(n)))
    if n < 2:
        return Estimate(value, value, value, n)
    result = stats.bootstrap((np.arange(n),), statistic, vectorized=False,
                             n_resamples=resamples, method="percentile",
                             random_state=np.random.default_rng(0))
    low, high = result.confidence_interval
    low = value if np.isnan(low) else float(low)
    high = value if np.isnan(high) else float(high)
    return Estimate(value, min(low, value), max(high, value), n)


def token_metrics(frame: pd.DataFrame, resamples: int) -> dict[str, Any]:
    gold = [list(t) for t in frame["gold_tags"]]
    pred = [list(t) for t in frame["pred_tags"]]

    def f1(idx: np.ndarray) -> float:
        return float(f1_score([gold[i] for i in idx], [pred[i] for i in idx], zero_division=0))

    per_type = classification_report(gold, pred, output_dict=True, zero_division=0)
    words = [(g == p) for gs, ps in zip(gold, pred, strict=True)
             for g, p in zip(gs, ps, strict=True)]
    return {"entity_f1": _bootstrap_index(f1, len(gold), min(resamples, 300)).as_dict(),
            "token_accuracy": float(np.mean(words)) if words else float("nan"),
            "per_type": {k: {m: float(v) for m, v in d.items()} for k, d in per_type.items()},
            "examples": len(gold)}


def lm_metrics(frame: pd.DataFrame, resamples: int) -> dict[str, Any]:
    nll, tokens = frame["nll"].to_numpy(), frame["tokens"].to_numpy()

    def ppl(idx: np.ndarray) -> float:
        return float(math.exp(min(nll[idx].sum() / max(tokens[idx].sum(), 1), 50.0)))

    slices = []
    groups = {"length": length_buckets(tokens)}
    groups.update({c[5:]: frame[c].astype(str).to_numpy() for c in frame if c.startswith("meta_")})
    for column, values in groups.items():
        for value in sorted(set(values.tolist())):
            idx = np.flatnonzero(values == value)
            slices.append({"slice": f"{column}={value}", "n": len(idx),
                           "perplexity": ppl(idx)})
    return {"perplexity": _bootstrap_index(ppl, len(nll), resamples).as_dict(),
            "loss": float(nll.sum() / max(tokens.sum(), 1)), "tokens": int(tokens.sum()),
            "examples": len(nll), "slices": sorted(slices, key=lambda s: -s["perplexity"])}


def write_task_report(result: dict[str, Any], out: Path) -> Path:
    m = result["metrics"]
    lines = [f"# Evaluation: `{Path(result['run']).name}` on `{result['data']}` / "
             f"{result['split']}", ""]
    if result.get("lost"):
        lines += [lost_line(result["lost"]), ""]
    if "entity_f1" in m:
        e = m["entity_f1"]
        lines += [f"Entity-level F1 (seqeval): {e['value']:.4f} [{e['ci_low']:.4f}, "
                  f"{e['ci_high']:.4f}] over {m['examples']} sentences.", "",
                  "| entity type | precision | recall | F1 | support |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        rows = sorted(m["per_type"].items(), key=lambda kv: kv[1].get("f1-score", 0))
        lines += [f"| {k} | {d['precision']:.3f} | {d['recall']:.3f} | {d['f1-score']:.3f} | "
                  f"{int(d['support'])} |" for k, d in rows]
    else:
        p = m["perplexity"]
        lines += [f"Perplexity {p['value']:.2f} [{p['ci_low']:.2f}, {p['ci_high']:.2f}] over "
                  f"{m['examples']} documents, {m['tokens']} predicted tokens (each document "
                  "scored alone, no packing).", "", "| slice | n | perplexity |",
                  "| --- | ---: | ---: |"]
        lines += [f"| {s['slice']} | {s['n']} | {s['perplexity']:.2f} |" for s in m["slices"]]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=1, default=float))
    return path
