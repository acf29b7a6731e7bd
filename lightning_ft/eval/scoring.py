"""Score one model on evaluation sets: replies (batched, cached on disk as they are made), generation metrics,
teacher-forced loss of the references and multiple-choice accuracy, per item."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.eval.choice import choice_loglikelihoods, choice_scores
from lightning_ft.eval.items import EvalItem
from lightning_ft.eval.metrics import GENERATION_METRICS
from lightning_ft.eval.perplexity import reference_losses
from lightning_ft.eval.sets import EvalSet
from lightning_ft.model.generation import generate_replies


@dataclass
class GenerationSettings:
    """How replies are generated: greedy at temperature 0, else sampled (seeded)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8


@dataclass
class SetScores:
    """One model's results on one set, keyed by item id."""

    replies: dict[str, list[str]] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    losses: dict[str, dict[str, Any]] = field(default_factory=dict)
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)
    judge: dict[str, dict[str, Any]] = field(default_factory=dict)


def conversation_so_far(item: EvalItem, replies: list[str]) -> list[dict[str, str]]:
    """The item's prompt, then each reply so far followed by the next user turn."""
    messages = list(item.prompt)
    for reply, follow_up in zip(replies, item.follow_ups, strict=False):
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": follow_up}]
    return messages


class ReplyCache:
    """Replies already generated for a model, set and generation settings, one JSON line per reply, appended as
    they are made: an interrupted run keeps them and the next run with the same key continues from there."""

    def __init__(self, directory: Path, key: dict[str, Any]) -> None:
        name = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}.jsonl"
        if not self.path.exists():
            self.path.write_text(json.dumps({"key": key}, default=str) + "\n")

    def load(self) -> dict[str, list[str]]:
        replies: dict[str, list[str]] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines()[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the last line of a run killed mid-write
                continue
            turns = replies.setdefault(entry["id"], [])
            if entry["turn"] == len(turns):
                turns.append(entry["reply"])
        return replies

    def add(self, item_id: str, turn: int, reply: str) -> None:
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps({"id": item_id, "turn": turn, "reply": reply}, ensure_ascii=False) + "\n")


def generate_all(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: list[EvalItem],
    settings: GenerationSettings,
    cache: ReplyCache,
    description: str,
) -> dict[str, list[str]]:
    """A reply to every turn of every item (the prompt, then each follow-up in turn), reusing cached replies."""
    replies = cache.load()
    turns = sum(1 + len(item.follow_ups) for item in items)
    done = sum(min(len(replies.get(item.id, [])), 1 + len(item.follow_ups)) for item in items)
    with tqdm(total=turns, initial=done, desc=description, unit="reply") as bar:
        for turn in range(1 + max((len(item.follow_ups) for item in items), default=0)):
            pending = [item for item in items if turn <= len(item.follow_ups) and len(replies.get(item.id, [])) == turn]
            if not pending:
                continue

            def keep(indices: list[int], texts: list[str], pending: list[EvalItem] = pending, turn: int = turn) -> None:
                for index, text in zip(indices, texts, strict=True):
                    replies.setdefault(pending[index].id, []).append(text)
                    cache.add(pending[index].id, turn, text)
                bar.update(len(indices))

            conversations = [conversation_so_far(item, replies.get(item.id, [])) for item in pending]
            generate_replies(
                model,
                tokenizer,
                conversations,
                max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                seed=settings.seed + turn,
                batch_size=settings.batch_size,
                on_batch=keep,
            )
    return {item.id: replies[item.id][: 1 + len(item.follow_ups)] for item in items}


def score_set(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    eval_set: EvalSet,
    metrics: list[str],
    settings: GenerationSettings,
    cache: ReplyCache,
    max_length: int,
    generate: bool,
    description: str,
) -> SetScores:
    """One model's per-item results on one set, for the metrics asked (``generate``: replies are needed, e.g. for
    the judge, even if no generation metric is asked)."""
    result = SetScores()
    open_items = [item for item in eval_set.items if item.choices is None]
    choice_items = [item for item in eval_set.items if item.choices is not None]
    if open_items and (generate or any(metric in GENERATION_METRICS for metric in metrics)):
        result.replies = generate_all(model, tokenizer, open_items, settings, cache, description)
        for item in open_items:
            if item.reference is not None:
                first_reply = result.replies[item.id][0]
                result.scores[item.id] = {
                    metric: GENERATION_METRICS[metric](first_reply, item.reference)
                    for metric in metrics
                    if metric in GENERATION_METRICS
                }
    if "perplexity" in metrics and open_items:
        losses = reference_losses(model, tokenizer, open_items, max_length, settings.batch_size)
        result.losses = {
            item.id: {"loss_sum": loss.loss_sum, "tokens": loss.tokens, "truncated": loss.truncated}
            for item, loss in zip(open_items, losses, strict=True)
            if loss is not None
        }
    if "choice" in metrics and choice_items:
        result.choices = score_choices(model, tokenizer, choice_items, settings.batch_size)
    return result


def score_choices(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, items: list[EvalItem], batch_size: int
) -> dict[str, dict[str, Any]]:
    loglikelihoods = choice_loglikelihoods(model, tokenizer, items, batch_size=batch_size)
    return {item.id: score for item, score in zip(items, choice_scores(items, loglikelihoods), strict=True)}
