"""Render a conversation once with the chat template, tokenize it once, and derive the label mask from that rendering.

Every assistant turn is trained exactly as it appears in the rendering of the whole conversation, its end-of-turn
token included. A turn is located in that one string, as character ranges, so token offsets decide which tokens fall
inside and the mask never drifts from the tokens (tokens merging across a boundary are handled, unlike masks built
from separately tokenized prompts):

- Templates with ``{% generation %}`` markers say where each assistant turn is; their spans are used as they are.
- Otherwise a turn starts where the conversation before it, rendered as a prompt (with the generation prompt), stops
  agreeing with the whole rendering: what a model must generate at that point. It ends where rendering the
  conversation through it stops (a prefix-stable template) or, for templates that render a turn differently once
  later turns follow (reasoning models drop earlier turns' thinking), where the text that depends on the turn ends
  (found by rendering the conversation once more with the turn replaced), plus the template's end-of-turn text.
- Reasoning is located the same way, by replacing it, so ``train_on_reasoning=False`` takes exactly its tokens out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import render_jinja_template

from lightning_ft.data.formats import Message
from lightning_ft.data.sources import DataError
from lightning_ft.errors import UsageError
from lightning_ft.options import check_option

IGNORE_INDEX = -100
TrainOn = Literal["assistant", "last_assistant", "all"]
Overlong = Literal["truncate", "drop"]
Status = Literal[
    "ok",
    "truncated",
    "dropped_too_long",
    "dropped_no_trainable",
    "dropped_identical",
    "dropped_image_cut",
    "dropped_empty",
]
DROPPED: tuple[Status, ...] = (
    "dropped_too_long",
    "dropped_no_trainable",
    "dropped_identical",
    "dropped_image_cut",
    "dropped_empty",
)
Span = tuple[int, int]
Tools = list[dict[str, Any]] | None
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
REASONING_NAMES = ("reasoning_content", "thinking", "reasoning")  # what transformers passes reasoning to templates as


class TokenizedExample(TypedDict):
    input_ids: list[int]
    labels: list[int]
    status: Status


@dataclass
class RenderedConversation:
    """One rendering of a conversation: each assistant turn's character span (in order), and the ranges inside them
    that carry no loss (reasoning, when it is not trained)."""

    text: str
    turns: list[Span]
    untrained: list[Span] = field(default_factory=list)

    def labels(self, input_ids: Sequence[int], offsets: Sequence[Span], turns: Sequence[Span]) -> list[int]:
        """``input_ids`` with every token outside ``turns`` (or inside an untrained range) set to ``IGNORE_INDEX``."""
        trained = tokens_inside(self.text, offsets, turns)
        untrained = tokens_inside(self.text, offsets, self.untrained)
        return [
            token if inside and not excluded else IGNORE_INDEX
            for token, inside, excluded in zip(input_ids, trained, untrained, strict=True)
        ]


class ConversationTokenizer:
    """Turns a conversation into ``input_ids`` and ``labels`` (``-100`` where no loss is taken).

    Args:
        tokenizer: A fast tokenizer whose ``chat_template`` is the one to train with.
        max_length: Longest tokenized conversation kept.
        train_on: Loss on every assistant turn, on the last one only, or on all tokens.
        overlong: Truncate conversations longer than ``max_length`` at the end, or drop them.
        train_on_reasoning: Whether the reasoning of assistant turns (``reasoning_content``, or ``<think>...</think>``
            in the content), where the template renders it, carries loss. The template's tags around it always do.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        train_on: TrainOn = "assistant",
        overlong: Overlong = "truncate",
        train_on_reasoning: bool = True,
    ) -> None:
        if not tokenizer.is_fast:
            raise UsageError("Label masks need character offsets: use a fast tokenizer (tokenizers-backed).")
        check_option("train_on", train_on, TrainOn)
        check_option("overlong policy", overlong, Overlong)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.train_on = train_on
        self.overlong = overlong
        self.train_on_reasoning = train_on_reasoning
        self._end_of_turn: str | None = None

    def render(self, messages: list[Message], add_generation_prompt: bool = False, tools: Tools = None) -> str:
        options = {"tools": tools} if tools else {}
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **options
        )

    def locate(self, messages: list[Message], tools: Tools = None, where: str = "conversation") -> RenderedConversation:
        """The rendered conversation and the character span of every assistant turn (content + end of turn)."""
        self.check_template_reads(messages, tools, where)
        template = self.tokenizer.get_chat_template(None, tools)
        if GENERATION_MARKER.search(template):
            rendered = self._marked(messages, tools, template)
        else:
            text = self.render(messages, tools=tools)
            rendered, previous_end = RenderedConversation(text, []), 0
            for position, message in enumerate(messages):
                if message["role"] == "assistant":
                    start = self._turn_start(text, messages, position, tools, where, previous_end)
                    previous_end = self._turn_end(text, messages, position, tools, where, start)
                    rendered.turns.append((start, previous_end))
        if not self.train_on_reasoning:
            for position, message in enumerate(messages):
                if message["role"] == "assistant" and has_reasoning(message):
                    rendered.untrained += self._reasoning_ranges(rendered.text, messages, position, tools)
        return rendered

    def __call__(self, messages: list[Message], tools: Tools = None, where: str = "conversation") -> TokenizedExample:
        if self.train_on == "all":
            self.check_template_reads(messages, tools, where)
            rendered = RenderedConversation(self.render(messages, tools=tools), [])
        else:
            rendered = self.locate(messages, tools, where)
        encoding = self.tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        input_ids: list[int] = encoding["input_ids"]
        if self.train_on == "all":
            labels = list(input_ids)
        else:
            trained = rendered.turns[-1:] if self.train_on == "last_assistant" else rendered.turns
            labels = rendered.labels(input_ids, encoding["offset_mapping"], trained)
        status: Status = "ok"
        if len(input_ids) > self.max_length:
            if self.overlong == "drop":
                return TokenizedExample(input_ids=[], labels=[], status="dropped_too_long")
            input_ids, labels, status = input_ids[: self.max_length], labels[: self.max_length], "truncated"
        if all(label == IGNORE_INDEX for label in labels):
            return TokenizedExample(input_ids=[], labels=[], status="dropped_no_trainable")
        return TokenizedExample(input_ids=input_ids, labels=labels, status=status)

    def check_template_reads(self, messages: list[Message], tools: Tools, where: str) -> None:
        """Refuse data the template would silently drop: reasoning, tool calls or tool schemas it never reads."""
        template = self.tokenizer.get_chat_template(None, tools)
        for position, message in enumerate(messages):
            if "reasoning_content" in message and not any(name in template for name in REASONING_NAMES):
                raise DataError(
                    f"{where}, {describe(messages, position)}: the turn has reasoning, but the chat template never "
                    "renders reasoning_content (it would be dropped): use the reasoning model's own template, or put "
                    "the reasoning inside the content as <think>...</think>"
                )
            if message.get("tool_calls") and "tool_calls" not in template:
                raise DataError(
                    f"{where}, {describe(messages, position)}: the turn calls tools, but the chat template never "
                    "renders tool_calls (they would be dropped): use a template with tool calling, e.g. the model's own"
                )
        if tools and "tools" not in template:
            raise DataError(f"{where}: the record has tools, but the chat template never renders them")

    def _turn_start(
        self, text: str, messages: list[Message], position: int, tools: Tools, where: str, previous_end: int
    ) -> int:
        """Where the model starts generating turn ``position``: the end of what the conversation before it, rendered
        as a prompt, shares with the whole rendering. It may not fall before the previous message's text."""
        prompt = self.render(messages[:position], add_generation_prompt=True, tools=tools) if position else ""
        if text.startswith(prompt):
            return len(prompt)
        shared = common_prefix_length(prompt, text)
        region = self._changed_region(text, messages, position - 1, tools, replace_content)
        floor = max(previous_end, region[1] if region else 0)
        if shared < floor:
            raise DataError(
                f"{where}, {describe(messages, position)}: the turn cannot be located: the chat template renders the "
                "conversation before it differently as a prompt (with the generation prompt) than within the whole "
                "conversation. Use the model's own template unchanged, or a built-in one (chat_template: chatml | "
                "llama3 | alpaca | plain)."
            )
        return shared

    def _turn_end(self, text: str, messages: list[Message], position: int, tools: Tools, where: str, start: int) -> int:
        """Where turn ``position`` ends in ``text``, its end-of-turn text included."""
        message = messages[position]
        through = self.render(messages[: position + 1], tools=tools).rstrip()
        if text.startswith(through) and (len(through) > start or is_empty(message)):
            return max(start, len(through))
        region = self._changed_region(text, messages, position, tools, replace_turn)
        if region is None:
            if is_empty(message):
                return start
            raise DataError(
                f"{where}, {describe(messages, position)}: the chat template does not render this turn at all, so it "
                "cannot be trained; fix the template or leave the turn out"
            )
        end = region[1]
        end_of_turn = self.end_of_turn()
        if end_of_turn and text.startswith(end_of_turn, end):
            end += len(end_of_turn)
        if end <= start and not is_empty(message):
            raise DataError(f"{where}, {describe(messages, position)}: the turn cannot be located in the rendering")
        return max(start, end)

    def end_of_turn(self) -> str:
        """What the template writes after an assistant turn's text (``<|im_end|>``, ``<|eot_id|>``, eos ...), less
        trailing whitespace: found once, by rendering a one-turn exchange."""
        if self._end_of_turn is None:
            marker = sentinel("")
            probe = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": marker}]
            try:
                rendered = self.render(probe)
            except Exception:  # a template that cannot render a bare exchange: no end-of-turn text is added
                rendered = ""
            self._end_of_turn = rendered.rpartition(marker)[2].rstrip() if marker in rendered else ""
        return self._end_of_turn

    def _changed_region(
        self, text: str, messages: list[Message], position: int, tools: Tools, replace: Any
    ) -> Span | None:
        """The range of ``text`` that changes when message ``position`` is replaced (``replace(message, marker)``),
        or None when nothing does (the template does not render what was replaced)."""
        if position < 0:
            return None
        variant = list(messages)
        variant[position] = replace(messages[position], sentinel(text))
        if variant[position] == messages[position]:
            return None
        other = self.render(variant, tools=tools)
        if other == text:
            return None
        prefix = common_prefix_length(text, other)
        suffix = common_prefix_length(text[prefix:][::-1], other[prefix:][::-1])
        return prefix, len(text) - suffix

    def _reasoning_ranges(self, text: str, messages: list[Message], position: int, tools: Tools) -> list[Span]:
        region = self._changed_region(text, messages, position, tools, replace_reasoning)
        return [region] if region is not None and region[1] > region[0] else []

    def _marked(self, messages: list[Message], tools: Tools, template: str) -> RenderedConversation:
        """Spans from the template's own ``{% generation %}`` markers, as transformers' assistant masks use them."""
        options = {**self.tokenizer.special_tokens_map}
        rendered, indices = render_jinja_template(
            [messages], tools=tools, chat_template=template, return_assistant_tokens_mask=True, **options
        )
        return RenderedConversation(rendered[0], [(start, end) for start, end in indices[0]])


