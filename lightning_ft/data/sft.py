"""LightningDataModules for supervised fine-tuning: instruction records and chat conversations (tokenized and cached
once by `TokenizedData`), batched padded or packed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchdata.stateful_dataloader import StatefulDataLoader

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
    record_tools,
)
from lightning_ft.data.mixing import MixSource
from lightning_ft.data.module import RecordTokenizer, TokenizedData
from lightning_ft.data.packing import PackedDataset, PackingCollator
from lightning_ft.data.sampling import LengthGroupedBatchSampler
from lightning_ft.data.text import TextBlocks, text_tokenizer
from lightning_ft.data.tokenize import ConversationTokenizer, TrainOn
from lightning_ft.errors import UsageError


class SFTData(TokenizedData):
    """Base of the SFT data modules; subclasses say how one record becomes a conversation (`to_messages`).

    Args:
        train_on: Loss on every ``assistant`` turn, the ``last_assistant`` turn, or ``all`` tokens.
        packing: Pack several conversations into each row of ``max_length`` tokens (no padding; attention never
            crosses conversations). ``batch_size`` then counts rows. Not for prompt/prefix tuning.
        group_by_length: Without packing, batch conversations of similar length together (less padding).
        train_on_reasoning: Whether the reasoning of assistant turns (``reasoning_content``, or ``<think>...</think>``
            in the content) carries loss where the template renders it; the tags around it and the answer always do.
        **kwargs: `TokenizedData` arguments: ``train``, ``val``, ``val_fraction``, ``val_extra``, ``max_length``,
            ``overlong`` (``truncate`` cuts a conversation's end), ``system_prompt``, ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``seed``, ``split``, ``encoding``, ``tokenizer``.
    """

    def __init__(
        self,
        train: str | list[MixSource],
        train_on: TrainOn = "assistant",
        packing: bool = True,
        group_by_length: bool = False,
        train_on_reasoning: bool = True,
        **kwargs: Any,
    ) -> None:
        if packing and group_by_length:
            raise UsageError(
                "group_by_length batches padded conversations: it needs packing: false (packed rows have no padding); "
                "set data.packing: false or data.group_by_length: false"
            )
        super().__init__(train, **kwargs)
        self.train_on = train_on
        self.packing = packing
        self.group_by_length = group_by_length
        self.train_on_reasoning = train_on_reasoning

    # Subclasses: one record -> canonical conversation.
    def to_messages(self, record: Mapping[str, Any], where: str) -> list[Message]:
        raise NotImplementedError

    def to_tools(self, record: Mapping[str, Any], where: str) -> list[dict[str, Any]] | None:
        """The tool schemas the record's conversation may call (None: no tools)."""
        return None

    def format_options(self) -> dict[str, Any]:
        """The subclass's options that change how records become conversations (part of the cache key)."""
        return {}

    def token_options(self) -> dict[str, Any]:
        return {"train_on": self.train_on, "train_on_reasoning": self.train_on_reasoning, **self.format_options()}

    def record_tokenizer(self) -> RecordTokenizer:
        conversations = ConversationTokenizer(
            self._require_tokenizer(), self.max_length, self.train_on, self.overlong, self.train_on_reasoning
        )

        def tokenize(record: Mapping[str, Any], where: str) -> dict[str, Any]:
            messages = self.with_system_prompt(self.to_messages(record, where))
            return dict(conversations(messages, self.to_tools(record, where), where))

        return tokenize

    def train_dataloader(self) -> DataLoader:
        return self._sft_loader(self.datasets["train"], self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The main validation set's loader, then one per ``val_extra`` set (`val_set_names`)."""
        return self._val_loaders(lambda split: self._sft_loader(self.datasets[split], self.eval_batch_size, False))

    def batch_columns(self, dataset: Dataset) -> list[str]:
        """The tokenized columns a batch is made of (subclasses add images)."""
        return ["input_ids", "labels"]

    def collator(self) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
        """How padded batches are made (subclasses add images)."""
        return PadCollator(self._require_tokenizer().pad_token_id)

    def text_record_tokenizer(self) -> RecordTokenizer:
        return text_tokenizer(self._require_tokenizer())

    def _sft_loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        if "source" in dataset.column_names:  # a mix: each source's own rows, text cut into blocks
            if self.group_by_length:
                raise UsageError(
                    "data.group_by_length cannot follow a weighted mix (data.train with several sources): set one or "
                    "the other"
                )
            items = self.mixed_items(dataset, self._source_items)
            collate = PackingCollator(self._require_tokenizer().pad_token_id) if self.packing else self.collator()
            return self._loader(items, batch_size, shuffle, collate)
        examples = dataset.select_columns(self.batch_columns(dataset))
        if self.packing:
            packed = PackedDataset(examples, capacity=self.max_length)
            return self._loader(packed, batch_size, shuffle, PackingCollator(self._require_tokenizer().pad_token_id))
        if self.group_by_length and shuffle:
            lengths = [len(ids) for ids in examples["input_ids"]]
            sampler = LengthGroupedBatchSampler(lengths, batch_size, seed=self.seed)
            return StatefulDataLoader(
                examples,
                batch_sampler=sampler,
                collate_fn=self.collator(),
                num_workers=self.num_workers,
                generator=self._generator(),
            )
        return self._loader(examples, batch_size, shuffle, self.collator())

    def _source_items(self, rows: Dataset, source: int | None) -> TorchDataset:
        if self.kind_of(source) == "text":
            return TextBlocks(rows, self.max_length, flat=not self.packing)
        examples = rows.select_columns(self.batch_columns(rows))
        return PackedDataset(examples, capacity=self.max_length) if self.packing else examples


class InstructionData(SFTData):
    """Single-turn instruction data: Alpaca (``instruction``, ``input``, ``output``) or Dolly (``instruction``,
    ``context``, ``response``); an optional ``system`` field becomes the system message.

    Args:
        format: ``alpaca`` or ``dolly`` (sets the default field names).
        fields: Rename fields, e.g. ``{"output": "answer"}``; keys: instruction, input, output, system.
    """

    def __init__(
        self,
        train: str | list[MixSource],
        format: InstructionFormat = "alpaca",
        fields: dict[str, str] | None = None,
        **kwargs: Any,
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
    optional ``system`` field, and for tool calling an optional ``tools`` field (JSON schemas, or their JSON text).

    Assistant turns may carry ``reasoning_content`` (or ``reasoning`` / ``thinking``) and ``tool_calls`` (OpenAI's
    shape, or ``{name, arguments}``); ShareGPT's ``function_call`` turns are assistant tool calls and its
    ``observation`` turns tool results (glaive / LLaMA-Factory data). The template renders tools and calls; the
    assistant's calls are trained, tool results and schemas are not.

    Args:
        format: ``messages`` or ``sharegpt`` (sets the default field names).
        fields: Rename fields; keys: messages, role, content, system, tools.
    """

    def __init__(
        self,
        train: str | list[MixSource],
        format: ChatFormat = "messages",
        fields: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(train, **kwargs)
        self.format = format
        self.fields = field_names(CHAT_FIELDS, format, fields)

    def format_options(self) -> dict[str, Any]:
        return {"format": self.format, "fields": self.fields}

    def to_messages(self, record: Mapping[str, Any], where: str) -> list[Message]:
        return chat_to_messages(record, self.fields, where)

    def to_tools(self, record: Mapping[str, Any], where: str) -> list[dict[str, Any]] | None:
        return record_tools(record, self.fields["tools"], where)
