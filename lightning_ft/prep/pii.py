"""Personal data in text: e-mail addresses, phone numbers, IP addresses, credit-card numbers and IBANs, found and
replaced by typed placeholders (``<EMAIL>``, ``<PHONE>``, ``<IP_ADDRESS>``, ``<CREDIT_CARD>``, ``<IBAN>``).

A pattern only proposes a span; a check decides, so look-alikes stay:

- credit cards: groups of 2-6 digits split by one kind of separator (space or dash), 13-19 digits in all, or a run
  of 15-16 digits without separators (a shorter run is more often a plain number, such as a sum); a first digit 2-6
  (the card networks' ranges; ISBNs start with 9, timestamps with 1); and the Luhn checksum;
- IBANs: a country of the IBAN registry, that country's length, and the ISO 13616 mod-97 checksum;
- IPv4: four dotted decimal parts 0-255 without leading zeros (`ipaddress` decides), not part of a longer dotted run
  (``1.2.3.4.5`` is a version) and not right after ``v``, ``ver`` or ``version`` (``v2.0.1.4``, ``version 1.2.3.4``);
- IPv6: `ipaddress` accepts it, it has a decimal digit, and either three or more groups or a hex letter, so code such
  as ``x[1::2]`` or ``Add::add`` stays;
- phones: ``+`` and a country code with 8-15 digits in all (10-13 when written without separators, as E.164);
  North American ``(415) 555-2671`` / ``415-555-2671``; or a national number with a trunk ``0`` (``020 7946 0958``,
  ``01 23 45 67 89``) of 9-12 digits. A bare run of digits, a date (``2023-01-15``, ``15/01/2023``), a time or an
  ISBN never has one of these shapes.

Spans that look like a kind but fail its check (a Luhn-failing order number, an IBAN one digit off, a version
number) still claim their text, so no other kind masks part of them. Kinds claim text in the order of ``PII_KINDS``.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

PII_KINDS: tuple[str, ...] = ("email", "iban", "ip_address", "credit_card", "phone")
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "iban": "<IBAN>",
    "ip_address": "<IP_ADDRESS>",
    "credit_card": "<CREDIT_CARD>",
    "phone": "<PHONE>",
}
# Fields the trainer reads as structure, not free text: roles and media paths are never masked.
STRUCTURAL_FIELDS = frozenset({"role", "from", "image", "images", "video", "videos", "audio", "audios"})

# IBAN length by country (ISO 13616 registry).
IBAN_LENGTHS = {
    "NO": 15,
    "BE": 16,
    **dict.fromkeys(["DK", "FI", "FK", "FO", "GL", "NL", "SD"], 18),
    **dict.fromkeys(["MK", "SI"], 19),
    **dict.fromkeys(["AT", "BA", "EE", "KZ", "LT", "LU", "MN", "XK"], 20),
    **dict.fromkeys(["CH", "HR", "LI", "LV"], 21),
    **dict.fromkeys(["BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"], 22),
    **dict.fromkeys(["AE", "GI", "IL", "IQ", "OM", "SO", "TL"], 23),
    **dict.fromkeys(["AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"], 24),
    **dict.fromkeys(["LY", "PT", "ST"], 25),
    **dict.fromkeys(["IS", "TR"], 26),
    **dict.fromkeys(["BI", "DJ", "FR", "GR", "IT", "MC", "MR", "SM"], 27),
    **dict.fromkeys(["AL", "AZ", "BY", "CY", "DO", "GT", "HN", "HU", "LB", "NI", "PL", "SV"], 28),
    **dict.fromkeys(["BR", "EG", "PS", "QA", "UA"], 29),
    **dict.fromkeys(["JO", "KW", "MU", "YE"], 30),
    **dict.fromkeys(["MT", "SC"], 31),
    "LC": 32,
    "RU": 33,
}

MAY_HOLD_PII = re.compile(r"[0-9@]")  # every kind has a digit or an @
EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![\w-])",
    re.ASCII,
)
IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,40}", re.ASCII)
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)", re.ASCII)
IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])", re.ASCII
)
VERSION_WORD = re.compile(r"\b(?:v|ver|version)[.:]?\s*$", re.IGNORECASE | re.ASCII)
CARD = re.compile(
    r"(?<![\w.,+/-])(?:\d{15,16}|\d{4}(?:-\d{2,6}){2,4}|\d{4}(?: \d{2,6}){2,4})(?![\w/-]|[.,]\d)", re.ASCII
)
PHONE = re.compile(
    r"""(?<![\w+.,/-])(?:
        (?P<international>\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6})
      | (?P<north_american>(?:1[ .-])?(?:\([2-9]\d{2}\)\ ?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4})
      | (?P<trunk>(?:\(0\d{1,4}\)[ .-]?|0\d{1,4}[ .-])\d{2,8}(?:[ .-]\d{2,8}){0,3})
    )(?![\w/:-]|[.,]\d)""",
    re.ASCII | re.VERBOSE,
)


@dataclass(frozen=True)
class PiiSpan:
    """``text[start:end]`` is personal data of ``kind``, or (``kind`` None) a look-alike that fails its check."""

    start: int
    end: int
    kind: str | None


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of card numbers: double every second digit from the right, the sum ends in 0."""
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country's length, and the number (first four characters moved last, letters as 10-35) is 1
    modulo 97."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def email_spans(text: str) -> Iterator[PiiSpan]:
    for match in EMAIL.finditer(text):
        yield PiiSpan(match.start(), match.end(), "email")