def describe(messages: list[Message], position: int) -> str:
    """How errors name a message: its role, its number among that role's turns, and the start of its text."""
    message = messages[position]
    ordinal = sum(other["role"] == message["role"] for other in messages[: position + 1])
    text = message.get("content") or str(message.get("tool_calls", ""))
    return f"{message['role']} turn {ordinal} ({text[:40] + ('...' if len(text) > 40 else '')!r})"


def has_reasoning(message: Message) -> bool:
    return "reasoning_content" in message or "</think>" in message.get("content", "")


def is_empty(message: Message) -> bool:
    return not message.get("content", "").strip() and not message.get("tool_calls") and not has_reasoning(message)


def replace_content(message: Message, marker: str) -> Message:
    return {**message, "content": marker}


def replace_turn(message: Message, marker: str) -> Message:
    """A plain assistant turn in place of ``message``: everything the turn renders from its own data changes."""
    return {"role": message["role"], "content": marker}


def replace_reasoning(message: Message, marker: str) -> Message:
    """``message`` with its reasoning (``reasoning_content``, else the text inside ``<think>...</think>``) replaced."""
    if "reasoning_content" in message:
        return {**message, "reasoning_content": marker}
    head, end_tag, tail = message["content"].partition("</think>")
    opening = head.rfind("<think>")
    kept = head[: opening + len("<think>")] if opening >= 0 else ""
    return {**message, "content": kept + marker + end_tag + tail}


