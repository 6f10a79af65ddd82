"""The slots of data-to-text prompts (``data.slot_pattern``): the attribute=value facts a
prompt states, such as E2E's ``eatType[pub]``.

A training set can miss whole values its test set holds (E2E's dev set has no pub and two of
the seven foods; a model trained on it writes "restaurant" for every pub). ``data check`` and
the fast check at the start of every run list such values before anyone trains; ``evaluate``
counts which values the answers name (evaluation/slots.py).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable


def find_slots(text: str, finder: re.Pattern[str]) -> list[tuple[str, str]]:
    """``(attribute, value)`` of each slot in ``text``, the value lower-cased (a value is
    named by its words, whatever their case); empty values left out."""
    return [(key.strip(), value.strip().lower()) for key, value in finder.findall(text)
            if value.strip()]


def unseen_slots(train: Iterable[str], other: Iterable[str], pattern: str,
                 shown: int = 10, delexicalized: Iterable[str] = ()) -> dict[str, Any]:
    """Of the distinct ``other`` prompts, how many hold a slot value no ``train`` prompt
    holds, and the ``shown`` most frequent such values with their prompt counts. Values of
    ``delexicalized`` attributes (``data.chat.delexicalize``) never reach the model: not
    counted."""
    finder, skip = re.compile(pattern), set(delexicalized)
    seen = {slot for text in set(train) for slot in find_slots(text, finder)}
    prompts = [{(k, v) for k, v in find_slots(text, finder) if k not in skip} - seen
               for text in set(other)]
    counts = Counter(f"{k}={v}" for unseen in prompts for k, v in unseen)
    return {"prompts": sum(bool(u) for u in prompts), "of": len(prompts),
            "values": dict(counts.most_common(shown)), "distinct_values": len(counts)}


def unseen_line(split: str, unseen: dict[str, Any]) -> str:
    """One sentence: how many ``split`` prompts hold values training never saw, and which."""
    values = ", ".join(f"{slot} ({n})" for slot, n in unseen["values"].items())
    more = unseen["distinct_values"] - len(unseen["values"])
    return (f"{split}: {unseen['prompts']} of {unseen['of']} prompts hold slot values no "
            f"training prompt holds: {values}{f' and {more} more' if more > 0 else ''}")
