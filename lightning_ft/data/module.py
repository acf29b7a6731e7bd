"""`TokenizedData`: the LightningDataModule machinery every data kind shares.

Records are read, validated and tokenized once, in ``prepare_data``, with ``datasets.map``; the result is cached on disk
under a fingerprint of the data, the tokenizer, its chat template and every option that changes the tokens, so
``setup`` (and every later run) only loads it. Every row keeps its ``record`` number in the source (its 0-based
index); records dropped while tokenizing are counted, their numbers kept and reported by where they are in the files
(`Places`: the line of a jsonl or csv record, else its 1-based record number); nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import lightning as L
import torch
from datasets import Dataset, concatenate_datasets
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import ProcessorMixin
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.data.mixing import MixedItems, MixSource, SourceKind, WeightedMixSampler, mix_sources
from lightning_ft.data.sampling import SeededRandomSampler
from lightning_ft.data.sources import DataError, Places, check_encoding, read_source
from lightning_ft.data.template_defaults import with_template_defaults
from lightning_ft.data.tokenize import DROPPED, Overlong
from lightning_ft.errors import UsageError
from lightning_ft.options import check_option

TOKENIZATION_VERSION = "5"  # bump whenever tokenized rows change: old caches must not be reused
RecordTokenizer = Callable[[Mapping[str, Any], str], dict[str, Any]]


class RawPart(NamedTuple):
    """One split's records from one source: ``source`` is the index in `TokenizedData.sources` (None for the ``val``
    and ``val_extra`` files), ``numbers`` the records' numbers (0-based indices) in ``path``, ``places`` where each
    number is in the files."""

    split: str
    source: int | None
    path: str
    records: Dataset
    numbers: list[int]
    places: Places


SET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STATUS_DESCRIPTIONS = {
    "truncated": "truncated to {max_length} tokens",
    "dropped_too_long": "dropped as longer than {max_length} tokens",
    "dropped_no_trainable": "dropped with no trainable tokens",
    "dropped_identical": "dropped with identical chosen and rejected",
    "dropped_image_cut": "dropped as {max_length} tokens would cut through their image tokens",
    "dropped_empty": "dropped with empty text",
}


class TokenizedData(L.LightningDataModule):
    """Base of the data modules; a subclass says how one record becomes a tokenized row (`record_tokenizer`).

    Args:
        train: Training data: a .jsonl/.json/.parquet/.csv file, a directory of such shards or a hub dataset id; or a
            weighted mix of sources, ``[{path: domain.jsonl, weight: 0.9}, {path: general.jsonl, weight: 0.1}]``
            (`MixSource`; ``kind: text`` adds raw text, e.g. replay of general text during SFT). Each epoch draws as
            many items as the sources hold, each source by its share of the weights (seeded, resumable).
        val: Validation data in the same format; or use ``val_fraction``.
        val_fraction: Fraction of ``train`` held out (seeded; of each source of a mix) for validation when ``val`` is
            not given.
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
        encoding: Text encoding of local data files (jsonl, json, csv, txt), e.g. ``latin-1`` or ``cp1252``; a UTF-8
            byte-order mark is skipped.
        tokenizer: Set by the CLI from the model (`lightning-ft` links it); pass it yourself in Python.
    """

    def __init__(
        self,
        train: str | list[MixSource],
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
        encoding: str = "utf-8",
        tokenizer: PreTrainedTokenizerBase | ProcessorMixin | None = None,
    ) -> None:
        super().__init__()
        check_ranges(max_length, batch_size, eval_batch_size, num_workers, val_fraction)
        if val is not None and val_fraction > 0:
            raise UsageError("give either data.val (a file) or data.val_fraction, not both")
        check_option("overlong policy", overlong, Overlong)
        check_set_names(val_extra or {})
        self.train = train
        self.sources = mix_sources(train)
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
        self.encoding = check_encoding(encoding)
        self.tokenizer = tokenizer
        self.stats: dict[str, dict[str, int]] = {}
        self.dropped: dict[str, dict[str, list[int]]] = {}  # split -> status -> 0-based record indices
        self.dropped_places: dict[str, dict[str, list[str]]] = {}  # the same records as users find them
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
            raise UsageError(f"{type(self).__name__} has no tokenizer: pass `tokenizer=` (the CLI links the model's).")
        # a vision-language model's processor: text goes to its tokenizer
        text = self.tokenizer.tokenizer if isinstance(self.tokenizer, ProcessorMixin) else self.tokenizer
        if self.chat_template_kwargs:
            if not text.chat_template:
                raise UsageError(
                    "data.chat_template_kwargs needs a chat template, and the tokenizer has none: set "
                    "model.model.chat_template, or remove data.chat_template_kwargs"
                )
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

    def _raw_parts(self) -> list[RawPart]:
        """The records of every split, one part per source: ``train`` (a part per mix source, less what
        ``val_fraction`` holds out of each), ``val`` (its file, or the held-out records), then the ``val_extra`` sets.
        Errors and reports use each part's record numbers in its source."""
        parts, held_out = [], []
        for index, source in enumerate(self.sources):
            records, places = read_source(source.path, self.split, self.encoding)
            if self.val is None and self.val_fraction > 0:
                order = torch.randperm(len(records), generator=torch.Generator().manual_seed(self.seed)).tolist()
                count = max(1, round(self.val_fraction * len(records)))
                val_numbers, train_numbers = sorted(order[:count]), sorted(order[count:])
                train = RawPart("train", index, source.path, records.select(train_numbers), train_numbers, places)
                parts.append(train)
                held_out.append(RawPart("val", index, source.path, records.select(val_numbers), val_numbers, places))
            else:
                parts.append(RawPart("train", index, source.path, records, list(range(len(records))), places))
        named = ([("val", self.val)] if self.val is not None else []) + [
            (f"val_{name}", path) for name, path in self.val_extra.items()
        ]
        for split, path in named:
            records, places = read_source(path, self.split, self.encoding)
            held_out.append(RawPart(split, None, path, records, list(range(len(records))), places))
        return parts + held_out

    def _raw_splits(self) -> dict[str, tuple[str, Dataset, list[int]]]:
        """``split -> (source, records, record numbers in the source)`` for data of one source per split."""
        splits = {}
        for part in self._raw_parts():
            if part.split in splits:
                raise ValueError(f"split {part.split} has several sources (a mix): read `_raw_parts()`")
            splits[part.split] = (part.path, part.records, part.numbers)
        return splits

    def kind_of(self, source_index: int | None) -> SourceKind:
        """What a part's records are: ``text`` for raw-text mix sources (and all of `TextData`), else ``records``
        (the module's own format; validation files are always that)."""
        if self.own_kind() == "text" or (source_index is not None and self.sources[source_index].kind == "text"):
            return "text"
        return "records"

    def own_kind(self) -> SourceKind:
        return "records"

    def part_tokenizer(self, part: RawPart) -> RecordTokenizer:
        """How a part's records become rows: `record_tokenizer`, or `text_record_tokenizer` for raw text."""
        return self.text_record_tokenizer() if self.kind_of(part.source) == "text" else self.record_tokenizer()

    def text_record_tokenizer(self) -> RecordTokenizer:
        """Raw-text rows with the same columns as this module's rows; only modules that can train text have one."""
        raise UsageError(
            f"{type(self).__name__} cannot train raw-text sources (kind: text): mix them into SFT data (ChatData, "
            "InstructionData) or train them with TextData"
        )

    def _tokenized_splits(self, report: bool, train: bool = True) -> dict[str, Dataset]:
        """Every split tokenized (``train`` false: all but the training split); a split of several sources is their
        rows side by side with a ``source`` column (the index in `sources`)."""
        by_split: dict[str, list[Dataset]] = {}
        for part in self._raw_parts():
            if part.split == "train" and not train:
                continue
            rows = self._tokenize(part, self.part_tokenizer(part), report)
            if len(self.sources) > 1 and part.source is not None:
                rows = rows.add_column("source", [part.source] * len(rows), new_fingerprint=f"{rows._fingerprint}s")
            by_split.setdefault(part.split, []).append(rows)
        return {
            split: parts[0] if len(parts) == 1 else concatenate_datasets(parts) for split, parts in by_split.items()
        }

    def _tokenize(self, part: RawPart, tokenize: RecordTokenizer, report: bool) -> Dataset:
        raw, numbers, source, split = part.records, part.numbers, part.path, part.split
        kind = self.kind_of(part.source)
        mapped = raw.map(
            lambda record, index: {
                **tokenize_as_written(tokenize, record, part.places, numbers[index]),
                "record": numbers[index],
            },
            with_indices=True,
            remove_columns=[column for column in raw.column_names if column not in self.kept_columns(raw.column_names)],
            new_fingerprint=self._fingerprint(raw, kind),
            desc=f"Tokenizing {split}" + (f" ({source})" if len(self.sources) > 1 else ""),
        )
        statuses, records = mapped["status"], mapped["record"]
        counts = Counter(statuses)
        key = split if len(self.sources) == 1 or part.source is None else f"{split}:{source}"
        self.stats[key] = {"records": len(mapped), **counts}
        self.dropped[key] = {
            status: [record for record, seen in zip(records, statuses, strict=True) if seen == status]
            for status in counts
            if status in DROPPED
        }
        self.dropped_places[key] = {
            status: list(map(part.places, found)) for status, found in self.dropped[key].items()
        }
        kept = mapped.filter(lambda status: status not in DROPPED, input_columns="status")
        if report:
            rank_zero_info(self._report(key, part, counts, len(kept)))
        if len(kept) == 0:
            raise DataError(f"{source}: no {split} records left to train on ({dict(counts)})")
        return kept

    def _report(self, split: str, part: RawPart, counts: Counter, kept: int) -> str:
        """One line per split: counts, and where the dropped records are (`Places.describe`)."""
        parts = []
        for status, template in STATUS_DESCRIPTIONS.items():
            if counts.get(status):
                described = f"{counts[status]} {template.format(max_length=self.max_length)}"
                numbers = self.dropped[split].get(status, [])
                if numbers:
                    described += f" ({part.places.describe(numbers)})"
                parts.append(described)
        details = "; ".join(parts) or "none truncated or dropped"
        return f"{split} data ({part.path}): {sum(counts.values())} records, {kept} kept; {details}"

    def _fingerprint(self, raw: Dataset, kind: SourceKind = "records") -> str:
        tokenizer = self._require_tokenizer()
        key = {
            "kind": kind,
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

    def mixed_items(self, rows: Dataset, items_of: Callable[[Dataset, int | None], TorchDataset]) -> TorchDataset:
        """A split's loader items: ``items_of(rows, source)`` (``source`` None for one source); for a mix, each
        source's items built from its own rows (packed rows and text blocks never cross sources), side by side."""
        if "source" not in rows.column_names:
            return items_of(rows, None)
        sources = rows["source"]
        parts, indices = [], []
        for source in sorted(set(sources)):
            selected = [row for row, seen in enumerate(sources) if seen == source]
            parts.append(items_of(rows.select(selected).remove_columns("source"), source))
            indices.append(source)
        return MixedItems(parts, indices)

    def _loader(
        self, dataset: Any, batch_size: int, shuffle: bool, collate_fn: Callable, drop_last: bool = False
    ) -> DataLoader:
        """A stateful loader: Lightning saves its position in checkpoints, so a run resumes mid-epoch exactly. Items
        of a mix (`mixed_items`, or rows with a ``source`` column) are drawn by the sources' weights when shuffled."""
        item_sources = getattr(dataset, "item_sources", None)
        if isinstance(dataset, Dataset) and "source" in dataset.column_names:
            item_sources, dataset = dataset["source"], dataset.remove_columns("source")
        sampler: Sampler | None = None
        if shuffle and item_sources is not None:
            sampler = WeightedMixSampler(item_sources, [source.weight for source in self.sources], seed=self.seed)
            rank_zero_info(self._mix_report(sampler))
        elif shuffle:
            sampler = SeededRandomSampler(dataset, seed=self.seed)
        return StatefulDataLoader(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            sampler=sampler,
            generator=self._generator(),
            collate_fn=collate_fn,
            num_workers=self.num_workers,
        )

    def _mix_report(self, sampler: WeightedMixSampler) -> str:
        counts = sampler.source_counts(epoch=0)
        parts = [
            f"{source.path} (weight {source.weight:g}): {count} draws of {len(items)} items"
            for source, count, items in zip(self.sources, counts, sampler.items_of_source, strict=True)
        ]
        return f"train mix, {len(sampler)} draws per epoch (seed {self.seed}; first epoch): " + "; ".join(parts)


def tokenize_as_written(
    tokenize: RecordTokenizer, record: Mapping[str, Any], places: Places, number: int
) -> dict[str, Any]:
    """``tokenize`` one record, named by its place. A record it refuses is tried once more as its JSON file holds it,
    so the error tells a null field from a missing one (`datasets` gives every record of a file every field)."""
    where = places(number)
    try:
        return tokenize(record, where)
    except DataError as error:
        failure = error
    written = places.written(number)
    if written is not None:
        try:
            tokenize(written, where)
        except DataError as precise:
            failure = precise
    raise failure


def check_ranges(
    max_length: int, batch_size: int, eval_batch_size: int | None, num_workers: int, val_fraction: float
) -> None:
    """The numeric options in range, or a `UsageError` naming the option as the command line writes it."""
    for name, value in (("max_length", max_length), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if value is not None:
            check_integer(name, value, minimum=1)
    check_integer("num_workers", num_workers, minimum=0)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not 0 <= val_fraction < 1:
        raise UsageError(
            f"data.val_fraction must be at least 0 and below 1 (the share of train held out), got {val_fraction!r}"
        )


def check_integer(name: str, value: Any, minimum: int) -> None:
    """``data.<name>`` must be an integer of at least ``minimum`` (1: positive, 0: non-negative)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer of {minimum} or more"
        raise UsageError(f"data.{name} must be {kind}, got {value!r}")


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
        raise UsageError("data.val_extra: " + "; ".join(problems))
