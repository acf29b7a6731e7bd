"""Load a trained reward model (a `RewardModel` export or any one-output sequence classifier) for scoring, with the
input settings it was trained with."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.errors import UsageError
from lightning_ft.model.export import read_manifest

DEFAULT_MAX_LENGTH = 1024


class LoadedRewardModel(NamedTuple):
    """A reward model ready to score, and how to build its inputs as in its training."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    add_special_tokens: bool


def load_reward_model(
    path: str | Path, max_length: int | None = None, add_special_tokens: bool | None = None
) -> LoadedRewardModel:
    """The model in eval mode with frozen weights, and its tokenizer with a pad token (eos when it has none; the
    model's ``pad_token_id`` follows it, so the classifier finds each row's last token).

    ``max_length`` and ``add_special_tokens`` default to those in the export's manifest, else to at most 1024 tokens
    (within the tokenizer's limit) and no special tokens.

    Raises:
        ValueError: The manifest names another task than ``reward``, or the model has more than one output.
    """
    manifest = read_manifest(path) or {}
    if manifest.get("task", "reward") != "reward":
        raise UsageError(f"{path} is a {manifest['task']!r} export, not a reward model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(path).eval().requires_grad_(False)
    if model.config.num_labels != 1:
        raise UsageError(f"{path} has {model.config.num_labels} outputs; a reward model has one")
    model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedRewardModel(
        model,
        tokenizer,
        max_length or manifest.get("max_length") or min(DEFAULT_MAX_LENGTH, tokenizer.model_max_length),
        manifest.get("add_special_tokens", False) if add_special_tokens is None else add_special_tokens,
    )
