"""NEFTune: uniform noise on input embeddings during training (Jain et al., 2023, arXiv:2310.05914)."""

from __future__ import annotations

import torch


def neftune_noise(embeddings: torch.Tensor, sequence_lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """Add ``Uniform(-1, 1) * alpha / sqrt(L * d)`` to every real token's embedding.

    ``L`` is the length of the token's own sequence (not the padded or packed row), ``d`` the embedding width.
    Padding positions (``L = 0``) get no noise.

    Args:
        embeddings: ``(batch, length, dim)``.
        sequence_lengths: ``(batch, length)``, each token's sequence length, 0 on padding.
        alpha: Noise scale (the paper uses 5 to 15).
    """
    lengths = sequence_lengths.to(embeddings.dtype)
    scale = torch.where(lengths > 0, alpha / torch.sqrt(lengths.clamp(min=1) * embeddings.shape[-1]), 0.0)
    return embeddings + torch.empty_like(embeddings).uniform_(-1, 1) * scale.unsqueeze(-1)
