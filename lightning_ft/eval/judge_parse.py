"""Reading a judge's verdict: a reasoned JSON object first, then MT-bench's ``[[N]]`` / ``[[A]]`` and ``Rating: N``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

NUMBER = r"(\d+(?:\.\d+)?)"
BRACKETED_SCORE = re.compile(r"\[\[\s*" + NUMBER + r"\s*\]\]")
LABELLED_SCORE = re.compile(
    r"\b(?:rating|score)\b\"?\s*[:=]\s*\"?\s*" + NUMBER + r"(?!\d|\.\d|\s*(?:to|-)\s*\d)", re.IGNORECASE
)
BRACKETED_WINNER = re.compile(r"\[\[\s*(A|B|C|1|2|tie)\s*\]\]", re.IGNORECASE)
LABELLED_WINNER = re.compile(r"\bwinner\b\"?\s*[:=]\s*\"?\s*(?:assistant\s*)?(1|2|tie)\b", re.IGNORECASE)
PARTIAL_REASONING = re.compile(r'"reasoning"\s*:\s*"((?:[^"\\]|\\.)*)')
WINNER_NAMES = {"1": "1", "2": "2", "a": "1", "b": "2", "c": "tie", "tie": "tie"}


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``text``, in order (inside code fences or surrounded by prose alike).

    Args:
        text: A judge's reply.
    """
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            yield value


def _fallback_reasoning(text: str) -> str:
    """The reasoning of a JSON object cut off by the token limit, else the whole reply."""
    match = PARTIAL_REASONING.search(text)
    return match.group(1).strip() if match else text.strip()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"\s*" + NUMBER + r"\s*", value):
        return float(value)
    return None


def _score_in_range(value: float | None, scale: int) -> int | float | None:
    if value is None or not 1 <= value <= scale:
        return None
    return int(value) if value.is_integer() else value


def parse_score(text: str, scale: int = 10) -> dict[str, Any] | None:
    """``{"score", "reasoning"}`` from a judge's reply, or None when it has no score within 1..``scale``.

    The first JSON object with a ``score`` (or ``rating``) decides; failing that, the first ``[[N]]``, then the first
    ``Rating: N`` / ``score: N`` (which also reads a JSON object cut off after its score). Whatever decides, a score
    outside 1..``scale`` makes the reply unparsable.

    Args:
        text: The judge's reply.
        scale: The highest score.
    """
    for found in json_objects(text):
        key = "score" if "score" in found else "rating" if "rating" in found else None
        if key is not None:
            score = _score_in_range(_number(found[key]), scale)
            return None if score is None else {"score": score, "reasoning": str(found.get("reasoning", ""))}
    for pattern in (BRACKETED_SCORE, LABELLED_SCORE):
        match = pattern.search(text)
        if match:
            score = _score_in_range(float(match.group(1)), scale)
            return None if score is None else {"score": score, "reasoning": _fallback_reasoning(text)}
    return None


def _winner_name(value: Any) -> str | None:
    name = re.sub(r"^assistant\s*", "", str(value).strip().lower())
    return WINNER_NAMES.get(name)


def parse_winner(text: str) -> dict[str, Any] | None:
    """``{"winner": "1"|"2"|"tie", "reasoning"}`` (by position shown) from a judge's reply, or None.

    The first JSON object with a ``winner`` decides (``"1"``, ``"2"``, ``"tie"``, also ``"A"``/``"B"``); failing
    that, MT-bench's ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (C: tie), then ``winner: N``.

    Args:
        text: The judge's reply.
    """
    for found in json_objects(text):
        if "winner" in found:
            winner = _winner_name(found["winner"])
            return None if winner is None else {"winner": winner, "reasoning": str(found.get("reasoning", ""))}
    for pattern in (BRACKETED_WINNER, LABELLED_WINNER):
        match = pattern.search(text)
        if match:
            return {"winner": WINNER_NAMES[match.group(1).lower()], "reasoning": _fallback_reasoning(text)}
    return None
