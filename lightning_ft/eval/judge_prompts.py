"""What a judge is asked: the grading and the pairwise comparison conversations, MT-bench style, asking for a reasoned
JSON verdict (with the reference answer where the item has one)."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_ft.data.formats import Message
from lightning_ft.eval.items import EvalItem

SYSTEM = "You are a careful, impartial judge of the replies of AI assistants."
GRADE_TASK = (
    "Please act as an impartial judge and rate the assistant's last reply in the conversation below on a scale of "
    "1 (worst) to {scale} (best), considering {criteria}.{reference_note} Be objective; a longer reply is not a "
    "better one. Explain your judgement briefly, then give the score."
)
COMPARE_TASK = (
    "Please act as an impartial judge and decide which of two AI assistants, Assistant 1 or Assistant 2, gave the "
    "better last reply in the conversation below, considering {criteria}.{reference_note} The order of the "
    "assistants, the length of their replies and their names must not influence you. Explain your judgement "
    "briefly, then name the winner, or a tie if they are equally good."
)
REFERENCE_NOTE = " Compare with the reference answer to the first question: a mistake is a serious fault."
GRADE_FORMAT = (
    'Answer with a JSON object only, with a "reasoning" (your explanation) and a "score" (a whole number from 1 to '
    "{scale})."
)
COMPARE_FORMAT = (
    'Answer with a JSON object only, with a "reasoning" (your explanation) and a "winner" ("1" if Assistant 1\'s '
    'reply is better, "2" if Assistant 2\'s is, "tie" if they are equally good).'
)


def conversation_of(item: EvalItem, replies: Sequence[str]) -> list[Message]:
    """The item's conversation answered with ``replies``: prompt, reply 1, follow-up 1, reply 2, ...

    Args:
        item: The evaluation item.
        replies: The model's reply to each turn answered (at least the first).
    """
    if not replies or len(replies) > 1 + len(item.follow_ups):
        raise ValueError(f"Item {item.id!r} has {1 + len(item.follow_ups)} turns; got {len(replies)} replies")
    messages = [*item.prompt, {"role": "assistant", "content": replies[0]}]
    for follow_up, reply in zip(item.follow_ups, replies[1:], strict=False):
        messages += [{"role": "user", "content": follow_up}, {"role": "assistant", "content": reply}]
    return messages


def transcript(messages: Sequence[Message], assistant: str = "Assistant") -> str:
    """``messages`` as ``### User:`` / ``### <assistant>:`` blocks.

    Args:
        messages: A conversation.
        assistant: The name the assistant's turns go by.
    """
    names = {"user": "User", "system": "System", "assistant": assistant}
    return "\n\n".join(f"### {names.get(m['role'], m['role'].title())}:\n{m['content']}" for m in messages)


def _section(title: str, body: str) -> str:
    return f"[{title}]\n{body}\n[End of {title[0].lower() + title[1:]}]"


def _judge_messages(task: str, sections: list[str], answer_format: str, prefix: str | None) -> list[Message]:
    content = "\n\n".join([task, *sections, answer_format])
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]
    return messages + [{"role": "assistant", "content": prefix}] if prefix else messages


def grading_messages(
    item: EvalItem, replies: Sequence[str], criteria: Sequence[str], scale: int, prefix: str | None = None
) -> list[Message]:
    """The judging conversation for the last of ``replies`` to ``item`` (with its reference answer if any).

    Args:
        item: The evaluation item.
        replies: The model's reply to each turn answered.
        criteria: What the judge weighs.
        scale: The highest score.
        prefix: Start of the judge's reply, as a final assistant message to continue.
    """
    note = REFERENCE_NOTE if item.reference else ""
    task = GRADE_TASK.format(scale=scale, criteria=", ".join(criteria), reference_note=note)
    sections = [_section("Reference answer to the first question", item.reference)] if item.reference else []
    sections.append(_section("Conversation", transcript(conversation_of(item, replies))))
    return _judge_messages(task, sections, GRADE_FORMAT.format(scale=scale), prefix)


def comparison_messages(
    item: EvalItem,
    first: Sequence[str],
    second: Sequence[str],
    criteria: Sequence[str],
    prefix: str | None = None,
) -> list[Message]:
    """The judging conversation for two models' replies to ``item``, ``first`` shown as Assistant 1.

    Args:
        item: The evaluation item.
        first: Replies shown first (Assistant 1).
        second: Replies shown second (Assistant 2).
        criteria: What the judge weighs.
        prefix: Start of the judge's reply, as a final assistant message to continue.
    """
    note = REFERENCE_NOTE if item.reference else ""
    task = COMPARE_TASK.format(criteria=", ".join(criteria), reference_note=note)
    sections = [_section("Conversation", transcript(item.prompt))]
    if item.reference:
        sections.append(_section("Reference answer to the first question", item.reference))
    for number, replies in ((1, first), (2, second)):
        turns = conversation_of(item, replies)[len(item.prompt) :]
        title = f"Assistant {number}'s " + ("reply" if len(replies) == 1 else "replies and the user's follow-ups")
        sections.append(_section(title, transcript(turns, f"Assistant {number}")))
    return _judge_messages(task, sections, COMPARE_FORMAT, prefix)
