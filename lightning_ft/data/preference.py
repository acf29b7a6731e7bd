"""`PreferenceData`: preference pairs (DPO family, reward models) and unpaired KTO examples.

Records become a canonical prompt and responses (`preference_formats`), are rendered with the training chat
template and tokenized once (`PreferenceTokenizer`, cached by `TokenizedData`), and are batched side by side:
chosen rows then rejected rows (or completions then KTO's mismatched KL pairs), so one forward scores both.
Reference log-probs can be computed once and cached with the tokenized data (`add_reference_logps`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from lightning_ft.data.collate import SideBySideCollator
from lightning_ft.data.formats import field_names
from lightning_ft.data.mixing import MixSource
from lightning_ft.data.module import RecordTokenizer, TokenizedData, check_integer
from lightning_ft.data.preference_formats import (
    PREFERENCE_FIELDS,
    IdenticalPair,
    PreferenceFormat,
    PreferencePair,
    record_to_preference,
)
from lightning_ft.data.preference_tokenize import PreferenceTokenizer, TokenizedPair, TokenizedUnpaired
from lightning_ft.data.sources import DataError
from lightning_ft.data.tokenize import IGNORE_INDEX
from lightning_ft.errors import UsageError

PAIR_SIDES = ("chosen_", "rejected_")
UNPAIRED_SIDES = ("", "kl_")
ReferenceScorer = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


class PreferenceData(TokenizedData):
    """Preference pairs or unpaired (KTO) examples, rendered with the model's chat template.

    Formats (field names configurable with ``fields``): ``pairs`` (``prompt`` text or messages, ``chosen`` /
    ``rejected`` text or messages; UltraFeedback-binarized included), ``hh_rlhf`` (whole transcripts split at their
    shared prompt), ``sharegpt`` (``conversations`` + ``chosen`` / ``rejected`` messages) and ``kto`` (``messages``
    ending with the response + bool ``label``). Pairs with identical responses are dropped and reported by index;
    a record missing a field stops the run with its index and the field.

    Batches hold ``input_ids`` / ``attention_mask`` / ``labels`` of ``2B`` rows: the ``B`` chosen responses, then the
    ``B`` rejected ones; for ``kto``, the ``B`` completions, then their KL pairs (each prompt with another example's
    completion, fixed by ``seed``), plus ``desirable`` ``(B,)``. Labels cover the responses only.

    Args:
        format: ``pairs``, ``hh_rlhf``, ``sharegpt`` or ``kto``.
        fields: Rename fields, e.g. ``{"chosen": "better"}``; keys per format: prompt, chosen, rejected, system,
            tools (``hh_rlhf``: chosen, rejected, system; ``kto``: messages, label, system, tools).
        max_prompt_length: When a pair is truncated, its prompt keeps at least this many tokens (its end); the
            responses lose their ends first (default ``max_length // 2``).
        add_special_tokens: Wrap each sequence in the tokenizer's special tokens, e.g. ``[CLS] ... [SEP]`` for
            BERT-style reward-model encoders; decoder chat templates write their own.
        margin_field: A numeric field holding each pair's required reward margin (e.g. a rating difference), passed
            to the reward model's loss as ``margin``.
        packing: Pack each micro-batch's ``2B`` sequences into one row without padding (`DPO` only; pays off
            most with flash-attention's varlen kernels, where no attention mask is built).
        train_on_reasoning: Whether the responses' reasoning (``reasoning_content`` or ``<think>...</think>``, where
            the template renders it) carries labels, i.e. counts in their log-probabilities.
        **kwargs: `TokenizedData` arguments: ``train``, ``val``, ``val_fraction``, ``val_extra``, ``max_length``,
            ``overlong``, ``system_prompt``, ``batch_size`` (pairs per micro-batch), ``eval_batch_size``,
            ``num_workers``, ``seed``, ``split``, ``encoding``, ``tokenizer``.
    """

    def __init__(
        self,
        train: str | list[MixSource],
        format: PreferenceFormat = "pairs",
        fields: dict[str, str] | None = None,
        max_prompt_length: int | None = None,
        add_special_tokens: bool = False,
        margin_field: str | None = None,
        packing: bool = False,
        train_on_reasoning: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(train, **kwargs)
        if max_prompt_length is not None:
            check_integer("max_prompt_length", max_prompt_length, minimum=1)
        self.train_on_reasoning = train_on_reasoning
        if packing and format == "kto":
            raise UsageError(
                "data.packing applies to pairs; KTO scores its completions and KL pairs in separate forwards: set "
                "data.packing: false"
            )
        self.packing = packing
        if margin_field is not None and format == "kto":
            raise UsageError("data.margin_field applies to pairs; the kto format has none: leave it unset")
        self.margin_field = margin_field
        self.format = format
        self.fields = field_names(PREFERENCE_FIELDS, format, fields)
        self.max_prompt_length = max_prompt_length
        self.add_special_tokens = add_special_tokens

    @property
    def unpaired(self) -> bool:
        return self.format == "kto"

    @property
    def sides(self) -> tuple[str, str]:
        return UNPAIRED_SIDES if self.unpaired else PAIR_SIDES

    def token_options(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "fields": self.fields,
            "max_prompt_length": self.max_prompt_length,
            "add_special_tokens": self.add_special_tokens,
            "margin_field": self.margin_field,
            "seed": self.seed if self.unpaired else None,  # fixes the KL pairs
            "train_on_reasoning": self.train_on_reasoning,
        }

    def record_tokenizer(self) -> RecordTokenizer:
        pairs = PreferenceTokenizer(
            self._require_tokenizer(),
            self.max_length,
            self.max_prompt_length,
            self.overlong,
            self.add_special_tokens,
            self.train_on_reasoning,
        )

        def tokenize(record: Mapping[str, Any], where: str) -> dict[str, Any]:
            try:
                example = record_to_preference(record, self.format, self.fields, where)
            except IdenticalPair:
                row = dict(empty_row(self.unpaired, "dropped_identical"))
                return {**row, "margin": 0.0} if self.margin_field else row
            if isinstance(example, PreferencePair):
                row = dict(pairs(replace(example, prompt=self.with_system_prompt(example.prompt)), where))
                return {**row, "margin": self._margin(record, where)} if self.margin_field else row
            return dict(pairs.unpaired(replace(example, prompt=self.with_system_prompt(example.prompt)), where))

        return tokenize

    def _margin(self, record: Mapping[str, Any], where: str) -> float:
        value = record.get(self.margin_field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DataError(f"{where}: field {self.margin_field!r} must be a number, got {value!r}")
        return float(value)

    def _tokenized_splits(self, report: bool) -> dict[str, Dataset]:
        splits = super()._tokenized_splits(report)
        if self.unpaired:
            splits = {split: with_kl_pairs(dataset, self.seed, self.max_length) for split, dataset in splits.items()}
        return splits

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._examples("train"), self.batch_size, shuffle=True, collate_fn=self.collator())

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The main validation set's loader, then one per ``val_extra`` set (`val_set_names`)."""
        collate = self.collator()
        return self._val_loaders(
            lambda split: self._loader(self._examples(split), self.eval_batch_size, False, collate)
        )

    def predict_dataloader(self) -> DataLoader:
        """The training data in file order (records dropped while tokenizing left out), e.g. to score it."""
        examples = self.datasets["train"].remove_columns(["status"])
        return self._loader(examples, self.eval_batch_size, shuffle=False, collate_fn=self.collator())

    def collator(self) -> SideBySideCollator:
        return SideBySideCollator(self._require_tokenizer().pad_token_id, self.sides, self.packing)

    def add_reference_logps(self, score: ReferenceScorer, key: str, splits: Iterable[str] | None = None) -> None:
        """Add columns computed by ``score`` on collated batches (e.g. the reference model's log-probs) to every split
        (or to ``splits``), once: ``datasets`` caches them beside the tokenized data under ``key`` (which must name
        everything the values depend on, the weights included), so later epochs and runs read them back instead of
        running the model again. The columns stay out of the loaders' batches: training precisions would round them.

        ``score`` takes a batch as the loaders give it and returns ``{column: (B,) tensor}``.
        """
        collate = self.collator()

        sequence_columns = [f"{side}{name}" for side in self.sides for name in ("input_ids", "labels")]

        def add_columns(rows: dict[str, list]) -> dict[str, list]:
            columns = {name: rows[name] for name in sequence_columns}
            examples = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
            return {column: values.tolist() for column, values in score(collate(examples)).items()}

        for split in self.datasets if splits is None else splits:
            dataset = self.datasets[split]
            fingerprint = hashlib.sha256(f"{dataset._fingerprint}:{key}".encode()).hexdigest()[:32]
            self.datasets[split] = dataset.map(
                add_columns,
                batched=True,
                batch_size=self.eval_batch_size,
                new_fingerprint=fingerprint,
                desc=f"Reference log-probs ({split})",
            )

    def _examples(self, split: str) -> Dataset:
        """A split's batch columns: the sequences, scalars such as ``desirable`` or ``margin``, and ``record`` (by
        which precomputed reference log-probs are looked up)."""
        dataset = self.datasets[split]
        unbatched = [c for c in dataset.column_names if c in ("status", "prompt_length") or c.startswith("reference_")]
        return dataset.remove_columns(unbatched)