def iban_spans(text: str) -> Iterator[PiiSpan]:
    """An IBAN takes exactly its country's length of characters (single spaces allowed between them), so text that
    follows it is never swallowed."""
    for match in IBAN.finditer(text):
        candidate = match.group()
        length = IBAN_LENGTHS.get(candidate[:2])
        if length is None:
            continue
        taken, end = 0, match.start()
        for offset, char in enumerate(candidate):
            if char != " ":
                taken += 1
                end = match.start() + offset + 1
            if taken == length:
                break
        if taken < length or end < len(text) and text[end].isalnum():
            yield PiiSpan(match.start(), match.end(), None)
            continue
        yield PiiSpan(match.start(), end, "iban" if iban_valid(text[match.start() : end].replace(" ", "")) else None)


def ip_spans(text: str) -> Iterator[PiiSpan]:
    """IPv6 first, so the IPv4 tail of ``::ffff:192.0.2.1`` is not taken alone."""
    for match in IPV6.finditer(text):
        candidate = match.group()
        if candidate.endswith(":") and not candidate.endswith("::"):
            candidate = candidate[:-1]
        groups = [group for group in candidate.split(":") if group]
        groups_count = len(groups) + sum(1 for group in groups if "." in group)
        has_hex_letter = re.search(r"[A-Fa-f]", candidate) is not None
        if _is_ip(candidate) and re.search(r"\d", candidate) and (groups_count >= 3 or has_hex_letter):
            yield PiiSpan(match.start(), match.start() + len(candidate), "ip_address")
    for match in IPV4.finditer(text):
        version_number = VERSION_WORD.search(text, max(0, match.start() - 10), match.start()) is not None
        yield PiiSpan(match.start(), match.end(), None if version_number or not _is_ip(match.group()) else "ip_address")


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def card_spans(text: str) -> Iterator[PiiSpan]:
    """A space-grouped number that fails Luhn is tried again without its last group, so a card followed by another
    number (``4111 1111 1111 1111 2025``) is still found."""
    for match in CARD.finditer(text):
        candidate = match.group()
        while True:
            digits = re.sub(r"[ -]", "", candidate)
            if len(digits) < 13:
                yield PiiSpan(match.start(), match.end(), None)
                break
            if digits[0] in "23456" and len(digits) <= 19 and luhn_valid(digits):
                yield PiiSpan(match.start(), match.start() + len(candidate), "credit_card")
                break
            if " " not in candidate:
                yield PiiSpan(match.start(), match.end(), None)
                break
            candidate = candidate.rsplit(" ", 1)[0]


def phone_spans(text: str) -> Iterator[PiiSpan]:
    for match in PHONE.finditer(text):
        digits = sum(char.isdigit() for char in match.group())
        if match.group("international"):
            separated = any(not char.isdigit() for char in match.group()[1:])
            valid = 8 <= digits <= 15 if separated else 10 <= digits <= 13
        elif match.group("north_american"):
            valid = True
        else:
            valid = 9 <= digits <= 12
        yield PiiSpan(match.start(), match.end(), "phone" if valid else None)


DETECTORS: dict[str, Callable[[str], Iterator[PiiSpan]]] = {
    "email": email_spans,
    "iban": iban_spans,
    "ip_address": ip_spans,
    "credit_card": card_spans,
    "phone": phone_spans,
}


def find_pii(text: str) -> list[PiiSpan]:
    """The personal data in ``text``, in text order, without overlaps (earlier kinds of ``PII_KINDS`` win)."""
    claimed: list[PiiSpan] = []
    for detector in DETECTORS.values():
        for span in detector(text):
            if not any(span.start < other.end and other.start < span.end for other in claimed):
                claimed.append(span)
    return sorted((span for span in claimed if span.kind), key=lambda span: span.start)


def mask_text(text: str, kinds: Collection[str] = PII_KINDS) -> tuple[str, Counter[str]]:
    """``text`` with each piece of personal data of ``kinds`` replaced by its placeholder, and the count per kind."""
    if not MAY_HOLD_PII.search(text):
        return text, Counter()
    pieces, counts, position = [], Counter(), 0
    for span in find_pii(text):
        if span.kind in kinds:
            pieces += [text[position : span.start], PLACEHOLDERS[span.kind]]
            counts[span.kind] += 1
            position = span.end
    pieces.append(text[position:])
    return "".join(pieces), counts


def mask_value(value: Any, kinds: Collection[str], counts: Counter[str]) -> Any:
    """``value`` (a field of a record: text, a list, a message) with every text in it masked, in the same shape;
    adds what it masked to ``counts``."""
    if isinstance(value, str):
        masked, found = mask_text(value, kinds)
        counts.update(found)
        return masked
    if isinstance(value, Mapping):
        return {
            key: item if key in STRUCTURAL_FIELDS else mask_value(item, kinds, counts) for key, item in value.items()
        }
    if isinstance(value, list):
        return [mask_value(item, kinds, counts) for item in value]
    return value
