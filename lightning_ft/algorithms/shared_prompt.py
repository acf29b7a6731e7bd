"""Chosen and rejected responses of a pair share their prompt: run the prompt once for both instead of once per side.

Two layouts do it. Where the attention takes a custom mask (SDPA, eager), each pair becomes one row, its prompt
followed by both responses, the rejected one masked from the chosen one and positioned right after the prompt
(`pair_rows_layout`): one ordinary forward, so gradient checkpointing and sharded wrappers replay it as they replay any
other. Elsewhere (flash-attention), the prompt's key/value cache is computed once and repeated for both responses
(`shared_prompt_layout`, `shared_prefix_hidden_states`), which checkpointed layers cannot replay."""

from __future__ import annotations

import torch
from peft import PeftModel
from torch import nn

from lightning_ft.losses.logps import sequence_logps
from lightning_ft.losses.sft import IGNORE_INDEX, Projection
from lightning_ft.model.attention import as_attention_mask
from lightning_ft.model.heads import final_hidden_states, unwrap
from lightning_ft.model.shared_prefix import can_share_prefix, shared_prefix_hidden_states

MASKABLE_ATTENTION = ("sdpa", "eager")

Batch = dict[str, torch.Tensor]


def prompt_lengths(batch: Batch) -> torch.Tensor:
    """``(B,)`` prompt length of each pair of a right-padded side-by-side batch (``(2B, length)``, chosen rows
    first): the longest common prefix of its chosen and rejected tokens that precedes both sides' first labelled
    token, at least one token (which predicts the first response token)."""
    input_ids, real, labels = batch["input_ids"], batch["attention_mask"].bool(), batch["labels"]
    pairs, length = input_ids.shape[0] // 2, input_ids.shape[1]
    positions = torch.arange(length, device=input_ids.device)
    first_label = torch.where(labels != IGNORE_INDEX, positions, length).min(dim=1).values
    same = (input_ids[:pairs] == input_ids[pairs:]) & real[:pairs] & real[pairs:]
    common = same.long().cumprod(dim=1).sum(dim=1)
    return torch.minimum(common, torch.minimum(first_label[:pairs], first_label[pairs:])).clamp(min=1)