def empty_row(unpaired: bool, status: str) -> TokenizedPair | TokenizedUnpaired:
    if unpaired:
        return TokenizedUnpaired(input_ids=[], labels=[], prompt_length=0, desirable=False, status=status)
    return TokenizedPair(
        chosen_input_ids=[], chosen_labels=[], rejected_input_ids=[], rejected_labels=[], status=status
    )


def with_kl_pairs(dataset: Dataset, seed: int, max_length: int) -> Dataset:
    """Add KTO's mismatched pairs: each example's prompt followed by another example's completion (a seeded
    derangement, so never its own), labelled on that completion, cut to ``max_length``."""
    if len(dataset) < 2:
        raise DataError("KTO needs at least two examples: the KL estimate pairs prompts with other completions")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    partner = [0] * len(order)
    for position, index in enumerate(order):
        partner[index] = order[(position + 1) % len(order)]
    input_ids, labels, prompt_lengths = dataset["input_ids"], dataset["labels"], dataset["prompt_length"]

    def add_kl_pair(row: dict[str, Any], index: int) -> dict[str, list[int]]:
        other = partner[index]
        prompt = row["input_ids"][: row["prompt_length"]]
        completion = input_ids[other][prompt_lengths[other] :]
        completion_labels = labels[other][prompt_lengths[other] :]
        room = max_length - len(prompt)
        return {
            "kl_input_ids": prompt + completion[:room],
            "kl_labels": [IGNORE_INDEX] * len(prompt) + completion_labels[:room],
        }

    fingerprint = hashlib.sha256(f"{dataset._fingerprint}:kl:{seed}:{max_length}".encode()).hexdigest()[:32]
    return dataset.map(add_kl_pair, with_indices=True, new_fingerprint=fingerprint, desc="KTO KL pairs")
