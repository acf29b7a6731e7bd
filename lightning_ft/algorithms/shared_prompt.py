"""Chosen and rejected responses of a pair share their prompt: re-lay a side-by-side batch as one left-padded prompt
per pair followed by its two right-padded responses, so the prompt runs once for both (`shared_prefix_hidden_states`)
instead of once per side."""

from __future__ import annotations

import torch
from torch import nn

from lightning_ft.losses.logps import sequence_logps
from lightning_ft.losses.sft import IGNORE_INDEX, Projection
from lightning_ft.model.shared_prefix import shared_prefix_hidden_states

Batch = dict[str, torch.Tensor]


def shared_prompt_layout(batch: Batch) -> tuple[Batch, int]:
    """The pairs of a right-padded side-by-side batch as prompt + two responses, each pair's rows interleaved.

    Each pair's prompt is the longest common prefix of its chosen and rejected tokens that precedes both sides'
    first labelled token (at least one token, which predicts the first response token).

    Args:
        batch: ``input_ids``, ``attention_mask`` and ``labels``, ``(2B, length)`` right-padded, chosen rows first.

    Returns:
        ``(layout, prompt_columns)``: ``layout`` holds ``input_ids`` and ``attention_mask`` ``(2B, P + C)``
        (rows ``2i`` and ``2i + 1`` are pair ``i``'s chosen and rejected sides; the prompts left-padded to ``P =
        prompt_columns`` columns, the responses right-padded to ``C``) and ``labels`` ``(2B, C + 1)``, aligned with
        the hidden states `shared_prefix_hidden_states` returns (column 0 is the last prompt token).
    """
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"].long(), batch["labels"]
    pairs, length = input_ids.shape[0] // 2, input_ids.shape[1]
    device = input_ids.device
    positions = torch.arange(length, device=device)
    first_label = torch.where(labels != IGNORE_INDEX, positions, length).min(dim=1).values
    real = attention_mask.bool()
    same = (input_ids[:pairs] == input_ids[pairs:]) & real[:pairs] & real[pairs:]
    common = same.long().cumprod(dim=1).sum(dim=1)
    prompt = torch.minimum(common, torch.minimum(first_label[:pairs], first_label[pairs:])).clamp(min=1)
    prompt_columns = int(prompt.max())

    columns = torch.arange(prompt_columns, device=device)
    source = columns - (prompt_columns - prompt[:, None])  # left padding: the prompt ends at the last column
    prompt_mask = (source >= 0).long()
    prompt_ids = input_ids[:pairs].gather(1, source.clamp(min=0)) * prompt_mask

    order = torch.stack([torch.arange(pairs, device=device), torch.arange(pairs, device=device) + pairs], 1).flatten()
    start = prompt.repeat_interleave(2)
    response_lengths = attention_mask[order].sum(dim=1) - start
    response_columns = max(int(response_lengths.max()), 1)
    offsets = torch.arange(response_columns, device=device)
    source = (start[:, None] + offsets).clamp(max=length - 1)
    response_mask = (offsets < response_lengths[:, None]).long()
    response_ids = input_ids[order].gather(1, source) * response_mask
    response_labels = labels[order].gather(1, source).masked_fill(response_mask == 0, IGNORE_INDEX)

    layout = {
        "input_ids": torch.cat([prompt_ids.repeat_interleave(2, dim=0), response_ids], dim=1),
        "attention_mask": torch.cat([prompt_mask.repeat_interleave(2, dim=0), response_mask], dim=1),
        "labels": torch.cat([response_labels.new_full((2 * pairs, 1), IGNORE_INDEX), response_labels], dim=1),
    }
    return layout, prompt_columns


def shared_prompt_sequence_logps(
    model: nn.Module, projection: Projection, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logps` of a right-padded side-by-side batch with each pair's prompt run once.

    Returns:
        ``(logps, num_tokens)``: ``(2B,)`` summed log-probs of each row's labelled tokens and their counts, chosen
        rows first, as for the batch run row by row.
    """
    layout, prompt_columns = shared_prompt_layout(batch)
    hidden = shared_prefix_hidden_states(model, layout["input_ids"], layout["attention_mask"], prompt_columns, 2)
    logps, num_tokens = sequence_logps(hidden, projection, layout["labels"])
    return torch.cat([logps[0::2], logps[1::2]]), torch.cat([num_tokens[0::2], num_tokens[1::2]])
