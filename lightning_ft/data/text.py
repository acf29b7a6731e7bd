"""Raw text for continued pre-training: documents tokenized once with EOS after each (`text_tokenizer`), concatenated
and cut into fixed blocks (`TextBlocks`), and the data module that trains on them (`TextData`)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping
from typing import Any

from datasets import Dataset as HFDataset
from torch.utils.data import DataLoader, Dataset
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.data.mixing import MixSource
from lightning_ft.data.module import RecordTokenizer, TokenizedData
from lightning_ft.data.packing import PackingCollator
from lightning_ft.data.sources import DataError
from lightning_ft.data.streaming import TextStream, stream_loader
from lightning_ft.errors import UsageError


def text_tokenizer(tokenizer: PreTrainedTokenizerBase, text_field: str = "text") -> RecordTokenizer:
    """One record's ``text_field`` -> its tokens (the tokenizer's own special tokens, e.g. a BOS, included) ending in
    EOS, all of them trained (``labels`` equal ``input_ids``). Empty text is dropped (and counted)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UsageError(f"{tokenizer.name_or_path}: the tokenizer has no EOS token to put between documents")

    def tokenize(record: Mapping[str, Any], where: str) -> dict[str, Any]:
        text = record.get(text_field)
        if text is None:
            state = "null" if text_field in record else "missing"
            raise DataError(f"{where}: field {text_field!r} is {state} (fields: {sorted(record)})")
        if not isinstance(text, str):
            raise DataError(f"{where}: field {text_field!r} must be text, got {type(text).__name__}")
        if not text.strip():
            return {"input_ids": [], "labels": [], "status": "dropped_empty"}
        ids = tokenizer(text, verbose=False)["input_ids"]
        if not ids or ids[-1] != eos:
            ids = [*ids, eos]
        return {"input_ids": ids, "labels": ids, "status": "ok"}

    return tokenize


