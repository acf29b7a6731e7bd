"""Run a prompt once for the group of sequences that continue it: the prompt's key/value cache is computed for one
row and repeated for the group, so sampling G completions of a prompt, and scoring them with gradients, costs one
prompt forward instead of G."""

from __future__ import annotations

import inspect

import torch
from peft import PeftModel
from torch import nn
from transformers import DynamicCache

from lightning_ft.model.heads import final_hidden_states, unwrap


def can_share_prefix(model: nn.Module) -> bool:
    """Whether the prompt cache can be shared: not under prompt-learning adapters (their virtual tokens are not a
    cache of the prompt) and not where gradient checkpointing would drop the cache (a training forward with
    gradients: the checkpointed layers replay without it)."""
    if isinstance(model, PeftModel) and model.active_peft_config.is_prompt_learning:
        return False
    base = unwrap(model)
    return not (activation_checkpointing(base) and base.training and torch.is_grad_enabled())


def activation_checkpointing(model: nn.Module) -> bool:
    """Whether a transformers model recomputes its layers in backward (the property's name changed in v5)."""
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def cache_keyword(model: nn.Module) -> str:
    """The name a transformers model's forward (and ``generate``) takes a key/value cache by: ``cache`` since 5.2x,
    ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(unwrap(model).forward).parameters else "past_key_values"


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``(batch, length)`` position ids of left-padded rows: 0 at each row's first real token (1 on padding, as
    ``generate`` sets them; padding is masked out)."""
    return (attention_mask.long().cumsum(dim=1) - 1).masked_fill(attention_mask == 0, 1)


def prefix_cache(
    model: nn.Module, prefix_ids: torch.Tensor, prefix_mask: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, DynamicCache]:
    """Run each left-padded prefix once and repeat its cache for its group.

    Args:
        model: A causal LM, PEFT-wrapped or not.
        prefix_ids: ``(prompts, prefix length)`` left-padded prompts.
        prefix_mask: ``(prompts, prefix length)``.
        group_size: Rows that continue each prompt (consecutive rows).

    Returns:
        ``(hidden, cache)``: the ``(prompts, prefix length, hidden)`` final hidden states of the prefixes, and their
        key/value cache with every prompt's entries repeated ``group_size`` times (row ``i`` continues prompt
        ``i // group_size``). Both carry gradients when computed with them.
    """
    cache = DynamicCache(config=unwrap(model).config)
    hidden = final_hidden_states(
        model,
        input_ids=prefix_ids,
        attention_mask=prefix_mask,
        position_ids=left_padded_positions(prefix_mask),
        **{cache_keyword(model): cache},
        use_cache=True,
    )
    cache.batch_repeat_interleave(group_size)
    return hidden, cache


def shared_prefix_hidden_states(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_length: int, group_size: int
) -> torch.Tensor:
    """Final hidden states from the last prefix position on, for rows that share their first ``prefix_length``
    tokens in consecutive groups of ``group_size``, with each prefix run once.

    Equal (to float rounding) to ``final_hidden_states`` of the full rows, sliced at ``prefix_length - 1:``.

    Args:
        model: A causal LM, PEFT-wrapped or not (see `can_share_prefix`).
        input_ids: ``(rows, length)`` left-padded prompt then continuation; rows ``g * group_size ..`` share a prompt.
        attention_mask: ``(rows, length)``.
        prefix_length: Columns of the (padded) prompt.
        group_size: Rows per prompt.

    Returns:
        ``(rows, length - prefix_length + 1, hidden)``: position 0 is the last prompt token (it predicts the first
        continuation token), position ``t`` the continuation's token ``t - 1``.
    """
    prefix_ids = input_ids[::group_size, :prefix_length]
    prefix_mask = attention_mask[::group_size, :prefix_length]
    prefix_hidden, cache = prefix_cache(model, prefix_ids, prefix_mask, group_size)
    continuation = final_hidden_states(
        model,
        input_ids=input_ids[:, prefix_length:],
        attention_mask=attention_mask,
        position_ids=left_padded_positions(attention_mask)[:, prefix_length:],
        **{cache_keyword(model): cache},
        use_cache=True,
    )
    last_prompt = prefix_hidden[:, -1:].repeat_interleave(group_size, dim=0)
    return torch.cat([last_prompt, continuation], dim=1)
