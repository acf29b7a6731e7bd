"""The one forward path: left-padded rows (with their positions) give each row's hidden states as if alone; virtual
tokens of prompt tuning are cut off, and packing is refused for it."""

from __future__ import annotations

import pytest
import torch
from peft import PromptTuningConfig, get_peft_model

from lightning_ft.model.forward import sequence_hidden_states
from lightning_ft.model.spec import ModelSpec


def test_left_padded_rows_equal_each_row_alone(tiny_model_dir, tiny_tokenizer):
    model = ModelSpec(path=str(tiny_model_dir)).load_model().eval()
    rows = [tiny_tokenizer(text)["input_ids"] for text in ("Say hello.", "What is the capital of France?")]
    length = max(map(len, rows))
    input_ids = torch.tensor([[tiny_tokenizer.pad_token_id] * (length - len(r)) + r for r in rows])
    attention_mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
    with torch.no_grad():
        together = sequence_hidden_states(model, batch)
        for index, row in enumerate(rows):
            alone = sequence_hidden_states(
                model, {"input_ids": torch.tensor([row]), "attention_mask": torch.ones(1, len(row), dtype=torch.long)}
            )
            torch.testing.assert_close(together[index, length - len(row) :], alone[0], atol=1e-5, rtol=1e-5)


def test_prompt_tuning_is_aligned_with_the_tokens_and_refuses_packing(tiny_model_dir):
    model = get_peft_model(
        ModelSpec(path=str(tiny_model_dir)).load_model(),
        PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    )
    input_ids = torch.tensor([[5, 6, 7, 8]])
    hidden = sequence_hidden_states(model, {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)})
    assert hidden.shape[:2] == (1, 4)
    packed = {
        "input_ids": input_ids,
        "sequence_ids": torch.tensor([[0, 0, 1, 1]]),
        "position_ids": torch.tensor([[0, 1, 0, 1]]),
    }
    with pytest.raises(ValueError, match="set `data.packing: false`"):
        sequence_hidden_states(model, packed)
