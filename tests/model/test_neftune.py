"""NEFTune noise: bounded by alpha / sqrt(L * d) with each row's real length L, none on padding."""

from __future__ import annotations

import torch

from lightning_ft.model.neftune import neftune_noise


def test_noise_bound_uses_real_lengths_and_spares_padding():
    torch.manual_seed(0)
    embeddings = torch.zeros(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    noisy = neftune_noise(embeddings, mask, alpha=8.0)
    bound_full, bound_short = 8.0 / (6 * 16) ** 0.5, 8.0 / (4 * 16) ** 0.5
    assert noisy[0].abs().max() <= bound_full and noisy[0].abs().max() > 0.9 * bound_full
    assert noisy[1, :4].abs().max() <= bound_short and noisy[1, :4].abs().max() > 0.9 * bound_full
    assert torch.equal(noisy[1, 4:], torch.zeros(2, 16))
