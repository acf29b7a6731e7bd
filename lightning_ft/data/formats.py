"""Adapters from the record formats users have to the canonical conversation: ``[{role, content}, ...]``, where an
assistant message may also carry ``reasoning_content`` and ``tool_calls`` and a tool message its ``name`` and
``tool_call_id`` (the shape chat templates and OpenAI-compatible APIs use). Tool schemas belong to the record
(`record_tools`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from lightning_ft.data.sources import DataError
from lightning_ft.options import check_keys, check_option

Message = dict[str, Any]
ToolCall = dict[str, Any]
InstructionFormat = Literal["alpaca", "dolly"]
ChatFormat = Literal["messages", "sharegpt"]

INSTRUCTION_FIELDS: dict[str, dict[str, str]] = {
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output", "system": "system"},
    "dolly": {"instruction": "instruction", "input": "context", "output": "response", "system": "system"},
}
CHAT_FIELDS: dict[str, dict[str, str]] = {
    "messages": {"messages": "messages", "role": "role", "content": "content", "system": "system", "tools": "tools"},
    "sharegpt": {"messages": "conversations", "role": "from", "content": "value", "system": "system", "tools": "tools"},
}
# Names reasoning goes by in the data people have (transformers reads the same three); kept as reasoning_content.
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")
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


def absent(record: Mapping[str, Any], field: str, where: str, expected: str | None = None) -> DataError:
    """The error for a required field that is absent (``missing field``) or JSON ``null`` (``is null``)."""
    if field in record:
        return DataError(f"{where}: field {field!r} is null" + (f"; expected {expected}" if expected else ""))
    return DataError(f"{where}: missing field {field!r}")


def _text(record: Mapping[str, Any], field: str, where: str, required: bool = True) -> str:
    value = record.get(field)
    if value is None:
        if required:
            raise absent(record, field, where, "a string")
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
    """One turn object -> a canonical message: the role normalised (``human`` -> ``user``, ``gpt`` -> ``assistant``,
    ShareGPT's ``observation`` -> ``tool``), reasoning kept as ``reasoning_content``, tool calls in the OpenAI shape.
    A ShareGPT ``function_call`` turn is an assistant turn whose text is the call (or a list of calls) as JSON."""
    if not isinstance(turn, Mapping):
        raise DataError(f"{where}: expected an object, got {type(turn).__name__}")
    role = _text(turn, role_field, where)
    if role not in ROLE_ALIASES:
        raise DataError(f"{where}: unknown role {role!r}; valid roles: {sorted(ROLE_ALIASES)}")
    if role == "function_call":
        calls = _json_value(_text(turn, content_field, where), content_field, where)
        return {"role": "assistant", "content": "", "tool_calls": tool_calls_of(calls, content_field, where)}
    message: Message = {"role": ROLE_ALIASES[role]}
    calls = turn.get("tool_calls")
    if calls is not None and message["role"] != "assistant":
        raise DataError(f"{where}: field 'tool_calls' belongs to assistant turns, not to a {role!r} turn")
    message["content"] = _text(turn, content_field, where, required=calls is None)
    reasoning_field = next((field for field in REASONING_FIELDS if turn.get(field) is not None), None)
    if reasoning_field is not None:
        if message["role"] != "assistant":
            raise DataError(f"{where}: field {reasoning_field!r} belongs to assistant turns, not to a {role!r} turn")
        message["reasoning_content"] = _text(turn, reasoning_field, where)
    if calls is not None:
        message["tool_calls"] = tool_calls_of(calls, "tool_calls", where)
    if message["role"] == "tool":
        for field in ("name", "tool_call_id"):
            if turn.get(field) is not None:
                message[field] = _text(turn, field, where)
    return message


def tool_calls_of(value: Any, field: str, where: str) -> list[ToolCall]:
    """One call or a list of calls, each ``{name, arguments}`` or OpenAI's ``{type: function, function: {name,
    arguments}}``, -> OpenAI's shape; ``arguments`` given as a JSON string become the object they encode."""
    calls = [value] if isinstance(value, Mapping) else value
    if not isinstance(calls, list) or not calls:
        raise DataError(f"{where}: field {field!r} must be a tool call or a non-empty list of tool calls")
    normalised = []
    for number, call in enumerate(calls):
        at = f"{where}, field {field!r}, call {number}"
        function = call.get("function", call) if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not function["name"]:
            raise DataError(f'{at}: a tool call needs a \'name\' (string), e.g. {{"name": "f", "arguments": {{}}}}')
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            arguments = _json_value(arguments, "arguments", at) if arguments.strip() else {}
        if not isinstance(arguments, Mapping):
            raise DataError(f"{at}: field 'arguments' must be an object (or its JSON text)")
        entry: ToolCall = {"type": "function", "function": {"name": function["name"], "arguments": dict(arguments)}}
        if isinstance(call, Mapping) and call.get("id") is not None:
            entry["id"] = str(call["id"])
        normalised.append(entry)
    return normalised


def record_tools(record: Mapping[str, Any], field: str, where: str) -> list[dict[str, Any]] | None:
    """The record's tool schemas (a list, or its JSON text as in glaive/LLaMA-Factory data), each in the shape chat
    templates take: ``{type: function, function: {name, description, parameters}}``; None when there are none."""
    value = record.get(field)
    if isinstance(value, str):
        value = _json_value(value, field, where) if value.strip() else None
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise DataError(f"{where}: field {field!r} must be a list of tool schemas (or its JSON text)")
    tools = []
    for number, tool in enumerate(value):
        schema = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(schema, Mapping) or not isinstance(schema.get("name"), str):
            raise DataError(f"{where}, field {field!r}, tool {number}: a tool schema needs a 'name' (string)")
        tools.append({"type": "function", "function": dict(schema)})
    return tools


def _json_value(text: str, field: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: field {field!r} is not valid JSON ({error.msg} at character {error.pos})") from None


def chat_to_messages(record: Mapping[str, Any], fields: dict[str, str], where: str) -> list[Message]:
    """``messages`` (role/content) or ShareGPT ``conversations`` (from/value), with an optional ``system`` field."""
    turns = record.get(fields["messages"])
    if turns is None:
        raise absent(record, fields["messages"], where, "a non-empty list of turns")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field {fields['messages']!r} must be a non-empty list of turns")
    system = _text(record, fields["system"], where, required=False)
    messages = [{"role": "system", "content": system}] if system else []
    for position, turn in enumerate(turns):
        messages.append(turn_to_message(turn, fields["role"], fields["content"], f"{where}, turn {position}"))
    if not any(message["role"] == "assistant" for message in messages):
        raise DataError(f"{where}: the conversation has no assistant turn to train on")
    return messages
