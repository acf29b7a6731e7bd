"""Render a conversation once with the chat template, tokenize it once, and derive the label mask from that rendering.

Assistant spans are character ranges of the single rendered string: the text between the rendering of the turns
before an assistant turn (with the generation prompt) and the rendering that includes it, up to and including its
end-of-turn token. Token offsets then decide which tokens fall inside, so the mask never drifts from the tokens
(tokens merging across a boundary are handled, unlike masks built from separately tokenized prompts).
"""

from __future__ import annotations

from typing import Literal, TypedDict

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.data.formats import Message
from lightning_ft.data.sources import DataError
from lightning_ft.options import check_option

IGNORE_INDEX = -100
TrainOn = Literal["assistant", "last_assistant", "all"]
Overlong = Literal["truncate", "drop"]
Status = Literal[
    "ok", "truncated", "dropped_too_long", "dropped_no_trainable", "dropped_identical", "dropped_image_cut"
]
DROPPED: tuple[Status, ...] = ("dropped_too_long", "dropped_no_trainable", "dropped_identical", "dropped_image_cut")


class TokenizedExample(TypedDict):
    input_ids: list[int]
    labels: list[int]
    status: Status


class ConversationTokenizer:
    """Turns a conversation into ``input_ids`` and ``labels`` (``-100`` where no loss is taken).

    Args:
        tokenizer: A fast tokenizer whose ``chat_template`` is the one to train with.
        max_length: Longest tokenized conversation kept.
        train_on: Loss on every assistant turn, on the last one only, or on all tokens.
        overlong: Truncate conversations longer than ``max_length`` at the end, or drop them.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        train_on: TrainOn = "assistant",
        overlong: Overlong = "truncate",
    ) -> None:
        if not tokenizer.is_fast:
            raise ValueError("Label masks need character offsets: use a fast tokenizer (tokenizers-backed).")
        check_option("train_on", train_on, TrainOn)
        check_option("overlong policy", overlong, Overlong)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.train_on = train_on
        self.overlong = overlong

    def render(self, messages: list[Message], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def assistant_spans(self, messages: list[Message]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character span of every assistant turn (content + end of turn)."""
        text = self.render(messages)
        spans = []
        for position, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self.render(messages[:position], add_generation_prompt=True) if position else ""
            through = self.render(messages[: position + 1]).rstrip()
            empty = not message["content"].strip()  # a template without end-of-turn text renders nothing for it
            if not (text.startswith(before) and text.startswith(through) and (len(through) > len(before) or empty)):
                raise DataError(
                    "The chat template is not prefix-stable (rendering the first turns is not a prefix of rendering "
                    "the whole conversation), so assistant spans cannot be located. Use a built-in template "
                    "(chat_template: chatml | llama3 | alpaca | plain) or fix the template."
                )
            spans.append((len(before), max(len(before), len(through))))
        return text, spans

    def __call__(self, messages: list[Message]) -> TokenizedExample:
        text, spans = self.assistant_spans(messages)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        input_ids: list[int] = encoding["input_ids"]
        if self.train_on == "all":
            labels = list(input_ids)
        else:
            trained_spans = spans[-1:] if self.train_on == "last_assistant" else spans
            labels = [
                token if any(_inside(text, offset, span) for span in trained_spans) else IGNORE_INDEX
                for token, offset in zip(input_ids, encoding["offset_mapping"], strict=True)
            ]
        status: Status = "ok"
        if len(input_ids) > self.max_length:
            if self.overlong == "drop":
                return TokenizedExample(input_ids=[], labels=[], status="dropped_too_long")
            input_ids, labels, status = input_ids[: self.max_length], labels[: self.max_length], "truncated"
        if all(label == IGNORE_INDEX for label in labels):
            return TokenizedExample(input_ids=[], labels=[], status="dropped_no_trainable")
        return TokenizedExample(input_ids=input_ids, labels=labels, status=status)


def _inside(text: str, offset: tuple[int, int], span: tuple[int, int]) -> bool:
    """A token belongs to a span when it starts inside it, or starts only on whitespace just before it (SentencePiece
    tokens carry their leading space)."""
    start, end = offset
    if end <= start:
        return False
    span_start, span_end = span
    if span_start <= start < span_end:
        return True
    return start < span_start < end and text[start:span_start].isspace()
