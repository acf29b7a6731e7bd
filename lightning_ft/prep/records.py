"""Records in, records out, for the `lightning-ft data` tools: read any training file (or hub dataset) with its
layout recognised, name each record by its file and line, see its prompt and response text, and write records back
in the input's own layout and file type, with a JSON report beside them.

A layout is the shape of the records: ``alpaca``, ``dolly`` (instructions, with or without an answer), ``messages``,
``sharegpt`` (chats), ``preference`` (prompt or conversations + chosen + rejected, also whole-transcript hh-rlhf
pairs), ``kto`` (messages + label), ``qa`` (question + answer), ``turns`` (MT-bench / Vicuna-bench questions) or
``text`` (raw text). Tools that only move whole records (split) also take ``records`` of any other shape.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset

from lightning_ft.data.sources import FILE_BUILDERS, DataError, Places, read_source
from lightning_ft.errors import UsageError

Layout = Literal["alpaca", "dolly", "messages", "sharegpt", "preference", "kto", "qa", "turns", "text", "records"]
CHAT_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
USER_ROLES = {"user", "human", "system", "observation", "tool"}


@dataclass
class RecordFile:
    """A file's records, its layout, and where each record is."""

    source: str
    records: Dataset
    layout: Layout
    lines: list[int]
    places: Places

    def where(self, index: int) -> str:
        """Where record ``index`` (0-based) is, as a user opens the file: ``file:line`` for line-based files, else
        ``file record N`` (1-based), as the data modules say it."""
        return self.places(index)

    @property
    def suffix(self) -> str:
        return Path(self.source).suffix.lower()


def read_records(
    source: str, layout: Layout | Literal["auto"] = "auto", split: str = "train", any_shape: bool = False
) -> RecordFile:
    """Read ``source`` (jsonl/json/parquet/csv file or hub dataset id) and recognise its layout.

    Args:
        source: A file or a hub dataset id.
        layout: The records' layout, or ``auto`` to recognise it from the fields of the first records.
        split: The split of a hub dataset.
        any_shape: Take records of an unrecognised layout as ``records`` instead of refusing them.
    """
    records, places = read_source(source, split=split)
    if layout == "auto":
        try:
            layout = detect_layout(records, source)
        except DataError:
            if not any_shape:
                raise
            layout = "records"
    return RecordFile(source, records, layout, jsonl_lines(source), places)


def detect_layout(records: Dataset, source: str) -> Layout:
    """The layout the columns say (null fields do not count: `datasets` gives a mixed file every field)."""
    present = set()
    for record in records.select(range(min(len(records), 100))):
        present |= {key for key, value in record.items() if value is not None}
    if {"chosen", "rejected"} <= present:
        return "preference"
    if "messages" in present:
        return "kto" if "label" in present else "messages"
    if "conversations" in present:
        return "sharegpt"
    if "instruction" in present:
        return "dolly" if "response" in present or "context" in present else "alpaca"
    if "question" in present:
        return "qa"
    if "turns" in present:
        return "turns"
    if "text" in present:
        return "text"
    raise DataError(
        f"{source}: cannot tell the layout from fields {sorted(present)}; expected messages or conversations (chat), "
        "instruction + output (alpaca) or response (dolly), prompt + chosen + rejected (preference), messages + "
        "label (kto), question + answer (qa), turns (MT-bench) or text"
    )


def jsonl_lines(source: str) -> list[int]:
    """1-based line of each record of a JSONL file (blank lines skipped); empty for other sources."""
    path = Path(source)
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return []
    with path.open(encoding="utf-8") as lines:
        return [number for number, line in enumerate(lines, start=1) if line.strip()]


@dataclass(frozen=True)
class RecordText:
    """What a record says: the prompt side (instructions, user and system turns, tool results) and the response
    side (outputs, assistant turns; for preference records the chosen and rejected responses)."""

    prompt: str
    response: str

    @property
    def whole(self) -> str:
        return f"{self.prompt}\n{self.response}".strip()


