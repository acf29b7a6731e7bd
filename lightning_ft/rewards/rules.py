"""Rule-based rewards: a GSM8K-style final answer, two answer formats (inside tags; "The answer is N"), a length
penalty."""

from __future__ import annotations

import re
from typing import Any

# A comma separates thousands only before exactly three digits (1,234 and 12,345,678); elsewhere ("3,4", "3, 4",
# "1,2345") it separates two numbers.
NUMBER = re.compile(r"-?\d+(?:,\d{3}(?!\d))*(?:\.\d+)?")
ANSWER_SENTENCE = re.compile(r"\bthe (?:final )?answer is:?\s*\$?-?\d", re.IGNORECASE)
FINAL_ANSWER_MARK = "####"


def final_number(text: str) -> float | None:
    """The number a GSM8K-style text ends on: the first after ``####`` if there is one, else the last in the text.
    Thousands separators are ignored; any other comma separates numbers, so "The answer is 3,4" ends on 4."""
    if FINAL_ANSWER_MARK in text:
        text = text.rsplit(FINAL_ANSWER_MARK, 1)[1]
        numbers = NUMBER.findall(text)[:1]
    else:
        numbers = NUMBER.findall(text)[-1:]
    if not numbers:
        return None
    try:
        return float(numbers[0].replace(",", ""))
    except ValueError:
        return None


def gsm8k_exact_match(prompts: list[str], completions: list[str], answer: list[str], **fields: Any) -> list[float]:
    """1.0 when the completion's final number equals the reference ``answer``'s (a bare number or a GSM8K solution
    ending in ``#### N``), else 0.0."""
    rewards = []
    for completion, reference in zip(completions, answer, strict=True):
        expected, got = final_number(str(reference)), final_number(completion)
        rewards.append(float(expected is not None and got is not None and abs(expected - got) < 1e-6))
    return rewards


def answer_in_tags(
    prompts: list[str], completions: list[str], open_tag: str = "<answer>", close_tag: str = "</answer>", **fields: Any
) -> list[float]:
    """1.0 when the completion holds exactly one non-empty ``<answer>...</answer>`` block, else 0.0 (a format
    reward; bind other tags with ``functools.partial``)."""
    pattern = re.compile(re.escape(open_tag) + r"(.*?)" + re.escape(close_tag), re.DOTALL)
    return [float(len(blocks := pattern.findall(text)) == 1 and bool(blocks[0].strip())) for text in completions]


def answer_sentence(prompts: list[str], completions: list[str], **fields: Any) -> list[float]:
    """1.0 when the completion states a number as "The answer is N" (or "the final answer is: $N"), else 0.0: a
    format reward that small models already meet now and then, so GRPO's groups have something to compare."""
    return [float(ANSWER_SENTENCE.search(text) is not None) for text in completions]


def length_penalty(prompts: list[str], completions: list[str], max_chars: int = 1000, **fields: Any) -> list[float]:
    """0 up to ``max_chars`` characters, then falling linearly to -1 at twice that length (and staying there)."""
    return [-min(1.0, max(0, len(text) - max_chars) / max_chars) for text in completions]
