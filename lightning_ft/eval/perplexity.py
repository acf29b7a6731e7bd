"""Teacher-forced loss of the reference answers: the conversation is rendered and masked exactly as in SFT training
(the reference is the last assistant turn, and only its tokens, end of turn included, are scored)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.data.collate import pad_sequences
from lightning_ft.data.tokenize import IGNORE_INDEX, ConversationTokenizer
from lightning_ft.eval.items import EvalItem
from lightning_ft.losses.logps import token_logps
from lightning_ft.model.forward import sequence_hidden_states
from lightning_ft.model.heads import output_projection


@dataclass
class ReferenceLoss:
    """The summed negative log-likelihood of an item's reference tokens, their number, and whether the rendered
    conversation was cut to ``max_length`` (then only the tokens that fit are scored)."""

    loss_sum: float
    tokens: int
    truncated: bool


@torch.no_grad()
def reference_losses(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: list[EvalItem],
    max_length: int = 2048,
    batch_size: int = 8,
) -> list[ReferenceLoss | None]:
    """The teacher-forced loss of each item's reference answer given its prompt; None for items without a
    reference, or whose reference has no token left within ``max_length``.

    Args:
        model: A causal LM (PEFT-wrapped or not).
        tokenizer: Its tokenizer, chat template included.
        items: Evaluation items; the reference becomes the assistant turn after the prompt.
        max_length: Longest rendered conversation; longer ones are cut at the end.
        batch_size: Conversations per forward pass.
    """
    conversations = ConversationTokenizer(tokenizer, max_length, train_on="last_assistant", overlong="truncate")
    rows: list[tuple[int, dict]] = []
    for index, item in enumerate(items):
        if item.reference is None or item.choices is not None:
            continue
        example = conversations([*item.prompt, {"role": "assistant", "content": item.reference}])
        if any(label != IGNORE_INDEX for label in example["labels"][1:]):
            rows.append((index, example))
    results: list[ReferenceLoss | None] = [None] * len(items)
    device = next(model.parameters()).device
    projection = output_projection(model)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        input_ids, attention_mask = pad_sequences([row["input_ids"] for _, row in chunk], tokenizer.pad_token_id or 0)
        labels, _ = pad_sequences([row["labels"] for _, row in chunk], IGNORE_INDEX)
        batch = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
        hidden = sequence_hidden_states(model, batch)
        logps = token_logps(hidden, projection, labels.to(device))
        scored = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)
        for (index, row), logp, count in zip(chunk, logps.sum(dim=1).tolist(), scored.tolist(), strict=True):
            results[index] = ReferenceLoss(-logp, count, row["status"] == "truncated")
    return results
