"""Padding-free packing: many tokenized sequences per row, each attending only to itself.

`pack_sequences` groups sequences into rows by best-fit-decreasing; `PackedDataset` serves one row (a list of
sequences) per item; `PackingCollator` concatenates them, restarts ``position_ids`` at every sequence and labels
each token with its ``sequence_ids`` so the model side can build a block-diagonal causal mask (SDPA, eager) or let
flash-attention's varlen kernels use the restarts.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
from datasets import Dataset as HFDataset
from torch.utils.data import Dataset

from lightning_ft.data.tokenize import IGNORE_INDEX


def pack_sequences(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing: indices of ``lengths`` grouped into rows of at most ``capacity`` tokens.

    Longest first; each goes to the fullest row that still has room, else opens a row. Deterministic.
    """
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ValueError(
            f"{len(too_long)} sequences are longer than the pack capacity {capacity} (e.g. #{too_long[0]})"
        )
    rows: list[list[int]] = []
    free_space: list[tuple[int, int]] = []  # sorted (room left, row index)
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        length = lengths[index]
        position = bisect.bisect_left(free_space, (length, -1))
        if position < len(free_space):
            room, row = free_space.pop(position)
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(index)
        if room - length > 0:
            bisect.insort(free_space, (room - length, row))
    return rows


class PackedDataset(Dataset):
    """Rows of packed sequences over a tokenized dataset with ``input_ids`` and ``labels`` columns."""

    def __init__(self, dataset: HFDataset, capacity: int) -> None:
        self.dataset = dataset
        self.capacity = capacity
        lengths = [len(ids) for ids in dataset["input_ids"]]
        self.rows = pack_sequences(lengths, capacity)
        self.num_tokens = sum(lengths)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[list[int]]]:
        return self.dataset[self.rows[index]]


class PackingCollator:
    """Collates packed rows to ``(rows, length)`` tensors.

    Returns ``input_ids``, ``labels`` (``-100`` on padding and on each sequence's first token, so no sequence learns
    to predict the next one's start), ``position_ids`` (restarting at 0 for every sequence), ``sequence_ids`` (0, 1, ...
    per row; trailing padding is one more sequence of its own, which keeps its attention rows non-empty) and
    ``attention_mask`` (1 on real tokens; for counting, not for the model).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: Sequence[dict[str, list[list[int]]]]) -> dict[str, torch.Tensor]:
        length = max(sum(len(ids) for ids in row["input_ids"]) for row in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        shape = (len(rows), length)
        batch = {
            "input_ids": torch.full(shape, self.pad_token_id, dtype=torch.long),
            "labels": torch.full(shape, IGNORE_INDEX, dtype=torch.long),
            "position_ids": torch.zeros(shape, dtype=torch.long),
            "sequence_ids": torch.zeros(shape, dtype=torch.long),
            "attention_mask": torch.zeros(shape, dtype=torch.long),
        }
        for r, row in enumerate(rows):
            start = 0
            for sequence, (ids, labels) in enumerate(zip(row["input_ids"], row["labels"], strict=True)):
                end = start + len(ids)
                batch["input_ids"][r, start:end] = torch.as_tensor(ids)
                batch["labels"][r, start + 1 : end] = torch.as_tensor(labels[1:])
                batch["position_ids"][r, start:end] = torch.arange(len(ids))
                batch["sequence_ids"][r, start:end] = sequence
                batch["attention_mask"][r, start:end] = 1
                start = end
            batch["position_ids"][r, start:] = torch.arange(length - start)
            batch["sequence_ids"][r, start:] = len(row["input_ids"])
        return batch
