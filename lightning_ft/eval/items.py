"""Evaluation items from the files users have: the training formats (instruction, chat), GSM8K-style Q/A,
MT-bench-style multi-turn questions and multiple-choice questions, each with an identity that pairs it across models.

Every item is a prompt conversation to answer, optionally further user turns to ask after each reply, a reference
answer, and for multiple-choice items the options and the index of the right one. The format is recognised from
the record's fields (or named with ``format``); a record that fits none is refused with its file, line and fields.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from datasets import Dataset

from lightning_ft.data.formats import (
    CHAT_FIELDS,
    INSTRUCTION_FIELDS,
    Message,
    chat_to_messages,
    field_names,
    instruction_to_messages,
)
from lightning_ft.data.sources import DataError, read_source
from lightning_ft.errors import UsageError
from lightning_ft.options import check_option

ItemFormat = Literal["auto", "alpaca", "dolly", "messages", "sharegpt", "qa", "turns", "choice"]
ID_FIELDS = ("id", "question_id", "prompt_id", "uid", "item_id")
CHOICE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class EvalItem:
    """One thing to evaluate a model on.

    Args:
        id: Identity used to pair the item across models (an id field of the record, else a hash of its prompt).
        prompt: The conversation to answer (system and earlier turns included; ends with a user or tool turn).
        follow_ups: Further user turns, each asked after the model's reply to the previous one (MT-bench turn 2).
        reference: The reference answer to the first turn, if the data has one.
        choices: Multiple-choice options (continuations scored by log-likelihood).
        answer: Index of the right option in ``choices``.
        source: ``file:line`` the item came from.
    """

    id: str
    prompt: list[Message]
    follow_ups: list[str] = field(default_factory=list)
    reference: str | None = None
    choices: list[str] | None = None
    answer: int | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if value not in (None, [])}


Converter = Callable[[Mapping[str, Any], str, dict[str, str]], tuple[list[Message], list[str], str | None]]


def _qa(record: Mapping[str, Any], where: str, fields: dict[str, str]) -> tuple[list[Message], list[str], str | None]:
    question = _string(record.get(fields["question"]), fields["question"], where)
    reference = _optional(record.get(fields["answer"]), fields["answer"], where)
    return [{"role": "user", "content": question}], [], reference


def _turns(
    record: Mapping[str, Any], where: str, fields: dict[str, str]
) -> tuple[list[Message], list[str], str | None]:
    turns = record["turns"]
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field 'turns' must be a non-empty list of strings")
    texts = [_string(turn, "turns", where) for turn in turns]
    references = record.get("reference") or []
    reference = references[0] if isinstance(references, list) and references else None
    return [{"role": "user", "content": texts[0]}], texts[1:], _optional(reference, "reference", where)


def _chat(record: Mapping[str, Any], where: str, fields: dict[str, str]) -> tuple[list[Message], list[str], str | None]:
    messages = chat_to_messages(record, fields, where)
    last_assistant = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last_assistant is None:
        return messages, [], None
    return messages[:last_assistant], [], messages[last_assistant]["content"]


def _instruction(
    record: Mapping[str, Any], where: str, fields: dict[str, str]
) -> tuple[list[Message], list[str], str | None]:
    messages = instruction_to_messages({**record, fields["output"]: record.get(fields["output"]) or ""}, fields, where)
    return messages[:-1], [], _optional(record.get(fields["output"]), fields["output"], where)


CONVERTERS: dict[str, Converter] = {
    "alpaca": _instruction,
    "dolly": _instruction,
    "messages": _chat,
    "sharegpt": _chat,
    "qa": _qa,
    "turns": _turns,
}
DEFAULT_FIELDS = {
    **INSTRUCTION_FIELDS,
    **CHAT_FIELDS,
    "qa": {"question": "question", "answer": "answer"},
    "turns": {},
    "choice": {},
}


def detect_format(record: Mapping[str, Any], where: str) -> str:
    """The item format a record's fields say it is (fields that are null do not count: a file mixing formats
    gives every record every field)."""
    keys = {key for key, value in record.items() if value is not None}
    if "choices" in keys and "question" in keys:
        return "choice"
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "turns" in keys:
        return "turns"
    if "question" in keys:
        return "qa"
    if "instruction" in keys:
        return "dolly" if "response" in keys or "context" in keys else "alpaca"
    raise DataError(
        f"{where}: cannot tell the item format from fields {sorted(keys)}; expected one of: messages, conversations "
        "(chat), instruction + output (alpaca) or response (dolly), question + answer (qa), turns (MT-bench), "
        "question + choices + answer (multiple choice); or pass the format"
    )


def _choice(record: Mapping[str, Any], where: str) -> tuple[list[Message], list[str], int]:
    question = _string(record["question"], "question", where)
    choices = record["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise DataError(f"{where}: field 'choices' must be a list of at least two strings")
    options = [_string(choice, "choices", where) for choice in choices]
    answer = record.get("answer")
    if isinstance(answer, str) and len(answer) == 1 and answer.upper() in CHOICE_LETTERS[: len(options)]:
        answer = CHOICE_LETTERS.index(answer.upper())
    elif isinstance(answer, str) and answer in options:
        answer = options.index(answer)
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(options):
        raise DataError(
            f"{where}: field 'answer' must be the index of the right choice (0..{len(options) - 1}), its letter or "
            f"its text; got {answer!r}"
        )
    return [{"role": "user", "content": question}], options, answer


def _string(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def _optional(value: Any, name: str, where: str) -> str | None:
    return None if value is None else _string(value, name, where)


def item_identity(record: Mapping[str, Any], prompt: list[Message], follow_ups: list[str]) -> str:
    for name in ID_FIELDS:
        if record.get(name) is not None:
            return str(record[name])
    content = json.dumps([prompt, follow_ups], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def load_items(
    source: str,
    format: ItemFormat = "auto",
    fields: dict[str, str] | None = None,
    system_prompt: str | None = None,
    limit: int | None = None,
) -> list[EvalItem]:
    """Read ``source`` (any file or hub id the training data modules read) into evaluation items.

    Args:
        source: A .jsonl/.json/.parquet/.csv file or hub dataset id.
        format: The item format, or ``auto`` to recognise it from each record's fields.
        fields: Rename fields of the format, as in training (e.g. ``{"answer": "std_answer"}`` for ``qa``).
        system_prompt: System message for prompts that have none (as in training).
        limit: Read only the first ``limit`` records.
    """
    records, where = read_source(source)
    if limit is not None:
        records = records.select(range(min(limit, len(records))))
    return items_from_records(records, [where(i) for i in range(len(records))], format, fields, system_prompt)


def items_from_records(
    records: Dataset | list[Mapping[str, Any]],
    places: list[str],
    format: ItemFormat = "auto",
    fields: dict[str, str] | None = None,
    system_prompt: str | None = None,
) -> list[EvalItem]:
    """Records -> items; ``places[i]`` names record ``i`` in errors and in the items' ``source``."""
    check_option("format", format, ItemFormat)
    if fields and format == "auto":
        raise UsageError("`fields` rename the fields of one format: name the format too")
    resolved = field_names(DEFAULT_FIELDS, format, fields) if format != "auto" else None
    items, seen = [], Counter()
    for record, where in zip(records, places, strict=True):
        kind = detect_format(record, where) if format == "auto" else format
        choices = answer = None
        if kind == "choice":
            prompt, choices, answer = _choice(record, where)
            follow_ups, reference = [], None
        else:
            prompt, follow_ups, reference = CONVERTERS[kind](record, where, resolved or DEFAULT_FIELDS[kind])
        if not prompt or prompt[-1]["role"] not in ("user", "tool"):
            raise DataError(f"{where}: the prompt must end with a user (or tool) turn for the model to answer")
        if system_prompt and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": system_prompt}, *prompt]
        identity = item_identity(record, prompt, follow_ups)
        seen[identity] += 1
        if seen[identity] > 1:  # the same prompt twice: still two items, paired by occurrence
            identity = f"{identity}#{seen[identity]}"
        items.append(EvalItem(identity, prompt, follow_ups, reference, choices, answer, where))
    return items
