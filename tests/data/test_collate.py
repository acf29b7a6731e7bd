"""`pad_sequences`, the one padding of token rows (collators, prompt batches, reward-model scoring), with exact
tensors: right and left, a pad value, rounding up to a multiple, empty rows and no rows."""

from __future__ import annotations

import torch

from lightning_ft.data.collate import PadCollator, pad_sequences
from lightning_ft.data.prompts import LeftPadCollator

ROWS = [[5, 6, 7], [8], []]


def test_right_padding_puts_the_tokens_first():
    padded, attention_mask = pad_sequences(ROWS, pad_value=0)
    assert torch.equal(padded, torch.tensor([[5, 6, 7], [8, 0, 0], [0, 0, 0]]))
    assert torch.equal(attention_mask, torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]]))
    assert padded.dtype == attention_mask.dtype == torch.long


def test_left_padding_puts_the_tokens_last():
    padded, attention_mask = pad_sequences(ROWS, pad_value=-100, side="left")
    assert torch.equal(padded, torch.tensor([[5, 6, 7], [-100, -100, 8], [-100, -100, -100]]))
    assert torch.equal(attention_mask, torch.tensor([[1, 1, 1], [0, 0, 1], [0, 0, 0]]))


def test_length_rounds_up_to_a_multiple():
    """Longest row 3, multiple 4: length 4; a row of exactly the multiple is not padded further."""
    padded, attention_mask = pad_sequences([[1, 2, 3], [4]], pad_value=9, pad_to_multiple_of=4)
    assert torch.equal(padded, torch.tensor([[1, 2, 3, 9], [4, 9, 9, 9]]))
    assert torch.equal(attention_mask, torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]))
    padded, _ = pad_sequences([[1, 2, 3, 4]], pad_value=9, pad_to_multiple_of=4)
    assert torch.equal(padded, torch.tensor([[1, 2, 3, 4]]))


def test_empty_rows_and_no_rows():
    padded, attention_mask = pad_sequences([[], []], pad_value=3, side="left")
    assert padded.shape == attention_mask.shape == (2, 0)
    padded, attention_mask = pad_sequences([], pad_value=3)
    assert padded.shape == attention_mask.shape == (0, 0)


def test_tensor_rows_pad_like_lists():
    padded, _ = pad_sequences([torch.tensor([5, 6]), torch.tensor([7])], pad_value=0, side="left")
    assert torch.equal(padded, torch.tensor([[5, 6], [0, 7]]))


def test_collators_pad_through_it():
    examples = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = PadCollator(pad_token_id=0, pad_to_multiple_of=2)(examples)
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7, 0], [8, 0, 0, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[-100, 6, 7, -100], [8, -100, -100, -100]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]))
    prompts = [{"input_ids": [5, 6, 7], "answer": "a"}, {"input_ids": [8], "answer": "b"}]
    batch = LeftPadCollator(pad_token_id=0)(prompts)
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7], [0, 0, 8]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [0, 0, 1]]))
    assert batch["answer"] == ["a", "b"]
