"""Model inputs for padded and packed batches, for each attention implementation."""

from __future__ import annotations

from typing import Any

import torch

FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3", "kernels-community/flash-attn")


def block_causal_mask(sequence_ids: torch.Tensor) -> torch.Tensor:
    """``(batch, 1, length, length)`` boolean mask: token ``i`` sees token ``j`` when both belong to the same
    sequence and ``j <= i``. Built from ``sequence_ids`` of shape ``(batch, length)``."""
    length = sequence_ids.shape[1]
    same_sequence = sequence_ids[:, :, None] == sequence_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=sequence_ids.device).tril()
    return (same_sequence & causal)[:, None]


def model_inputs(batch: dict[str, torch.Tensor], attn_implementation: str | None, dtype: torch.dtype) -> dict[str, Any]:
    """``attention_mask`` / ``position_ids`` for the model.

    Padded batches pass the 2D padding mask (and their ``position_ids`` when they carry them: left padding). Packed
    batches (with ``sequence_ids``) pass restarting ``position_ids``
    plus, for SDPA, a 4D block-diagonal boolean mask (position restarts alone do not isolate sequences under SDPA),
    for eager the same as an additive float mask; flash-attention gets no mask and finds the sequences from the
    position restarts (varlen kernels).
    """
    if "sequence_ids" not in batch:
        padded = {"attention_mask": batch["attention_mask"]}
        return {**padded, "position_ids": batch["position_ids"]} if "position_ids" in batch else padded
    inputs: dict[str, Any] = {"position_ids": batch["position_ids"]}
    if attn_implementation in FLASH_IMPLEMENTATIONS:
        return inputs
    inputs["attention_mask"] = as_attention_mask(block_causal_mask(batch["sequence_ids"]), attn_implementation, dtype)
    return inputs


def as_attention_mask(mask: torch.Tensor, attn_implementation: str | None, dtype: torch.dtype) -> torch.Tensor:
    """A ``(batch, 1, query, key)`` boolean mask (True: attend) as the attention implementation takes it: SDPA the
    booleans, eager an additive float mask of ``dtype``."""
    if attn_implementation == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask


def tokens_per_sequence(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(batch, length)``: for every real token, the length of the sequence it belongs to; 0 on padding."""
    mask = batch["attention_mask"]
    if "sequence_ids" not in batch:
        return mask * mask.sum(dim=1, keepdim=True)
    ids = batch["sequence_ids"]
    counts = torch.zeros(ids.shape[0], int(ids.max()) + 1, dtype=mask.dtype, device=ids.device)
    counts.scatter_add_(1, ids, mask)
    return counts.gather(1, ids) * mask