def record_text(record: Mapping[str, Any], layout: Layout, where: str) -> RecordText:
    """The prompt and response text of one record in ``layout``; a missing or mistyped field names ``where``."""
    if layout in ("alpaca", "dolly"):
        extra = "input" if layout == "alpaca" else "context"
        output = "output" if layout == "alpaca" else "response"
        prompt = _join(_field(record, "instruction", where), _field(record, extra, where, required=False))
        return RecordText(prompt, _field(record, output, where, required=False))
    if layout in ("messages", "sharegpt", "kto"):
        field = "conversations" if layout == "sharegpt" else "messages"
        return _turns_text(record, field, where, system=_field(record, "system", where, required=False))
    if layout == "preference":
        field = "prompt" if record.get("prompt") is not None else "conversations"
        prompt = any_text(record[field], field, where) if record.get(field) is not None else ""
        chosen = any_text(record.get("chosen"), "chosen", where)
        rejected = any_text(record.get("rejected"), "rejected", where)
        return RecordText(prompt, _join(chosen, rejected))
    if layout == "qa":
        return RecordText(_field(record, "question", where), _field(record, "answer", where, required=False))
    if layout == "turns":
        turns = record.get("turns")
        if not isinstance(turns, list) or not all(isinstance(turn, str) for turn in turns):
            raise DataError(f"{where}: field 'turns' must be a list of strings")
        return RecordText(_join(*turns), "")
    if layout == "text":
        return RecordText("", _field(record, "text", where))
    raise DataError(f"{where}: records of an unrecognised layout have no prompt or response to read")


def _turns_text(record: Mapping[str, Any], field: str, where: str, system: str) -> RecordText:
    turns = record.get(field)
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field {field!r} must be a non-empty list of turns")
    prompt, response = [system] if system else [], []
    for position, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise DataError(f"{where}, turn {position}: expected an object, got {type(turn).__name__}")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if not isinstance(role, str):
            raise DataError(f"{where}, turn {position}: missing field 'role' (or 'from')")
        if content is not None and not isinstance(content, str):
            raise DataError(f"{where}, turn {position}: field 'content' must be a string")
        (prompt if role in USER_ROLES else response).append(content or "")
    return RecordText(_join(*prompt), _join(*response))


def any_text(value: Any, field: str, where: str) -> str:
    """Text, one message, or a list of messages (a preference record's prompt or response) as plain text."""
    if isinstance(value, str):
        return value
    turns = [value] if isinstance(value, Mapping) else value
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field {field!r} must be text, a message or a list of messages")
    contents = []
    for position, turn in enumerate(turns):
        content = turn.get("content", turn.get("value")) if isinstance(turn, Mapping) else None
        if not isinstance(content, str):
            raise DataError(f"{where}: field {field!r}, turn {position}: expected a message with text content")
        contents.append(content)
    return _join(*contents)


def _field(record: Mapping[str, Any], name: str, where: str, required: bool = True) -> str:
    value = record.get(name)
    if value is None:
        if required:
            raise DataError(f"{where}: missing field {name!r}")
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def _join(*parts: str) -> str:
    return "\n".join(part for part in parts if part)


def normalise(text: str) -> str:
    """Text compared for exact duplicates and leaks: Unicode NFKC, case-folded, punctuation dropped, whitespace
    collapsed (so copies differing in spacing, case or punctuation match)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().translate(punctuation_to_space()).split())


@functools.cache
def punctuation_to_space() -> dict[int, str]:
    """A `str.translate` table sending every Unicode punctuation character to a space (built once)."""
    return {code: " " for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)).startswith("P")}


def words(text: str) -> list[str]:
    """The words of normalised ``text`` (for n-grams and shingles)."""
    return normalise(text).split()


def write_records(records: Iterable[Mapping[str, Any]] | Dataset, output: str | Path, like: str | None = None) -> Path:
    """Write ``records`` to ``output`` in its suffix's file type (``like``'s when ``output`` has none), atomically:
    a temporary file renamed into place, so an interrupted write never leaves half a file."""
    output = Path(output)
    suffix = output.suffix.lower() or (Path(like).suffix.lower() if like else ".jsonl")
    if suffix not in FILE_BUILDERS:
        raise UsageError(f"{output}: unsupported output type {suffix!r}; use one of {sorted(FILE_BUILDERS)}")
    if not output.suffix:
        output = output.with_suffix(suffix)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    if suffix in (".jsonl", ".json"):  # as they are: Arrow would need one type per field across records
        # null fields are left out: `datasets` gives every record of a file every field any record has
        rows = [{key: value for key, value in record.items() if value is not None} for record in records]
        if suffix == ".jsonl":
            partial.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        else:
            partial.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    else:
        dataset = records if isinstance(records, Dataset) else Dataset.from_list([dict(r) for r in records])
        nested = [name for name, feature in dataset.features.items() if not hasattr(feature, "dtype")]
        if suffix == ".csv" and nested:
            raise UsageError(f"{output}: CSV holds flat records only ({nested} are nested): write .jsonl or .parquet")
        if suffix == ".parquet":
            dataset.to_parquet(str(partial))
        else:
            dataset.to_csv(str(partial), index=False)
    partial.replace(output)
    return output


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """``report`` as indented JSON at ``path`` (written whole, atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    partial.replace(path)
    return path


def report_path(output: str | Path) -> Path:
    """Where a command writing ``output`` puts its report: ``<output>.report.json`` beside it."""
    output = Path(output)
    return output.with_name(output.name + ".report.json")
