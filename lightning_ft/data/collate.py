"""Collators: turn tokenized examples into model batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from lightning_ft.data.packing import PackingCollator
from lightning_ft.data.tokenize import IGNORE_INDEX


class PadCollator:
    """Right-pads ``input_ids`` (with ``pad_token_id``) and ``labels`` (with ``-100``) to the longest example.

    Returns ``input_ids``, ``attention_mask`` and ``labels``, each ``(batch, length)``. Labels are not shifted: the
    loss shifts them. Padding uses ``-100`` labels rather than ``input_ids != pad`` so an EOS equal to the pad token is
    still trained.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        token_rows = [example["input_ids"] for example in examples]
        label_rows = [example["labels"] for example in examples]
        input_ids, attention_mask = pad_sequences(token_rows, self.pad_token_id, "right", self.pad_to_multiple_of)
        labels, _ = pad_sequences(label_rows, IGNORE_INDEX, "right", self.pad_to_multiple_of)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def pad_sequences(
    sequences: Sequence[Sequence[int]],
    pad_value: int,
    side: Literal["right", "left"] = "right",
    pad_to_multiple_of: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token sequences with ``pad_value`` to the longest (rounded up to ``pad_to_multiple_of``), on the ``right``
    (training, scoring) or the ``left`` (generation, so every row continues at the same position).

    Returns:
        ``(padded, attention_mask)``, both ``(len(sequences), length)`` long tensors; the mask is 1 on the sequences'
        own tokens, 0 on padding. No sequences give ``(0, 0)`` tensors.
    """
    length = max((len(sequence) for sequence in sequences), default=0)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    padded = torch.full((len(sequences), length), pad_value, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        n = len(sequence)
        columns = slice(0, n) if side == "right" else slice(length - n, length)
        padded[row, columns] = torch.as_tensor(sequence, dtype=torch.long)
        attention_mask[row, columns] = 1
    return padded, attention_mask


class SideBySideCollator:
    """Pads several sequences of each example into one batch, one block of rows per side: with sides
    ``("chosen_", "rejected_")`` rows ``0..B-1`` are the chosen responses and ``B..2B-1`` the rejected ones, so a
    single forward scores both. With ``packing``, the ``2B`` sequences are instead packed, in that order, into a single
    row without padding (`PackingCollator`: ``position_ids`` and ``sequence_ids`` per sequence). Every other column
    (scalars: desirability, precomputed reference log-probs) becomes a ``(B,)`` tensor.

    Args:
        pad_token_id: Token id used for padding.
        sides: Column prefixes of the sequences; each side has ``<prefix>input_ids`` and ``<prefix>labels``.
        packing: Pack instead of padding.
    """

    def __init__(
        self, pad_token_id: int, sides: Sequence[str] = ("chosen_", "rejected_"), packing: bool = False
    ) -> None:
        self.pad = PadCollator(pad_token_id)
        self.pack = PackingCollator(pad_token_id)
        self.sides = tuple(sides)
        self.packing = packing

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        sequences = [
            {"input_ids": example[f"{side}input_ids"], "labels": example[f"{side}labels"]}
            for side in self.sides
            for example in examples
        ]
        if self.packing:  # one row, no padding; sequence_ids number the sequences in the same order
            row = {"input_ids": [s["input_ids"] for s in sequences], "labels": [s["labels"] for s in sequences]}
            batch = self.pack([row])
        else:
            batch = self.pad(sequences)
        sequence_columns = {f"{side}{name}" for side in self.sides for name in ("input_ids", "labels")}
        for column in examples[0].keys() - sequence_columns:
            batch[column] = torch.as_tensor([example[column] for example in examples])
        return batch
