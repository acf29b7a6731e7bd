"""`PromptData`: prompt-only records for online RL (PPO, GRPO), rendered with the chat template and its generation
prompt, left-padded for batched sampling; every other field of a record travels along for the reward functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from lightning_ft.data.collate import pad_sequences
from lightning_ft.data.mixing import MixSource
from lightning_ft.data.module import RecordTokenizer, TokenizedData
from lightning_ft.data.preference_formats import messages_of, required, with_system
from lightning_ft.data.sources import DataError
from lightning_ft.errors import UsageError
from lightning_ft.options import check_keys

PROMPT_FIELDS = {"prompt": "prompt", "system": "system"}
TOKEN_COLUMNS = ("input_ids", "prompt_text", "prompt_messages", "status", "record")


class PromptData(TokenizedData):
    """Prompts (``prompt`` as text or messages, ending with a user turn) plus any fields the rewards need, such as
    a reference ``answer``.

    Batches hold ``input_ids`` / ``attention_mask`` ``(B, length)``, left-padded so generation continues every prompt
    at the same position, ``prompt_text`` (the rendered prompts), ``prompt_messages`` (the prompts as role/content
    messages, system prompt included, for reward models with their own chat template) and, as lists, every other
    field of the records.
    A prompt longer than ``max_length`` loses its beginning (``overlong: truncate``) or is dropped, with counts.

    Args:
        fields: Rename fields, e.g. ``{"prompt": "question"}`` for GSM8K; keys: prompt, system.
        **kwargs: `TokenizedData` arguments: ``train``, ``val``, ``val_fraction``, ``max_length`` (longest prompt),
            ``overlong``, ``system_prompt``, ``batch_size`` (prompts per step), ``eval_batch_size``, ``num_workers``,
            ``seed``, ``split``, ``encoding``, ``tokenizer``.
    """

    def __init__(self, train: str | list[MixSource], fields: dict[str, str] | None = None, **kwargs: Any) -> None:
        if kwargs.get("val_extra"):
            raise UsageError(
                "data.val_extra holds extra sets for loss-based validation (SFT, DPO, KTO, reward models); online RL "
                "validates by generating on the `val` prompts: leave val_extra unset for PromptData"
            )
        super().__init__(train, **kwargs)
        check_keys("field keys", fields or {}, PROMPT_FIELDS)
        self.fields = {**PROMPT_FIELDS, **(fields or {})}

    def token_options(self) -> dict[str, Any]:
        return {"fields": self.fields}

    def kept_columns(self, columns: list[str]) -> list[str]:
        return [c for c in columns if c not in self.fields.values() and c not in TOKEN_COLUMNS]

    def record_tokenizer(self) -> RecordTokenizer:
        tokenizer = self._require_tokenizer()

        def tokenize(record: Mapping[str, Any], where: str) -> dict[str, Any]:
            field = self.fields["prompt"]
            messages = messages_of(required(record, field, where), field, where, default_role="user")
            messages = self.with_system_prompt(with_system(messages, record.get(self.fields["system"]), where))
            if messages[-1]["role"] != "user":
                raise DataError(f"{where}: field {field!r} must end with a user turn")
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            status = "ok"
            if len(ids) > self.max_length:
                if self.overlong == "drop":
                    return {"input_ids": [], "prompt_text": "", "prompt_messages": [], "status": "dropped_too_long"}
                ids, status = ids[len(ids) - self.max_length :], "truncated"
            return {"input_ids": ids, "prompt_text": text, "prompt_messages": messages, "status": status}

        return tokenize

    def train_dataloader(self) -> DataLoader:
        """Full batches only: an online step takes a fixed number of optimiser steps on each rollout (PPO's
        minibatches), so a last partial batch is left out of each epoch (a different one each epoch, as the order is
        shuffled), and the steps taken are the steps the schedule and ``max_steps`` count."""
        prompts = self._prompts("train")
        left_out = len(prompts) % self.batch_size
        if len(prompts) < self.batch_size:
            raise DataError(f"{self.train}: {len(prompts)} prompts cannot fill one batch of {self.batch_size}")
        if left_out:
            rank_zero_info(
                f"train prompts: {len(prompts)} in batches of {self.batch_size}; each epoch leaves out {left_out} "
                "(the last partial batch; shuffled, so a different few each epoch)"
            )
        return self._loader(prompts, self.batch_size, shuffle=True, collate_fn=self.collator(), drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        if "val" not in self.datasets:
            return []
        return self._loader(self._prompts("val"), self.eval_batch_size, shuffle=False, collate_fn=self.collator())

    def collator(self) -> LeftPadCollator:
        return LeftPadCollator(self._require_tokenizer().pad_token_id)

    def _prompts(self, split: str) -> Any:
        return self.datasets[split].remove_columns(["status"])


class LeftPadCollator:
    """Left-pads ``input_ids`` to ``(B, length)`` with an ``attention_mask``; every other column becomes a list."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[dict]) -> dict[str, Any]:
        input_ids, attention_mask = pad_sequences(
            [example["input_ids"] for example in examples], self.pad_token_id, "left"
        )
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        for column in examples[0].keys() - {"input_ids"}:
            batch[column] = [example[column] for example in examples]
        return batch