def sentinel(text: str) -> str:
    """A marker no rendering of ``text`` contains: private-use characters."""
    for code in range(0xE000, 0xF8FF):
        if chr(code) not in text:
            return chr(code) * 3
    raise DataError("The conversation uses every private-use character; cannot locate its turns")


def common_prefix_length(a: str, b: str) -> int:
    length = min(len(a), len(b))
    if a[:length] == b[:length]:
        return length
    low, high = 0, length  # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


def tokens_inside(text: str, offsets: Sequence[Span], spans: Sequence[Span]) -> list[bool]:
    """For each token (character ``offsets``, in order), whether it belongs to one of ``spans`` (`_inside`); one
    pass, since tokens and spans are both in order."""
    spans = sorted(spans)
    result, first = [], 0
    for start, end in offsets:
        while first < len(spans) and spans[first][1] <= start:
            first += 1  # spans ending before the token can hold neither it nor its leading whitespace
        candidate, inside = first, False
        while not inside and candidate < len(spans) and spans[candidate][0] < end:
            inside = _inside(text, (start, end), spans[candidate])
            candidate += 1
        result.append(inside)
    return result


def _inside(text: str, offset: tuple[int, int], span: Span) -> bool:
    """A token belongs to a span when it starts inside it, or starts only on whitespace just before it (SentencePiece
    tokens carry their leading space)."""
    start, end = offset
    if end <= start:
        return False
    span_start, span_end = span
    if span_start <= start < span_end:
        return True
    return start < span_start < end and text[start:span_start].isspace()
