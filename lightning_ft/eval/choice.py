"""Multiple-choice accuracy by log-likelihood, scored the way lm-evaluation-harness scores ``multiple_choice`` tasks.

Each option is a continuation of the item's context: the prompt rendered with the tokenizer's chat template and its
generation prompt (or the prompt's raw text), followed by a target delimiter and the option. Tokenisation follows
lm-eval's ``HFLM`` exactly (``TemplateLM._encode_pair``): trailing whitespace of the context moves to the front of
the continuation, the whole string is encoded, and the continuation is what follows as many tokens as the context
alone encodes to; the model reads the context's own tokens followed by those continuation tokens, left-truncated to
the model's length. The option's score is the sum of its tokens' log-probabilities, so on the same rendered context
the numbers equal lm-eval's (``tests/eval/test_harness.py`` compares them). Full-vocabulary logits are computed only
at the continuation positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_ft.data.collate import pad_sequences
from lightning_ft.data.formats import Message
from lightning_ft.errors import DataError
from lightning_ft.eval.items import EvalItem
from lightning_ft.model.forward import sequence_hidden_states
from lightning_ft.model.heads import output_projection

DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither the config nor the tokenizer names a length
TOKENIZER_INFINITY = 1000000000000000019884624838656  # transformers' model_max_length for "no limit"
LENGTH_ATTRIBUTES = ("n_positions", "max_position_embeddings", "n_ctx")


class ChoiceRequest(NamedTuple):
    """One (item, option) pair to score: ``context`` token ids, then ``continuation`` token ids to sum over."""

    item: int
    option: int
    context: list[int]
    continuation: list[int]


def choice_context(tokenizer: PreTrainedTokenizerBase, prompt: list[Message], chat_template: bool = True) -> str:
    """The text an item's options continue: the prompt rendered with the chat template and its generation prompt
    (as lm-eval's ``--apply_chat_template``), or without it the messages' texts joined by blank lines (a lone user
    turn is its text alone, as lm-eval's zero-shot ``doc_to_text``)."""
    if chat_template:
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(message["content"] for message in prompt)


def _prefix_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """lm-eval's ``HFLM.tok_encode``: the tokenizer's special tokens, unless the text already starts with the
    decoded prefix (BOS, else EOS) token."""
    prefix_id = _prefix_token_id(tokenizer)
    if prefix_id is not None and text.startswith(tokenizer.decode(prefix_id)):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


def encode_pair(tokenizer: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and of ``continuation`` after it, as lm-eval's causal ``HFLM`` makes them.

    Trailing whitespace of the context moves to the front of the continuation; the continuation's ids are those of
    ``context + continuation`` past as many tokens as the context alone encodes to. An empty context becomes the
    prefix token (BOS, else EOS), or the continuation's first token when that already is the prefix token.
    """
    if not context:
        continuation_ids = tokenizer.encode(continuation, add_special_tokens=False)
        prefix_id = _prefix_token_id(tokenizer)
        if continuation_ids and continuation_ids[0] == prefix_id:
            return continuation_ids[:1], continuation_ids[1:]
        return [prefix_id], continuation_ids
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = _encode(tokenizer, context)
    return context_ids, _encode(tokenizer, context + continuation)[len(context_ids) :]


def model_max_length(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> int:
    """The context length lm-eval truncates to: the (text) config's ``n_positions``, ``max_position_embeddings`` or
    ``n_ctx``, else the tokenizer's ``model_max_length``, else 2048."""
    config = model.config
    config = getattr(config, "text_config", None) or config
    for name in LENGTH_ATTRIBUTES:
        if getattr(config, name, None) is not None:
            return int(getattr(config, name))
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit != TOKENIZER_INFINITY else DEFAULT_MAX_LENGTH


def choice_requests(
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[EvalItem],
    chat_template: bool = True,
    target_delimiter: str | None = None,
) -> list[ChoiceRequest]:
    """Every (item, option) pair of ``items``, tokenised (see `encode_pair`); the continuation is
    ``target_delimiter + option``, the delimiter defaulting to lm-eval's: ``" "``, or ``""`` with the chat template."""
    delimiter = target_delimiter if target_delimiter is not None else ("" if chat_template else " ")
    requests = []
    for index, item in enumerate(items):
        context = choice_context(tokenizer, item.prompt, chat_template)
        for option, text in enumerate(_options(item)):
            context_ids, continuation_ids = encode_pair(tokenizer, context, delimiter + text)
            if not continuation_ids:
                raise DataError(
                    f"{item.source}: option {option} ({text!r}) of item {item.id!r} encodes to no tokens: field "
                    "'choices' needs options with text"
                )
            requests.append(ChoiceRequest(index, option, context_ids, continuation_ids))
    return requests


@torch.no_grad()
def choice_loglikelihoods(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[EvalItem],
    batch_size: int = 8,
    chat_template: bool = True,
    target_delimiter: str | None = None,
    max_length: int | None = None,
) -> list[list[float]]:
    """Summed log-likelihood of each option of each multiple-choice item, as a continuation of the item's context.

    Args:
        model: A causal LM (PEFT-wrapped or not), in eval mode.
        tokenizer: Its tokenizer (with a chat template when ``chat_template``).
        items: Items with ``choices`` (`load_items` of question + choices + answer records).
        batch_size: (context, option) pairs per forward pass.
        chat_template: Render prompts with the chat template and generation prompt; else their raw text.
        target_delimiter: Text between context and option; ``None`` is lm-eval's default (``" "``, ``""`` with the
            chat template).
        max_length: Tokens the model reads at most (longer pairs lose context tokens from the left); ``None`` is the
            model's length as lm-eval resolves it (`model_max_length`).

    Returns:
        ``loglikelihoods[i][j]``: natural-log likelihood of option ``j`` of item ``i`` (float32 softmax).
    """
    requests = choice_requests(tokenizer, items, chat_template, target_delimiter)
    limit = max_length or model_max_length(model, tokenizer)
    for request in requests:
        if len(request.continuation) > limit:
            item = items[request.item]
            raise DataError(
                f"{item.source}: option {request.option} of item {item.id!r} is {len(request.continuation)} tokens, "
                f"longer than the {limit} the model reads: shorten it in field 'choices'"
            )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i].context) + len(requests[i].continuation)))
    scores: list[float] = [0.0] * len(requests)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch_scores = continuation_logps(model, [requests[i] for i in indices], limit, pad_id)
        for index, score in zip(indices, batch_scores, strict=True):
            scores[index] = score
    results: list[list[float]] = [[] for _ in items]
    for request, score in zip(requests, scores, strict=True):
        results[request.item].append(score)
    return results


