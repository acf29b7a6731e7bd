"""DPO runs each pair's prompt once for both responses: the re-laid batch is exact token by token, and log-probs and
gradients equal those of the rows run one by one."""

from __future__ import annotations

import peft
import pytest
import torch

from lightning_ft.algorithms import DPO
from lightning_ft.algorithms.shared_prompt import shared_prompt_layout
from lightning_ft.data import PreferenceData
from lightning_ft.losses.logps import sequence_logps
from lightning_ft.model.forward import sequence_hidden_states
from lightning_ft.model.heads import output_projection
from lightning_ft.model.spec import ModelSpec
from tests.helpers import PAIRS, pair_file

X = -100


def test_layout_puts_each_prompt_once_before_its_two_responses():
    # pair 0: prompt [5, 6, 7], chosen [8, 9], rejected [4]; pair 1: prompt [5], chosen [3, 3, 3], rejected [2, 1]
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [5, 3, 3, 3, 0], [5, 6, 7, 4, 0], [5, 2, 1, 0, 0]])
    attention_mask = (torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])).long()
    labels = torch.tensor([[X, X, X, 8, 9], [X, 3, 3, 3, X], [X, X, X, 4, X], [X, 2, 1, X, X]])
    layout, prompt_columns = shared_prompt_layout(
        {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    )
    assert prompt_columns == 3
    assert layout["input_ids"].tolist() == [
        [5, 6, 7, 8, 9, 0],  # pair 0 chosen
        [5, 6, 7, 4, 0, 0],  # pair 0 rejected
        [0, 0, 5, 3, 3, 3],  # pair 1 chosen (prompt left-padded)
        [0, 0, 5, 2, 1, 0],  # pair 1 rejected
    ]
    assert layout["attention_mask"].tolist() == [
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 0],
    ]
    # column 0 is the last prompt token (predicts the first response token)
    assert layout["labels"].tolist() == [[X, 8, 9, X], [X, 4, X, X], [X, 3, 3, 3], [X, 2, 1, X]]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_shared_prompt_log_probs_and_gradients_equal_the_row_by_row_ones(tiny_model_dir, tmp_path, attn_implementation):
    spec = ModelSpec(path=str(tiny_model_dir), attn_implementation=attn_implementation)
    lora = peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)  # a non-zero adapter
    module = DPO(spec, peft=lora)
    module.configure_model()
    module.model.eval()
    data = PreferenceData(pair_file(tmp_path), tokenizer=module.tokenizer, batch_size=len(PAIRS))
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.predict_dataloader()))
    parameters = [p for p in module.model.parameters() if p.requires_grad]

    def logps_and_gradients(function) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        module.model.zero_grad()
        logps, counts = function()
        (logps * torch.linspace(1, 2, len(logps))).sum().backward()
        return logps.detach(), counts, [p.grad.clone() for p in parameters]

    def row_by_row():
        hidden = sequence_hidden_states(module.model, batch)
        return sequence_logps(hidden, output_projection(module.model), batch["labels"])

    shared = logps_and_gradients(lambda: module._sequence_logps(module.model, batch))
    expected = logps_and_gradients(row_by_row)

    torch.testing.assert_close(shared[0], expected[0], atol=1e-4, rtol=1e-6)  # sums of ~10 log-probs near -6
    assert shared[1].tolist() == expected[1].tolist()
    for gradient, expected_gradient in zip(shared[2], expected[2], strict=True):
        torch.testing.assert_close(gradient, expected_gradient, atol=1e-5, rtol=1e-4)
