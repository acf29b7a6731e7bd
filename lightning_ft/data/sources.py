"""Read training data from local files (jsonl, json, parquet, csv; plain text for pre-training), directories of such
shards, or the Hugging Face hub, through `datasets`; and name where each record is (`Places`).

Text files are decoded with the data module's ``encoding`` (UTF-8 by default; a UTF-8 byte-order mark is skipped).
Bytes the encoding cannot decode are reported with the file, the line and the byte offset (0-based, as hex editors
count) of the first of them.

Records are named by the line they start on in jsonl and csv files (blank lines count; a csv record is on line
index + 2 after the header unless an earlier quoted field spans lines, which the count follows), else by their 1-based
number in the file or hub split (`Places`). An empty csv cell reads as null, as `datasets` reads it.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import datasets.config
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, IterableDataset, load_dataset
from datasets.exceptions import DatasetGenerationError

from lightning_ft.errors import DataError, UsageError

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_SUFFIX = ".txt"  # plain text: one document per file, in a ``text`` column
SUPPORTED = [*FILE_BUILDERS, TEXT_SUFFIX]
CHUNK_BYTES = 1 << 20


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python knows it; else a `UsageError` naming ``data.encoding``."""
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise UsageError(
            f"data.encoding: unknown encoding {encoding!r}; give a Python codec name such as utf-8, latin-1 or cp1252"
        ) from None
    return encoding


def is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def text_encoding(encoding: str) -> str:
    """The codec files are opened with: UTF-8 skips a leading byte-order mark."""
    return "utf-8-sig" if is_utf8(encoding) else encoding


def load_records(
    source: str, split: str = "train", streaming: bool = False, encoding: str = "utf-8"
) -> Dataset | IterableDataset:
    """Load ``source`` as a `datasets.Dataset` (an `IterableDataset` read lazily with ``streaming``).

    A path with a known suffix is read as that file type (local files are checked first, so malformed JSON, bytes
    that are not ``encoding`` and unreadable parquet are reported with the file name and line; a streamed source is
    checked as it is read); a ``.txt`` file is one record with its whole content as ``text``. A directory is read as
    its files of one supported type, in sorted order. Anything else is taken as a hub dataset id (``encoding`` applies
    to local files only).
    """
    if streaming:
        check_encoding(encoding)
        files = data_files(source)
        if files is None:
            return load_dataset(source, split=split, streaming=True)
        return load_files(source, [readable_file(path, encoding) for path in files], streaming=True)
    return read_source(source, split, encoding)[0]


def read_source(source: str, split: str = "train", encoding: str = "utf-8") -> tuple[Dataset, Places]:
    """``source``'s records (as `load_records`) and where each of them is."""
    check_encoding(encoding)
    files = data_files(source)
    if files is None:
        dataset = load_dataset(source, split=split)
        shares: list[FileShare] = []
    else:
        shares = [check_file(path, encoding) for path in files]
        readable = [readable_file(share.path, encoding, share.blank_lines) for share in shares]
        dataset = load_files(source, readable, streaming=False)
    if len(dataset) == 0:
        raise DataError(f"{source}: no records")
    return dataset, Places(source, shares, len(dataset), encoding)


TABLE_RULES = "each field must hold one type in every record (e.g. 'output' always text), numbers within 64 bits"


def load_files(source: str, files: list[Path], streaming: bool) -> Dataset | IterableDataset:
    """UTF-8 (or parquet) ``files`` of one type through `datasets`."""
    suffix, names = files[0].suffix.lower(), [str(f) for f in files]
    if suffix == TEXT_SUFFIX:
        return load_dataset(
            "text", data_files=names, split="train", sample_by="document", streaming=streaming, encoding="utf-8-sig"
        )
    try:
        return load_dataset(FILE_BUILDERS[suffix], data_files=names, split="train", streaming=streaming)
    except (DatasetGenerationError, pa.ArrowException, OverflowError) as error:
        reason = " ".join(str(error.__cause__ or error).split())
        if suffix == ".parquet":
            raise DataError(f"{source}: not a readable parquet file ({reason})") from error
        raise DataError(f"{source}: cannot be read as a table ({reason}); {TABLE_RULES}") from error
    except ValueError as error:
        if "corresponds to no data" in str(error):  # every record is {}
            raise DataError(f"{source}: no record has any field") from error
        if suffix == ".parquet":
            raise
        raise DataError(f"{source}: cannot be read as a table ({error}); {TABLE_RULES}") from error


