"""Read training data from local files (jsonl, json, parquet, csv; plain text for pre-training), directories of such
shards, or the Hugging Face hub, through `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, IterableDataset, load_dataset

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_SUFFIX = ".txt"  # plain text: one document per file, in a ``text`` column


class DataError(ValueError):
    """Bad input data: the message names the file, line or record and the field."""


def load_records(source: str, split: str = "train", streaming: bool = False) -> Dataset | IterableDataset:
    """Load ``source`` as a `datasets.Dataset` (an `IterableDataset` read lazily with ``streaming``).

    A path with a known suffix is read as that file type (JSON files are checked first, so a malformed line is
    reported with its file name and line number; a streamed source is checked as it is read); a ``.txt`` file is one
    record with its whole content as ``text``. A directory is read as its files of one supported type, in sorted order.
    Anything else is taken as a hub dataset id.
    """
    files = data_files(source)
    if files is None:
        dataset = load_dataset(source, split=split, streaming=streaming)
    else:
        suffix = files[0].suffix.lower()
        if not streaming:
            for path in files:
                check_file(path)
        if suffix == TEXT_SUFFIX:
            dataset = load_dataset(
                "text", data_files=[str(f) for f in files], split="train", sample_by="document", streaming=streaming
            )
        else:
            dataset = load_dataset(
                FILE_BUILDERS[suffix], data_files=[str(f) for f in files], split="train", streaming=streaming
            )
    if not streaming and len(dataset) == 0:
        raise DataError(f"{source}: no records")
    return dataset


def data_files(source: str) -> list[Path] | None:
    """The local files ``source`` names (a file, or a directory's files of one supported type, sorted); ``None`` for
    a hub id."""
    path = Path(source)
    supported = [*FILE_BUILDERS, TEXT_SUFFIX]
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
        kinds = sorted({f.suffix.lower() for f in files})
        if not files:
            raise DataError(f"{source}: empty directory")
        unsupported = [kind for kind in kinds if kind not in supported]
        if unsupported:
            raise DataError(f"{source}: holds files of unsupported types {unsupported}; use one of {supported}")
        if len(kinds) > 1:
            raise DataError(f"{source}: holds files of several types {kinds}; keep one type per directory")
        return files
    suffix = path.suffix.lower()
    if suffix in supported:
        if not path.exists():
            raise DataError(f"{source}: no such file")
        return [path]
    if path.exists():
        raise DataError(f"{source}: unsupported file type {suffix!r}; use one of {supported}")
    return None


def check_file(path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        check_jsonl(path)
    elif suffix == ".json":
        check_json(path)


def check_jsonl(path: Path) -> None:
    count = 0
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if line.strip():
                parse_json_line(path, line_number, line)
                count += 1
    if count == 0:
        raise DataError(f"{path}: no records")


def parse_json_line(path: Path, line_number: int, line: str) -> dict:
    """One jsonl line as a record; malformed JSON or a non-object names the file and line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{line_number}: malformed JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
    return record


def check_json(path: Path) -> None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: malformed JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(content, list | dict):
        raise DataError(f"{path}: expected a list of records, got {type(content).__name__}")
    if not content:
        raise DataError(f"{path}: no records")
