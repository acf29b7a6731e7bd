"""Tokenize preference pairs and unpaired examples with the training chat template.

Prompt and response are rendered together, once, with the same template as SFT; the response tokens (the spans of
its assistant turns, end-of-turn included) carry labels, the prompt never does. A pair that does not fit
``max_length`` is truncated the same way for chosen and rejected: the prompt loses its beginning (its end, which the
responses answer, stays) down to ``max_prompt_length`` tokens, then the responses lose their ends; or it is dropped.
"""

from __future__ import annotations

from typing import TypedDict

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.data.formats import Message
from lightning_ft.data.preference_formats import PreferencePair
from lightning_ft.data.tokenize import IGNORE_INDEX, ConversationTokenizer, Overlong, Status, _inside


class TokenizedPair(TypedDict):
    chosen_input_ids: list[int]
    chosen_labels: list[int]
    rejected_input_ids: list[int]
    rejected_labels: list[int]
    status: Status


class PreferenceTokenizer:
    """Pairs -> chosen and rejected ``input_ids`` / ``labels``.

    Args:
        tokenizer: A fast tokenizer whose chat template is the one to train with.
        max_length: Longest prompt + response kept.
        max_prompt_length: The prompt is never cut below this many tokens (default ``max_length // 2``).
        overlong: ``truncate`` or ``drop`` pairs longer than ``max_length``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        max_prompt_length: int | None = None,
        overlong: Overlong = "truncate",
    ) -> None:
        self.conversations = ConversationTokenizer(tokenizer, max_length, overlong=overlong)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_prompt_length = max_length // 2 if max_prompt_length is None else max_prompt_length
        if not 0 < self.max_prompt_length < max_length:
            raise ValueError(f"max_prompt_length must be in (0, max_length={max_length}), got {max_prompt_length}")
        self.overlong = overlong

    def split(self, prompt: list[Message], response: list[Message]) -> tuple[list[int], list[int], list[int]]:
        """``(prompt_ids, response_ids, response_labels)`` of one rendering of ``prompt + response``."""
        messages = prompt + response
        text, spans = self.conversations.assistant_spans(messages)
        response_spans = spans[len(spans) - sum(m["role"] == "assistant" for m in response) :]
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        labels = [
            token if any(_inside(text, offset, span) for span in response_spans) else IGNORE_INDEX
            for token, offset in zip(ids, offsets, strict=True)
        ]
        # The prompt is everything before the first response turn's span (which starts where the prompt rendered with
        # its generation prompt ends); no labelled token may fall before it.
        start = response_spans[0][0]
        boundary = next((i for i, (s, _) in enumerate(offsets) if s >= start), len(ids))
        boundary = min(boundary, next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(ids)))
        return ids[:boundary], ids[boundary:], labels[boundary:]

    def __call__(self, pair: PreferencePair) -> TokenizedPair:
        prompt_c, chosen, chosen_labels = self.split(pair.prompt, pair.chosen)
        prompt_r, rejected, rejected_labels = self.split(pair.prompt, pair.rejected)
        prompt = prompt_c if len(prompt_c) <= len(prompt_r) else prompt_r
        longest = max(len(chosen), len(rejected))
        status: Status = "ok"
        if len(prompt) + longest > self.max_length:
            if self.overlong == "drop":
                return empty_pair("dropped_too_long")
            keep_prompt = min(len(prompt), max(self.max_length - longest, self.max_prompt_length))
            keep_response = self.max_length - keep_prompt
            prompt_c, prompt_r = prompt_c[len(prompt_c) - keep_prompt :], prompt_r[len(prompt_r) - keep_prompt :]
            chosen, chosen_labels = chosen[:keep_response], chosen_labels[:keep_response]
            rejected, rejected_labels = rejected[:keep_response], rejected_labels[:keep_response]
            status = "truncated"
        if not has_labels(chosen_labels) or not has_labels(rejected_labels):
            return empty_pair("dropped_no_trainable")
        return TokenizedPair(
            chosen_input_ids=prompt_c + chosen,
            chosen_labels=[IGNORE_INDEX] * len(prompt_c) + chosen_labels,
            rejected_input_ids=prompt_r + rejected,
            rejected_labels=[IGNORE_INDEX] * len(prompt_r) + rejected_labels,
            status=status,
        )


def has_labels(labels: list[int]) -> bool:
    return any(label != IGNORE_INDEX for label in labels)


def empty_pair(status: Status) -> TokenizedPair:
    return TokenizedPair(
        chosen_input_ids=[], chosen_labels=[], rejected_input_ids=[], rejected_labels=[], status=status
    )
