"""What the CLI prints: one screen per verb, headline numbers with their intervals first."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    metrics = summary.get("metrics", {})
    if summary.get("group") and summary.get("status") == "done":
        print_group(summary["group"], console)
        return
    if summary.get("status") == "stopped":
        console.print(f"[yellow]stopped at step {metrics.get('step')}[/]; re-run the same "
                      f"command to resume from {summary.get('store') or summary['run_dir']}")
        return
    table = Table(title=f"shardtune train: {Path(summary['run_dir']).name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        value = metrics[key]
        if isinstance(value, float) and not isinstance(value, bool):
            table.add_row(key, f"{value:.4f}")
        elif isinstance(value, int):
            table.add_row(key, str(value))
    console.print(table)
    for key in ("adapter", "checkpoint", "report", "merged"):
        if key in summary:
            console.print(f"{key:>10}: {summary[key]}")


def print_group(group: dict[str, Any], console: Any) -> None:
    """Across-seed table: every headline metric as mean ± std with its CI."""
    from rich.table import Table

    table = Table(title=f"shardtune train: group {group['group_name']} "
                        f"(seeds {group['seeds']}, id {group['config_group']})")
    for col in ("metric", "mean ± std", "95% CI of the mean", "min – max"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, s in group["metrics"].items():
        if key.split("/")[0] in ("test", "val") and not key.endswith("examples"):
            one = s.get("n", 2) < 2  # one seed: no spread and no interval across seeds
            table.add_row(key, f"{s['mean']:.4f}" + ("" if one else f" ± {s['std']:.4f}"),
                          "n=1 seed" if one else f"[{s['ci_low']:.4f}, {s['ci_high']:.4f}]",
                          f"{s['min']:.4f} – {s['max']:.4f}")
    console.print(table)
    worst = group["slices"][:3]
    if worst:
        console.print("worst slices: " + ", ".join(
            f"{s['slice']} {s['mean']:.3f} ± {s['std']:.3f}" for s in worst))
    console.print(f"wall time {group['wall_s']:.0f} s, {group['concurrent_runs']} run(s) at once")


def print_evaluation(result: dict[str, Any]) -> int:
    """One screen: headline metrics with CIs, the baseline, worst slices, gate verdicts."""
    from rich.console import Console

    console = Console()
    m, base = result["metrics"], result.get("baseline")
    unit = next(u for u in ("examples", "queries", "pairs", "") if not u or u in m)
    console.print(f"[bold]{Path(result['run']).name}[/] on {result['data']}/{result['split']}: "
                  f"{m.get(unit, '')} {unit}".rstrip())
    # an embedding run's baselines are several systems (BM25, the base model), by name
    systems = base if base and not any(k in base for k in m) else {"baseline": base or {}}
    for key in ("accuracy", "macro_f1", "entity_f1", "perplexity", "bleu", "bleu_uncased",
                "rouge_l", "chrf", "ndcg@10", "mrr@10", "recall@100", "spearman", "pearson"):
        if key not in m:
            continue
        est = m[key]
        line = f"  {key:<10} {est['value']:.4f} [{est['ci_low']:.4f}, {est['ci_high']:.4f}]"
        for name, scores in systems.items():
            if key in scores:
                line += f"   {name} {scores[key]['value']:.4f}"
        console.print(line)
    worst = result["slices"][:3]
    if worst:
        console.print("  worst slices: " + ", ".join(
            f"{s['slice']} {s['value']:.3f} (n={s['n']})" for s in worst))
    failed = [g for g in result["gates"] if not g["passed"]]
    for gate in result["gates"]:
        mark = "[green]pass[/]" if gate["passed"] else "[red]FAIL[/]"
        console.print(f"  gate {gate['gate']}: {mark}  {gate['detail']}")
    console.print(f"  report: {result['report']}")
    if failed:
        console.print(f"[red]{len(failed)} gate(s) failed[/]")
        return 1
    return 0


def print_sweep(summary: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(soft_wrap=True)  # a path or a config on one line, however long
    metric = summary["metric"]
    counts = ", ".join(f"{v} {k}" for k, v in summary["status"].items())
    console.print(f"[bold]sweep {summary['name']}[/]: {summary['trials']} trials ({counts}), "
                  f"{summary['wall_s']:.0f} s" + (" (resumed)" if summary["resumed"] else ""))
    for row in summary["table"][:5]:
        value = row.get(metric)
        shown = f"{value:.4f}" if isinstance(value, float) else "—"
        values = ", ".join(f"{k}={row[k]}" for k in row if "." in k and k != metric)
        console.print(f"  {row['trial']:<24} {metric} {shown}  {row['status']:<13} {values}")
    best = summary["best"]
    if best:
        console.print(f"best: {best['config']} → {best['experiment'] or best['file']}")
        if best.get("not_exported"):
            console.print(f"  ({best['not_exported']})")
    for i, r in enumerate(summary.get("top_k") or [], start=1):
        spread = f" ± {r['std']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]" \
            if r["n"] > 1 else " (n=1 seed, no interval)"
        console.print(f"  top{i} over {r['n']} seeds: {r['mean']:.4f}{spread}  {r['config']}")
    console.print(f"report: {summary['report']}")
