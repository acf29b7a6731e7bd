"""Supervised fine-tuning loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy summed over the trained tokens, and how many there were.

    The sum (not the mean) is returned so the caller can normalise by the trained tokens of a whole optimiser step,
    however they are split into micro-batches and devices.

    Args:
        logits: ``(batch, length, vocab)``; position ``t`` predicts token ``t + 1``.
        labels: ``(batch, length)`` token ids, unshifted, ``-100`` where no loss is taken.

    Returns:
        ``(loss_sum, num_trainable_tokens)``: a float32 scalar and an int64 scalar.
    """
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shifted_labels = labels[:, 1:].reshape(-1)
    loss_sum = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, (shifted_labels != IGNORE_INDEX).sum()
