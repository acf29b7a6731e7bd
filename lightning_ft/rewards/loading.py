"""Reward functions named by import path, called with checks: one that raises, returns the wrong number of scores
or a non-finite one fails with a message that names it."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

RewardFunction = Callable[..., Sequence[float]]


def load_reward_function(path: str) -> RewardFunction:
    """``package.module.function`` (or ``package.module:function``) -> the function."""
    module_name, _, name = path.replace(":", ".").rpartition(".")
    if not module_name:
        raise ValueError(f"Reward function {path!r} is not an import path like 'package.module.function'")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"Cannot import reward function {path!r}: {error}") from error
    if not callable(function):
        raise TypeError(f"Reward function {path!r} is a {type(function).__name__}, not a callable")
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
            raise ValueError(f"Reward function {name} returned {len(scores)} scores for {len(completions)} completions")
        bad = [i for i, score in enumerate(scores) if not isinstance(score, int | float) or not math.isfinite(score)]
        if bad:
            raise ValueError(
                f"Reward function {name} returned {scores[bad[0]]!r} (not a finite number) for completion {bad[0]}"
            )
        per_function[name] = torch.tensor(scores, dtype=torch.float32)
    total = sum(weight * scores for weight, scores in zip(weights, per_function.values(), strict=True))
    return total, per_function
