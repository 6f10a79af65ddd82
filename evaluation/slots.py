"""How often a chat run's answers name the slot values of their prompts, beside how often the
references do: the slot-level error analysis of data-to-text (``data.slot_pattern``).

BLEU says an answer is far from its references, not which fact it dropped or swapped. Data-to-
text prompts carry their facts as slots (E2E's ``eatType[pub]``), so for every attribute=value
this counts the answers that name the value (verbatim, ignoring case) and the references that
do. The references' rate is the yardstick: a value people put in other words
(``familyFriendly[yes]`` → "kid friendly") is rarely named by the references either, so only
the gap between the two reads as the model's error, e.g. a pub called a restaurant.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Iterable

import numpy as np

from data.slots import find_slots


def slot_mentions(prompts: Iterable[str], answers: Iterable[str],
                  references: Iterable[list[str]], pattern: str) -> dict[str, Any]:
    """Per ``attribute=value`` found by ``pattern`` (two groups: attribute, value) in the
    prompts: prompts holding it, % of answers naming the value, mean % of references naming
    it, and the gap (answers − references), widest shortfall first; ``total`` over all slots."""
    finder = re.compile(pattern)
    named: dict[str, list[tuple[bool, float]]] = defaultdict(list)
    for prompt, answer, refs in zip(prompts, answers, references, strict=True):
        for key, value in find_slots(prompt, finder):
            in_refs = float(np.mean([value in r.lower() for r in refs])) if refs else 0.0
            named[f"{key}={value}"].append((value in answer.lower(), in_refs))
    rows = [_row(slot, pairs) for slot, pairs in named.items()]
    every = [pair for pairs in named.values() for pair in pairs]
    return {"total": _row("all", every) if every else None,
            "values": sorted(rows, key=lambda r: (r["gap"], r["slot"]))}


def _row(slot: str, pairs: list[tuple[bool, float]]) -> dict[str, Any]:
    answers = 100 * float(np.mean([a for a, _ in pairs]))
    refs = 100 * float(np.mean([r for _, r in pairs]))
    return {"slot": slot, "n": len(pairs), "answers": answers, "references": refs,
            "gap": answers - refs}


def slot_report(slots: dict[str, Any], rows: int = 10) -> list[str]:
    """report.md lines: the total and the ``rows`` values the answers name least against the
    references."""
    total = slots["total"]
    if total is None:
        return ["", "## Slot values named", "", "`data.slot_pattern` found no slot in any prompt."]
    lines = ["", "## Slot values named (verbatim, ignoring case): answers vs references", "",
             f"All {total['n']} slots: answers {total['answers']:.1f}%, references "
             f"{total['references']:.1f}%. The {rows} widest shortfalls:", "",
             "| slot | prompts | answers % | references % | gap |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['slot']} | {r['n']} | {r['answers']:.1f} | {r['references']:.1f} | "
              f"{r['gap']:+.1f} |" for r in slots["values"][:rows]]
    return lines
