"""`token_cross_entropy` against hand-computed values."""

from __future__ import annotations

import math

import torch

from lightning_ft.losses.sft import token_cross_entropy


def test_sum_and_count_over_trained_tokens_only():
    """Vocab 2. Position 0 has logits [0, ln 3] so p(1) = 3/4 and predicts label 1: -ln(3/4) = ln(4/3).
    Position 1 has logits [0, 0] and predicts label 0: ln 2. Position 2 predicts nothing (no token after it);
    label 0 (first token) is never predicted. Sum = ln(4/3) + ln 2 = ln(8/3); count = 2."""
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    loss_sum, count = token_cross_entropy(logits, labels)
    assert math.isclose(loss_sum.item(), math.log(8 / 3), rel_tol=1e-6)
    assert count.item() == 2


def test_ignored_labels_contribute_nothing():
    """Same logits; label of position 2 ignored: only ln(4/3) from position 0 remains."""
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, 0.0], [5.0, -5.0]]])
    loss_sum, count = token_cross_entropy(logits, torch.tensor([[-100, 1, -100]]))
    assert math.isclose(loss_sum.item(), math.log(4 / 3), rel_tol=1e-6)
    assert count.item() == 1


def test_bfloat16_logits_are_reduced_in_float32():
    logits = torch.randn(2, 5, 7).to(torch.bfloat16)
    labels = torch.randint(0, 7, (2, 5))
    loss_sum, _ = token_cross_entropy(logits, labels)
    assert loss_sum.dtype == torch.float32
    reference = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, 7), labels[:, 1:].reshape(-1), reduction="sum"
    )
    assert torch.allclose(loss_sum, reference)
