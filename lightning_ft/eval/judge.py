"""LLM-as-judge: a judge model grades one model's replies on a 1..N scale, or compares two models' replies in both
orders, and every item ends as a verdict with a status (``ok``, ``unparsable`` or ``error``), never a crash.

The judge is asked for a reasoned JSON verdict (``{"reasoning": ..., "score": N}`` or ``{"reasoning": ...,
"winner": "1"|"2"|"tie"}``); MT-bench's ``[[N]]`` / ``[[A]]`` and ``Rating: N`` are accepted too. A verdict that
does not parse is asked for again (``retries`` times, each attempt seeded differently and sampled at
``retry_temperature``, since a greedy judge would repeat itself). Judges are in `lightning_ft.eval.judge_backends`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lightning_ft.data.formats import Message
from lightning_ft.errors import UsageError
from lightning_ft.eval.items import EvalItem
from lightning_ft.eval.judge_backends import EndpointJudge, JudgeBackend, LocalJudge
from lightning_ft.eval.judge_parse import parse_score, parse_winner
from lightning_ft.eval.judge_prompts import comparison_messages, grading_messages

__all__ = [
    "COMPARE_PREFIX",
    "GRADE_PREFIX",
    "EndpointJudge",
    "JudgeBackend",
    "LocalJudge",
    "compare",
    "comparison_scores",
    "grade",
    "grade_scores",
    "parse_score",
    "parse_winner",
    "summarize_comparisons",
    "summarize_grades",
]

Progress = Callable[[int, int], Any]
Parse = Callable[[str], "dict[str, Any] | None"]
CRITERIA = ("accuracy", "completeness", "fluency", "helpfulness")
GRADE_PREFIX = '{"score":'
"""A ``response_prefix`` for `grade` that makes a weak judge state its score first."""
COMPARE_PREFIX = '{"winner": "'
"""A ``response_prefix`` for `compare` that makes a weak judge name the winner first."""
COMPARISON_POINTS = {"a": 1.0, "b": 0.0, "tie": 0.5, "inconsistent": 0.5}


# Judging ---------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What came of one judging request: the parsed verdict, or the last raw reply, or the error."""

    status: str
    attempts: int
    parsed: dict[str, Any] | None = None
    raw: str | None = None
    error: str | None = None

    def fields(self, key: str) -> dict[str, Any]:
        """``{"status", key, "reasoning", "attempts"}`` (+ ``raw`` if unparsable, ``error`` if failed)."""
        value, reasoning = (self.parsed[key], self.parsed["reasoning"]) if self.parsed else (None, None)
        extra = {"raw": self.raw} if self.status == "unparsable" else {}
        extra |= {"error": self.error} if self.status == "error" else {}
        return {"status": self.status, key: value, "reasoning": reasoning, "attempts": self.attempts, **extra}


@dataclass
class Asking:
    """How each verdict is asked for: the prefilled start of the judge's reply, and how an unparsable verdict is
    asked for again (``retries`` times, attempt ``k`` seeded ``seed + k`` at ``retry_temperature``)."""

    retries: int
    seed: int
    retry_temperature: float | None
    prefix: str | None = None


def _complete_all(
    judge: JudgeBackend, requests: list[list[Message]], seed: int, temperature: float | None
) -> list[str | Exception]:
    """Each request's reply, or the exception it raised: batched where the judge can, else one by one."""
    options = {} if temperature is None else {"temperature": temperature}
    complete_many = getattr(judge, "complete_many", None)
    if complete_many is not None and len(requests) > 1:
        try:
            return list(complete_many(requests, seed, **options))
        except Exception:  # asked again one by one, so a failure lands on the item that causes it
            pass
    replies: list[str | Exception] = []
    for request in requests:
        try:
            replies.append(judge.complete(request, seed, **options))
        except Exception as error:  # recorded on the item; the run goes on
            replies.append(error)
    return replies


