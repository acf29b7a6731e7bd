"""Generate an assistant turn with the same chat template the model was trained with."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import GenerationConfig, ProcessorMixin
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.errors import UsageError
from lightning_ft.model.chat_templates import END_OF_TURN_TOKENS
from lightning_ft.model.heads import unwrap
from lightning_ft.model.sampling import SamplingOptions


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """EOS plus any end-of-turn token the vocabulary has, so generation stops where a trained turn ends."""
    ids = {tokenizer.eos_token_id}
    for token in END_OF_TURN_TOKENS:  # a lookup per token: the whole vocabulary dict costs ~75 ms per call
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and tokenizer.convert_ids_to_tokens(token_id) == token:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def policy_sampling(temperature: float, top_p: float = 1.0) -> dict[str, Any]:
    """``generate`` options that sample from exactly ``softmax(logits / temperature)`` (restricted to the top-``p``
    nucleus when ``top_p < 1``; no top-k, no repetition penalty), or decode greedily at temperature 0, as RL rollouts
    need. Use inside `without_generation_defaults`."""
    return SamplingOptions(temperature=temperature, top_p=top_p).decoding_kwargs()


@contextmanager
def without_generation_defaults(model: nn.Module) -> Iterator[None]:
    """Hide the model's ``generation_config.json`` while generating, so its ``top_k``, ``repetition_penalty``,
    ``min_p``, ... cannot change the distribution sampled from: only the options passed to ``generate`` apply."""
    base = unwrap(model)
    saved = base.generation_config
    base.generation_config = GenerationConfig()
    try:
        yield
    finally:
        base.generation_config = saved


@torch.no_grad()
def generate_reply(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | ProcessorMixin,
    messages: list[dict[str, str]],
    sampling: SamplingOptions | None = None,
    images: list[Image.Image] | None = None,
) -> str:
    """Render ``messages`` with the tokenizer's chat template and generate the assistant's next turn with exactly
    ``sampling`` (default: greedy), seeded by its seed. With a vision-language model's processor, ``images`` fill
    the turns' image tokens in order."""
    sampling = sampling or SamplingOptions()
    processor = tokenizer if isinstance(tokenizer, ProcessorMixin) else None
    if processor is not None:
        tokenizer = processor.tokenizer
    elif images:
        raise UsageError("Images need a vision-language model (an export with a processor)")
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    device = next(model.parameters()).device
    if processor is not None:
        inputs = processor(text=prompt, images=images or None, return_tensors="pt", add_special_tokens=False)
    else:
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    inputs = inputs.to(device)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    with without_generation_defaults(model):
        output = model.generate(
            **inputs,
            eos_token_id=stop_token_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            **sampling.generate_kwargs(),
        )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@torch.no_grad()
def generate_replies(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    on_batch: Callable[[list[int], list[str]], Any] | None = None,
) -> list[str]:
    """The assistant's next turn for each conversation, generated in batches (left padding, KV cache).

    Conversations are batched by rendered length (less padding) and answered in their original order. Only the
    options given here shape the output (`without_generation_defaults`): greedy at temperature 0, else sampled from
    ``softmax(logits / temperature)`` within the top-``p`` nucleus, seeded by ``seed`` and the batch's position.
    ``on_batch(indices, replies)`` is called after each batch, so a caller can keep what was generated so far.
    """
    sampling = SamplingOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    encoded = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    replies: list[str] = [""] * len(encoded)
    for batch_number, start in enumerate(range(0, len(order), batch_size)):
        indices = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in indices)
        input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            input_ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            attention_mask[row, width - len(encoded[i]) :] = 1
        torch.manual_seed(seed + batch_number)
        with without_generation_defaults(model):
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                eos_token_id=stop_token_ids(tokenizer),
                pad_token_id=pad_id,
                **sampling.generate_kwargs(),
            )
        texts = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        for i, text in zip(indices, texts, strict=True):
            replies[i] = text.strip()
        if on_batch is not None:
            on_batch(indices, [replies[i] for i in indices])
    return replies


class Conversation:
    """A chat with a model, turn by turn, rendered with its training chat template: the history so far, and the
    images its first user turn is about (a vision-language model's processor places them where ``<image>`` stands
    in that turn, or first).

    Args:
        model: The model (an export loaded by `load_export`).
        tokenizer: Its tokenizer or processor.
        system: System message.
        images: Images of the first user turn.
        sampling: How each token is picked (default: greedy); with a seed, turn ``n`` (from 0) is seeded with
            ``seed + n``, so a chat is reproducible without every turn reusing the same random draws.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase | ProcessorMixin,
        system: str | None = None,
        images: list[Image.Image] | None = None,
        sampling: SamplingOptions | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.images = list(images or [])
        self.sampling = sampling or SamplingOptions()
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self.image_token = getattr(tokenizer, "image_token", "<image>")

    def ask(self, text: str) -> str:
        """Add a user turn, generate the assistant's reply, add it, and return it."""
        turn = sum(message["role"] == "user" for message in self.messages)
        content = self._with_images(text) if turn == 0 and self.images else text
        self.messages.append({"role": "user", "content": content})
        seed = None if self.sampling.seed is None else self.sampling.seed + turn
        reply = generate_reply(
            self.model, self.tokenizer, self.messages, replace(self.sampling, seed=seed), self.images
        )
        self.messages.append({"role": "assistant", "content": reply})
        return reply

    def _with_images(self, text: str) -> str:
        if "<image>" in text:
            return text.replace("<image>", self.image_token)
        return self.image_token * len(self.images) + text


def chat_loop(
    conversation: Conversation, read: Callable[[str], str] = input, write: Callable[[str], Any] = print
) -> None:
    """An interactive chat: read a user turn, write the reply, until an empty line or the end of input."""
    write("Chat with the model; an empty line or Ctrl-D ends.")
    while True:
        try:
            text = read("user: ").strip()
        except EOFError:
            break
        if not text:
            break
        write(f"assistant: {conversation.ask(text)}")
