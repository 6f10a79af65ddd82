"""Quality gates: turn an evaluation into pass/fail with a one-screen explanation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evaluation.config import GateConfig

EPS = 1e-9  # a result exactly on a threshold passes (0.90 - 0.85 is 0.0500000000000000444)


def check_gates(gate: GateConfig, result: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per configured gate: name, passed, and the numbers behind the verdict."""
    metrics = result["metrics"]
    checks: list[dict[str, Any]] = []
    for name, floor in gate.min.items():
        value = metrics.get(name)
        if isinstance(value, dict):
            point, ci = value["value"], (value["ci_low"], value["ci_high"])
        elif isinstance(value, (int, float)):
            point, ci = float(value), None
        else:
            checks.append({"gate": f"min.{name}", "passed": False,
                           "detail": f"no metric '{name}' (have: {', '.join(_scalars(metrics))})"})
            continue
        checks.append({"gate": f"min.{name}", "passed": point >= floor - EPS, "value": point,
                       "ci": ci, "threshold": floor,
                       "detail": f"{name} {point:.4f}{_ci(ci)} vs minimum {floor:.4f} "
                                 f"({point - floor:+.4f})"})
    if "accuracy" not in metrics:  # token_cls / causal_lm: only min.* gates apply
        return checks
    accuracy = metrics["accuracy"]["value"]
    if gate.max_drop_vs_baseline is not None and result.get("baseline"):
        base = result["baseline"]["accuracy"]["value"]
        drop = base - accuracy
        passed = drop <= gate.max_drop_vs_baseline + EPS
        checks.append({"gate": "max_drop_vs_baseline", "passed": passed,
                       "value": -drop, "threshold": gate.max_drop_vs_baseline,
                       "detail": f"accuracy {accuracy:.4f} vs TF-IDF baseline {base:.4f} "
                                 f"({accuracy - base:+.4f}; allowed drop "
                                 f"{gate.max_drop_vs_baseline:.4f})"})
    if gate.max_slice_drop is not None:
        gated = [s for s in result["slices"] if s["n"] >= gate.min_slice_size]
        worst = min(gated, key=lambda s: s["value"], default=None)
        if worst is not None:
            drop = accuracy - worst["value"]
            checks.append({"gate": "max_slice_drop", "passed": drop <= gate.max_slice_drop + EPS,
                           "value": drop, "threshold": gate.max_slice_drop,
                           "detail": f"worst slice {worst['slice']} (n={worst['n']}) accuracy "
                                     f"{worst['value']:.4f} [{worst['ci_low']:.4f}, "
                                     f"{worst['ci_high']:.4f}] is {drop:.4f} below overall "
                                     f"(allowed {gate.max_slice_drop:.4f})"})
    if gate.reference:
        ref_file = Path(gate.reference) / "eval" / result["split"] / "metrics.json"
        if not ref_file.is_file():
            checks.append({"gate": "reference", "passed": False,
                           "detail": f"{ref_file} not found: evaluate the reference run first"})
        else:
            ref = json.loads(ref_file.read_text())["metrics"]["accuracy"]["value"]
            drop = ref - accuracy
            checks.append({"gate": "max_drop_vs_reference",
                           "passed": drop <= gate.max_drop_vs_reference + EPS, "value": -drop,
                           "threshold": gate.max_drop_vs_reference,
                           "detail": f"accuracy {accuracy:.4f} vs reference {ref:.4f} "
                                     f"({accuracy - ref:+.4f})"})
    return checks


def _ci(ci: tuple[float, float] | None) -> str:
    return f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""


def _scalars(metrics: dict[str, Any]) -> list[str]:
    return [k for k, v in metrics.items() if isinstance(v, (int, float, dict)) and
            (not isinstance(v, dict) or "value" in v)]