def readable_file(path: Path, encoding: str, blank_lines: bool = False) -> Path:
    """The file `datasets` reads for ``path``: the file itself, or a UTF-8 copy of it, made once (kept under
    `datasets`' cache, keyed by the file's path, size, modification time and ``encoding``) when the file is in another
    encoding (`datasets`' JSON builder decodes JSON arrays as UTF-8 whatever its ``encoding``) or is jsonl with blank
    lines (`datasets` 5 fails on those when a field's type varies); the copy leaves the blank lines out. Errors and
    reports always name the original file and its lines."""
    if path.suffix.lower() == ".parquet" or (is_utf8(encoding) and not blank_lines):
        return path
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{encoding}"
    copy = Path(datasets.config.HF_DATASETS_CACHE) / "lightning_ft_utf8" / sha256(key.encode()).hexdigest()[:16]
    copy /= path.name
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        partial = copy.with_name(f"{copy.name}.{os.getpid()}.partial")
        with decoded(path, encoding), path.open(encoding=text_encoding(encoding), newline="") as original:
            with partial.open("w", encoding="utf-8", newline="") as target:
                if path.suffix.lower() == ".jsonl":
                    target.writelines(line for line in original if line.strip())
                else:
                    shutil.copyfileobj(original, target, CHUNK_BYTES)
        os.replace(partial, copy)
    return copy


def data_files(source: str) -> list[Path] | None:
    """The local files ``source`` names (a file, or a directory's files of one supported type, sorted); ``None`` for
    a hub id."""
    path = Path(source)
    if path.is_dir():
        return directory_files(path)
    suffix = path.suffix.lower()
    if suffix in SUPPORTED:
        if not path.exists():
            raise DataError(f"{source}: no such file")
        return [path]
    if path.exists():
        raise DataError(f"{source}: unsupported file type {suffix!r}; use one of {SUPPORTED}")
    return None


def directory_files(directory: Path) -> list[Path]:
    """A directory's data files (hidden ones left out), sorted by name; all of one supported type."""
    files = sorted(f for f in directory.iterdir() if f.is_file() and not f.name.startswith("."))
    if not files:
        raise DataError(f"{directory}: empty directory; put data files of one type ({', '.join(SUPPORTED)}) in it")
    by_kind: dict[str, list[str]] = {}
    for file in files:
        by_kind.setdefault(file.suffix.lower() or "(no suffix)", []).append(file.name)
    unsupported = {kind: names for kind, names in by_kind.items() if kind not in SUPPORTED}
    if unsupported:
        raise DataError(
            f"{directory}: holds files of unsupported types ({kinds_of(unsupported)}); a data directory holds files "
            f"of one type: {', '.join(SUPPORTED)}"
        )
    if len(by_kind) > 1:
        raise DataError(f"{directory}: holds files of several types ({kinds_of(by_kind)}); keep one type per directory")
    return files


def kinds_of(by_kind: dict[str, list[str]]) -> str:
    """``.jsonl: a.jsonl, b.jsonl; .parquet: c.parquet`` (at most three names per type)."""
    parts = []
    for kind, names in sorted(by_kind.items()):
        more = f", ... ({len(names)} files)" if len(names) > 3 else ""
        parts.append(f"{kind}: {', '.join(names[:3])}{more}")
    return "; ".join(parts)


@dataclass(frozen=True)
class FileShare:
    """One file's records in a source: how many (None: not known before loading), the 1-based line each starts on
    (jsonl, csv; None where records are numbered instead: json, parquet, txt) and whether it has blank lines (jsonl)."""

    path: Path
    count: int | None
    lines: list[int] | None
    blank_lines: bool = False


