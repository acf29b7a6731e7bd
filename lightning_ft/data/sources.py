"""Read training data from local files (jsonl, json, parquet, csv) or the Hugging Face hub, through `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, load_dataset

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class DataError(ValueError):
    """Bad input data: the message names the file, line or record and the field."""


def load_records(source: str, split: str = "train") -> Dataset:
    """Load ``source`` as a `datasets.Dataset`.

    A path with a known suffix is read as that file type (JSON files are checked first, so a malformed line is
    reported with its file name and line number); anything else is taken as a hub dataset id.
    """
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in FILE_BUILDERS:
        if not path.exists():
            raise DataError(f"{source}: no such file")
        if suffix == ".jsonl":
            check_jsonl(path)
        elif suffix == ".json":
            check_json(path)
        dataset = load_dataset(FILE_BUILDERS[suffix], data_files=str(path), split="train")
    elif path.exists():
        raise DataError(f"{source}: unsupported file type {suffix!r}; use one of {sorted(FILE_BUILDERS)}")
    else:
        dataset = load_dataset(source, split=split)
    if len(dataset) == 0:
        raise DataError(f"{source}: no records")
    return dataset


def check_jsonl(path: Path) -> None:
    count = 0
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{line_number}: malformed JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            count += 1
    if count == 0:
        raise DataError(f"{path}: no records")


def check_json(path: Path) -> None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: malformed JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(content, list | dict):
        raise DataError(f"{path}: expected a list of records, got {type(content).__name__}")
    if not content:
        raise DataError(f"{path}: no records")
