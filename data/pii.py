"""PII patterns: e-mail, phone, payment card (Luhn-checked), IPv4, IBAN (mod-97-checked).

Tuned against false positives on ordinary numbers, amounts, order ids and dates: a phone needs a
phone-like shape, a card must pass Luhn, an IBAN must pass its mod-97 check.
"""

from __future__ import annotations

import re
from collections import Counter

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
PHONE = re.compile(
    r"(?<![\w/.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
    r"\d{3,4}[ .-]\d{3,4}(?![\w/-])"
    r"|(?<![\w/.-])\+\d{10,14}(?![\w/-])"
)
CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
                  r"(?![\d.])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _dates_or_years(text: str) -> bool:
    return bool(re.fullmatch(r"\d{4}[ .-]\d{2}[ .-]\d{2}|\d{2}[ .-]\d{2}[ .-]\d{4}", text))


def find_pii(text: str) -> Counter:
    """Counts of each PII kind in ``text``."""
    found: Counter = Counter()
    found["email"] += len(EMAIL.findall(text))
    for match in CARD.findall(text):
        digits = re.sub(r"\D", "", match)
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            found["card"] += 1
    # Long digit runs (cards, account numbers) and IBANs are not phones: mask them first.
    masked = IBAN.sub(lambda m: "#" * len(m.group(0)), text)
    masked = CARD.sub(lambda m: "#" * len(m.group(0)), masked)
    for match in PHONE.findall(masked):
        digits = re.sub(r"\D", "", match)
        if 9 <= len(digits) <= 15 and not _dates_or_years(match.strip()):
            found["phone"] += 1
    found["ipv4"] += len(IPV4.findall(text))
    found["iban"] += sum(iban_ok(m) for m in IBAN.findall(text))
    return Counter({k: v for k, v in found.items() if v})


def redact(text: str) -> tuple[str, Counter]:
    """Replace PII with ``[EMAIL]``, ``[CARD]``, ``[PHONE]``, ``[IP]``, ``[IBAN]``; count them."""
    counts: Counter = Counter()

    def sub(pattern: re.Pattern, tag: str, check=lambda m: True) -> None:
        nonlocal text

        def repl(match: re.Match) -> str:
            if check(match.group(0)):
                counts[tag.lower()] += 1
                return f"[{tag}]"
            return match.group(0)

        text = pattern.sub(repl, text)

    sub(EMAIL, "EMAIL")
    sub(IBAN, "IBAN", iban_ok)
    sub(CARD, "CARD", lambda m: 13 <= len(re.sub(r"\D", "", m)) <= 19
        and luhn_ok(re.sub(r"\D", "", m)))
    sub(IPV4, "IP")
    sub(PHONE, "PHONE", lambda m: 9 <= len(re.sub(r"\D", "", m)) <= 15
        and not _dates_or_years(m.strip()))
    return text, counts
