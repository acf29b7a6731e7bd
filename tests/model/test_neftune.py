"""NEFTune noise: bounded by alpha / sqrt(L * d) with each token's own sequence length L, none on padding."""

from __future__ import annotations

import torch

from lightning_ft.model.neftune import neftune_noise


def test_noise_bound_uses_each_sequence_length_and_spares_padding():
    torch.manual_seed(0)
    embeddings = torch.zeros(2, 6, 16)
    # Row 0: one sequence of 6. Row 1: packed sequences of 3 and 1 tokens, then 2 padding positions.
    lengths = torch.tensor([[6, 6, 6, 6, 6, 6], [3, 3, 3, 1, 0, 0]])
    noisy = neftune_noise(embeddings, lengths, alpha=8.0)
    for row, start, end, length in [(0, 0, 6, 6), (1, 0, 3, 3), (1, 3, 4, 1)]:
        bound = 8.0 / (length * 16) ** 0.5
        block = noisy[row, start:end].abs()
        assert block.max() <= bound and block.max() > 0.8 * bound
    assert torch.equal(noisy[1, 4:], torch.zeros(2, 16))