@torch.no_grad()
def continuation_logps(
    model: nn.Module, requests: Sequence[ChoiceRequest], max_length: int, pad_id: int
) -> list[float]:
    """Summed log-probability of each request's continuation, one right-padded forward pass for all of them.

    Each row reads ``(context + continuation)[-(max_length + 1):][:-1]``, lm-eval's window: the last token is only
    ever a target. Hidden states ``(rows, length, hidden)`` are projected to logits only at the continuation
    positions, ``(continuation tokens in the batch, vocab)``.

    Args:
        model: A causal LM, PEFT-wrapped or not.
        requests: The (context, continuation) token ids to score.
        max_length: Tokens a row may hold.
        pad_id: Token id for padding (masked out).
    """
    windows = [(request.context + request.continuation)[-(max_length + 1) :] for request in requests]
    input_ids, attention_mask = pad_sequences([window[:-1] for window in windows], pad_id, "right")
    device = next(model.parameters()).device
    batch = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    hidden = sequence_hidden_states(model, batch)
    rows, positions, targets = [], [], []
    for row, (window, request) in enumerate(zip(windows, requests, strict=True)):
        count = len(request.continuation)
        rows += [row] * count
        positions += range(len(window) - 1 - count, len(window) - 1)
        targets += window[-count:]
    rows_t, targets_t = torch.tensor(rows, device=device), torch.tensor(targets, device=device)
    logits = output_projection(model)(hidden[rows_t, torch.tensor(positions, device=device)]).float()
    logps = logits.log_softmax(dim=-1).gather(1, targets_t[:, None]).squeeze(1)
    sums = torch.zeros(len(requests), dtype=torch.float32, device=device).index_add(0, rows_t, logps)
    return sums.tolist()


def choice_scores(items: Sequence[EvalItem], loglikelihoods: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    """Per item: the option chosen and whether it is the answer, by lm-eval's three rules.

    ``choice``: the highest summed log-likelihood (``acc``); ``choice_norm``: the highest log-likelihood per character
    of the option (``acc_norm``, lm-eval's ``len(option)``, delimiter excluded); ``choice_bytes``: per UTF-8 byte
    (``acc_bytes``). Ties go to the first option, as ``numpy.argmax``.

    Returns:
        ``{"id", "answer", "choice", "choice_norm", "choice_bytes", "acc", "acc_norm", "acc_bytes"}`` per item, the
        accuracies 1.0 or 0.0.
    """
    scores = []
    for item, item_loglikelihoods in zip(items, loglikelihoods, strict=True):
        options = _options(item)
        if item.answer is None:
            raise DataError(
                f"{item.source}: item {item.id!r} has choices but no answer to score against (field 'answer')"
            )
        values = np.asarray(item_loglikelihoods, dtype=np.float64)
        if values.shape != (len(options),):
            raise ValueError(f"{item.source}: item {item.id!r} has {len(options)} choices, got {values.shape} scores")
        characters = np.array([len(option) for option in options], dtype=np.float64)
        utf8_bytes = np.array([len(option.encode("utf-8")) for option in options], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            chosen = {
                "choice": int(np.argmax(values)),
                "choice_norm": int(np.argmax(values / characters)),
                "choice_bytes": int(np.argmax(values / utf8_bytes)),
            }
        accuracies = {
            "acc": float(chosen["choice"] == item.answer),
            "acc_norm": float(chosen["choice_norm"] == item.answer),
            "acc_bytes": float(chosen["choice_bytes"] == item.answer),
        }
        scores.append({"id": item.id, "answer": item.answer, **chosen, **accuracies})
    return scores


def _options(item: EvalItem) -> list[str]:
    if not item.choices:
        raise DataError(
            f"{item.source}: item {item.id!r} has no choices; multiple-choice scoring needs records with question, "
            "choices and answer"
        )
    return item.choices
