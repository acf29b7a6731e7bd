"""`TokenizedData`: the LightningDataModule machinery every data kind shares.

Records are read, validated and tokenized once, in ``prepare_data``, with ``datasets.map``; the result is cached on disk
under a fingerprint of the data, the tokenizer, its chat template and every option that changes the tokens, so
``setup`` (and every later run) only loads it. Every row keeps its ``record`` number in the source; records dropped
while tokenizing are counted, their numbers kept and reported; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from datasets import Dataset
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import ProcessorMixin
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.data.sampling import SeededRandomSampler
from lightning_ft.data.sources import DataError, load_records
from lightning_ft.data.template_defaults import with_template_defaults
from lightning_ft.data.tokenize import DROPPED, Overlong
from lightning_ft.options import check_option

TOKENIZATION_VERSION = "5"  # bump whenever tokenized rows change: old caches must not be reused
RecordTokenizer = Callable[[Mapping[str, Any], str], dict[str, Any]]
SET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STATUS_DESCRIPTIONS = {
    "truncated": "truncated to {max_length} tokens",
    "dropped_too_long": "dropped as longer than {max_length} tokens",
    "dropped_no_trainable": "dropped with no trainable tokens",
    "dropped_identical": "dropped with identical chosen and rejected",
    "dropped_image_cut": "dropped as {max_length} tokens would cut through their image tokens",
}


class TokenizedData(L.LightningDataModule):
    """Base of the data modules; a subclass says how one record becomes a tokenized row (`record_tokenizer`).

    Args:
        train: Training data: a .jsonl/.json/.parquet/.csv file or a hub dataset id.
        val: Validation data in the same format; or use ``val_fraction``.
        val_fraction: Fraction of ``train`` held out (seeded) for validation when ``val`` is not given.
        val_extra: More validation sets, ``name -> file`` in the same format as ``val`` (e.g. a general-skills set
            that shows forgetting). Each is tokenized and cached like ``val`` and becomes its own validation loader
            after the main one; its metrics are logged as ``val_<name>/...`` (``val_<name>/loss``, ``/ppl``).
        max_length: Longest tokenized sequence; longer ones follow ``overlong``.
        overlong: ``truncate`` longer sequences, or ``drop`` them (counts are reported either way).
        system_prompt: System message for conversations that have none.
        chat_template_kwargs: Keyword arguments of the chat template, e.g. ``{enable_thinking: false}``. They are
            written into the tokenizer's template as its defaults, so the export renders the same way everywhere.
        batch_size: Examples per micro-batch.
        eval_batch_size: Validation batch size (default: ``batch_size``).
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
        val_extra: dict[str, str] | None = None,
        max_length: int = 2048,
        overlong: Overlong = "truncate",
        system_prompt: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        split: str = "train",
        tokenizer: PreTrainedTokenizerBase | ProcessorMixin | None = None,
    ) -> None:
        super().__init__()
        if val is not None and val_fraction > 0:
            raise ValueError("Give either `val` (a file) or `val_fraction`, not both.")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        check_option("overlong policy", overlong, Overlong)
        check_set_names(val_extra or {})
        self.train = train
        self.val = val
        self.val_fraction = val_fraction
        self.val_extra = dict(val_extra or {})
        self.max_length = max_length
        self.overlong = overlong
        self.system_prompt = system_prompt
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.split = split
        self.tokenizer = tokenizer
        self.stats: dict[str, dict[str, int]] = {}
        self.dropped: dict[str, dict[str, list[int]]] = {}
        self.datasets: dict[str, Dataset] = {}

    # Subclasses: one record -> one tokenized row with a ``status``; and the options that change the tokens.
    def record_tokenizer(self) -> RecordTokenizer:
        raise NotImplementedError

    def token_options(self) -> dict[str, Any]:
        """Everything besides the tokenizer that changes how records become tokens (part of the cache key)."""
        return {}

    def kept_columns(self, columns: list[str]) -> list[str]:
        """Source columns that stay beside the tokens (prompt data keeps reference answers for reward functions)."""
        return []

    def prepare_data(self) -> None:
        self._tokenized_splits(report=True)

    def setup(self, stage: str) -> None:
        self.datasets = self._tokenized_splits(report=False)

    @property
    def val_set_names(self) -> list[str]:
        """The validation sets in loader order, as their metrics are prefixed: ``val`` (the main set, from ``val`` or
        ``val_fraction``) when there is one, then ``val_<name>`` for each of ``val_extra``."""
        main = ["val"] if self.val is not None or self.val_fraction > 0 else []
        return main + [f"val_{name}" for name in self.val_extra]

    def with_system_prompt(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.system_prompt and messages[0]["role"] != "system":
            return [{"role": "system", "content": self.system_prompt}, *messages]
        return messages

    def _require_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise ValueError(f"{type(self).__name__} has no tokenizer: pass `tokenizer=` (the CLI links the model's).")
        # a vision-language model's processor: text goes to its tokenizer
        text = self.tokenizer.tokenizer if isinstance(self.tokenizer, ProcessorMixin) else self.tokenizer
        if self.chat_template_kwargs:
            if not text.chat_template:
                raise ValueError("chat_template_kwargs needs a chat template: the tokenizer has none")
            text.chat_template = with_template_defaults(text.chat_template, self.chat_template_kwargs)
            if isinstance(self.tokenizer, ProcessorMixin) and getattr(self.tokenizer, "chat_template", None):
                self.tokenizer.chat_template = with_template_defaults(
                    self.tokenizer.chat_template, self.chat_template_kwargs
                )
        return text

    def _generator(self) -> torch.Generator:
        """The loaders' own seeded generator: shuffling and worker seeds never draw from the global RNG, so a
        resumed run (which restores the global RNG) draws the same numbers as an uninterrupted one."""
        return torch.Generator().manual_seed(self.seed)

    def _raw_splits(self) -> dict[str, tuple[str, Dataset, list[int]]]:
        """``split -> (source, records, record numbers in the source)``; errors and reports use those numbers. The
        splits are ``train``, then the `val_set_names` in order."""
        train = load_records(self.train, split=self.split)
        splits = {"train": (self.train, train, list(range(len(train))))}
        if self.val is not None:
            val = load_records(self.val, split=self.split)
            splits["val"] = (self.val, val, list(range(len(val))))
        elif self.val_fraction > 0:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed)).tolist()
            held_out = max(1, round(self.val_fraction * len(train)))
            val_numbers, train_numbers = sorted(order[:held_out]), sorted(order[held_out:])
            splits["train"] = (self.train, train.select(train_numbers), train_numbers)
            splits["val"] = (self.train, train.select(val_numbers), val_numbers)
        for name, source in self.val_extra.items():
            records = load_records(source, split=self.split)
            splits[f"val_{name}"] = (source, records, list(range(len(records))))
        return splits

    def _tokenized_splits(self, report: bool) -> dict[str, Dataset]:
        tokenize = self.record_tokenizer()
        return {
            split: self._tokenize(split, source, raw, numbers, tokenize, report)
            for split, (source, raw, numbers) in self._raw_splits().items()
        }

    def _tokenize(
        self, split: str, source: str, raw: Dataset, numbers: list[int], tokenize: RecordTokenizer, report: bool
    ) -> Dataset:
        mapped = raw.map(
            lambda record, index: {**tokenize(record, f"{source}: record {numbers[index]}"), "record": numbers[index]},
            with_indices=True,
            remove_columns=[column for column in raw.column_names if column not in self.kept_columns(raw.column_names)],
            new_fingerprint=self._fingerprint(raw),
            desc=f"Tokenizing {split}",
        )
        statuses, records = mapped["status"], mapped["record"]
        counts = Counter(statuses)
        self.stats[split] = {"records": len(mapped), **counts}
        self.dropped[split] = {
            status: [record for record, seen in zip(records, statuses, strict=True) if seen == status]
            for status in counts
            if status in DROPPED
        }
        kept = mapped.filter(lambda status: status not in DROPPED, input_columns="status")
        if report:
            rank_zero_info(self._report(split, source, counts, len(kept)))
        if len(kept) == 0:
            raise DataError(f"{source}: no {split} records left to train on ({dict(counts)})")
        return kept

    def _report(self, split: str, source: str, counts: Counter, kept: int) -> str:
        parts = []
        for status, template in STATUS_DESCRIPTIONS.items():
            if counts.get(status):
                part = f"{counts[status]} {template.format(max_length=self.max_length)}"
                indices = self.dropped[split].get(status, [])
                if indices:
                    part += f" (records {', '.join(map(str, indices[:10]))}{', ...' if len(indices) > 10 else ''})"
                parts.append(part)
        details = "; ".join(parts) or "none truncated or dropped"
        return f"{split} data ({source}): {sum(counts.values())} records, {kept} kept; {details}"

    def _fingerprint(self, raw: Dataset) -> str:
        tokenizer = self._require_tokenizer()
        key = {
            "version": TOKENIZATION_VERSION,
            "module": type(self).__qualname__,
            "data": raw._fingerprint,
            "tokenizer": [tokenizer.name_or_path, len(tokenizer), tokenizer.chat_template, tokenizer.pad_token_id],
            "options": [self.max_length, self.overlong, self.system_prompt, self.token_options()],
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def _val_loaders(self, loader: Callable[[str], DataLoader]) -> DataLoader | list[DataLoader]:
        """One loader per validation set (``loader(split)`` builds it), in `val_set_names` order: a lone loader when
        there is one set, none when there is none."""
        loaders = [loader(split) for split in self.val_set_names if split in self.datasets]
        return loaders[0] if len(loaders) == 1 else loaders

    def _loader(
        self, dataset: Any, batch_size: int, shuffle: bool, collate_fn: Callable, drop_last: bool = False
    ) -> DataLoader:
        """A stateful loader: Lightning saves its position in checkpoints, so a run resumes mid-epoch exactly."""
        return StatefulDataLoader(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            sampler=SeededRandomSampler(dataset, seed=self.seed) if shuffle else None,
            generator=self._generator(),
            collate_fn=collate_fn,
            num_workers=self.num_workers,
        )


def check_set_names(val_extra: Mapping[str, str]) -> None:
    """Every extra validation set name must be an identifier other than ``val`` (its metrics are ``val_<name>/...``);
    one error lists every bad name and why."""
    problems = []
    for name, source in val_extra.items():
        if not isinstance(name, str) or not SET_NAME.match(name):
            problems.append(f"{name!r} is not identifier-like (letters, digits, _; not starting with a digit)")
        elif name == "val":
            problems.append("'val' would log as 'val_val/...'; the main set is `val`: choose another name")
        if not isinstance(source, str) or not source:
            problems.append(f"{name!r} needs a data file or hub id, got {source!r}")
    if problems:
        raise ValueError("val_extra: " + "; ".join(problems))
