"""Collators: turn tokenized examples into model batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch

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
        length = max(len(example["input_ids"]) for example in examples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = torch.as_tensor(example["input_ids"])
            labels[row, :n] = torch.as_tensor(example["labels"])
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