class Places:
    """Where each record of a source is (by its 0-based index in the loaded source), as a user finds it: the file and
    the 1-based line it starts on for line-based files (``train.jsonl:4``; blank lines count, as in an editor), else the
    1-based record number within its file (``train.parquet record 4``) or within a hub dataset's split. A ``.txt``
    file is one record, named by the file."""

    def __init__(self, source: str, shares: list[FileShare], total: int, encoding: str = "utf-8") -> None:
        self.source = source
        self.encoding = encoding
        counts = [share.count for share in shares]
        known = None not in counts and sum(counts) == total  # type: ignore[arg-type]
        self.shares = shares if len(shares) == 1 or known else []
        if len(self.shares) == 1 and self.shares[0].lines is not None and len(self.shares[0].lines) != total:
            self.shares = [FileShare(self.shares[0].path, total, None)]
        self.firsts = [0]
        for share in self.shares[:-1]:
            self.firsts.append(self.firsts[-1] + (share.count or 0))

    def locate(self, index: int) -> tuple[FileShare | None, int]:
        """The file holding record ``index`` and the record's 0-based index within it."""
        if not self.shares:
            return None, index
        position = bisect.bisect_right(self.firsts, index) - 1
        return self.shares[position], index - self.firsts[position]

    def __call__(self, index: int) -> str:
        share, within = self.locate(index)
        if share is None:
            return f"{self.source} record {index + 1}"
        if share.lines is not None:
            return f"{share.path}:{share.lines[within]}"
        if share.path.suffix.lower() == TEXT_SUFFIX:
            return str(share.path)
        return f"{share.path} record {within + 1}"

    def describe(self, indices: list[int], limit: int = 10) -> str:
        """Records ``indices`` for a report: ``lines 3, 7`` or ``records 2, 5`` within one file, else each place."""
        shown, more = indices[:limit], ", ..." if len(indices) > limit else ""
        if len(self.shares) <= 1:
            share = self.shares[0] if self.shares else None
            if share is not None and share.lines is not None:
                numbers = [share.lines[index] for index in shown]
                return f"line{'s' if len(indices) > 1 else ''} {', '.join(map(str, numbers))}{more}"
            if share is None or share.path.suffix.lower() != TEXT_SUFFIX:
                numbers = [index + 1 for index in shown]
                return f"record{'s' if len(indices) > 1 else ''} {', '.join(map(str, numbers))}{more}"
        return ", ".join(self(index) for index in shown) + more

    def written(self, index: int) -> dict[str, Any] | None:
        """Record ``index`` as its JSON file holds it, where a null field and an absent one differ (`datasets` gives
        every record every field of the file, absent ones as null); None for other sources."""
        share, within = self.locate(index)
        if share is None or share.path.suffix.lower() not in (".jsonl", ".json"):
            return None
        with share.path.open(encoding=text_encoding(self.encoding)) as handle:
            if share.lines is None:
                content = json.load(handle)
                return content[within] if isinstance(content, list) else content
            wanted = share.lines[within]
            for line_number, line in enumerate(handle, start=1):
                if line_number == wanted:
                    return parse_json_line(share.path, line_number, line)
        return None


def check_file(path: Path, encoding: str = "utf-8") -> FileShare:
    """Read ``path`` once to refuse what `datasets` would misread or fail on without naming the place: malformed JSON,
    bytes that are not ``encoding``, unreadable parquet. Returns its share of the records."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return FileShare(path, parquet_file(path).metadata.num_rows, None)
    with decoded(path, encoding):
        if suffix == ".jsonl":
            lines, total = jsonl_lines(path, encoding)
            return FileShare(path, len(lines), lines, blank_lines=len(lines) < total)
        if suffix == ".json":
            return FileShare(path, check_json(path, encoding), None)
        if suffix == ".csv":
            lines = [line for line, _ in csv_rows(path, encoding)]
            if not lines:
                raise DataError(f"{path}: no records (a header line, then one line per record)")
            return FileShare(path, len(lines), lines)
        with path.open(encoding=text_encoding(encoding)) as handle:
            while handle.read(CHUNK_BYTES):
                pass
        return FileShare(path, 1, None)


def jsonl_lines(path: Path, encoding: str = "utf-8") -> tuple[list[int], int]:
    """The line of each record of a jsonl file (blank lines skipped), every line parsed; and the number of lines."""
    lines, line_number = [], 0
    with path.open(encoding=text_encoding(encoding)) as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                parse_json_line(path, line_number, line)
                lines.append(line_number)
    if not lines:
        raise DataError(f"{path}: no records")
    return lines, line_number


def parse_json_line(path: Path, line_number: int, line: str) -> dict:
    """One jsonl line as a record; malformed JSON or a non-object names the file and line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{line_number}: malformed JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
    return record


