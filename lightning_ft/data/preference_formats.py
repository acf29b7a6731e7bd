"""Adapters from preference records to a canonical prompt and responses (lists of ``{role, content}`` messages).

Paired formats give a `PreferencePair`; KTO's unpaired records give an `UnpairedExample`:

- ``pairs``: ``prompt`` (text or messages), ``chosen`` / ``rejected`` (text, one message or messages; a response
  that repeats the prompt messages first, as UltraFeedback-binarized does, has them removed).
- ``hh_rlhf``: ``chosen`` / ``rejected`` whole transcripts (``\\n\\nHuman: ...\\n\\nAssistant: ...``) split where
  they stop agreeing, at the last user turn they share.
- ``sharegpt``: ``conversations`` (from/value) as the prompt, ``chosen`` / ``rejected`` one message or messages.
- ``kto``: ``messages`` ending in the assistant response, and a bool ``label`` (True = desirable).

Turns may carry reasoning and tool calls, and records their ``tools``, as chat data does (`lightning_ft.data.formats`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lightning_ft.data.formats import Message, absent, record_tools, turn_to_message
from lightning_ft.data.sources import DataError
from lightning_ft.options import check_option

PreferenceFormat = Literal["pairs", "hh_rlhf", "sharegpt", "kto"]
PREFERENCE_FIELDS: dict[str, dict[str, str]] = {
    "pairs": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "system": "system", "tools": "tools"},
    "hh_rlhf": {"chosen": "chosen", "rejected": "rejected", "system": "system"},
    "sharegpt": {
        "prompt": "conversations",
        "chosen": "chosen",
        "rejected": "rejected",
        "system": "system",
        "tools": "tools",
    },
    "kto": {"messages": "messages", "label": "label", "system": "system", "tools": "tools"},
}
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


class IdenticalPair(DataError):
    """The chosen and rejected responses are the same: the pair carries no preference."""


@dataclass(frozen=True)
class PreferencePair:
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    tools: list[dict[str, Any]] | None = None  # tool schemas the template renders with the prompt


@dataclass(frozen=True)
class UnpairedExample:
    prompt: list[Message]
    completion: list[Message]
    desirable: bool
    tools: list[dict[str, Any]] | None = None


def record_to_preference(
    record: Mapping[str, Any], format: PreferenceFormat, fields: dict[str, str], where: str
) -> PreferencePair | UnpairedExample:
    """One record in ``format`` (field names from ``fields``) -> canonical pair or unpaired example."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
    check_option("preference format", format, PREFERENCE_FIELDS)
    system = record.get(fields["system"])
    tools = record_tools(record, fields["tools"], where) if "tools" in fields else None
    if format == "kto":
        example = kto_example(record, fields, where)
        prompt = with_system(example.prompt, system, where)
        return UnpairedExample(prompt, example.completion, example.desirable, tools)
    if format == "hh_rlhf":
        pair = hh_rlhf_pair(record, fields, where)
    else:  # pairs, sharegpt
        prompt = messages_of(required(record, fields["prompt"], where), fields["prompt"], where, default_role="user")
        chosen = response_of(record, fields["chosen"], prompt, where)
        rejected = response_of(record, fields["rejected"], prompt, where)
        pair = PreferencePair(prompt, chosen, rejected)
    if pair.chosen == pair.rejected:
        raise IdenticalPair(f"{where}: chosen and rejected are identical")
    if not pair.prompt or pair.prompt[-1]["role"] != "user":
        raise DataError(f"{where}: the prompt must end with a user turn")
    return PreferencePair(with_system(pair.prompt, system, where), pair.chosen, pair.rejected, tools)


def required(record: Mapping[str, Any], field: str, where: str) -> Any:
    if record.get(field) is None:
        raise absent(record, field, where)
    return record[field]


def messages_of(value: Any, field: str, where: str, default_role: str) -> list[Message]:
    """Text (one message of ``default_role``), one message object, or a list of them -> messages."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    turns = [value] if isinstance(value, Mapping) else value
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field {field!r} must be text, a message or a non-empty list of messages")
    messages = []
    for position, turn in enumerate(turns):
        # role/content (OpenAI style) or from/value (ShareGPT), whichever the turn uses
        sharegpt = isinstance(turn, Mapping) and "from" in turn
        role_field, content_field = ("from", "value") if sharegpt else ("role", "content")
        messages.append(turn_to_message(turn, role_field, content_field, f"{where}, field {field!r}, turn {position}"))
    return messages


def response_of(record: Mapping[str, Any], field: str, prompt: list[Message], where: str) -> list[Message]:
    messages = messages_of(required(record, field, where), field, where, default_role="assistant")
    if messages[: len(prompt)] == prompt and len(messages) > len(prompt):
        messages = messages[len(prompt) :]  # UltraFeedback-binarized repeats the prompt in each response
    if messages[0]["role"] != "assistant":
        raise DataError(f"{where}: field {field!r} must start with an assistant message")
    return messages


def hh_rlhf_pair(record: Mapping[str, Any], fields: dict[str, str], where: str) -> PreferencePair:
    chosen = hh_transcript(required(record, fields["chosen"], where), fields["chosen"], where)
    rejected = hh_transcript(required(record, fields["rejected"], where), fields["rejected"], where)
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared > 0 and chosen[shared - 1]["role"] != "user":
        shared -= 1  # the prompt ends at the last user turn both transcripts share
    if shared == 0:
        raise DataError(f"{where}: chosen and rejected share no opening user turn")
    if shared == len(chosen) or shared == len(rejected):
        raise DataError(f"{where}: chosen or rejected has no response after the shared prompt")
    return PreferencePair(chosen[:shared], chosen[shared:], rejected[shared:])


def hh_transcript(text: Any, field: str, where: str) -> list[Message]:
    if not isinstance(text, str):
        raise DataError(f"{where}: field {field!r} must be a Human/Assistant transcript string")
    parts = HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise DataError(f"{where}: field {field!r} is not a '\\n\\nHuman: ... \\n\\nAssistant: ...' transcript")
    roles = {"Human": "user", "Assistant": "assistant"}
    turns = zip(parts[1::2], parts[2::2], strict=True)
    return [{"role": roles[speaker], "content": content.strip()} for speaker, content in turns]


def kto_example(record: Mapping[str, Any], fields: dict[str, str], where: str) -> UnpairedExample:
    messages = messages_of(required(record, fields["messages"], where), fields["messages"], where, "user")
    label = required(record, fields["label"], where)
    if not isinstance(label, bool):
        raise DataError(f"{where}: field {fields['label']!r} must be true or false, got {label!r}")
    if len(messages) < 2 or messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        raise DataError(f"{where}: field {fields['messages']!r} must end with a user turn and the assistant response")
    return UnpairedExample(messages[:-1], messages[-1:], label)


def with_system(prompt: list[Message], system: Any, where: str) -> list[Message]:
    if system is None or system == "" or prompt[0]["role"] == "system":
        return prompt
    if not isinstance(system, str):
        raise DataError(f"{where}: field 'system' must be a string")
    return [{"role": "system", "content": system}, *prompt]
