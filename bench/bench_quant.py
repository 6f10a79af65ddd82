"""Quantisation on BANKING77: each method on the LoRA MiniLM teacher, QLoRA vs LoRA training,
and the whole compress chain (distil → quantise) with its per-stage table.

    python bench/bench_quant.py [--parts methods,qlora,compress] [--seeds 3]

Needs the teacher of bench/bench_distill.py (runs/bench_distill/runs/teacher; trained here if
missing). Goals (docs/benchmarks.md): int8 ≤ 0.5 pt accuracy drop with ≥ 3.5× smaller linear
weights; nf4 ≤ 1.5 pt drop; CPU latency of each; QLoRA vs LoRA peak memory and samples/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from pathlib import Path

import psutil
from common import CLI, ROOT, SHARED, save
from common import run_cli as _run

WORK = ROOT / "runs" / "bench_distill"
TEACHER = WORK / "runs" / "teacher"
DATA = [f"paths.datasets={SHARED}", "data=banking77"]


def methods() -> dict:
    out = {}
    for method in ("int8", "nf4", "fp4", "dynamic_int8"):
        seconds = _run(["quantize", f"run={TEACHER}", f"quant={method}",
                        f"out={ROOT / 'runs' / 'bench_quant' / method}"], WORK)
        result = json.loads((ROOT / "runs" / "bench_quant" / method / "quantize.json")
                            .read_text())
        out[method] = {"seconds": seconds, **{k: result[k] for k in (
            "full", "quantized", "drop", "paired", "linear_bytes_fp", "linear_bytes_quant",
            "linear_ratio", "speed", "modules")}}
    return out


def _driver_peak(args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command's own process: in local mode the
    training loop runs there."""
    start = time.perf_counter()
    proc = subprocess.Popen([CLI, *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    peak = 0.0
    watched = psutil.Process(proc.pid)

    def watch() -> None:
        nonlocal peak
        while proc.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss / 2**20)
            except psutil.Error:
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    if proc.wait() != 0:
        raise SystemExit(f"failed: shardtune {' '.join(args)}")
    thread.join()
    return time.perf_counter() - start, peak


def qlora() -> dict:
    work = ROOT / "runs" / "bench_qlora"
    work.mkdir(parents=True, exist_ok=True)
    out = {}
    common = [*DATA, "data.max_examples=3000", "trainer.epochs=1", "trainer.ckpt_every=0",
              "trainer.eval_every=0"]
    for peft in ("lora", "qlora"):
        seconds, peak = _driver_peak(["train", f"peft={peft}", f"run_name={peft}", *common],
                                     work)
        run_dir = work / "runs" / peft
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text()
                .splitlines() if line.strip()]
        rates = [r["train/samples_per_s"] for r in rows if "train/samples_per_s" in r]
        final = json.loads((run_dir / "metrics.json").read_text())
        out[peft] = {"seconds": seconds, "driver_peak_rss_mib": peak,
                     "samples_per_s_median": sorted(rates)[len(rates) // 2] if rates else None,
                     "test_accuracy": final.get("test/accuracy"),
                     "params_total": final.get("params_total"),
                     "params_trainable": final.get("params_trainable")}
    return out


def compress(seeds: int) -> dict:
    seed_list = ",".join(str(s) for s in range(seeds))
    seconds = _run(["compress", f"teacher={TEACHER}", *DATA, "peft=none", "optim.lr=1e-4",
                    "trainer.epochs=3", "trainer.ckpt_every=0", f"seeds=[{seed_list}]",
                    "distill.control=false", "quant=dynamic_int8",
                    "compress.max_drop_distill=0.02", "compress.max_drop_quantize=0.005",
                    "run_name=compress"], WORK)
    result = json.loads((WORK / "runs" / "compress" / "compress.json").read_text())
    report = (WORK / "runs" / "compress" / "compress_report.md").read_text()
    return {"seconds": seconds, **result, "report_md": report}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default="methods,qlora,compress")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if not (TEACHER / "metrics.json").exists():
        _run(["train", "experiment=banking77_lora", "run_name=teacher", *DATA], WORK)
    parts = args.parts.split(",")
    figures: dict = {"scale": "banking77 full (test 3,080); teacher experiment=banking77_lora "
                              "(LoRA r16 all linear, mean pooling, 3 epochs)"}
    if "methods" in parts:
        figures["methods"] = methods()
    if "qlora" in parts:
        figures["qlora_vs_lora"] = qlora()
        figures["qlora_scale"] = "banking77 max_examples=3000, 1 epoch, batch 32, r8 q/v"
    if "compress" in parts:
        figures["compress"] = compress(args.seeds)
    save("quant_banking77" if parts == ["methods", "qlora", "compress"]
         else f"quant_banking77_{'_'.join(parts)}", figures)


if __name__ == "__main__":
    main()
