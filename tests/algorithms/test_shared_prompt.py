"""DPO runs each pair's prompt once for both responses, in one row under a custom mask or through a shared cache: both
re-laid batches are exact token by token, and log-probs and gradients equal those of the rows run one by one, under
gradient checkpointing too."""

from __future__ import annotations

import peft
import pytest
import torch

from lightning_ft.algorithms import DPO, shared_prompt
from lightning_ft.algorithms.shared_prompt import pair_rows_layout, pair_rows_mask, shared_prompt_layout
from lightning_ft.data import PreferenceData
from lightning_ft.losses.logps import sequence_logps
from lightning_ft.model.forward import sequence_hidden_states
from lightning_ft.model.heads import output_projection
from lightning_ft.model.spec import ModelSpec
from tests.helpers import PAIRS, pair_file

X = -100


# pair 0: prompt [5, 6, 7], chosen [8, 9], rejected [4]; pair 1: prompt [5], chosen [3, 3, 3], rejected [2, 1]
TWO_PAIRS = {
    "input_ids": torch.tensor([[5, 6, 7, 8, 9], [5, 3, 3, 3, 0], [5, 6, 7, 4, 0], [5, 2, 1, 0, 0]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]),
    "labels": torch.tensor([[X, X, X, 8, 9], [X, 3, 3, 3, X], [X, X, X, 4, X], [X, 2, 1, X, X]]),
}


def test_pair_rows_hold_the_prompt_then_both_responses():
    inputs, segments, columns, labels = pair_rows_layout(TWO_PAIRS)
    assert inputs["input_ids"].tolist() == [[5, 6, 7, 8, 9, 4], [5, 3, 3, 3, 2, 1]]
    # the rejected response is positioned right after the prompt, as in its own row
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 2, 3, 1, 2]]
    assert segments.tolist() == [[0, 0, 0, 1, 1, 2], [0, 1, 1, 1, 2, 2]]
    # per side, chosen first: the last prompt token's column, then the response's columns (0 past the end)
    assert columns.tolist() == [[2, 3, 4, 0], [0, 1, 2, 3], [2, 5, 0, 0], [0, 4, 5, 0]]
    assert labels.tolist() == [[X, 8, 9, X], [X, 3, 3, 3], [X, 4, X, X], [X, 2, 1, X]]


def test_the_rejected_response_sees_the_prompt_and_itself_only():
    _, segments, _, _ = pair_rows_layout(TWO_PAIRS)
    assert pair_rows_mask(segments)[1, 0].long().tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 0, 0, 0, 1, 0],  # rejected token 0: the prompt and itself
        [1, 0, 0, 0, 1, 1],
    ]
    padded = {**TWO_PAIRS, "attention_mask": TWO_PAIRS["attention_mask"].clone()}
    padded["attention_mask"][2, 3] = 0  # pair 0's rejected response is now empty: its row ends with padding
    _, segments, _, _ = pair_rows_layout(padded)
    mask = pair_rows_mask(segments)[0, 0]
    assert segments[0].tolist() == [0, 0, 0, 1, 1, -1]
    assert mask[:, 5].tolist() == [False] * 6  # no token sees padding
    assert mask[5].long().tolist() == [1, 1, 1, 1, 1, 0]  # padding sees the real tokens: no empty softmax


def test_layout_puts_each_prompt_once_before_its_two_responses():
    layout, prompt_columns = shared_prompt_layout(TWO_PAIRS)
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


@pytest.mark.parametrize(
    ("attn_implementation", "layout", "checkpointing"),
    [
        ("sdpa", "pair rows", False),
        ("eager", "pair rows", False),
        ("sdpa", "pair rows", True),
        ("sdpa", "unpadded pair rows", False),
        ("eager", "unpadded pair rows", False),
        ("sdpa", "unpadded pair rows", True),
        ("sdpa", "shared cache", False),
        ("eager", "shared cache", False),
    ],
)
def test_shared_prompt_log_probs_and_gradients_equal_the_row_by_row_ones(
    tiny_model_dir, tmp_path, monkeypatch, attn_implementation, layout, checkpointing
):
    if layout == "shared cache":  # the layout of attention that takes no custom mask (flash-attention)
        monkeypatch.setattr(shared_prompt, "_takes_pair_rows", lambda model: False)
    spec = ModelSpec(path=str(tiny_model_dir), attn_implementation=attn_implementation)
    lora = peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)  # a non-zero adapter
    module = DPO(spec, peft=lora, gradient_checkpointing=checkpointing, unpadded_pairs=layout == "unpadded pair rows")
    module.configure_model()
    module.model.train(checkpointing)  # checkpointing replays layers in training mode only (no dropout here)
    assert shared_prompt.can_share_prompt(module.model)
    assert shared_prompt._takes_pair_rows(module.model) == layout.endswith("pair rows")
    forwards = []
    module.model.register_forward_hook(lambda model, args, kwargs, output: forwards.append(kwargs), with_kwargs=True)
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
    if layout == "unpadded pair rows":  # one forward per pair, over exactly its prompt and two responses
        prompts = shared_prompt.prompt_lengths(batch)
        pair_lengths = batch["attention_mask"].sum(dim=1).view(2, -1).sum(dim=0) - prompts
        assert [call["input_ids"].shape for call in forwards] == [(1, n) for n in pair_lengths.tolist()]
    expected = logps_and_gradients(row_by_row)

    torch.testing.assert_close(shared[0], expected[0], atol=1e-4, rtol=1e-6)  # sums of ~10 log-probs near -6
    assert shared[1].tolist() == expected[1].tolist()
    for gradient, expected_gradient in zip(shared[2], expected[2], strict=True):
        torch.testing.assert_close(gradient, expected_gradient, atol=1e-5, rtol=1e-4)
