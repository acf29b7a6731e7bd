"""`lightning-ft data convert IN OUT --to LAYOUT`: records from one training layout to another, through the canonical
conversation the data modules train on (so reasoning, tool calls and tools survive), with every record that the
target layout cannot hold counted and named."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from tqdm.auto import tqdm

from lightning_ft.data.formats import (
    CHAT_FIELDS,
    INSTRUCTION_FIELDS,
    Message,
    chat_to_messages,
    instruction_to_messages,
    record_tools,
)
from lightning_ft.data.preference_formats import (
    PREFERENCE_FIELDS,
    IdenticalPair,
    PreferencePair,
    record_to_preference,
)
from lightning_ft.data.sources import DataError
from lightning_ft.options import check_option
from lightning_ft.prep.records import Layout, read_records, report_path, write_records, write_report

Target = Literal["messages", "sharegpt", "alpaca", "preference"]
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}


class NotConvertible(DataError):
    """A record the target layout cannot hold (e.g. a multi-turn chat as one instruction)."""


def convert(
    source: str,
    output: str,
    to: Target,
    layout: Layout | Literal["auto"] = "auto",
    report: str | None = None,
) -> dict[str, Any]:
    """Convert ``source`` to another layout; records the target cannot hold are left out, counted and listed.

    Instructions and chats convert both ways (a chat becomes an instruction only when it is one exchange, with an
    optional system message); preference records (prompt/conversations + chosen + rejected, hh-rlhf transcripts)
    become ``preference`` pairs: ``prompt`` messages, ``chosen`` and ``rejected`` assistant messages.

    Args:
        source: Input file (jsonl/json/parquet/csv) or hub dataset id.
        output: Output file; its suffix picks the file type (default: the input's).
        to: Target layout: ``messages``, ``sharegpt``, ``alpaca`` or ``preference``.
        layout: The input's layout, or ``auto`` to recognise it.
        report: Where the JSON report goes (default: ``OUTPUT.report.json``).
    """
    check_option("target layout", to, Target)
    records = read_records(source, layout)
    converted, skipped = [], []
    for index, record in enumerate(
        tqdm(records.records, desc=f"Converting to {to}", disable=len(records.records) < 1000)
    ):
        where = records.where(index)
        try:
            converted.append(convert_record(record, records.layout, to, where))
        except (NotConvertible, IdenticalPair) as reason:
            skipped.append({"record": index, "where": where, "reason": str(reason).removeprefix(f"{where}: ")})
    if not converted:
        raise DataError(f"{source}: no record converts to {to} ({len(skipped)} skipped, e.g. {skipped[0]['reason']})")
    written = write_records(converted, output, like=source)
    summary = {
        "command": "convert",
        "source": source,
        "output": str(written),
        "from": records.layout,
        "to": to,
        "records": len(records.records),
        "written": len(converted),
        "skipped": skipped,
    }
    write_report(summary, report or report_path(written))
    return {key: value for key, value in summary.items() if key != "skipped"} | {"skipped": len(skipped)}


def convert_record(record: Mapping[str, Any], layout: Layout, to: Target, where: str) -> dict[str, Any]:
    """One record in ``layout`` as a record in ``to``."""
    if layout in ("preference", "kto") or to == "preference":
        if to != "preference" or layout != "preference":
            raise NotConvertible(f"{where}: {layout} records convert to preference pairs only, and only from pairs")
        return preference_record(record, where)
    messages, tools = conversation_of(record, layout, where)
    if to == "messages":
        return {"messages": messages} | ({"tools": tools} if tools else {})
    if to == "sharegpt":
        return sharegpt_record(messages, tools)
    return instruction_record(messages, tools, where)


def conversation_of(record: Mapping[str, Any], layout: Layout, where: str) -> tuple[list[Message], list | None]:
    if layout in INSTRUCTION_FIELDS:
        return instruction_to_messages(record, INSTRUCTION_FIELDS[layout], where), None
    if layout in CHAT_FIELDS:
        fields = CHAT_FIELDS[layout]
        return chat_to_messages(record, fields, where), record_tools(record, fields["tools"], where)
    raise NotConvertible(f"{where}: {layout} records hold no conversation to convert")


def sharegpt_record(messages: list[Message], tools: list | None) -> dict[str, Any]:
    """ShareGPT turns: system in its field, tool calls as ``function_call`` turns, tool results as ``observation``."""
    record: dict[str, Any] = {}
    turns = []
    for message in messages:
        if message["role"] == "system" and not turns and "system" not in record:
            record["system"] = message["content"]
            continue
        if message.get("content") or not message.get("tool_calls"):
            turn = {"from": SHAREGPT_ROLES[message["role"]], "value": message["content"]}
            if message.get("reasoning_content"):
                turn["reasoning_content"] = message["reasoning_content"]
            turns.append(turn)
        for call in message.get("tool_calls", []):
            function = call["function"]
            value = json.dumps({"name": function["name"], "arguments": function["arguments"]}, ensure_ascii=False)
            turns.append({"from": "function_call", "value": value})
    record["conversations"] = turns
    if tools:
        record["tools"] = json.dumps([tool["function"] for tool in tools], ensure_ascii=False)
    return record


def instruction_record(messages: list[Message], tools: list | None, where: str) -> dict[str, Any]:
    """One exchange (an optional system message, a user turn, an assistant reply) as an Alpaca record."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    exchange = messages[1:] if system else messages
    roles = [message["role"] for message in exchange]
    if roles != ["user", "assistant"] or tools or exchange[1].get("tool_calls") or exchange[1].get("reasoning_content"):
        raise NotConvertible(
            f"{where}: only one plain exchange (user, then assistant) fits an instruction record; this has "
            f"{'tools or calls' if tools or exchange[-1].get('tool_calls') else 'turns ' + ', '.join(roles)}"
        )
    record = {"instruction": exchange[0]["content"], "input": "", "output": exchange[1]["content"]}
    return record | ({"system": system} if system else {})


def preference_record(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Pairs in any preference layout (prompt or conversations, or whole hh-rlhf transcripts) as prompt messages
    with one chosen and one rejected assistant message."""
    keys = {key for key, value in record.items() if value is not None}
    kind = "pairs" if "prompt" in keys else "sharegpt" if "conversations" in keys else "hh_rlhf"
    pair = record_to_preference(record, kind, PREFERENCE_FIELDS[kind], where)
    if not isinstance(pair, PreferencePair):
        raise NotConvertible(f"{where}: not a preference pair")
    converted = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    return converted | ({"tools": pair.tools} if pair.tools else {})