def pair_rows_layout(batch: Batch) -> tuple[Batch, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs of a right-padded side-by-side batch as one row each: prompt, chosen response, rejected response.

    Args:
        batch: ``input_ids``, ``attention_mask`` and ``labels``, ``(2B, length)`` right-padded, chosen rows first.

    Returns:
        ``(inputs, segments, columns, labels)``: ``inputs`` holds ``input_ids`` and ``position_ids`` ``(B, L)``
        (right-padded; the rejected response's positions continue from the prompt's end, as in its own row);
        ``segments`` ``(B, L)`` says what each column holds (0 prompt, 1 chosen, 2 rejected, -1 padding);
        ``columns`` ``(2B, C + 1)`` indexes, for each side (chosen rows first), the row's column of its last prompt
        token followed by those of its response tokens; ``labels`` ``(2B, C + 1)`` are aligned with ``columns``
        (column 0 unscored, then the side's labels; ``-100`` past its end).
    """
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"].long(), batch["labels"]
    pairs, length = input_ids.shape[0] // 2, input_ids.shape[1]
    device = input_ids.device
    prompt = prompt_lengths(batch)
    responses = attention_mask.sum(dim=1) - prompt.repeat(2)  # (2B,): chosen lengths, then rejected ones
    chosen, rejected = responses[:pairs], responses[pairs:]
    columns = torch.arange(int((prompt + chosen + rejected).max()), device=device)
    in_rejected = columns >= (prompt + chosen)[:, None]
    segments = torch.where(in_rejected, 2, (columns >= prompt[:, None]).long())
    segments = segments.masked_fill(columns >= (prompt + chosen + rejected)[:, None], -1)
    source = torch.where(in_rejected, columns - chosen[:, None], columns).clamp(max=length - 1)
    ids = torch.where(in_rejected, input_ids[pairs:].gather(1, source), input_ids[:pairs].gather(1, source))
    inputs = {"input_ids": ids.masked_fill(segments < 0, 0), "position_ids": source.masked_fill(segments < 0, 0)}

    offsets = torch.arange(int(responses.max()) + 1, device=device)  # 0: the last prompt token, then the response
    start = torch.cat([prompt, prompt + chosen])  # each side's first response column in the pair's row
    inside = offsets[None, 1:] <= responses[:, None]
    side_columns = torch.cat([(prompt - 1).repeat(2)[:, None], start[:, None] + offsets[None, :-1]], dim=1)
    side_columns = side_columns.masked_fill(~torch.cat([torch.ones_like(inside[:, :1]), inside], dim=1), 0)
    source_columns = (prompt.repeat(2)[:, None] + offsets[None, :-1]).clamp(max=length - 1)
    side_labels = labels.gather(1, source_columns).masked_fill(~inside, IGNORE_INDEX)
    side_labels = torch.cat([side_labels.new_full((2 * pairs, 1), IGNORE_INDEX), side_labels], dim=1)
    return inputs, segments, side_columns, side_labels


def pair_rows_mask(segments: torch.Tensor) -> torch.Tensor:
    """``(B, 1, L, L)`` boolean attention mask of `pair_rows_layout`'s rows: causal, never onto padding, and the
    rejected response does not see the chosen one (each response sees the prompt and itself, as in its own row).
    A padding column sees the real ones before it (the prompt's first token at least), so no query row is empty."""
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    return (causal & (key >= 0) & ~((query == 2) & (key == 1)))[:, None]


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
    prompt = prompt_lengths(batch)
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


def pair_rows_side_states(
    model: nn.Module, inputs: Batch, segments: torch.Tensor, columns: torch.Tensor, each_pair: bool
) -> torch.Tensor:
    """Final hidden states at each side's `pair_rows_layout` ``columns``, ``(2B, C + 1, hidden)``, chosen sides
    first: from one forward over the padded ``(B, L)`` rows, or with ``each_pair`` from one forward per pair over its
    row cut to its length, which runs no padding (a batch of 4 pairs of ``dpo_en_demo`` is about a quarter padding)."""
    base = unwrap(model)

    def hidden_states(rows: slice, length: int) -> torch.Tensor:
        mask = pair_rows_mask(segments[rows, :length])
        row_inputs = {name: value[rows, :length] for name, value in inputs.items()}
        attention_mask = as_attention_mask(mask, base.config._attn_implementation, base.dtype)
        return final_hidden_states(model, **row_inputs, attention_mask=attention_mask)

    pairs = segments.shape[0]
    if not each_pair:
        rows = torch.arange(pairs, device=segments.device).repeat(2)
        return hidden_states(slice(None), segments.shape[1])[rows[:, None], columns]
    lengths = (segments >= 0).sum(dim=1).tolist()
    sides = [
        hidden_states(slice(pair, pair + 1), length)[0][columns[[pair, pair + pairs]]]
        for pair, length in enumerate(lengths)
    ]
    return torch.cat([side[:1] for side in sides] + [side[1:] for side in sides])


def can_share_prompt(model: nn.Module) -> bool:
    """Whether a pair's prompt can run once for both responses: in one row under a custom mask (SDPA, eager; not
    beside a sliding window, which a custom mask would replace), else through the prompt's cache
    (`can_share_prefix`). Never under prompt-learning adapters, whose virtual tokens are not part of the prompt."""
    if isinstance(model, PeftModel) and model.active_peft_config.is_prompt_learning:
        return False
    return _takes_pair_rows(model) or can_share_prefix(model)


def shared_prompt_sequence_logps(
    model: nn.Module, projection: Projection, batch: Batch, each_pair: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logps` of a right-padded side-by-side batch with each pair's prompt run once (see
    `can_share_prompt`). With ``each_pair``, each pair row runs on its own, unpadded (`pair_rows_side_states`).

    Returns:
        ``(logps, num_tokens)``: ``(2B,)`` summed log-probs of each row's labelled tokens and their counts, chosen
        rows first, as for the batch run row by row.
    """
    if _takes_pair_rows(model):
        inputs, segments, columns, labels = pair_rows_layout(batch)
        return sequence_logps(pair_rows_side_states(model, inputs, segments, columns, each_pair), projection, labels)
    layout, prompt_columns = shared_prompt_layout(batch)
    hidden = shared_prefix_hidden_states(model, layout["input_ids"], layout["attention_mask"], prompt_columns, 2)
    logps, num_tokens = sequence_logps(hidden, projection, layout["labels"])
    return torch.cat([logps[0::2], logps[1::2]]), torch.cat([num_tokens[0::2], num_tokens[1::2]])


def _takes_pair_rows(model: nn.Module) -> bool:
    config = unwrap(model).config
    windowed = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    layer_types = getattr(config, "layer_types", None) or ()
    return (
        config._attn_implementation in MASKABLE_ATTENTION
        and not windowed
        and all(kind == "full_attention" for kind in layer_types)
    )
