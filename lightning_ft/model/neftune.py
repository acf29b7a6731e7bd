"""NEFTune: uniform noise on input embeddings during training (Jain et al., 2023, arXiv:2310.05914)."""

from __future__ import annotations

import torch


def neftune_noise(embeddings: torch.Tensor, attention_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """Add ``Uniform(-1, 1) * alpha / sqrt(L * d)`` to every real token's embedding.

    ``L`` is each sequence's own number of real tokens (not the padded length, so padding does not shrink the
    noise), ``d`` the embedding width. Padding positions get no noise.

    Args:
        embeddings: ``(batch, length, dim)``.
        attention_mask: ``(batch, length)``, 1 for real tokens.
        alpha: Noise scale (the paper uses 5 to 15).
    """
    lengths = attention_mask.sum(dim=1, keepdim=True).clamp(min=1).to(embeddings.dtype)
    scale = alpha / torch.sqrt(lengths * embeddings.shape[-1])
    noise = torch.empty_like(embeddings).uniform_(-1, 1) * scale.unsqueeze(-1)
    return embeddings + noise * attention_mask.unsqueeze(-1).to(embeddings.dtype)
