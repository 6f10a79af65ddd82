"""Delexicalisation of data-to-text chats: chosen slot values become placeholders.

Why: a name the model has never read (E2E's test MRs hold six ``near`` venues and most
``name`` values the dev set lacks) is one the model has to copy letter by letter, and it
often does not ("Express by Holiday Inn" comes out "the Holiday Inn"). TGen, the E2E
challenge baseline, replaces ``name`` and ``near`` by ``X-name`` and ``X-near`` in MRs and
texts, trains and generates with the placeholders, and writes the values back afterwards.
``data.chat.delexicalize: [name, near]`` does the same:

- in each user turn, every slot (``data.slot_pattern``) of a listed attribute gets the
  placeholder as its value: ``name[The Eagle]`` → ``name[X-name]``;
- in each assistant turn, each such value written verbatim (case ignored) becomes the
  placeholder; a turn that phrases a value otherwise keeps it and is counted (``missed``);
- after generation, :func:`relexicalize` puts each value back where its placeholder stands.

References are scored as the data set has them, never in their delexicalised form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Delexicalized:
    """One conversation delexicalised: its turns, the placeholders' values, and how many
    (assistant turn, value) pairs kept the value because it was not written verbatim."""

    messages: list[dict[str, str]]
    values: dict[str, str] = field(default_factory=dict)
    replaced: int = 0
    missed: int = 0


def placeholder_of(attribute: str, form: str) -> str:
    """``form`` (``data.chat.placeholder``, e.g. ``X-{slot}``) for one attribute."""
    return form.format(slot=attribute)


def delexicalize(messages: list[dict[str, str]], slot_pattern: str, attributes: list[str],
                 form: str = "X-{slot}") -> Delexicalized:
    """``messages`` with the values of ``attributes`` replaced by placeholders (see module)."""
    pattern = re.compile(slot_pattern)
    values: dict[str, str] = {}

    def in_prompt(match: re.Match) -> str:
        attribute, value = match.group(1), match.group(2)
        if attribute.strip() not in attributes or not value.strip():
            return match.group(0)
        mark = placeholder_of(attribute.strip(), form)
        values[mark] = value.strip()
        start, end = match.span(2)
        return match.group(0)[:start - match.start()] + mark + \
            match.group(0)[end - match.start():]

    out = Delexicalized(messages=[])
    for message in messages:
        if message["role"] == "user":
            out.messages.append({**message, "content": pattern.sub(in_prompt,
                                                                   message["content"])})
        else:
            out.messages.append(dict(message))
    # longer values first: a value inside another ("Inn" in "Express by Holiday Inn") waits
    ordered = sorted(values.items(), key=lambda kv: -len(kv[1]))
    for message in out.messages:
        if message["role"] != "assistant":
            continue
        for mark, value in ordered:
            text, n = verbatim(value).subn(mark.replace("\\", "\\\\"), message["content"])
            message["content"] = text
            out.replaced += n
            out.missed += n == 0
    out.values = values
    return out


def as_model_reads(messages: list[dict[str, str]], data: Any) -> Delexicalized | None:
    """``messages`` as a run on ``data`` (a DataConfig) reads them: delexicalised when
    ``data.chat.delexicalize`` is set, else None (the messages are read as they are)."""
    if not data.chat.delexicalize:
        return None
    return delexicalize(messages, str(data.slot_pattern), list(data.chat.delexicalize),
                        data.chat.placeholder)


def verbatim(value: str) -> re.Pattern[str]:
    """``value`` as a whole word sequence, case ignored: how delexicalising, mending and the
    E2E benches find a value "written verbatim" (never inside a longer word)."""
    return re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE)


def relexicalize(text: str, values: dict[str, str]) -> str:
    """``text`` with each placeholder written as its value (longer placeholders first, so
    ``X-name`` never eats the start of a longer one)."""
    for mark in sorted(values, key=len, reverse=True):
        text = text.replace(mark, values[mark])
    return text


def copy_values(text: str, values: list[str]) -> tuple[str, int]:
    """``text`` with each value of three words or more that it writes only in part written
    whole: the longest run of two or more of the value's words found in the text (case
    ignored; a word the value capitalises is capitalised there too, and there is one), with
    the capitalised words just before and after it that stand where the value's other words
    would (a misspelt one: "the Courtyrd by Marriott"), becomes the value; "the" before a
    value that starts with "The" is taken in. Returns the text and how many values were
    mended.

    Why: a pretrained model "corrects" a venue it has never read to the one it knows
    ("near Express by Holiday Inn" comes out "near the Holiday Inn"). A run that did not
    delexicalise can still write the MR's value where it wrote a part of it; a value written
    whole, or not at all, is left as it is (nothing is inserted)."""
    mended = 0
    for value in sorted(values, key=len, reverse=True):
        whole = verbatim(value)
        words = value.split()
        if len(words) < 3 or whole.search(text):
            continue
        found = _longest_part(text, words)
        if found:
            start, end = _widened(text, *found)
            article = re.search(r"(?<!\w)the\s+$", text[:start], re.IGNORECASE)
            if article and words[0].lower() == "the":  # "the Old Mill" → "The Old Mill …"
                start = article.start()
            text = text[:start] + value + text[end:]
            mended += 1
    return text, mended


def _longest_part(text: str, words: list[str]) -> tuple[int, int, int, int] | None:
    """Where the longest run (two words or more, not the whole) of ``words`` stands in
    ``text``, first found, and how many of the value's words come before and after it; None
    if none does."""
    for length in range(len(words) - 1, 1, -1):
        for start in range(len(words) - length + 1):
            part = words[start:start + length]
            capitals = [i for i, w in enumerate(part) if w[:1].isupper()]
            if not capitals:
                continue
            found = re.search(r"(?<!\w)" + r"\s+".join(map(re.escape, part)) + r"(?!\w)",
                              text, re.IGNORECASE)
            if found and all(found.group(0).split()[i][:1].isupper() for i in capitals):
                return (*found.span(), start, len(words) - start - length)
    return None


def _widened(text: str, start: int, end: int, before: int, after: int) -> tuple[int, int]:
    """The span grown over up to ``before`` capitalised words just before it and ``after``
    just after it."""
    for _ in range(before):
        word = re.search(r"(\w[\w'-]*)\s+$", text[:start])
        if not word or not word.group(1)[:1].isupper():
            break
        start = word.start()
    for _ in range(after):
        word = re.match(r"\s+(\w[\w'-]*)", text[end:])
        if not word or not word.group(1)[:1].isupper():
            break
        end += word.end()
    return start, end
