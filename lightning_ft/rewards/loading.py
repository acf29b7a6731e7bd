"""Rewards named in a config: reward functions by import path, reward models by path or hub id; called with checks:
one that raises, returns the wrong number of scores or a non-finite one fails with a message that names it."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lightning_ft.errors import UnsupportedError, UsageError

RewardFunction = Callable[..., Sequence[float]]


def load_rewards(entries: Sequence[str]) -> dict[str, RewardFunction]:
    """Each entry -> its reward: a directory or a hub id (anything with a ``/``) is a reward model
    (`RewardModelScorer`), anything else the import path of a function."""
    from lightning_ft.rewards.model import RewardModelScorer

    if len(set(entries)) != len(entries):
        raise UsageError(f"model.reward_funcs lists an entry twice: {list(entries)}")
    return {
        entry: RewardModelScorer(entry) if is_reward_model(entry) else load_reward_function(entry) for entry in entries
    }


def is_reward_model(entry: str) -> bool:
    return "/" in entry or Path(entry).is_dir()


def reward_name(entry: str) -> str:
    """A short name for logs: the function's name, or the reward model's directory name."""
    if is_reward_model(entry):
        return Path(entry.rstrip("/")).name
    return entry.replace(":", ".").rsplit(".", 1)[-1]


def load_reward_function(path: str) -> RewardFunction:
    """``package.module.function`` (or ``package.module:function``) -> the function."""
    module_name, _, name = path.replace(":", ".").rpartition(".")
    if not module_name:
        raise UsageError(f"Reward function {path!r} is not an import path like 'package.module.function'")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"Cannot import reward function {path!r}: {error}") from error
    if not callable(function):
        raise UnsupportedError(f"Reward function {path!r} is a {type(function).__name__}, not a callable")
    return function


def score_completions(
    functions: dict[str, RewardFunction],
    weights: Sequence[float],
    prompts: list[str],
    completions: list[str],
    fields: dict[str, list[Any]],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Every function's scores and their weighted sum.

    Returns:
        ``(total, per_function)``: ``(N,)`` float32 weighted sums and ``{name: (N,) scores}``.
    """
    per_function = {}
    for name, function in functions.items():
        try:
            scores = list(function(prompts, completions, **fields))
        except Exception as error:
            raise RuntimeError(f"Reward function {name} raised {type(error).__name__}: {error}") from error
        if len(scores) != len(completions):
            raise UsageError(
                f"Reward function {name} returned {len(scores)} scores for {len(completions)} completions: it must "
                "return one number per completion"
            )
        bad = [i for i, score in enumerate(scores) if not isinstance(score, int | float) or not math.isfinite(score)]
        if bad:
            raise UsageError(
                f"Reward function {name} returned {scores[bad[0]]!r} (not a finite number) for completion {bad[0]}"
            )
        per_function[name] = torch.tensor(scores, dtype=torch.float32)
    total = sum(weight * scores for weight, scores in zip(weights, per_function.values(), strict=True))
    return total, per_function
