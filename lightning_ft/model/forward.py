"""`sequence_hidden_states`: the one forward pass every algorithm trains through, for padded, left-padded and packed
batches, any attention implementation and any adapter (prompt-learning methods included)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from peft import PeftModel
from torch import nn

from lightning_ft.errors import UsageError
from lightning_ft.model.attention import model_inputs
from lightning_ft.model.heads import final_hidden_states, unwrap


def sequence_hidden_states(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    inputs_embeds: torch.Tensor | None = None,
    **extra_inputs: Any,
) -> torch.Tensor:
    """``(batch, length, hidden)`` final hidden states of ``model`` at the batch's token positions.

    Args:
        model: A causal LM, PEFT-wrapped or not.
        batch: ``input_ids`` ``(batch, length)`` and either ``attention_mask`` (padded; with ``position_ids`` when
            left-padded) or the packing columns ``sequence_ids`` and ``position_ids``; attention masks follow from the
            model's attention implementation (`model_inputs`).
        inputs_embeds: ``(batch, length, hidden)`` embeddings to run instead of ``input_ids`` (e.g. NEFTune's noisy
            ones).
        **extra_inputs: Further model inputs (``pixel_values``, ``image_sizes``, ...).

    Returns:
        Hidden states aligned with ``input_ids``: the virtual tokens that prompt-learning methods prepend are cut off.
    """
    input_ids = batch["input_ids"]
    base = unwrap(model)
    inputs = model_inputs(batch, base.config._attn_implementation, base.dtype)
    if "sequence_ids" in batch:
        check_packing_supported(model)
    tokens = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    hidden = final_hidden_states(model, **tokens, **inputs, **extra_inputs)
    return hidden[:, -input_ids.shape[1] :]


def check_packing_supported(model: nn.Module) -> None:
    """Prompt and prefix tuning prepend virtual tokens that every packed sequence would share: refuse packing."""
    if isinstance(model, PeftModel) and model.active_peft_config.is_prompt_learning:
        raise UsageError(
            f"{type(model.active_peft_config).__name__} adds virtual tokens that every packed sequence would share: "
            "set `data.packing: false` for prompt and prefix tuning."
        )
