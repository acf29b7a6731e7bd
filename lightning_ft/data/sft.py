"""LightningDataModules for supervised fine-tuning: instruction records and chat conversations.

Records are validated and tokenized once, in ``prepare_data``, with ``datasets.map``; the result is cached on disk under
a fingerprint of the data, tokenizer, chat template and every option that changes the tokens. ``setup`` finds it there.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from datasets import Dataset
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.data.collate import PadCollator
from lightning_ft.data.formats import (
    CHAT_FIELDS,
    INSTRUCTION_FIELDS,
    ChatFormat,
    InstructionFormat,
    Message,
    chat_to_messages,
    field_names,
    instruction_to_messages,
)
from lightning_ft.data.packing import PackedDataset, PackingCollator
from lightning_ft.data.sampling import LengthGroupedBatchSampler
from lightning_ft.data.sources import DataError, load_records
from lightning_ft.data.tokenize import DROPPED, ConversationTokenizer, Overlong, TrainOn

TOKENIZATION_VERSION = "1"


class SFTData(L.LightningDataModule):
    """Base of the SFT data modules; subclasses say how one record becomes a conversation (`to_messages`).

    Args:
        train: Training data: a .jsonl/.json/.parquet/.csv file or a hub dataset id.
        val: Validation data in the same format; or use ``val_fraction``.
        val_fraction: Fraction of ``train`` held out (seeded) for validation when ``val`` is not given.
        max_length: Longest tokenized conversation; longer ones follow ``overlong``.
        overlong: ``truncate`` longer conversations at the end, or ``drop`` them (counts are reported either way).
        train_on: Loss on every ``assistant`` turn, the ``last_assistant`` turn, or ``all`` tokens.
        system_prompt: System message for conversations that have none.
        batch_size: Conversations per micro-batch.
        eval_batch_size: Validation batch size (default: ``batch_size``).
        packing: Pack several conversations into each row of ``max_length`` tokens (no padding; attention never
            crosses conversations). ``batch_size`` then counts rows. Not for prompt/prefix tuning.
        group_by_length: Without packing, batch conversations of similar length together (less padding).
        num_workers: DataLoader worker processes.
        seed: Seed of the validation split and the shuffling.
        split: Split to read from a hub dataset.
        tokenizer: Set by the CLI from the model (`lightning-ft` links it); pass it yourself in Python.
    """

    def __init__(
        self,
        train: str,
        val: str | None = None,
        val_fraction: float = 0.0,
        max_length: int = 2048,
        overlong: Overlong = "truncate",
        train_on: TrainOn = "assistant",
        system_prompt: str | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        packing: bool = True,
        group_by_length: bool = False,
        num_workers: int = 0,
        seed: int = 42,
        split: str = "train",
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__()
        if val is not None and val_fraction > 0:
            raise ValueError("Give either `val` (a file) or `val_fraction`, not both.")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.train = train
        self.val = val
        self.val_fraction = val_fraction
        self.max_length = max_length
        self.overlong = overlong
        self.train_on = train_on
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.packing = packing
        self.group_by_length = group_by_length
        self.num_workers = num_workers
        self.seed = seed
        self.split = split
        self.tokenizer = tokenizer
        self.stats: dict[str, dict[str, int]] = {}
        self.datasets: dict[str, Dataset] = {}

    # Subclasses: one record -> canonical conversation.
    def to_messages(self, record: Mapping[str, Any], where: str) -> list[Message]:
        raise NotImplementedError

    def format_options(self) -> dict[str, Any]:
        """Everything besides the tokenizer that changes how records become tokens (part of the cache key)."""
        return {}

    def prepare_data(self) -> None:
        self._tokenized_splits(report=True)

    def setup(self, stage: str) -> None:
        self.datasets = self._tokenized_splits(report=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["train"], self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if "val" not in self.datasets:
            return []
        return self._loader(self.datasets["val"], self.eval_batch_size, shuffle=False)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        pad_token_id = self._require_tokenizer().pad_token_id
        generator = torch.Generator().manual_seed(self.seed)
        common = {"num_workers": self.num_workers}
        if self.packing:
            return DataLoader(
                PackedDataset(dataset.select_columns(["input_ids", "labels"]), capacity=self.max_length),
                batch_size=batch_size,
                shuffle=shuffle,
                generator=generator if shuffle else None,
                collate_fn=PackingCollator(pad_token_id),
                **common,
            )
        examples = dataset.select_columns(["input_ids", "labels"])
        if self.group_by_length and shuffle:
            lengths = [len(ids) for ids in examples["input_ids"]]
            sampler = LengthGroupedBatchSampler(lengths, batch_size, seed=self.seed)
            return DataLoader(examples, batch_sampler=sampler, collate_fn=PadCollator(pad_token_id), **common)
        return DataLoader(
            examples,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator if shuffle else None,
            collate_fn=PadCollator(pad_token_id),
            **common,
        )

    def _require_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise ValueError(f"{type(self).__name__} has no tokenizer: pass `tokenizer=` (the CLI links the model's).")
        return self.tokenizer

    def _raw_splits(self) -> dict[str, tuple[str, Dataset]]:
        train = load_records(self.train, split=self.split)
        if self.val is not None:
            return {"train": (self.train, train), "val": (self.val, load_records(self.val, split=self.split))}
        if self.val_fraction > 0:
            parts = train.train_test_split(test_size=self.val_fraction, seed=self.seed)
            return {"train": (self.train, parts["train"]), "val": (f"{self.train} (val split)", parts["test"])}
        return {"train": (self.train, train)}

    def _tokenized_splits(self, report: bool) -> dict[str, Dataset]:
        conversation_tokenizer = ConversationTokenizer(
            self._require_tokenizer(), self.max_length, self.train_on, self.overlong
        )
        tokenized = {}
        for split, (source, raw) in self._raw_splits().items():
            tokenized[split] = self._tokenize(split, source, raw, conversation_tokenizer, report)
        return tokenized

    def _tokenize(
        self, split: str, source: str, raw: Dataset, tokenizer: ConversationTokenizer, report: bool
    ) -> Dataset:
        def tokenize_record(record: dict, index: int) -> dict:
            messages = self.to_messages(record, f"{source}: record {index}")
            if self.system_prompt and messages[0]["role"] != "system":
                messages = [{"role": "system", "content": self.system_prompt}, *messages]
            return dict(tokenizer(messages))

        mapped = raw.map(
            tokenize_record,
            with_indices=True,
            remove_columns=raw.column_names,
            new_fingerprint=self._fingerprint(raw),
            desc=f"Tokenizing {split}",
        )
        counts = Counter(mapped["status"])
        self.stats[split] = {"records": len(mapped), **counts}
        kept = mapped.filter(lambda status: status not in DROPPED, input_columns="status")
        if report:
            rank_zero_info(
                f"{split} data ({source}): {len(mapped)} records, {len(kept)} kept; "
                f"{counts.get('truncated', 0)} truncated to {self.max_length} tokens, "
                f"{counts.get('dropped_too_long', 0)} dropped as longer than {self.max_length} tokens, "
                f"{counts.get('dropped_no_trainable', 0)} dropped with no trainable tokens"
            )
        if len(kept) == 0:
            raise DataError(f"{source}: no {split} records left to train on ({dict(counts)})")
        return kept

    def _fingerprint(self, raw: Dataset) -> str:
        tokenizer = self._require_tokenizer()
        key = {
            "version": TOKENIZATION_VERSION,
            "module": type(self).__qualname__,
            "data": raw._fingerprint,
            "tokenizer": [tokenizer.name_or_path, len(tokenizer), tokenizer.chat_template, tokenizer.pad_token_id],
            "options": [self.max_length, self.overlong, self.train_on, self.system_prompt, self.format_options()],
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


class InstructionData(SFTData):
    """Single-turn instruction data: Alpaca (``instruction``, ``input``, ``output``) or Dolly (``instruction``,
    ``context``, ``response``); an optional ``system`` field becomes the system message.

    Args:
        format: ``alpaca`` or ``dolly`` (sets the default field names).
        fields: Rename fields, e.g. ``{"output": "answer"}``; keys: instruction, input, output, system.
    """

    def __init__(
        self, train: str, format: InstructionFormat = "alpaca", fields: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(train, **kwargs)
        self.format = format
        self.fields = field_names(INSTRUCTION_FIELDS, format, fields)

    def format_options(self) -> dict[str, Any]:
        return {"format": self.format, "fields": self.fields}

    def to_messages(self, record: Mapping[str, Any], where: str) -> list[Message]:
        return instruction_to_messages(record, self.fields, where)


class ChatData(SFTData):
    """Multi-turn conversations: ``messages`` (role/content) or ShareGPT ``conversations`` (from/value), with an
    optional ``system`` field.

    Args:
        format: ``messages`` or ``sharegpt`` (sets the default field names).
        fields: Rename fields; keys: messages, role, content, system.
    """

    def __init__(
        self, train: str, format: ChatFormat = "messages", fields: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(train, **kwargs)
        self.format = format
        self.fields = field_names(CHAT_FIELDS, format, fields)

    def format_options(self) -> dict[str, Any]:
        return {"format": self.format, "fields": self.fields}

    def to_messages(self, record: Mapping[str, Any], where: str) -> list[Message]:
        return chat_to_messages(record, self.fields, where)
