"""Supervised fine-tuning losses.

All return the cross-entropy *summed* over trained tokens and the number of those tokens, so the caller can
normalise by the trained tokens of a whole optimiser step, however it is split into micro-batches and devices.
Labels are unshifted token ids with ``-100`` where no loss is taken; position ``t`` predicts token ``t + 1``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
Projection = Callable[[torch.Tensor], torch.Tensor]


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy from logits.

    Args:
        logits: ``(batch, length, vocab)``.
        labels: ``(batch, length)``.

    Returns:
        ``(loss_sum, num_trainable_tokens)``: a float32 scalar and an int64 scalar.
    """
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shifted_labels = labels[:, 1:].reshape(-1)
    loss_sum = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, (shifted_labels != IGNORE_INDEX).sum()


def cross_entropy(
    hidden_states: torch.Tensor, projection: Projection, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain cross-entropy from hidden states: full logits for every position (the reference implementation).

    Args:
        hidden_states: ``(batch, length, hidden)`` final hidden states.
        projection: Hidden states -> logits ``(..., vocab)`` (the model's output embedding).
        labels: ``(batch, length)``.
    """
    return token_cross_entropy(projection(hidden_states), labels)


def chunked_cross_entropy(
    hidden_states: torch.Tensor, projection: Projection, labels: torch.Tensor, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy that never holds full-vocabulary logits for the batch.

    Only trained positions are projected, ``chunk_size`` of them at a time; each chunk's logits are recomputed in
    backward (activation checkpointing) instead of being kept. Peak extra memory is one chunk's
    ``(chunk_size, vocab)`` float32 logits rather than ``(batch * length, vocab)``. Same value and gradients as
    `cross_entropy` (up to float rounding).

    Args:
        hidden_states: ``(batch, length, hidden)`` final hidden states.
        projection: Hidden states -> logits ``(..., vocab)``; may hold trainable (LoRA, tied) weights.
        labels: ``(batch, length)``.
        chunk_size: Trained positions per chunk.
    """
    targets = labels[:, 1:].reshape(-1)
    trained = targets != IGNORE_INDEX
    hidden = hidden_states[:, :-1].reshape(-1, hidden_states.shape[-1])[trained]
    targets = targets[trained]
    loss_sum = hidden_states.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.shape[0], chunk_size):
        chunk = slice(start, start + chunk_size)
        loss_sum = loss_sum + checkpoint(_chunk_loss, projection, hidden[chunk], targets[chunk], use_reentrant=False)
    return loss_sum, trained.sum()


def _chunk_loss(projection: Projection, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(projection(hidden).float(), targets, reduction="sum")
