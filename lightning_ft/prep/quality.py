"""Quality measures of one record's response, the figures the clean rules compare against their limits."""

from __future__ import annotations

QUALITY_RULES = ("empty_response", "response_is_prompt", "repeated_lines")


def response_chars(response: str) -> int:
    """The number of non-space characters of ``response``."""
    return len("".join(response.split()))


def repeated_line_ratio(response: str) -> float:
    """The share of the response's content lines that repeat an earlier line, compared without case and spacing.
    Lines without a letter or digit (``}``, ``---``, code fences) are not content."""
    lines = [" ".join(line.casefold().split()) for line in response.splitlines() if any(map(str.isalnum, line))]
    if not lines:
        return 0.0
    return (len(lines) - len(set(lines))) / len(lines)
