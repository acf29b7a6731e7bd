"""`RewardModelScorer`: a trained reward model (a `RewardModel` export or any one-output sequence classifier) used as
a reward in online RL, its inputs built exactly as the reward model was trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_ft.data.collate import pad_sequences
from lightning_ft.data.formats import Message
from lightning_ft.data.preference_tokenize import PreferenceTokenizer
from lightning_ft.errors import UsageError
from lightning_ft.model.chat_templates import resolve_chat_template
from lightning_ft.model.reward_model import load_reward_model


class RewardModelScorer(nn.Module):
    """Scores completions with a reward model: ``scorer(prompts, completions, prompt_messages=...) -> list[float]``.

    The prompt's messages (which `PromptData` passes along as ``prompt_messages``) plus the completion as an
    assistant turn are rendered with the reward model's own chat template (the one saved with its tokenizer; the
    built-in ``plain`` one if it has none) and tokenized as in reward-model training: the manifest of a `RewardModel`
    export says whether special tokens wrap the text and how long inputs may be; a long prompt loses its beginning.

    Args:
        path: Directory or hub id of the reward model.
        batch_size: Completions per forward pass.
        max_length: Longest input (default: the export's, else at most 1024 tokens within the model's limit).
    """

    def __init__(self, path: str | Path, batch_size: int = 16, max_length: int | None = None) -> None:
        super().__init__()
        self.model, tokenizer, max_length, add_special_tokens = load_reward_model(path, max_length)
        if tokenizer.chat_template is None:
            tokenizer.chat_template = resolve_chat_template("plain")
        self.pad_token_id = tokenizer.pad_token_id
        self.batch_size = batch_size
        self.encoder = PreferenceTokenizer(tokenizer, max_length, add_special_tokens=add_special_tokens)
        self.path = str(path)

    @torch.no_grad()
    def forward(
        self,
        prompts: list[str],
        completions: list[str],
        prompt_messages: list[list[Message]] | None = None,
        **fields: Any,
    ) -> list[float]:
        if prompt_messages is None:
            raise UsageError(
                f"The reward model {self.path} needs each prompt's messages (`prompt_messages`); PromptData gives them"
            )
        rows = [self.encode(messages, text) for messages, text in zip(prompt_messages, completions, strict=True)]
        scores: list[float] = []
        for start in range(0, len(rows), self.batch_size):
            input_ids, attention_mask = self.pad(rows[start : start + self.batch_size])
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
            scores += logits.squeeze(-1).float().tolist()
        return scores

    def encode(self, prompt: list[Message], completion: str) -> list[int]:
        prompt_ids, response_ids, labels = self.encoder.split(prompt, [{"role": "assistant", "content": completion}])
        keep_prompt, keep_response = self.encoder.kept_lengths(len(prompt_ids), len(response_ids))
        return self.encoder.join(prompt_ids, response_ids, labels, keep_prompt, keep_response)[0]

    def pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right padding, as in reward-model training."""
        device = next(self.model.parameters()).device
        input_ids, attention_mask = pad_sequences(rows, self.pad_token_id, side="right")
        return input_ids.to(device), attention_mask.to(device)