class TextBlocks(Dataset):
    """Documents (token rows, each ending in EOS) concatenated in order and cut into blocks of ``block_size`` tokens;
    the last block holds the rest. Every document's tokens appear exactly once, in order; a document longer than the
    room left runs on into the next block.

    An item is ``{"input_ids": [segment, ...], "labels": [segment, ...]}``, as `PackingCollator` takes it: with
    ``document_boundaries`` one segment per document piece (attention stays within a document; positions restart),
    else the whole block as one segment (attention across documents, as GPT-style pre-training does). ``flat`` items
    are plain ``{"input_ids": [...], "labels": [...]}`` for `PadCollator` (no boundaries).

    Args:
        documents: Tokenized documents with ``input_ids`` and ``labels`` columns.
        block_size: Tokens per block.
        document_boundaries: Keep attention and positions within each document.
        flat: Items for padded batches instead of packed ones (needs ``document_boundaries`` false).
    """

    def __init__(
        self, documents: HFDataset, block_size: int, document_boundaries: bool = False, flat: bool = False
    ) -> None:
        if flat and document_boundaries:
            raise ValueError("document_boundaries needs packed batches (segments); flat blocks have none")
        self.documents = documents.select_columns(["input_ids", "labels"])
        self.block_size = block_size
        self.document_boundaries = document_boundaries
        self.flat = flat
        self.starts = [0, *itertools.accumulate(len(ids) for ids in self.documents["input_ids"])]
        self.num_tokens = self.starts[-1]

    def __len__(self) -> int:
        return -(-self.num_tokens // self.block_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        begin, end = index * self.block_size, min((index + 1) * self.block_size, self.num_tokens)
        if not 0 <= begin < end:
            raise IndexError(index)
        first = bisect.bisect_right(self.starts, begin) - 1
        last = bisect.bisect_left(self.starts, end) - 1
        rows = self.documents[first : last + 1]
        pieces_ids, pieces_labels = [], []
        for document, ids, labels in zip(range(first, last + 1), rows["input_ids"], rows["labels"], strict=True):
            offset = self.starts[document]
            cut = slice(max(begin, offset) - offset, min(end, offset + len(ids)) - offset)
            pieces_ids.append(ids[cut])
            pieces_labels.append(labels[cut])
        if not self.document_boundaries:
            pieces_ids, pieces_labels = [sum(pieces_ids, [])], [sum(pieces_labels, [])]
        if self.flat:
            return {"input_ids": pieces_ids[0], "labels": pieces_labels[0]}
        return {"input_ids": pieces_ids, "labels": pieces_labels}


class TextData(TokenizedData):
    """Continued pre-training on raw text: causal-LM loss on every token of fixed blocks.

    Documents come from the ``text_field`` of jsonl/json/parquet/csv records, from ``.txt`` files (one document each;
    a directory of them works too) or a hub dataset; each is tokenized once (cached) with EOS after it, and the
    documents are concatenated and cut into blocks of ``max_length`` tokens (`TextBlocks`). Train it with `SFT`.

    Args:
        train: Text source(s): a path or hub id, or a weighted mix ``[{path, weight}, ...]`` (`MixSource`).
        text_field: The field holding each document's text.
        document_boundaries: Keep attention from crossing documents within a block (block-diagonal masks and
            position restarts, as SFT packing), so each document is trained as if alone.
        streaming: Read, tokenize and pack the training text on the fly instead of caching it (corpora larger than
            memory or disk): `TextStream`. Needs ``trainer.max_steps``; the stream repeats, one pass per epoch.
        val: Validation text in the same form.
        val_fraction: Fraction of the documents held out (seeded) for validation (not with streaming).
        val_extra: More validation sets, ``name -> source``, logged as ``val_<name>/loss`` and ``/ppl``.
        max_length: Tokens per block.
        batch_size: Blocks per micro-batch.
        eval_batch_size: Validation batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes (a stream deals documents out to them).
        seed: Seed of the validation split and the shuffling.
        split: Split to read from a hub dataset.
        encoding: Text encoding of local files (``.txt``, jsonl, json, csv), e.g. ``latin-1``; streaming too.
        tokenizer: Set by the CLI from the model.
    """

    def __init__(
        self,
        train: str | list[MixSource],
        text_field: str = "text",
        document_boundaries: bool = False,
        streaming: bool = False,
        val: str | None = None,
        val_fraction: float = 0.0,
        val_extra: dict[str, str] | None = None,
        max_length: int = 2048,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        split: str = "train",
        encoding: str = "utf-8",
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__(
            train,
            val=val,
            val_fraction=val_fraction,
            val_extra=val_extra,
            max_length=max_length,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            split=split,
            encoding=encoding,
            tokenizer=tokenizer,
        )
        self.text_field = text_field
        self.document_boundaries = document_boundaries
        self.streaming = streaming
        if streaming and self.val_fraction > 0:
            raise UsageError(
                "data.streaming reads the corpus once per epoch: give a data.val file instead of data.val_fraction"
            )

    def own_kind(self) -> str:
        return "text"

    def token_options(self) -> dict[str, Any]:
        return {"text_field": self.text_field}

    def record_tokenizer(self) -> RecordTokenizer:
        return text_tokenizer(self._require_tokenizer(), self.text_field)

    def text_record_tokenizer(self) -> RecordTokenizer:
        return self.record_tokenizer()

    def prepare_data(self) -> None:
        if not self.streaming:
            super().prepare_data()
        else:
            self._tokenized_splits(report=True, train=False)

    def setup(self, stage: str) -> None:
        self.datasets = self._tokenized_splits(report=False, train=not self.streaming)

    def train_dataloader(self) -> DataLoader:
        if self.streaming:
            return self._stream_loader()
        return self._loader(self.items("train"), self.batch_size, shuffle=True, collate_fn=self.collator())

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._val_loaders(
            lambda split: self._loader(self.items(split), self.eval_batch_size, False, self.collator())
        )

    def items(self, split: str) -> Dataset:
        """The split's blocks (a mix: each source's blocks, never crossing sources)."""
        return self.mixed_items(self.datasets[split], lambda documents, source: self.blocks(documents))

    def blocks(self, documents: HFDataset, flat: bool = False) -> TextBlocks:
        return TextBlocks(documents, self.max_length, self.document_boundaries, flat)

    def collator(self) -> PackingCollator:
        return PackingCollator(self._require_tokenizer().pad_token_id)

    def _stream_loader(self) -> DataLoader:
        if len(self.sources) > 1:
            raise UsageError(
                "data.streaming reads one source (a file, a directory of shards or a hub id), not a mix: give "
                "data.train one path"
            )
        if self.trainer is not None and self.trainer.max_steps == -1:
            raise UsageError("data.streaming repeats the corpus without end: set trainer.max_steps")
        stream = TextStream(
            self.sources[0].path,
            self.record_tokenizer(),
            self.max_length,
            self.document_boundaries,
            split=self.split,
            rank=self.trainer.global_rank if self.trainer is not None else 0,
            world_size=self.trainer.world_size if self.trainer is not None else 1,
            encoding=self.encoding,
        )
        return stream_loader(stream, self.batch_size, self.collator(), self.num_workers)