def _judge_chunk(judge: JudgeBackend, requests: list[list[Message]], parse: Parse, asking: Asking) -> list[Outcome]:
    """Judge ``requests``, asking again for the unparsable ones."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    pending = list(range(len(requests)))
    for attempt in range(asking.retries + 1):
        temperature = None if attempt == 0 else asking.retry_temperature
        replies = _complete_all(judge, [requests[i] for i in pending], asking.seed + attempt, temperature)
        still_pending = []
        for index, reply in zip(pending, replies, strict=True):
            if isinstance(reply, Exception):
                outcomes[index] = Outcome("error", attempt + 1, error=f"{type(reply).__name__}: {reply}")
            elif (parsed := parse(text := (asking.prefix or "") + reply)) is not None:
                outcomes[index] = Outcome("ok", attempt + 1, parsed=parsed)
            else:
                outcomes[index] = Outcome("unparsable", attempt + 1, raw=text)
                still_pending.append(index)
        pending = still_pending
        if not pending:
            break
    return outcomes


def judge_requests(
    judge: JudgeBackend, requests: list[list[Message]], parse: Parse, asking: Asking, progress: Progress | None = None
) -> list[Outcome]:
    """One `Outcome` per request, judged in chunks of the judge's ``batch_size`` (1 if it has none).

    Args:
        judge: The judge backend.
        requests: Judging conversations.
        parse: Reply (prefix included) -> parsed verdict, or None when unparsable.
        asking: The prefilled start of replies, and the retries of unparsable verdicts.
        progress: Called with ``(requests done, total)`` after each chunk.
    """
    chunk = max(1, int(getattr(judge, "batch_size", 1)))
    outcomes: list[Outcome] = []
    for start in range(0, len(requests), chunk):
        outcomes += _judge_chunk(judge, requests[start : start + chunk], parse, asking)
        if progress is not None:
            progress(len(outcomes), len(requests))
    return outcomes


def _check_inputs(
    judge: JudgeBackend, items: Sequence[EvalItem], replies: dict[str, list[str]], prefix: str | None, retries: int
) -> None:
    missing = [item.id for item in items if item.id not in replies]
    if missing:
        raise ValueError(f"No replies for {len(missing)} of {len(items)} items, e.g. {missing[:5]}")
    if retries < 0:
        raise UsageError(f"retries (--judge_retries) must be at least 0, got {retries}")
    if prefix and not getattr(judge, "supports_prefill", False):
        raise UsageError(f"response_prefix needs a judge that continues a prefilled reply; {judge!r} does not")


def grade(
    judge: JudgeBackend,
    items: Sequence[EvalItem],
    replies: dict[str, list[str]],
    criteria: Sequence[str] = CRITERIA,
    scale: int = 10,
    retries: int = 2,
    seed: int = 0,
    progress: Progress | None = None,
    retry_temperature: float | None = 0.7,
    response_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """Grade each item's last reply on 1..``scale``, in the context of its whole conversation.

    Args:
        judge: The judge backend (`LocalJudge`, `EndpointJudge` or anything with ``complete``).
        items: The evaluation items.
        replies: Item id -> the model's reply to each turn.
        criteria: What the judge weighs.
        scale: The highest score.
        retries: Further attempts for a verdict that does not parse.
        seed: Seed of the first attempt (attempt ``k`` uses ``seed + k``).
        progress: Called with ``(items done, total)``.
        retry_temperature: Temperature of retries (None: the judge's own).
        response_prefix: Start of the judge's reply, e.g. `GRADE_PREFIX` so a weak local judge scores first.

    Returns:
        Per item ``{"id", "status", "score", "reasoning", "attempts"}`` (+ ``raw`` if unparsable, ``error`` if the
        judge failed), status ``ok``, ``unparsable`` or ``error``.
    """
    _check_inputs(judge, items, replies, response_prefix, retries)
    if scale < 2:
        raise UsageError(f"scale must be at least 2, got {scale}")
    requests = [grading_messages(item, replies[item.id], criteria, scale, response_prefix) for item in items]
    asking = Asking(retries, seed, retry_temperature, response_prefix)
    outcomes = judge_requests(judge, requests, lambda text: parse_score(text, scale), asking, progress)
    return [{"id": item.id, **outcome.fields("score")} for item, outcome in zip(items, outcomes, strict=True)]


def _order_verdict(order: str, outcome: Outcome) -> dict[str, Any]:
    """A per-order verdict with the winner named by model (``a``/``b``/``tie``), not by position."""
    verdict = {"order": order, **outcome.fields("winner")}
    if verdict["winner"] is not None:
        verdict["winner"] = {"1": order[0], "2": order[1], "tie": "tie"}[verdict["winner"]]
    return verdict


def combine_orders(first: str, second: str) -> str:
    """The item's winner from its two orders: agreement stands; a win against a tie is a tie; a win for each model
    is ``inconsistent`` (position bias), scored as a tie but counted apart.

    Args:
        first: The winner (``a``, ``b`` or ``tie``) with A shown first.
        second: The winner with B shown first.
    """
    if first == second:
        return first
    return "tie" if "tie" in (first, second) else "inconsistent"


def _comparison(item_id: str, orders: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = {order["status"] for order in orders}
    status = "error" if "error" in statuses else "unparsable" if "unparsable" in statuses else "ok"
    winner = combine_orders(orders[0]["winner"], orders[1]["winner"]) if status == "ok" else None
    return {"id": item_id, "status": status, "winner": winner, "orders": orders}


def compare(
    judge: JudgeBackend,
    items: Sequence[EvalItem],
    replies_a: dict[str, list[str]],
    replies_b: dict[str, list[str]],
    criteria: Sequence[str] = CRITERIA,
    retries: int = 2,
    seed: int = 0,
    progress: Progress | None = None,
    retry_temperature: float | None = 0.7,
    response_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """Compare model A's and model B's last replies to each item, judged in both orders (A shown first, then B).

    Args:
        judge: The judge backend.
        items: The evaluation items.
        replies_a: Item id -> model A's reply to each turn.
        replies_b: Item id -> model B's reply to each turn.
        criteria: What the judge weighs.
        retries: Further attempts for a verdict that does not parse.
        seed: Seed of the first attempt (attempt ``k`` uses ``seed + k``).
        progress: Called with ``(items done, total)``.
        retry_temperature: Temperature of retries (None: the judge's own).
        response_prefix: Start of the judge's reply, e.g. `COMPARE_PREFIX` so a weak local judge decides first.

    Returns:
        Per item ``{"id", "status", "winner", "orders"}``: winner ``a``, ``b``, ``tie`` or ``inconsistent`` (see
        `combine_orders`), None unless both orders parsed; ``orders`` holds the two per-order verdicts.
    """
    _check_inputs(judge, items, replies_a, response_prefix, retries)
    _check_inputs(judge, items, replies_b, response_prefix, retries)
    requests = []
    for item in items:
        a, b = replies_a[item.id], replies_b[item.id]
        requests += [
            comparison_messages(item, first, second, criteria, response_prefix) for first, second in ((a, b), (b, a))
        ]
    by_items = (lambda done, total: progress(done // 2, total // 2)) if progress is not None else None
    asking = Asking(retries, seed, retry_temperature, response_prefix)
    outcomes = judge_requests(judge, requests, parse_winner, asking, by_items)
    return [
        _comparison(item.id, [_order_verdict("ab", outcomes[2 * i]), _order_verdict("ba", outcomes[2 * i + 1])])
        for i, item in enumerate(items)
    ]


# Summaries -------------------------------------------------------------------------------------------------------


def _counts(verdicts: Sequence[dict[str, Any]]) -> dict[str, int]:
    statuses = [verdict["status"] for verdict in verdicts]
    return {
        "judged": len(statuses),
        "parsed": statuses.count("ok"),
        "unparsable": statuses.count("unparsable"),
        "errors": statuses.count("error"),
    }


def grade_scores(verdicts: Sequence[dict[str, Any]]) -> list[float | None]:
    """Each item's score (None unless parsed), e.g. for a bootstrap interval.

    Args:
        verdicts: What `grade` returned.
    """
    return [float(v["score"]) if v["status"] == "ok" else None for v in verdicts]


def summarize_grades(verdicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"judged", "parsed", "unparsable", "errors", "mean_score"}``; the mean is over parsed items (None if none).

    Args:
        verdicts: What `grade` returned.
    """
    scores = [score for score in grade_scores(verdicts) if score is not None]
    return {**_counts(verdicts), "mean_score": sum(scores) / len(scores) if scores else None}


def comparison_scores(verdicts: Sequence[dict[str, Any]]) -> list[float | None]:
    """Model A's points per item: 1 for a win, 0.5 for a tie or an inconsistent pair, 0 for a loss; None unless
    parsed. Their mean over parsed items is the win rate, so a bootstrap over them gives its interval.

    Args:
        verdicts: What `compare` returned.
    """
    return [COMPARISON_POINTS[v["winner"]] if v["status"] == "ok" else None for v in verdicts]


def summarize_comparisons(verdicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"judged", "parsed", "wins", "losses", "ties", "inconsistent", "unparsable", "errors", "win_rate"}`` for
    model A. ``win_rate = (wins + 0.5 * (ties + inconsistent)) / parsed`` (None if nothing parsed): inconsistent
    pairs count as ties, as in MT-bench, but are reported apart.

    Args:
        verdicts: What `compare` returned.
    """
    winners = [v["winner"] for v in verdicts if v["status"] == "ok"]
    points = [score for score in comparison_scores(verdicts) if score is not None]
    counts = _counts(verdicts)
    return {
        "judged": counts["judged"],
        "parsed": counts["parsed"],
        "wins": winners.count("a"),
        "losses": winners.count("b"),
        "ties": winners.count("tie"),
        "inconsistent": winners.count("inconsistent"),
        "unparsable": counts["unparsable"],
        "errors": counts["errors"],
        "win_rate": sum(points) / len(points) if points else None,
    }
