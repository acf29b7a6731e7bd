"""Adapters from the record formats users have to the canonical conversation: ``[{role, content}, ...]``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from lightning_ft.data.sources import DataError
from lightning_ft.options import check_keys, check_option

Message = dict[str, str]
InstructionFormat = Literal["alpaca", "dolly"]
ChatFormat = Literal["messages", "sharegpt"]

INSTRUCTION_FIELDS: dict[str, dict[str, str]] = {
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output", "system": "system"},
    "dolly": {"instruction": "instruction", "input": "context", "output": "response", "system": "system"},
}
CHAT_FIELDS: dict[str, dict[str, str]] = {
    "messages": {"messages": "messages", "role": "role", "content": "content", "system": "system"},
    "sharegpt": {"messages": "conversations", "role": "from", "content": "value", "system": "system"},
}
ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function_call": "assistant",
    "observation": "tool",
}


def field_names(
    defaults: dict[str, dict[str, str]], format: str, overrides: Mapping[str, str] | None
) -> dict[str, str]:
    check_option("format", format, defaults)
    fields = dict(defaults[format])
    check_keys(f"field keys for format {format!r}", overrides or {}, fields)
    fields.update(overrides or {})
    return fields


def _text(record: Mapping[str, Any], field: str, where: str, required: bool = True) -> str:
    value = record.get(field)
    if value is None:
        if required:
            raise DataError(f"{where}: missing field {field!r}")
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def instruction_to_messages(record: Mapping[str, Any], fields: dict[str, str], where: str) -> list[Message]:
    """Alpaca / Dolly: the instruction (plus input or context after a blank line) is the user turn."""
    if fields["instruction"] not in record and ("messages" in record or "conversations" in record):
        raise DataError(
            f"{where}: missing field {fields['instruction']!r}; the record looks like chat data: "
            "use `--data lightning_ft.data.ChatData` (format messages or sharegpt)"
        )
    instruction = _text(record, fields["instruction"], where)
    extra = _text(record, fields["input"], where, required=False)
    output = _text(record, fields["output"], where)
    system = _text(record, fields["system"], where, required=False)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def turn_to_message(turn: Any, role_field: str, content_field: str, where: str) -> Message:
    """One turn object -> ``{role, content}`` with the role normalised (``human`` -> ``user``, ``gpt`` -> ...)."""
    if not isinstance(turn, Mapping):
        raise DataError(f"{where}: expected an object, got {type(turn).__name__}")
    role = _text(turn, role_field, where)
    if role not in ROLE_ALIASES:
        raise DataError(f"{where}: unknown role {role!r}; valid roles: {sorted(ROLE_ALIASES)}")
    return {"role": ROLE_ALIASES[role], "content": _text(turn, content_field, where)}


def chat_to_messages(record: Mapping[str, Any], fields: dict[str, str], where: str) -> list[Message]:
    """``messages`` (role/content) or ShareGPT ``conversations`` (from/value), with an optional ``system`` field."""
    turns = record.get(fields["messages"])
    if turns is None:
        raise DataError(f"{where}: missing field {fields['messages']!r}")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field {fields['messages']!r} must be a non-empty list of turns")
    system = _text(record, fields["system"], where, required=False)
    messages = [{"role": "system", "content": system}] if system else []
    for position, turn in enumerate(turns):
        messages.append(turn_to_message(turn, fields["role"], fields["content"], f"{where}, turn {position}"))
    if not any(message["role"] == "assistant" for message in messages):
        raise DataError(f"{where}: the conversation has no assistant turn to train on")
    return messages
