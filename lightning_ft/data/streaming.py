"""Streaming raw text: records read lazily (`iter_records`), tokenized and cut into blocks on the fly (`TextStream`),
for corpora larger than memory or the disk cache.

Documents are dealt out round-robin over every (DDP rank, loader worker) pair: document ``d`` belongs to the pair
``d mod (world_size * num_workers)``, so together the pairs read each document exactly once per pass, whatever the
number of files. Each pair packs its own documents into blocks, as `TextBlocks` packs all of them. The stream repeats
(one pass per epoch) so no rank runs dry before another; ``trainer.max_steps`` ends training. Its position (pass,
next document, tokens read but not yet handed out) is the loader state that checkpoints hold, so a resumed run sees
no block twice and misses none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from lightning_ft.data.module import RecordTokenizer
from lightning_ft.data.sources import (
    TEXT_SUFFIX,
    DataError,
    csv_rows,
    data_files,
    decoded,
    load_records,
    parquet_file,
    parse_json_line,
    read_text,
    text_encoding,
)
from lightning_ft.errors import UsageError

Record = Mapping[str, Any]


def iter_records(
    source: str, split: str = "train", wanted: Callable[[int], bool] = lambda _: True, encoding: str = "utf-8"
) -> Iterator:
    """``(number, where, record)`` for each record of ``source`` in order (files in sorted order for a directory),
    numbered from 0 across files; ``where`` names the file and line (jsonl, csv) or the 1-based record (`Places`).
    Records for which ``wanted(number)`` is false are counted but not parsed. Files are decoded with ``encoding``."""
    files = data_files(source)
    if files is None:
        for number, record in enumerate(load_records(source, split=split, streaming=True)):
            if wanted(number):
                yield number, f"{source} record {number + 1}", record
        return
    number = 0
    for path in files:
        for where, parse in file_records(path, encoding):
            if wanted(number):
                yield number, where, parse()
            number += 1


def file_records(path: Path, encoding: str = "utf-8") -> Iterator[tuple[str, Callable[[], Record]]]:
    """``(where, parse)`` per record of one file; ``parse()`` reads it (malformed JSON names the file and line)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        number = 0
        for batch in parquet_file(path).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                number += 1
                yield f"{path} record {number}", lambda row=row: row
        return
    with decoded(path, encoding):
        yield from text_file_records(path, encoding)


def text_file_records(path: Path, encoding: str) -> Iterator[tuple[str, Callable[[], Record]]]:
    suffix = path.suffix.lower()
    if suffix == TEXT_SUFFIX:
        yield str(path), lambda: {"text": read_text(path, encoding)}
    elif suffix == ".jsonl":
        with path.open(encoding=text_encoding(encoding)) as lines:
            for line_number, line in enumerate(lines, start=1):
                if line.strip():
                    yield f"{path}:{line_number}", lambda line=line, n=line_number: parse_json_line(path, n, line)
    elif suffix == ".csv":
        for line_number, row in csv_rows(path, encoding):
            yield f"{path}:{line_number}", lambda row=row: row
    else:  # .json: one array, read whole
        content = json.loads(read_text(path, encoding))
        if not isinstance(content, list):
            raise DataError(f"{path}: streaming reads a JSON array of records (or jsonl), got {type(content).__name__}")
        for number, record in enumerate(content, start=1):
            yield f"{path} record {number}", lambda record=record: record


class TextStream(IterableDataset):
    """Blocks of ``block_size`` tokens from a text source read as it streams (see the module). Items are those of
    `TextBlocks` (segments per document piece with ``document_boundaries``, else one), plus ``epoch`` (the pass),
    ``documents`` (the numbers of the documents whose tokens the block holds) and ``reader`` (the slot that read it).

    Args:
        source: A file, a directory of shards or a hub dataset id.
        tokenize: One record -> ``{"input_ids", "labels", "status"}`` (`text_tokenizer`).
        block_size: Tokens per block.
        document_boundaries: One segment per document piece instead of one per block.
        split: Split of a hub dataset.
        rank: This process's DDP rank.
        world_size: Number of DDP processes.
        encoding: Text encoding of local files.
    """

    def __init__(
        self,
        source: str,
        tokenize: RecordTokenizer,
        block_size: int,
        document_boundaries: bool = False,
        split: str = "train",
        rank: int = 0,
        world_size: int = 1,
        encoding: str = "utf-8",
    ) -> None:
        self.source = source
        self.tokenize = tokenize
        self.block_size = block_size
        self.document_boundaries = document_boundaries
        self.split = split
        self.rank = rank
        self.world_size = world_size
        self.encoding = encoding
        self.epoch = 0
        self.next_document = 0
        self.pending: list[tuple[int, list[int], list[int]]] = []  # (document, ids, labels) read, not yet handed out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next_document": self.next_document, "pending": [list(p) for p in self.pending]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.next_document = state["epoch"], state["next_document"]
        self.pending = [(document, ids, labels) for document, ids, labels in state["pending"]]

    def slot(self) -> tuple[int, int]:
        """``(this reader's slot, number of slots)``: one per (rank, worker) pair."""
        worker = get_worker_info()
        workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        if workers > 1 and data_files(self.source) is None:
            raise UsageError(f"{self.source}: stream a hub dataset with data.num_workers: 0 (or download its files)")
        return self.rank * workers + worker_id, self.world_size * workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        slot, slots = self.slot()
        while True:
            mine = self._documents(slot, slots)
            found = False
            for document, ids, labels in mine:
                found = True
                self.pending.append((document, ids, labels))
                while sum(len(piece[1]) for piece in self.pending) >= self.block_size:
                    yield {**self._take_block(), "reader": slot}
            if self.pending:
                yield {**self._take_block(), "reader": slot}
            if not found and self.next_document == 0:
                raise DataError(f"{self.source}: no documents for reader {slot} of {slots} (fewer documents?)")
            self.epoch, self.next_document = self.epoch + 1, 0

    def _documents(self, slot: int, slots: int) -> Iterator[tuple[int, list[int], list[int]]]:
        start = self.next_document
        records = iter_records(self.source, self.split, lambda n: n >= start and n % slots == slot, self.encoding)
        for number, where, record in records:
            row = self.tokenize(record, where)
            self.next_document = number + 1
            if row["status"] == "ok":
                yield number, row["input_ids"], row["labels"]

    def _take_block(self) -> dict[str, Any]:
        """The next block from the pending tokens (fewer than ``block_size`` only at the end of a pass)."""
        room, ids, labels, documents = self.block_size, [], [], []
        while self.pending and room:
            document, piece_ids, piece_labels = self.pending[0]
            taken = min(room, len(piece_ids))
            ids.append(piece_ids[:taken])
            labels.append(piece_labels[:taken])
            documents.append(document)
            room -= taken
            if taken == len(piece_ids):
                self.pending.pop(0)
            else:
                self.pending[0] = (document, piece_ids[taken:], piece_labels[taken:])
        if not self.document_boundaries:
            ids, labels = [sum(ids, [])], [sum(labels, [])]
        return {"input_ids": ids, "labels": labels, "epoch": self.epoch, "documents": documents}


def stream_loader(stream: TextStream, batch_size: int, collate_fn: Callable, num_workers: int) -> StatefulDataLoader:
    """A stateful loader over the stream: checkpoints hold every worker's stream position."""
    return StatefulDataLoader(stream, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers)