def check_json(path: Path, encoding: str = "utf-8") -> int:
    """The number of records of a JSON file: a list of records, or one object."""
    try:
        content = json.loads(path.read_text(encoding=text_encoding(encoding)))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: malformed JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(content, list | dict):
        raise DataError(f"{path}: expected a list of records, got {type(content).__name__}")
    if not content:
        raise DataError(f"{path}: no records")
    return len(content) if isinstance(content, list) else 1


def csv_rows(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, dict[str | None, Any]]]:
    """``(line, row)`` per record of a CSV file: the 1-based line the record starts on (a quoted field may hold
    newlines, so a record may span lines; blank lines are skipped but counted) and the row as `csv.DictReader`
    makes it."""
    with path.open(encoding=text_encoding(encoding), newline="") as handle:
        reader = csv.reader(handle)
        header: list[str] | None = None
        start = 1
        for cells in reader:
            if cells and header is None:
                header = cells
            elif cells:
                row: dict[str | None, Any] = dict(zip(header, cells, strict=False))
                row.update({name: None for name in header[len(cells) :]})
                if len(cells) > len(header):
                    row[None] = cells[len(header) :]
                yield start, row
            start = reader.line_num + 1


def parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a readable parquet file ({error})") from None


@contextmanager
def decoded(path: Path, encoding: str) -> Iterator[None]:
    """Reading ``path`` as text inside: a byte ``encoding`` cannot decode becomes a `DataError` saying where."""
    try:
        yield
    except UnicodeDecodeError:
        raise undecodable(path, encoding) from None


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """A whole text file, decoded with ``encoding`` (undecodable bytes reported as `decoded` does)."""
    with decoded(path, encoding):
        return path.read_text(encoding=text_encoding(encoding))


def undecodable(path: Path, encoding: str) -> DataError:
    found = first_undecodable(path, encoding)
    at = f" at line {found[0]}, byte offset {found[1]} (0x{found[2]:02x})" if found else ""
    if is_utf8(encoding):
        return DataError(
            f"{path}: not valid UTF-8{at}; if the file is Latin-1 or Windows-1252, set --data.encoding latin-1 "
            "(or cp1252)"
        )
    return DataError(f"{path}: not valid {encoding}{at}; set --data.encoding to the encoding the file was saved in")


def first_undecodable(path: Path, encoding: str) -> tuple[int, int, int] | None:
    """``(line, byte offset, byte)`` of the first byte of ``path`` that ``encoding`` cannot decode, read in chunks;
    None when it all decodes. Lines are exact for encodings that write ``\\n`` as one byte (UTF-8, Latin-1, cp1252)."""
    codec = "utf-8" if is_utf8(encoding) else encoding
    decoder = codecs.getincrementaldecoder(codec)()
    newlines = 0
    with path.open("rb") as handle:
        offset = len(codecs.BOM_UTF8) if codec == "utf-8" and handle.read(3) == codecs.BOM_UTF8 else 0
        handle.seek(offset)
        while True:
            chunk = handle.read(CHUNK_BYTES)
            pending = len(decoder.getstate()[0])
            try:
                newlines += decoder.decode(chunk, final=not chunk).count("\n")
            except UnicodeDecodeError as error:
                newlines += error.object[: error.start].decode(codec, errors="replace").count("\n")
                return newlines + 1, offset - pending + error.start, error.object[error.start]
            if not chunk:
                return None
            offset += len(chunk)
