"""Tokenize preference pairs and unpaired examples with the training chat template.

Prompt and response are rendered together, once, with the same template as SFT; the response tokens (the spans of
its assistant turns, end-of-turn included) carry labels, the prompt never does. A pair that does not fit
``max_length`` is truncated the same way for chosen and rejected: the prompt loses its beginning (its end, which the
responses answer, stays) down to ``max_prompt_length`` tokens, then the responses lose their ends; or it is dropped.
A pair whose chosen and rejected sides are the same tokens once truncated is dropped (``dropped_identical``).
"""

from __future__ import annotations

from typing import TypedDict

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.data.formats import Message
from lightning_ft.data.preference_formats import PreferencePair, UnpairedExample
from lightning_ft.data.tokenize import DROPPED, IGNORE_INDEX, ConversationTokenizer, Overlong, Status, Tools
from lightning_ft.errors import UsageError


class TokenizedPair(TypedDict):
    chosen_input_ids: list[int]
    chosen_labels: list[int]
    rejected_input_ids: list[int]
    rejected_labels: list[int]
    status: Status


class TokenizedUnpaired(TypedDict):
    input_ids: list[int]
    labels: list[int]
    prompt_length: int
    desirable: bool
    status: Status


class PreferenceTokenizer:
    """Pairs -> chosen and rejected ``input_ids`` / ``labels``; unpaired examples -> ``input_ids`` / ``labels``.

    Args:
        tokenizer: A fast tokenizer whose chat template is the one to train with.
        max_length: Longest prompt + response kept (special tokens included).
        max_prompt_length: The prompt is never cut below this many tokens (default ``max_length // 2``).
        overlong: ``truncate`` or ``drop`` pairs longer than ``max_length``.
        add_special_tokens: Wrap every sequence in the tokenizer's own special tokens (``[CLS] ... [SEP]`` for
            BERT-style encoders). Chat templates of decoder models write theirs already.
        train_on_reasoning: Whether the responses' reasoning tokens carry labels (see `ConversationTokenizer`).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        max_prompt_length: int | None = None,
        overlong: Overlong = "truncate",
        add_special_tokens: bool = False,
        train_on_reasoning: bool = True,
    ) -> None:
        self.conversations = ConversationTokenizer(
            tokenizer, max_length, overlong=overlong, train_on_reasoning=train_on_reasoning
        )
        self.tokenizer = tokenizer
        self.prefix, self.suffix = special_tokens_around(tokenizer) if add_special_tokens else ([], [])
        self.max_length = max_length - len(self.prefix) - len(self.suffix)
        self.max_prompt_length = self.max_length // 2 if max_prompt_length is None else max_prompt_length
        if not 0 < self.max_prompt_length < self.max_length:
            raise UsageError(
                f"data.max_prompt_length must be in (0, {self.max_length}) (data.max_length less special tokens), "
                f"got {max_prompt_length}"
            )
        self.overlong = overlong

    def split(
        self, prompt: list[Message], response: list[Message], tools: Tools = None, where: str = "record"
    ) -> tuple[list[int], list[int], list[int]]:
        """``(prompt_ids, response_ids, response_labels)`` of one rendering of ``prompt + response``."""
        messages = prompt + response
        rendered = self.conversations.locate(messages, tools, where)
        response_spans = rendered.turns[len(rendered.turns) - sum(m["role"] == "assistant" for m in response) :]
        encoding = self.tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        labels = rendered.labels(ids, offsets, response_spans)
        # The prompt is everything before the first response turn's span (which starts where the prompt rendered with
        # its generation prompt ends); no labelled token may fall before it.
        start = response_spans[0][0]
        boundary = next((i for i, (s, _) in enumerate(offsets) if s >= start), len(ids))
        boundary = min(boundary, next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(ids)))
        return ids[:boundary], ids[boundary:], labels[boundary:]

    def __call__(self, pair: PreferencePair, where: str = "record") -> TokenizedPair:
        prompt_c, chosen, chosen_labels = self.split(pair.prompt, pair.chosen, pair.tools, f"{where}, chosen")
        prompt_r, rejected, rejected_labels = self.split(pair.prompt, pair.rejected, pair.tools, f"{where}, rejected")
        longer = max((prompt_c, chosen), (prompt_r, rejected), key=lambda side: len(side[0]) + len(side[1]))
        status = self.fit(len(longer[0]), len(longer[1]))
        if status in DROPPED:
            return TokenizedPair(
                chosen_input_ids=[], chosen_labels=[], rejected_input_ids=[], rejected_labels=[], status=status
            )
        # Both sides render the same prompt, but not always to the same tokens: a response starting with whitespace
        # can merge with the template's trailing newline, and that side's prompt ends a token earlier. So each side
        # keeps its own prompt, and both lose the same tokens from its start: as many as the longer prompt must.
        cut = 0
        if status == "truncated":
            prompt_length = max(len(prompt_c), len(prompt_r))
            cut = prompt_length - self.kept_lengths(prompt_length, max(len(chosen), len(rejected)))[0]
        chosen_ids, chosen_labels = self.join_cut(prompt_c, chosen, chosen_labels, cut)
        rejected_ids, rejected_labels = self.join_cut(prompt_r, rejected, rejected_labels, cut)
        if not has_labels(chosen_labels) or not has_labels(rejected_labels):
            status = "dropped_no_trainable"
        elif chosen_ids == rejected_ids and chosen_labels == rejected_labels:
            status = "dropped_identical"  # the responses differed only past the truncation: nothing to compare
        if status in DROPPED:
            chosen_ids, chosen_labels, rejected_ids, rejected_labels = [], [], [], []
        return TokenizedPair(
            chosen_input_ids=chosen_ids,
            chosen_labels=chosen_labels,
            rejected_input_ids=rejected_ids,
            rejected_labels=rejected_labels,
            status=status,
        )

    def unpaired(self, example: UnpairedExample, where: str = "record") -> TokenizedUnpaired:
        """One prompt + completion with its desirability; ``prompt_length`` counts the tokens before the completion
        (special tokens included), so a completion can be re-paired with another prompt (KTO's KL estimate)."""
        prompt, completion, labels = self.split(example.prompt, example.completion, example.tools, where)
        status = self.fit(len(prompt), len(completion))
        keep_prompt, keep_response = self.kept_lengths(len(prompt), len(completion))
        ids, labels = self.join(prompt, completion, labels, keep_prompt, keep_response)
        if status not in DROPPED and not has_labels(labels):
            status = "dropped_no_trainable"
        if status in DROPPED:
            return TokenizedUnpaired(
                input_ids=[], labels=[], prompt_length=0, desirable=example.desirable, status=status
            )
        return TokenizedUnpaired(
            input_ids=ids,
            labels=labels,
            prompt_length=len(self.prefix) + min(keep_prompt, len(prompt)),
            desirable=example.desirable,
            status=status,
        )

    def fit(self, prompt_length: int, response_length: int) -> Status:
        if prompt_length + response_length <= self.max_length:
            return "ok"
        return "dropped_too_long" if self.overlong == "drop" else "truncated"

    def kept_lengths(self, prompt_length: int, response_length: int) -> tuple[int, int]:
        """How many prompt tokens (from its end) and response tokens (from their start) fit in ``max_length``."""
        if prompt_length + response_length <= self.max_length:
            return prompt_length, response_length
        keep_prompt = min(prompt_length, max(self.max_length - response_length, self.max_prompt_length))
        return keep_prompt, self.max_length - keep_prompt

    def join(
        self, prompt: list[int], response: list[int], labels: list[int], keep_prompt: int, keep_response: int
    ) -> tuple[list[int], list[int]]:
        """Prompt end + response start, wrapped in the special tokens, with labels on the response only."""
        prompt = prompt[len(prompt) - min(keep_prompt, len(prompt)) :]
        ids = self.prefix + prompt + response[:keep_response] + self.suffix
        masked_before = [IGNORE_INDEX] * (len(self.prefix) + len(prompt))
        return ids, masked_before + labels[:keep_response] + [IGNORE_INDEX] * len(self.suffix)

    def join_cut(
        self, prompt: list[int], response: list[int], labels: list[int], cut: int
    ) -> tuple[list[int], list[int]]:
        """`join` of the prompt less its first ``cut`` tokens and as much of the response as fits beside it."""
        keep_prompt = max(0, len(prompt) - cut)
        return self.join(prompt, response, labels, keep_prompt, self.max_length - keep_prompt)


def special_tokens_around(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a text when asked to add its special tokens."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    wrapped = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(wrapped) - len(plain) + 1):
        if wrapped[start : start + len(plain)] == plain:
            return wrapped[:start], wrapped[start + len(plain) :]
    raise UsageError(
        f"Cannot tell which special tokens {type(tokenizer).__name__} adds around a text: set "
        "data.add_special_tokens: false"
    )


def has_labels(labels: list[int]) -> bool:
    return any(label != IGNORE_INDEX for label in labels)
